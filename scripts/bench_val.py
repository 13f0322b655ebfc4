"""Images per second of ``edgeformer-val`` per task and artifact, and the accuracy each artifact keeps against
the official pipeline's own outputs.

    python scripts/bench_val.py ARTIFACT… [--copies 5] [--repeats 3] [--fixtures ../shared/fixtures]

Each task's set is built from the 4 shipped photos (``--copies`` times each, distinct files), labelled with what
the official code produced on them (``fixtures/official-photos``): classification labels = the official
EdgeFormer-S top-1, COCO ground truth = the official SSD-EdgeFormer-S detections above the 40th best score,
VOC masks = the official DeepLabv3-EdgeFormer-S masks. So the metric is the artifact's agreement with the
official fp32 pipeline (fp32 artifacts ~100 %), and what int8 costs shows directly. ``edgeformer-val`` runs as a
subprocess per artifact, the artifacts interleaved in each repeat; images/s is its loop (decode, preprocess,
inference, post-processing, metric), the median over repeats.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from edgeformer_deploy.runtime.artifact import load_artifact
from edgeformer_deploy.runtime.labels import COCO_CATEGORY_IDS, label_set
from edgeformer_deploy.runtime.preprocess import SAMPLES_DIR

PHOTOS = ("astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg")


def official(fixtures: Path, task: str) -> dict:
    return torch.load(fixtures / "official-photos" / f"{task}_photos_io.pt", weights_only=True)


def copies(copies: int):
    for k in range(copies):
        for photo in PHOTOS:
            yield photo, f"{Path(photo).stem}_{k}.jpg"


def classification_set(root: Path, fixtures: Path, n: int) -> Path:
    out = official(fixtures, "cls")["outputs"]["edgeformer_s"]
    for photo, name in copies(n):
        folder = root / f"{int(out[photo]['top5'][0]):04d}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES_DIR / photo, folder / name)
    return root


def detection_set(root: Path, fixtures: Path, n: int) -> Path:
    out = official(fixtures, "ssd")["outputs"]["ssd_edgeformer_s"]
    cut = np.sort(np.concatenate([out[p]["pred_scores"].numpy() for p in PHOTOS]))[::-1][39]
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    images, annotations = [], []
    for i, (photo, name) in enumerate(copies(n), 1):
        shutil.copy(SAMPLES_DIR / photo, root / "val2017" / name)
        h, w = out[photo]["orig_hw"]
        images.append({"id": i, "file_name": name, "width": int(w), "height": int(h)})
        for k in np.flatnonzero(out[photo]["pred_scores"].numpy() >= cut):
            x1, y1, x2, y2 = (float(v) for v in out[photo]["boxes_orig"][k])
            annotations.append({"id": len(annotations) + 1, "image_id": i, "iscrowd": 0, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "category_id": COCO_CATEGORY_IDS[int(out[photo]["pred_labels"][k]) - 1]})
    categories = [{"id": c, "name": name} for c, name in zip(COCO_CATEGORY_IDS, label_set("coco80"))]
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return root


def segmentation_set(root: Path, fixtures: Path, n: int) -> Path:
    out = official(fixtures, "deeplab")["outputs"]["deeplabv3_edgeformer_s"]
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    for photo, name in copies(n):
        shutil.copy(SAMPLES_DIR / photo, root / "JPEGImages" / name)
        Image.fromarray(out[photo]["mask"].numpy().astype(np.uint8), mode="L").save(
            root / "SegmentationClass" / name.replace(".jpg", ".png"))
        ids.append(name[:-4])
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids) + "\n")
    return root


BUILDERS = {"classification": classification_set, "detection": detection_set, "segmentation": segmentation_set}
HEADLINE = {"classification": "top1", "detection": "map", "segmentation": "miou"}


def run_val(artifact: Path, data: Path, out: Path) -> dict:
    result = subprocess.run([str(Path(sys.executable).with_name("edgeformer-val")), str(artifact), "--data", str(data),
                             "--json", str(out)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{artifact}: edgeformer-val failed: {result.stderr.strip().splitlines()[-1]}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("artifacts", nargs="+", type=Path)
    parser.add_argument("--copies", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fixtures", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "fixtures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tasks = {a: load_artifact(a).task for a in args.artifacts}
        sets = {task: BUILDERS[task](Path(tmp) / task, args.fixtures, args.copies) for task in set(tasks.values())}
        speeds = {a: [] for a in args.artifacts}
        documents = {}
        for _ in range(args.repeats):
            for artifact in args.artifacts:
                documents[artifact] = run_val(artifact, sets[tasks[artifact]], Path(tmp) / "out.json")
                speeds[artifact].append(documents[artifact]["timing"]["images_per_second"])
    print(f"# {platform.processor() or platform.machine()}, {args.copies * len(PHOTOS)} images per set, "
          f"median of {args.repeats} runs")
    print("| artifact | task | backend | images/s | inference ms (median) | metric vs the official pipeline |")
    print("|---|---|---|---:|---:|---|")
    for artifact in args.artifacts:
        doc = documents[artifact]
        key = HEADLINE[doc["task"]]
        print(f"| {artifact.name} | {doc['task']} | {doc['artifact']['backend']} | {np.median(speeds[artifact]):.2f} | "
              f"{doc['timing']['inference_ms_median']:.1f} | {key} {100 * doc['metrics'][key]:.2f} % |")


if __name__ == "__main__":
    main()
