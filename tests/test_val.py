"""``edgeformer-val`` on small labelled sets built here from the official pipeline's outputs on the shipped
photos (``fixtures/official-photos``), with every expected metric computed independently in the test:
labels = the official top-1, ground-truth boxes = the official detections, ground-truth masks = the official
masks; then one label / box / block of pixels is changed and the metric must move by what the test works out
by hand."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgeformer_deploy.runtime.labels import COCO_CATEGORY_IDS, imagenet_wnids, label_set
from edgeformer_deploy.runtime.preprocess import SAMPLES_DIR

from helpers import run_cli, run_without_torch
from runtime_artifacts import REPO_ROOT, write_tiny_tflite

PHOTOS = ("astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg")
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCO's


def photos_io(official_dir: Path, task: str) -> dict:
    return torch.load(official_dir.parent / "official-photos" / f"{task}_photos_io.pt", weights_only=True)


def val(*args):
    return run_cli("edgeformer-val", *args, timeout=900, offline=True)


def assert_fails(result, *needles, code=2):
    """Exit ``code``, exactly one ``error:`` line holding every needle, no traceback."""
    assert result.returncode == code, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, official_dir, det_seg_dir):
    """EdgeFormer-S classifier, SSD and DeepLabv3 (official-code weights) as ONNX at their official sizes."""
    out = tmp_path_factory.mktemp("val-onnx")
    weights = {"edgeformer_s": official_dir / "edgeformer_s.pt",
               "ssd_edgeformer_s": det_seg_dir / "ssd_edgeformer_s.pt",
               "deeplabv3_edgeformer_s": det_seg_dir / "deeplabv3_edgeformer_s.pt"}
    paths = {}
    for (name, path), size in zip(weights.items(), (256, 320, 512)):
        result = run_cli("edgeformer-export", "--model", name, "--weights", path, "--output", out, "--no-verify",
                         timeout=900, offline=True)
        assert result.returncode == 0, result.stderr
        paths[name] = out / f"{name}_{size}.onnx"
    return paths, weights


# -- classification -------------------------------------------------------------------------------
def class_folder_set(root: Path, labels: list, wnid: bool) -> Path:
    for photo, label in zip(PHOTOS, labels):
        folder = root / (imagenet_wnids()[label] if wnid else f"{label:04d}")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES_DIR / photo, folder / photo.replace(".jpg", ".JPEG"))
    return root


def official_top1_set(root: Path, official_dir: Path) -> Path:
    """The photos in class folders named by the official EdgeFormer-S top-1 (class index)."""
    io = photos_io(official_dir, "cls")
    return class_folder_set(root, [int(io["outputs"]["edgeformer_s"][p]["top5"][0]) for p in PHOTOS], wnid=False)


def test_classification_top1_top5_exact(artifacts, official_dir, tmp_path):
    (paths, weights), io = artifacts, photos_io(official_dir, "cls")
    top5 = {p: [int(c) for c in io["outputs"]["edgeformer_s"][p]["top5"]] for p in PHOTOS}
    labels = [top5[p][0] for p in PHOTOS]
    data = class_folder_set(tmp_path / "val", labels, wnid=True)
    out = tmp_path / "cls.json"
    result = val(paths["edgeformer_s"], "--data", tmp_path, "--reference", weights["edgeformer_s"],  # the root: val/
                 "--json", out, "--markdown", tmp_path / "cls.md")
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    assert doc["schema"] == "edgeformer-val/1" and doc["task"] == "classification"
    assert doc["data"]["path"] == str(data) and doc["data"]["evaluated"] == 4 and not doc["data"]["skipped"]
    assert doc["metrics"] == {"top1": 1.0, "top5": 1.0}
    assert doc["reference"]["metrics"] == {"top1": 1.0, "top5": 1.0} and doc["reference"]["delta"]["top1"] == 0
    assert doc["reference"]["agreement"]["top1_agreement"] == 1.0
    assert doc["reference"]["agreement"]["mean_logit_cosine"] > 0.99999
    assert doc["reference"]["same_weights_as_export"] is True
    assert [r["class_id"] for r in doc["per_class"]] == sorted(labels)
    assert doc["timing"]["images_per_second"] > 0
    assert "| top-1 | 100.00 | 100.00 | +0.00 |" in (tmp_path / "cls.md").read_text()

    # rocket relabelled: as the official 3rd guess (top-1 75 %, top-5 100 %), then as a class outside its
    # top 5 (both 75 %); class folders named by index this time
    for relabel, want in ((top5["rocket.jpg"][2], (0.75, 1.0)),
                          (next(c for c in range(1000) if c not in top5["rocket.jpg"]), (0.75, 0.75))):
        data = class_folder_set(tmp_path / f"index-{relabel}", labels[:3] + [relabel], wnid=False)
        result = val(paths["edgeformer_s"], "--data", data, "--json", out)
        assert result.returncode == 0, result.stderr
        doc = json.loads(out.read_text())
        assert (doc["metrics"]["top1"], doc["metrics"]["top5"]) == want and doc["reference"] is None
        rocket = next(r for r in doc["per_class"] if r["class_id"] == relabel)
        assert (rocket["images"], rocket["top1"], rocket["top5"]) == (1, 0.0, want[1] == 1.0)


def test_int8_tflite_and_no_torch_on_the_board(artifacts, tmp_path):
    """The board side: the tiny int8 TFLite classifier (real LiteRT interpreter) and the ONNX one, in a process
    where torch and the export toolchain cannot be imported."""
    tiny = write_tiny_tflite(tmp_path / "tiny", int8=True)
    from edgeformer_deploy.runtime import Predictor

    with Predictor(tiny) as predictor:
        tops = [predictor.predict(SAMPLES_DIR / p, topk=1)[0].class_id for p in PHOTOS]
    data = class_folder_set(tmp_path / "tiny-set", tops, wnid=False)
    for artifact in (tiny, artifacts[0]["edgeformer_s"]):
        out = tmp_path / f"{artifact.stem}.json"
        result = run_without_torch("edgeformer-val", "edgeformer_deploy.val.cli", artifact, "--data", data,
                                   "--json", out, cwd=REPO_ROOT)
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip().endswith("loaded: []"), result.stderr
        doc = json.loads(out.read_text())
        assert doc["data"]["evaluated"] == 4
        if artifact == tiny:
            assert doc["metrics"]["top1"] == 1.0 and doc["artifact"]["precision"] == "int8"
            assert doc["artifact"]["backend"].startswith("tflite") or "litert" in doc["artifact"]["backend"]


# -- detection ------------------------------------------------------------------------------------
def coco_set(root: Path, io: dict, model: str, boxes: int = 40) -> tuple:
    """COCO layout whose ground truth is every official detection scoring at least the ``boxes``-th best
    score over all photos: each category's ground truth is then exactly its highest-scoring detections, so
    the official detections score AP 1.0 at every IoU threshold."""
    out = io["outputs"][model]
    scores = np.sort(np.concatenate([out[p]["pred_scores"].numpy() for p in PHOTOS]))[::-1]
    cut = scores[boxes - 1]
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    images, annotations = [], []
    for i, photo in enumerate(PHOTOS, 1):
        shutil.copy(SAMPLES_DIR / photo, root / "val2017" / photo)
        h, w = out[photo]["orig_hw"]
        images.append({"id": i, "file_name": photo, "width": int(w), "height": int(h)})
        keep = np.flatnonzero(out[photo]["pred_scores"].numpy() >= cut)
        for k in keep:
            x1, y1, x2, y2 = (float(v) for v in out[photo]["boxes_orig"][k])
            annotations.append({"id": len(annotations) + 1, "image_id": i, "iscrowd": 0, "area": (x2 - x1) * (y2 - y1),
                                "category_id": COCO_CATEGORY_IDS[int(out[photo]["pred_labels"][k]) - 1],
                                "bbox": [x1, y1, x2 - x1, y2 - y1]})
    categories = [{"id": c, "name": n} for c, n in zip(COCO_CATEGORY_IDS, label_set("coco80"))]
    document = {"images": images, "annotations": annotations, "categories": categories}
    path = root / "annotations" / "instances_val2017.json"
    path.write_text(json.dumps(document))
    return path, document


def iou_xywh(a, b) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    inter = max(0.0, min(ax2, bx2) - max(a[0], b[0])) * max(0.0, min(ay2, by2) - max(a[1], b[1]))
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_detection_coco_map_exact(artifacts, official_dir, tmp_path):
    (paths, weights), io = artifacts, photos_io(official_dir, "ssd")
    annotations, document = coco_set(tmp_path / "coco", io, "ssd_edgeformer_s")
    out = tmp_path / "det.json"
    result = val(paths["ssd_edgeformer_s"], "--data", tmp_path / "coco", "--reference", weights["ssd_edgeformer_s"],
                 "--json", out)
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    for metrics in (doc["metrics"], doc["reference"]["metrics"]):
        assert (metrics["map"], metrics["ap50"], metrics["ap75"]) == (1.0, 1.0, 1.0)
    assert doc["reference"]["agreement"]["matched_box_rate"] == 1.0
    assert doc["metrics"]["detections"] == doc["reference"]["metrics"]["detections"] > len(document["annotations"])
    categories = {a["category_id"] for a in document["annotations"]}
    assert {r["category_id"] for r in doc["per_class"] if r["ap"] is not None} == categories

    # Move the box of a category that has one ground-truth box in all, sideways so that its IoU with the
    # detection becomes 0.72: it is found at the thresholds 0.50-0.70 and missed at 0.75-0.95 (where it
    # scores 0: no detection of that class anywhere reaches the moved box, checked on the official list).
    counts = {c: sum(a["category_id"] == c for a in document["annotations"]) for c in categories}
    out_ssd = io["outputs"]["ssd_edgeformer_s"]
    target_iou = 0.72
    for moved in (a for a in document["annotations"] if counts[a["category_id"]] == 1):
        x, y, w, h = moved["bbox"]
        shifted = [x + w * (1 - target_iou) / (1 + target_iou), y, w, h]
        photo = PHOTOS[moved["image_id"] - 1]
        same = [k for k, label in enumerate(out_ssd[photo]["pred_labels"].tolist())
                if COCO_CATEGORY_IDS[label - 1] == moved["category_id"]]
        others = [iou_xywh(shifted, [b[0], b[1], b[2] - b[0], b[3] - b[1]])
                  for b in (out_ssd[photo]["boxes_orig"][k].tolist() for k in same)]
        if sorted(others)[-2] < 0.5 and x + w * 1.3 < out_ssd[photo]["orig_hw"][1]:
            break
    else:
        pytest.fail("no single-box category to move")
    assert abs(iou_xywh(shifted, moved["bbox"]) - target_iou) < 1e-6
    moved["bbox"] = shifted
    annotations.write_text(json.dumps(document))
    found = (IOU_THRESHOLDS <= target_iou + 1e-9).mean()  # 5 of the 10 thresholds
    k = len(categories)
    result = val(paths["ssd_edgeformer_s"], "--data", annotations, "--reference", weights["ssd_edgeformer_s"],
                 "--json", out)
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    for metrics in (doc["metrics"], doc["reference"]["metrics"]):
        assert metrics["map"] == pytest.approx((k - 1 + found) / k, abs=1e-12)
        assert metrics["ap50"] == 1.0 and metrics["ap75"] == pytest.approx((k - 1) / k, abs=1e-12)
    assert next(r["ap"] for r in doc["per_class"] if r["category_id"] == moved["category_id"]) == pytest.approx(found)

    # --limit 2: only those images are scored (their ground truth only), the others are not misses
    result = val(paths["ssd_edgeformer_s"], "--data", annotations, "--limit", "2", "--json", out)
    doc = json.loads(out.read_text())
    assert doc["data"]["evaluated"] == 2 and doc["data"]["listed"] == 4
    limited = {a["category_id"] for a in document["annotations"] if a["image_id"] <= 2}
    assert {r["category_id"] for r in doc["per_class"] if r["ap"] is not None} == limited


def test_keeping_each_categorys_100_best_boxes_changes_no_coco_number():
    """coco_results keeps 100 boxes per (image, category); pycocotools on every box must give the same 12
    numbers (random boxes around random ground truth, 150 per category and image, tied scores included)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from edgeformer_deploy.runtime.detect import Detection
    from edgeformer_deploy.val.metrics import coco_evaluate, coco_results

    rng = np.random.default_rng(0)
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in (1, 2, 3)]
    categories = [{"id": COCO_CATEGORY_IDS[c], "name": label_set("coco80")[c]} for c in (0, 16)]
    annotations, everything, truncated = [], [], []
    for im in images:
        found = []
        for c in (0, 16):
            for _ in range(3):
                x, y = rng.uniform(0, 400), rng.uniform(0, 300)
                annotations.append({"id": len(annotations) + 1, "image_id": im["id"], "iscrowd": 0, "area": 80.0 * 60,
                                    "category_id": COCO_CATEGORY_IDS[c], "bbox": [x, y, 80.0, 60.0]})
                for _ in range(50):
                    dx, dy = rng.normal(0, 15, 2)
                    found.append(Detection([x + dx, y + dy, x + dx + 80, y + dy + 60],
                                           float(np.round(rng.uniform(0.05, 1), 2)), c, ""))
        everything += [{"image_id": im["id"], "category_id": COCO_CATEGORY_IDS[d.class_id], "score": d.score,
                        "bbox": [d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]]} for d in found]
        truncated += coco_results(found, im["id"])
    assert len(everything) == 900 and len(truncated) == 600
    ground_truth = {"images": images, "annotations": annotations, "categories": categories}
    stats, _ = coco_evaluate(ground_truth, truncated, [1, 2, 3])
    gt = COCO()
    gt.dataset = ground_truth
    gt.createIndex()
    evaluator = COCOeval(gt, gt.loadRes(everything), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert list(stats.values()) == [float(v) if v >= 0 else None for v in evaluator.stats]
    assert 0.1 < stats["map"] < 0.9


# -- segmentation ---------------------------------------------------------------------------------
def voc_set(root: Path, masks: dict) -> Path:
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for photo in PHOTOS:
        shutil.copy(SAMPLES_DIR / photo, root / "JPEGImages" / photo)
        png = Image.fromarray(masks[photo], mode="P")
        png.putpalette([v for c in range(256) for v in (c, 255 - c, (37 * c) % 256)])
        png.save(root / "SegmentationClass" / photo.replace(".jpg", ".png"))
    (root / "ImageSets/Segmentation/val.txt").write_text("".join(p[:-4] + "\n" for p in PHOTOS))
    return root


def miou_by_hand(truth: dict, prediction: dict, n: int = 21) -> tuple:
    """mIoU and per-class IoU over the classes present, from pixel sets (no confusion matrix)."""
    ious = {}
    for c in range(n):
        inter = union = 0
        for p in PHOTOS:
            valid = truth[p] != 255
            t, q = (truth[p] == c) & valid, (prediction[p] == c) & valid
            inter, union = inter + int((t & q).sum()), union + int((t | q).sum())
        if union:
            ious[c] = inter / union
    return float(np.mean(list(ious.values()))), ious


def test_segmentation_miou_exact(artifacts, official_dir, tmp_path):
    """The metric must equal a by-hand IoU of the artifact's own masks (the runtime's ``predict``) against the
    ground truth; against the official masks both models agree to float noise (a few boundary pixels where
    logits of ~1e3 are nearly tied differ between two float32 computations on different CPUs)."""
    (paths, weights), io = artifacts, photos_io(official_dir, "deeplab")
    official = {p: io["outputs"]["deeplabv3_edgeformer_s"][p]["mask"].numpy().astype(np.uint8) for p in PHOTOS}
    from edgeformer_deploy.runtime import Predictor

    with Predictor(paths["deeplabv3_edgeformer_s"]) as predictor:
        masks = {p: predictor.predict(SAMPLES_DIR / p) for p in PHOTOS}
    root = voc_set(tmp_path / "VOC2012", official)
    out = tmp_path / "seg.json"
    result = val(paths["deeplabv3_edgeformer_s"], "--data", tmp_path, "--reference",
                 weights["deeplabv3_edgeformer_s"], "--json", out)
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    assert doc["metrics"]["miou"] == pytest.approx(miou_by_hand(official, masks)[0], abs=1e-12)
    assert doc["metrics"]["miou"] >= 0.9999 and doc["reference"]["metrics"]["miou"] >= 0.9999
    assert doc["reference"]["metrics"]["pixel_accuracy"] >= 0.99999
    assert doc["reference"]["agreement"]["pixel_agreement"] >= 0.9999
    assert [r["class_id"] for r in doc["per_class"] if r["iou"] is not None] == [2, 18, 20]

    # 5000 astronaut pixels relabelled person (15), a 40-pixel border ignored (255) on chelsea
    edited = {p: m.copy() for p, m in official.items()}
    edited["astronaut.jpg"][100:150, 100:200] = 15
    edited["chelsea.jpg"][:, :40] = 255
    voc_set(root, edited)
    want, per_class = miou_by_hand(edited, masks)
    assert 15 in per_class and per_class[15] == 0.0 and want < 0.8
    result = val(paths["deeplabv3_edgeformer_s"], "--data", root, "--reference", weights["deeplabv3_edgeformer_s"],
                 "--json", out)
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    assert doc["metrics"]["miou"] == pytest.approx(want, abs=1e-12)
    assert {r["class_id"]: r["iou"] for r in doc["per_class"] if r["iou"] is not None} == pytest.approx(per_class,
                                                                                                    abs=1e-12)
    assert doc["reference"]["metrics"]["miou"] == pytest.approx(miou_by_hand(edited, official)[0], abs=1e-4)
    gt = sum(int((m != 255).sum()) for m in edited.values())
    assert sum(r["gt_pixels"] for r in doc["per_class"]) == gt


# -- bad input, interruption, report -------------------------------------------------------------
def test_bad_data_is_one_line_and_writes_nothing(artifacts, official_dir, tmp_path):
    paths, _ = artifacts
    cls, det, seg = paths["edgeformer_s"], paths["ssd_edgeformer_s"], paths["deeplabv3_edgeformer_s"]
    out = tmp_path / "never.json"
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "odd" / "cats").mkdir(parents=True)
    class_folder_set(tmp_path / "big", [0, 1, 2, 3], wnid=False)
    (tmp_path / "big" / "1234").mkdir()
    coco = tmp_path / "coco"
    annotations, document = coco_set(coco, photos_io(official_dir, "ssd"), "ssd_edgeformer_s", boxes=5)
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    missing = dict(document, images=document["images"] + [{"id": 99, "file_name": "gone.jpg"}])
    (coco / "annotations" / "instances_missing.json").write_text(json.dumps(missing))
    foreign = dict(document, categories=document["categories"] + [{"id": 91, "name": "unicorn"}])
    (tmp_path / "foreign.json").write_text(json.dumps(foreign))
    cases = [
        ((cls, "--data", tmp_path / "nowhere"), "no such file or folder"),
        ((cls, "--data", empty), "no images in class folders"),
        ((cls, "--data", tmp_path / "odd"), "neither a WordNet id"),
        ((cls, "--data", tmp_path / "big"), "'1234' is not one of the model's 1000 classes"),
        ((cls, "--data", coco), "is a COCO detection set, but the artifact is a classification model"),
        ((seg, "--data", coco), "is a COCO detection set, but the artifact is a segmentation model"),
        ((det, "--data", empty), "no annotations/instances_*.json"),
        ((det, "--data", broken), "not valid JSON"),
        ((det, "--data", coco / "annotations" / "instances_missing.json", "--images", coco / "val2017"),
         "lists 1 image(s) missing from"),
        ((det, "--data", tmp_path / "foreign.json", "--images", coco / "val2017"), "'unicorn' (id 91) is not one of"),
        ((seg, "--data", empty), "no image list"),
        ((cls, "--data", tmp_path / "big", "--limit", "0"), "--limit must be at least 1"),
        ((tmp_path / "model.onnx", "--data", empty), "model.onnx"),
    ]
    for args, needle in cases:
        assert_fails(val(*args, "--json", out), needle)
        assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_unreadable_image_is_skipped_and_the_rest_count(artifacts, official_dir, tmp_path):
    paths, _ = artifacts
    data = official_top1_set(tmp_path / "set", official_dir)
    bad = data / "0862" / "corrupt.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "cls.json"
    result = val(paths["edgeformer_s"], "--data", data, "--json", out)
    assert_fails(result, "corrupt.JPEG", code=1)
    doc = json.loads(out.read_text())
    assert doc["data"]["evaluated"] == 4 and doc["data"]["listed"] == 5
    assert [s["file"] for s in doc["data"]["skipped"]] == [str(bad)]
    assert doc["metrics"]["top1"] == 1.0  # over the 4 readable images
    assert "1 skipped" in result.stdout


INTERRUPTER = textwrap.dedent("""
    import signal, sys
    from edgeformer_deploy.val import runner

    score, calls = runner.Evaluation._score, [0]

    def interrupted(self, *args):  # a real SIGINT as the 3rd image starts
        calls[0] += 1
        if calls[0] == 3:
            signal.raise_signal(signal.SIGINT)
        return score(self, *args)

    runner.Evaluation._score = interrupted
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a background CI step inherits SIGINT ignored
    from edgeformer_deploy.val.cli import main
    main(sys.argv[1:], prog_name="edgeformer-val")
""")


def test_ctrl_c_reports_what_was_evaluated(artifacts, official_dir, tmp_path):
    paths, _ = artifacts
    data = official_top1_set(tmp_path / "set", official_dir)
    out = tmp_path / "partial.json"
    result = subprocess.run([sys.executable, "-c", INTERRUPTER, str(paths["edgeformer_s"]), "--data", str(data),
                             "--json", str(out)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr and "INTERRUPTED" in result.stdout
    doc = json.loads(out.read_text())
    assert doc["data"]["interrupted"] is True and doc["data"]["evaluated"] == 2
    assert sum(r["images"] for r in doc["per_class"]) == 2 and doc["metrics"]["top1"] == 1.0


def test_bench_report_merges_the_accuracy_section(artifacts, official_dir, tmp_path):
    paths, weights = artifacts
    data = official_top1_set(tmp_path / "set", official_dir)
    accuracy = tmp_path / "val.json"
    assert val(paths["edgeformer_s"], "--data", data, "--json", accuracy).returncode == 0
    bench = tmp_path / "bench.json"
    result = run_cli("edgeformer-bench", paths["edgeformer_s"], "--runs", "2", "--warmup", "1", "--no-rss",
                     "--json", bench)
    assert result.returncode == 0, result.stderr
    report = run_cli("edgeformer-bench", "report", bench, accuracy, "--out", tmp_path / "report")
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert "### Accuracy: edgeformer_s_256.onnx (onnx fp32, onnxruntime)" in text
    assert "| top-1 | 100.00 |" in text
    latency = text.split("## Accuracy")[0]  # the latency table is still there
    assert "p50 ms" in latency and "edgeformer_s" in latency
