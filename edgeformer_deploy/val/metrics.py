"""Accuracy metrics, computed as the official evaluations compute them.

- classification: top-1 / top-5 over the images (ml-cvnets ``top_k_accuracy``: the label among the k
  largest logits), and per class;
- detection: COCO mAP@[.5:.95], AP50, AP75, … by pycocotools' own ``COCOeval`` (``maxDets`` 100), the
  boxes ``[x, y, w, h]`` in original-image pixels and the contiguous classes mapped to COCO category ids
  (ml-cvnets ``coco_map.py``); only the images evaluated so far are scored;
- segmentation: ml-cvnets' ``ConfusionMatrix``: ground-truth pixels outside [0, classes) (VOC's 255 border)
  are ignored, IoU = diag / (row + column - diag) per class, mIoU their mean. A class with neither
  ground-truth nor predicted pixels has no IoU (0/0; the official mean would be NaN on such a subset): it
  is reported as null and left out of the mean.
"""
from __future__ import annotations

import contextlib
import io
from typing import Dict, List, Optional, Sequence

import numpy as np

from .datasets import DataError

COCO_STATS = ("map", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
              "ar_1", "ar_10", "ar_100", "ar_small", "ar_medium", "ar_large")


class TopK:
    """Top-1 / top-5 counts, overall and per class."""

    def __init__(self, num_classes: int):
        self.counts = np.zeros((num_classes, 3), dtype=np.int64)  # images, top-1 hits, top-5 hits

    def update(self, logits: np.ndarray, label: int) -> int:
        """One image's logits; returns its top-1 class."""
        order = np.argsort(-np.asarray(logits, dtype=np.float64), kind="stable")
        self.counts[label] += (1, int(order[0] == label), int(label in order[:5]))
        return int(order[0])

    @property
    def images(self) -> int:
        return int(self.counts[:, 0].sum())

    def summary(self) -> Dict[str, Optional[float]]:
        n = self.images
        return {"top1": self.counts[:, 1].sum() / n if n else None, "top5": self.counts[:, 2].sum() / n if n else None}

    def per_class(self, labels: Sequence[str]) -> List[dict]:
        return [{"class_id": int(c), "label": labels[c], "images": int(n), "top1": t1 / n, "top5": t5 / n}
                for c, (n, t1, t5) in enumerate(self.counts) if n]


class ConfusionMatrix:
    """ml-cvnets' confusion matrix: rows ground truth, columns prediction."""

    def __init__(self, num_classes: int):
        self.n = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, truth: np.ndarray, prediction: np.ndarray) -> None:
        truth, prediction = np.asarray(truth).ravel().astype(np.int64), np.asarray(prediction).ravel().astype(np.int64)
        keep = (truth >= 0) & (truth < self.n)
        self.matrix += np.bincount(self.n * truth[keep] + prediction[keep], minlength=self.n ** 2).reshape(self.n, self.n)

    def iou(self) -> List[Optional[float]]:
        h = self.matrix.astype(np.float64)
        diag, union = np.diag(h), h.sum(1) + h.sum(0) - np.diag(h)
        return [float(d / u) if u else None for d, u in zip(diag, union)]

    def summary(self) -> Dict[str, Optional[float]]:
        h = self.matrix.astype(np.float64)
        if not h.sum():
            return {"miou": None, "pixel_accuracy": None, "mean_class_accuracy": None}
        present = [v for v in self.iou() if v is not None]
        rows = h.sum(1)
        accuracy = [d / r for d, r in zip(np.diag(h), rows) if r]
        return {"miou": float(np.mean(present)), "pixel_accuracy": float(np.diag(h).sum() / h.sum()),
                "mean_class_accuracy": float(np.mean(accuracy))}

    def per_class(self, labels: Sequence[str]) -> List[dict]:
        h = self.matrix
        return [{"class_id": c, "label": labels[c], "iou": value, "gt_pixels": int(h[c].sum()),
                 "predicted_pixels": int(h[:, c].sum())} for c, value in enumerate(self.iou())]


def require_pycocotools() -> None:
    try:
        import pycocotools.cocoeval  # noqa: F401
    except ImportError:
        raise DataError("detection evaluation needs pycocotools — pip install 'edgeformer-deploy[coco]'") from None


MAX_DETS = 100  # COCOeval's largest maxDets


def coco_results(detections, image_id: int) -> List[dict]:
    """Runtime :class:`~edgeformer_deploy.runtime.detect.Detection` list -> COCO result entries
    (``[x, y, w, h]`` from the clipped corner boxes, as ml-cvnets' ``coco_map.py`` writes them).

    Only the MAX_DETS best of each category are kept: COCOeval sorts each (image, category)'s boxes by score
    (stable) and drops all but its first ``maxDets`` before anything else, so the rest never count — and an
    untrained or low-threshold model (up to 200 per class) would otherwise hold millions of boxes in memory."""
    from ..runtime.labels import COCO_CATEGORY_IDS

    kept, per_class = [], {}
    for d in detections:
        per_class.setdefault(d.class_id, []).append(d)
    for class_id, found in per_class.items():
        found = sorted(found, key=lambda d: -d.score)[:MAX_DETS]  # stable, like COCOeval's mergesort
        kept.extend({"image_id": image_id, "category_id": COCO_CATEGORY_IDS[class_id],
                     "bbox": [d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]], "score": d.score}
                    for d in found)
    return kept


def coco_evaluate(ground_truth: dict, results: List[dict], image_ids: Sequence[int]) -> tuple:
    """(the 12 COCO summary numbers by name, per-category AP@[.5:.95]) over ``image_ids`` only."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not image_ids:
        return {k: None for k in COCO_STATS}, {}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        # loadRes([]) refuses an empty list; no detections at all scores 0 (every ground-truth box missed)
        dt = gt.loadRes(results) if results else COCO()
        if not results:
            dt.dataset = {"images": ground_truth["images"], "categories": ground_truth["categories"],
                          "annotations": []}
            dt.createIndex()
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {k: (float(v) if v >= 0 else None) for k, v in zip(COCO_STATS, evaluator.stats)}
    precision = evaluator.eval["precision"]  # [iou thresholds, recall, categories, areas, max dets]
    per_category = {}
    for k, category in enumerate(evaluator.params.catIds):
        p = precision[:, :, k, 0, -1]
        per_category[int(category)] = float(p[p > -1].mean()) if (p > -1).any() else None
    return stats, per_category
