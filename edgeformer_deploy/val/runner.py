"""The evaluation loop: every image of the set through the artifact (and the PyTorch reference, if given),
into the task's metric. Board side: numpy + the runtime; torch only for ``reference``.

One unreadable image (or mask) is reported and skipped, the rest still count; non-finite outputs skip the
image too (never scored as a prediction). Ctrl-C stops the loop and the metrics cover what was evaluated
(``interrupted``).
"""
from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
from PIL import Image

from .. import __version__
from ..runtime.detect import box_iou
from ..runtime.errors import PredictError
from ..runtime.predictor import Predictor
from ..runtime.preprocess import read_image
from .datasets import DataError, Dataset, Sample, load_dataset
from .metrics import ConfusionMatrix, TopK, coco_evaluate, coco_results, require_pycocotools

SCHEMA = "edgeformer-val/1"
MATCH_IOU, MATCH_TOP = 0.5, 100  # matched-box rate: the reference's 100 best boxes per image, IoU >= 0.5
Progress = Callable[[int, int], None]  # (images done, images in all)


def read_mask(path: Path, width: int, height: int) -> np.ndarray:
    """A ground-truth class-index PNG (palette or grayscale) of the image's size."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("P", "L"):
                raise PredictError(f"{path}: a {image.mode} image, not class indices (a palette or grayscale PNG)")
            mask = np.asarray(image, dtype=np.uint8)
    except PredictError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise PredictError(f"{path}: unreadable mask ({exc})") from None
    if mask.shape != (height, width):
        raise PredictError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, its image {width}x{height}")
    return mask


class TaskScore:
    """One model's metric accumulator for the artifact's task."""

    def __init__(self, task: str, num_classes: int):
        self.task = task
        self.topk = TopK(num_classes) if task == "classification" else None
        self.confusion = ConfusionMatrix(num_classes) if task == "segmentation" else None
        self.results: List[dict] = []


def matched_boxes(reference: list, candidate: list) -> tuple:
    """(the reference's best MATCH_TOP boxes, how many have a candidate box of the same class at IoU >= MATCH_IOU)."""
    best = sorted(reference, key=lambda d: -d.score)[:MATCH_TOP]
    hits = 0
    for label in {d.class_id for d in best}:
        ref = np.array([d.box for d in best if d.class_id == label], dtype=np.float64).reshape(-1, 4)
        out = np.array([d.box for d in candidate if d.class_id == label], dtype=np.float64).reshape(-1, 4)
        if len(out):
            hits += int((box_iou(ref, out) >= MATCH_IOU).any(axis=1).sum())
    return len(best), hits


class Agreement:
    def __init__(self):
        self.images = self.same_top1 = 0
        self.cosines: List[float] = []
        self.boxes = self.matched = 0
        self.pixels = self.same_pixels = 0

    def summary(self, task: str) -> dict:
        if task == "classification":
            return {"top1_agreement": self.same_top1 / self.images if self.images else None,
                    "mean_logit_cosine": float(np.mean(self.cosines)) if self.cosines else None}
        if task == "detection":
            return {"matched_box_rate": self.matched / self.boxes if self.boxes else None,
                    "reference_boxes": self.boxes,
                    "rule": f"the reference's {MATCH_TOP} best boxes per image with an artifact box of the same "
                            f"class at IoU >= {MATCH_IOU}"}
        return {"pixel_agreement": self.same_pixels / self.pixels if self.pixels else None, "pixels": self.pixels}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


class Evaluation:
    """``edgeformer-val`` as a Python API: ``Evaluation(artifact, data, …).run()`` -> the result document
    (``SCHEMA.md``)."""

    def __init__(self, artifact: Path, data: Path, reference: Optional[Path] = None, limit: Optional[int] = None,
                 split: str = "val", images: Optional[Path] = None, backend: str = "auto",
                 threads: Optional[int] = None):
        if limit is not None and limit < 1:
            raise DataError(f"--limit must be at least 1 (got {limit})")
        self.predictor = Predictor(artifact, backend=backend, threads=threads)
        try:
            a = self.predictor.artifact
            self.task = a.task
            self.dataset: Dataset = load_dataset(self.task, Path(data), a.num_classes, split, images)
            if self.task == "detection":
                require_pycocotools()
            self.samples: List[Sample] = self.dataset.samples[:limit] if limit else list(self.dataset.samples)
            self.limit = limit
            self.reference = None
            if reference is not None:
                from .reference import Reference

                self.reference = Reference(a, Path(reference))
        except BaseException:
            self.predictor.close()
            raise

    def close(self) -> None:
        self.predictor.close()

    # -- one image ------------------------------------------------------------------------------
    def _score(self, sample: Sample, score: TaskScore, ref_score: TaskScore, agreement: Agreement) -> float:
        """Run one sample through the artifact (and the reference, into ``ref_score``); returns the artifact's
        inference ms."""
        image = read_image(sample.image)
        width, height = image.size
        truth = read_mask(sample.target, width, height) if self.task == "segmentation" else None
        crop = self.predictor.crops([image])
        started = time.perf_counter()
        outputs = self.predictor.session.outputs(self.predictor.to_input(crop))
        elapsed = (time.perf_counter() - started) * 1e3
        if not all(np.isfinite(out).all() for out in outputs):
            raise PredictError(f"{sample.image}: the model produced non-finite outputs (NaN/inf)")
        head, ref = self.predictor.head, self.reference
        if self.task == "classification":
            top1 = score.topk.update(outputs[0][0], sample.target)
            if ref is not None:
                logits = ref.logits(crop[0])
                agreement.images += 1
                agreement.same_top1 += int(ref_score.topk.update(logits, sample.target) == top1)
                agreement.cosines.append(_cosine(logits, outputs[0][0]))
        elif self.task == "detection":
            found = head.detections(head.rows(outputs), 0, width, height)
            score.results.extend(coco_results(found, sample.target))
            if ref is not None:
                reference = ref.detections(crop[0], head, width, height)
                ref_score.results.extend(coco_results(reference, sample.target))
                boxes, hits = matched_boxes(reference, found)
                agreement.boxes, agreement.matched = agreement.boxes + boxes, agreement.matched + hits
        else:
            mask = head.mask(outputs, 0, width, height)
            score.confusion.update(truth, mask)
            if ref is not None:
                reference = ref.mask(crop[0], width, height)
                ref_score.confusion.update(truth, reference)
                agreement.pixels += mask.size
                agreement.same_pixels += int((mask == reference).sum())
        return elapsed

    # -- the whole set --------------------------------------------------------------------------
    def run(self, progress: Optional[Progress] = None, on_skip: Optional[Callable[[str], None]] = None) -> dict:
        a = self.predictor.artifact
        score = TaskScore(self.task, a.num_classes)
        ref_score = TaskScore(self.task, a.num_classes)
        agreement = Agreement()
        skipped, evaluated, latencies = [], [], []
        interrupted = False
        started = time.perf_counter()
        try:
            for k, sample in enumerate(self.samples):
                try:
                    latencies.append(self._score(sample, score, ref_score, agreement))
                    evaluated.append(sample)
                except PredictError as exc:
                    skipped.append({"file": str(sample.image), "reason": str(exc)})
                    if on_skip is not None:
                        on_skip(str(exc))
                except MemoryError:
                    skipped.append({"file": str(sample.image), "reason": "out of memory"})
                    if on_skip is not None:
                        on_skip(f"{sample.image}: out of memory while evaluating this image")
                if progress is not None:
                    progress(k + 1, len(self.samples))
        except KeyboardInterrupt:
            interrupted = True
        seconds = time.perf_counter() - started
        return self._document(score, ref_score, agreement, evaluated, skipped, latencies, seconds, interrupted)

    def _metrics(self, score: TaskScore, evaluated: List[Sample]) -> tuple:
        labels = self.predictor.head.labels
        if self.task == "classification":
            return score.topk.summary(), score.topk.per_class(labels)
        if self.task == "segmentation":
            return score.confusion.summary(), score.confusion.per_class(labels)
        from ..runtime.labels import COCO_CATEGORY_IDS

        stats, per_category = coco_evaluate(self.dataset.coco, score.results, [s.target for s in evaluated])
        names = {c["id"]: c["name"] for c in self.dataset.coco["categories"]}
        rows = [{"category_id": cid, "class_id": COCO_CATEGORY_IDS.index(cid), "label": names[cid], "ap": ap}
                for cid, ap in sorted(per_category.items())]
        return dict(stats, detections=len(score.results)), rows

    def _document(self, score, ref_score, agreement, evaluated, skipped, latencies, seconds, interrupted) -> dict:
        from ..bench.runner import artifact_precision

        a = self.predictor.artifact
        metrics, per_class = self._metrics(score, evaluated)
        document = {
            "schema": SCHEMA,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "tool": f"edgeformer-deploy {__version__}",
            "task": self.task,
            "artifact": {"path": str(a.path), "name": a.name, "model": a.model, "format": a.format,
                         "precision": artifact_precision(a.manifest, a.path, a.input.dtype),
                         "backend": self.predictor.backend_name, "sha256": a.manifest.get("sha256")},
            "data": {"path": str(self.dataset.root), "layout": self.dataset.layout,
                     "annotations": str(self.dataset.annotations) if self.dataset.annotations else None,
                     "listed": len(self.dataset.samples), "limit": self.limit, "evaluated": len(evaluated),
                     "skipped": skipped, "interrupted": interrupted},
            "metrics": metrics,
            "per_class": per_class,
            "reference": None,
            "timing": {"seconds": round(seconds, 3),
                       "images_per_second": round(len(evaluated) / seconds, 3) if evaluated and seconds > 0 else None,
                       "inference_ms_median": round(float(np.median(latencies)), 3) if latencies else None},
        }
        if self.reference is not None:
            ref_metrics, _ = self._metrics(ref_score, evaluated)
            document["reference"] = {
                "model": "pytorch (un-lowered)", "weights": str(self.reference.weights),
                "sha256": self.reference.sha256, "same_weights_as_export": self.reference.same_weights,
                "metrics": ref_metrics,
                "delta": {k: (metrics[k] - v if isinstance(v, float) and isinstance(metrics.get(k), float) else None)
                          for k, v in ref_metrics.items() if k != "detections"},
                "agreement": agreement.summary(self.task)}
        return document


def evaluate(artifact, data, **options) -> dict:
    """One call: the result document of ``artifact`` on ``data`` (see :class:`Evaluation`)."""
    progress, on_skip = options.pop("progress", None), options.pop("on_skip", None)
    evaluation = Evaluation(Path(artifact), Path(data), **options)
    try:
        return evaluation.run(progress, on_skip)
    finally:
        evaluation.close()
