"""SSD-EdgeFormer-S / SSD-MobileViT-S against the official code's fixtures: the network, the anchors, the
board's numpy post-processing and the whole photo -> boxes chain; plus the detection CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgeformer_deploy.errors import CheckpointError
from edgeformer_deploy.models import count_params, create_model, model_spec
from edgeformer_deploy.runtime import Predictor
from edgeformer_deploy.runtime.artifact import manifest_path
from edgeformer_deploy.runtime.detect import DetectionParams, expand_anchors, nms, postprocess, scale_boxes
from edgeformer_deploy.runtime.errors import ArtifactError, PredictError
from edgeformer_deploy.runtime.preprocess import preprocess, sample_images
from conftest import OFFICIAL
from helpers import assert_same_detections, official_io, run_cli

PHOTOS = OFFICIAL.parent / "official-photos" / "ssd_photos_io.pt"
MODELS = ["ssd_edgeformer_s", "ssd_mobilevit_s"]
OFFICIAL_PARAMS = {"ssd_edgeformer_s": 5_197_282, "ssd_mobilevit_s": 5_738_826}
# The fixtures are float32 computations: measured against the same network in float64 they are off by up to
# 3.6e-5 (EdgeFormer at 320, |outputs| <= 6), so an absolute 1e-5 is below the reference's own accuracy. The
# bound is relative to the largest output; a real mistake (a dropped head bias: std 0.5, channel order: 2.7,
# mis-ordered interleave) moves outputs by 0.1 or more.
FLOAT32_NOISE = 1e-5


@pytest.mark.parametrize("name", MODELS)
def test_registry_and_parameter_count(name):
    spec = model_spec(name)
    assert (spec.task, spec.imgsz, spec.num_classes, spec.resize, spec.channel_order) == (
        "detection", 320, 81, "stretch", "BGR")
    assert count_params(create_model(name)) == OFFICIAL_PARAMS[name]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("imgsz", [320, 256])
def test_official_checkpoint_parity(det_seg_dir, name, imgsz):
    model = create_model(name, weights=det_seg_dir / f"{name}.pt")
    io = official_io(det_seg_dir, name)
    with torch.no_grad():
        confidences, locations = model(io[f"input_{imgsz}"])
        exact = model.double()(io[f"input_{imgsz}"].double())
    for got, f64, key in ((confidences, exact[0], "confidences"), (locations, exact[1], "locations")):
        reference = io[f"{key}_{imgsz}"]
        assert got.shape == reference.shape and reference.std() > 0.5
        bound = FLOAT32_NOISE * reference.abs().max().item()
        assert (got - reference).abs().max().item() <= bound
        assert (f64.float() - reference).abs().max().item() <= bound


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("imgsz", [320, 256])
def test_anchors_bit_exact(det_seg_dir, name, imgsz):
    model, reference = create_model(name), official_io(det_seg_dir, name)[f"anchors_{imgsz}"]
    assert torch.equal(model.anchors(imgsz), reference)
    assert np.array_equal(expand_anchors(model.anchor_levels(imgsz)), reference.numpy())  # the board's expansion
    assert len(reference) == {320: 3232, 256: 2050}[imgsz]


@pytest.mark.parametrize("name", MODELS)
def test_postprocess_reproduces_official_predict(det_seg_dir, name):
    io = official_io(det_seg_dir, name)
    found = postprocess(io["pred_raw_confidences_320"][0].numpy(), io["pred_raw_locations_320"][0].numpy(),
                        io["anchors_320"].numpy())
    assert len(found) == len(io["pred_labels_320"]) > 1000
    assert_same_detections(found, io["pred_labels_320"].numpy(), io["pred_scores_320"].numpy(),
                            io["pred_boxes_320"].numpy())


@pytest.mark.parametrize("name", MODELS)
def test_postprocess_and_scaling_on_the_official_photos(name):
    official = torch.load(PHOTOS, weights_only=True)
    anchors = official["meta"]["anchors_320"].numpy()
    for photo in official["photos"]:
        out = official["outputs"][name][photo]
        found = postprocess(out["confidences"][0].numpy(), out["locations"][0].numpy(), anchors)
        assert_same_detections(found, out["pred_labels"].numpy(), out["pred_scores"].numpy(),
                                out["pred_boxes"].numpy())
        h, w = out["orig_hw"]
        exact = scale_boxes(out["pred_boxes"].numpy(), w, h)
        assert np.array_equal(exact, out["boxes_orig"].numpy())  # scaling + clipping: bit for bit


def greedy_nms(boxes, scores, threshold):
    """torchvision's CPU kernel, line by line (the independent reference for the vectorised version)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    suppressed, keep = set(), []
    for pos, i in enumerate(order):
        if i in suppressed:
            continue
        keep.append(i)
        for j in order[pos + 1:]:
            w = max(np.float32(0), min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]))
            h = max(np.float32(0), min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]))
            inter = np.float32(w * h)
            if inter / (areas[i] + areas[j] - inter) > threshold:
                suppressed.add(j)
    return keep


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_nms_is_greedy_nms(seed):
    rng = np.random.default_rng(seed)
    n = 300
    xy = rng.random((n, 2), dtype=np.float32) * 0.6
    boxes = np.concatenate([xy, xy + rng.random((n, 2), dtype=np.float32) * 0.4 + 0.05], axis=1)
    scores = rng.random(n, dtype=np.float32)
    for threshold in (0.3, 0.5, 0.7):
        assert list(nms(boxes, scores, threshold)) == greedy_nms(boxes, scores, threshold)


def _grouped_reference(boxes, scores, groups, threshold, top_k):
    """Per group, in group order: greedy NMS, the first top_k survivors (the official predict()'s loop)."""
    kept = []
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        kept += list(members[greedy_nms(boxes[members], scores[members], threshold)][:top_k])
    return kept


@pytest.mark.parametrize("seed", range(3))
def test_grouped_nms_is_greedy_nms_per_group(seed, monkeypatch):
    """All groups in one sweep, cut into small pair chunks, with the cases the x-sweep bound must not miss:
    boxes shifted across IoU = threshold, duplicates (IoU 1), zero-area and non-finite boxes."""
    from edgeformer_deploy.runtime import detect

    monkeypatch.setattr(detect, "PAIRS_PER_CHUNK", 97)
    rng = np.random.default_rng(seed)
    n = 400
    xy = rng.random((n, 2), dtype=np.float32) * 0.6
    boxes = np.concatenate([xy, xy + rng.random((n, 2), dtype=np.float32) * 0.3 + 0.01], axis=1)
    # [s, 0, 1, 1] inside [0, 0, 1, 1]: IoU = 1 - s, the case where the sweep's bound is tight; each pair
    # in a group of its own (the reference box scoring higher), so every pair decides one outcome
    shifts = (np.array([0.3, 0.5, 0.7])[:, None] + np.linspace(-1e-3, 1e-3, 41)).ravel().astype(np.float32)
    edge = np.stack([shifts, 0 * shifts, 0 * shifts + 1, 0 * shifts + 1], axis=1)
    special = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0.2, 0.2, 0.2, 0.5], [np.nan, 0, 1, 1], [0, 0, np.inf, 1]], np.float32)
    boxes = np.concatenate([boxes, special, edge, np.tile([[0, 0, 1, 1]], (len(edge), 1)).astype(np.float32)])
    scores = rng.random(len(boxes), dtype=np.float32)
    groups = rng.integers(0, 5, len(boxes))
    groups[n:n + len(special)] = 2  # among random boxes, tied: duplicates (IoU 1), zero area, non-finite
    scores[n:n + len(special)] = scores[n]
    groups[n + len(special):] = 5 + np.tile(np.arange(len(edge)), 2)
    scores[n + len(special) + len(edge):] = 1.0
    order = np.lexsort((-scores, groups))
    boxes, scores, groups = boxes[order], scores[order], groups[order]
    for threshold in (0.3, 0.5, 0.7):
        for top_k in (3, 200):
            keep = detect._grouped_nms(*np.ascontiguousarray(boxes.T), groups, threshold, top_k)
            assert list(np.flatnonzero(keep)) == _grouped_reference(boxes, scores, groups, threshold, top_k)


@pytest.mark.parametrize("id_limit", [3232, 1 << 40])  # the packed int64 key, and the lexsort fallback
def test_group_score_order_is_the_stable_sort_per_group(id_limit):
    """Candidates ordered by group, then decreasing score, ties by id: what torchvision's stable sort
    gives per class. Scores with many exact ties, tiny and near-1 values."""
    from edgeformer_deploy.runtime.detect import _group_score_order

    rng = np.random.default_rng(0)
    n = 5000
    ids, groups = np.divmod(np.sort(rng.choice(id_limit * 80, n, replace=False)), 80)  # as flatnonzero gives them
    scores = rng.choice(np.array([0.0501, 0.3, 0.5, 0.99999994, 1.0, 1e-30], np.float32), n)
    scores[::3] = rng.random(n // 3 + 1, dtype=np.float32)[: len(scores[::3])]
    assert np.array_equal(_group_score_order(groups, scores, ids), np.lexsort((ids, -scores, groups)))


def test_detection_options():
    rng = np.random.default_rng(0)
    anchors = np.tile(np.array([[0.5, 0.5, 0.2, 0.2]], np.float32), (50, 1))
    anchors[:, 0] = np.linspace(0.1, 0.9, 50)
    conf = rng.normal(0, 2, (50, 5)).astype(np.float32)
    loc = np.zeros((50, 4), np.float32)
    base = postprocess(conf, loc, anchors)
    capped = postprocess(conf, loc, anchors, DetectionParams(max_det=3))
    assert len(capped) == 3 and set(capped.scores) == set(np.sort(base.scores)[-3:])
    strict = postprocess(conf, loc, anchors, DetectionParams(score_threshold=0.9))
    assert (strict.scores > 0.9).all() and len(strict) < len(base)
    agnostic = postprocess(conf, loc, anchors, DetectionParams(class_agnostic=True))
    assert len(agnostic) <= len(base) and len({tuple(b) for b in agnostic.boxes}) == len(agnostic)


def test_classifier_weights_refused_by_the_detector(official_dir, det_seg_dir):
    with pytest.raises(CheckpointError, match=r"does not fit ssd_edgeformer_s — it looks like a classification"):
        create_model("ssd_edgeformer_s", weights=official_dir / "edgeformer_s.pt")
    with pytest.raises(CheckpointError, match=r"does not fit edgeformer_s — it looks like a detection checkpoint"
                                              r".*missing"):
        create_model("edgeformer_s", weights=det_seg_dir / "ssd_edgeformer_s.pt")


# -- export and board runtime ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def det_onnx(tmp_path_factory, det_seg_dir):
    out = tmp_path_factory.mktemp("det-onnx")
    paths = {}
    for name in MODELS:
        result = run_cli("edgeformer-export", "--model", name, "--weights", det_seg_dir / f"{name}.pt", "--output", out,
                         offline=True, timeout=900)
        assert result.returncode == 0, result.stderr
        paths[name] = out / f"{name}_320.onnx"
    return paths


def test_onnx_manifest_and_parity_gate(det_onnx):
    manifest = json.loads(manifest_path(det_onnx["ssd_edgeformer_s"]).read_text())
    assert manifest["manifest_version"] == 2 and manifest["task"] == "detection"
    assert [o["shape"] for o in manifest["outputs"]] == [[1, 3232, 81], [1, 3232, 4]]
    assert manifest["preprocess"]["resize_mode"] == "stretch" and manifest["preprocess"]["channel_order"] == "RGB"
    assert manifest["labels"] == "coco80" and manifest["postprocess"]["score_threshold"] == 0.05
    parity = manifest["parity"]
    assert parity["max_abs"] < 1e-4 and parity["detections"]["agreement"] >= 0.99
    assert parity["detections"]["reference"] > 10_000  # photos + noise, thousands of boxes each


def test_preprocessing_is_the_official_tensor():
    official = torch.load(PHOTOS, weights_only=True)
    import hashlib

    for photo in sample_images():
        tensor = preprocess(photo, 320, channel_order="BGR", mode="stretch")
        assert hashlib.sha256(tensor.tobytes()).hexdigest() == official["inputs"][photo.name]["input_sha256"]


@pytest.mark.parametrize("name", MODELS)
def test_photo_to_boxes_matches_the_official_pipeline(det_onnx, name):
    """Whole chain on the board's runtime: JPEG -> RGB artifact -> boxes in original-image pixels, against
    the official eval's boxes_orig. The networks differ by float noise (~2e-5), so a few of the thousands
    of untrained-network boxes near the 0.05 threshold may flip; every other box must match."""
    official = torch.load(PHOTOS, weights_only=True)
    with Predictor(det_onnx[name]) as predictor:
        assert predictor.task == "detection" and predictor.labels[0] == "person"
        for photo in sample_images():
            reference = official["outputs"][name][photo.name]
            found = predictor.predict(photo)
            assert abs(len(found) - len(reference["pred_labels"])) <= 0.005 * len(found)
            ids = np.array([d.class_id for d in found])
            boxes = np.array([d.box for d in found], np.float32)
            ref_ids, ref_boxes = reference["pred_labels"].numpy() - 1, reference["boxes_orig"].numpy()
            matched = sum(bool(np.any((ref_ids == c) & (np.abs(ref_boxes - b).max(1) < 0.01)))
                          for c, b in zip(ids, boxes))
            assert matched >= 0.995 * len(found)


def test_detection_artifact_refused_as_classifier(det_onnx):
    with pytest.raises(ArtifactError, match="a detection artifact, not classification"):
        Predictor(det_onnx["ssd_edgeformer_s"], task="classification")


def test_manifest_task_must_match_outputs(det_onnx, tmp_path):
    import shutil

    target = tmp_path / det_onnx["ssd_mobilevit_s"].name
    shutil.copy(det_onnx["ssd_mobilevit_s"], target)
    manifest = json.loads(manifest_path(det_onnx["ssd_mobilevit_s"]).read_text())
    manifest["task"] = "classification"
    manifest_path(target).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="task classification needs one"):
        Predictor(target)
    manifest["task"] = "detection"
    manifest["outputs"][0]["shape"] = [1, 3000, 81]
    manifest_path(target).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"task detection needs outputs \[batch, 3232, 81\]"):
        Predictor(target)


@pytest.mark.parametrize("option", [{"conf": 1.5}, {"conf": -0.1}, {"iou": 0.0}, {"iou": 1.2}, {"max_det": 0}])
def test_bad_detection_options(det_onnx, option):
    with pytest.raises(PredictError, match="--(conf|iou|max-det)"):
        Predictor(det_onnx["ssd_edgeformer_s"], **option)


def test_predict_cli_json_lines_and_drawings(det_onnx, tmp_path):
    photos = sample_images()
    result = run_cli("edgeformer-predict", *photos, "--model", det_onnx["ssd_edgeformer_s"], "--json",
                     "--conf", "0.3", "--max-det", "50", "--save", tmp_path / "drawn")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["file"] for r in records] == [str(p) for p in photos]
    for record, photo in zip(records, photos):
        from PIL import Image

        width, height = Image.open(photo).size
        assert 0 < len(record["detections"]) <= 50
        for d in record["detections"]:
            assert set(d) == {"box", "score", "class_id", "label"} and d["score"] > 0.3
            assert 0 <= d["class_id"] < 80 and isinstance(d["label"], str)
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 <= width and 0 <= x2 <= width and 0 <= y1 <= height and 0 <= y2 <= height
        drawn = Image.open(tmp_path / "drawn" / photo.name)
        assert drawn.size == (width, height)
        assert not np.array_equal(np.asarray(drawn), np.asarray(Image.open(photo).convert("RGB")))


def test_predict_cli_table_and_bad_options(det_onnx, onnx_classifier):
    photo = sample_images()[0]
    table = run_cli("edgeformer-predict", photo, "--model", det_onnx["ssd_mobilevit_s"], "--conf", "0.5")
    assert table.returncode == 0 and "detection(s)" in table.stdout and "score" in table.stdout
    bad = run_cli("edgeformer-predict", photo, "--model", det_onnx["ssd_mobilevit_s"], "--iou", "0")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --iou") and "Traceback" not in bad.stderr
    wrong = run_cli("edgeformer-predict", photo, "--model", onnx_classifier, "--conf", "0.3")
    assert wrong.returncode == 2 and "applies to detection artifacts" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def onnx_classifier(tmp_path_factory, official_dir):
    from runtime_artifacts import export_onnx

    return export_onnx(tmp_path_factory.getbasetemp() / "exports", official_dir, "edgeformer_s")



# -- TFLite and RKNN (real converters; the RKNN NPU itself is the toolkit's simulator) --------------
@pytest.fixture(scope="module")
def det_converted(tmp_path_factory, det_seg_dir):
    """SSD-EdgeFormer-S (official-code weights) as TFLite fp32 and RKNN fp16 for rk3588, through the CLI."""
    out = tmp_path_factory.mktemp("det-converted")
    weights = det_seg_dir / "ssd_edgeformer_s.pt"
    for fmt in ("tflite", "rknn"):
        result = run_cli("edgeformer-export", "--model", "ssd_edgeformer_s", "--weights", weights, "--format", fmt,
                         "--output", out, timeout=1200, offline=True)
        assert result.returncode == 0, result.stderr
    return {"tflite": out / "ssd_edgeformer_s_320.tflite", "rknn": out / "ssd_edgeformer_s_320_rk3588.rknn"}


def test_tflite_detector_parity_and_boxes(det_converted, det_onnx):
    manifest = json.loads(manifest_path(det_converted["tflite"]).read_text())
    assert [o["name"] for o in manifest["outputs"]] == ["confidences", "locations"]
    assert all(o["tensor"] for o in manifest["outputs"])  # the interpreter's own names, looked up on the board
    assert manifest["parity"]["max_abs"] < 1e-4 and manifest["parity"]["detections"]["agreement"] >= 0.99
    assert not [op for op in manifest["ops"] if op in ("TRANSPOSE", "GATHER")] and "FLEX" not in str(manifest["ops"])
    photo = sample_images()[1]
    with Predictor(det_converted["tflite"], conf=0.3) as tflite, Predictor(det_onnx["ssd_edgeformer_s"],
                                                                           conf=0.3) as onnx:
        a, b = tflite.predict(photo), onnx.predict(photo)
    assert len(a) == len(b) > 0
    assert [d.class_id for d in a] == [d.class_id for d in b]
    assert np.abs(np.array([d.box for d in a]) - np.array([d.box for d in b])).max() < 0.05  # pixels


def test_rknn_detector_runs_on_the_npu_and_matches(det_converted):
    """The head maps are the outputs (all layers on the NPU); the board lays them out as the official rows.
    The simulator's outputs, kept beside the artifact, go through the board's own head."""
    from edgeformer_deploy.export.rknn_format import simulator_outputs
    from edgeformer_deploy.runtime.artifact import load_artifact
    from edgeformer_deploy.runtime.predictor import DetectHead

    path = det_converted["rknn"]
    manifest = json.loads(manifest_path(path).read_text())
    assert manifest["rknn"]["layers"]["cpu_fallback"] == 0
    assert manifest["postprocess"]["outputs"]["levels"] == [f"head_{k}" for k in range(6)]
    assert manifest["parity"]["detections"]["agreement"] >= 0.99 and manifest["parity"]["cosine"] >= 0.999
    head = DetectHead(load_artifact(path))
    saved = np.load(path.with_name(path.name + ".simulator.npz"))
    confidences, locations = head.rows(simulator_outputs(saved))
    assert confidences.shape == (8, 3232, 81) and locations.shape == (8, 3232, 4)
    assert len(head.raw((confidences, locations), 0)) > 100
