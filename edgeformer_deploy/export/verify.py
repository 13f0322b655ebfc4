"""Parity gate: an exported artifact against the un-lowered PyTorch model (in float64), on real photos and noise.

Raw outputs are compared for every task (max-abs, worst per-sample cosine); classifiers also by top-1 /
top-5 agreement, detectors also by their final detections through the board's own post-processing
(``runtime.detect``): the fraction of detections with a twin of the same class, IoU >= DETECTION_IOU and a
score within DETECTION_SCORE, taken both ways (reference -> artifact and back), the lower of the two.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..runtime.detect import DetectionParams, Detections, box_iou, postprocess
from ..runtime.preprocess import preprocess, sample_images
from ..runtime.segment import official_mask

NUM_RANDOM = 4
DETECTION_IOU, DETECTION_SCORE = 0.9, 0.01


def verification_inputs(imgsz: int, seed: int = 0, channel_order: str = "RGB",
                        mode: str = "center_crop") -> tuple[np.ndarray, list[str]]:
    """The shipped real photos (the task's evaluation preprocessing, channels in ``channel_order``) followed
    by uniform-noise images."""
    photos = sample_images()
    rng = np.random.default_rng(seed)
    noise = rng.random((NUM_RANDOM, 3, imgsz, imgsz), dtype=np.float32)
    batch = np.concatenate([preprocess(p, imgsz, channel_order=channel_order, mode=mode) for p in photos] + [noise])
    return batch, [p.stem for p in photos] + [f"random_{i}" for i in range(NUM_RANDOM)]


@dataclass
class Parity:
    reference: str
    samples: int
    max_abs: float
    cosine: float  # the worst sample's cosine similarity (over every output)
    max_rel: Optional[float] = None  # max_abs / the reference's largest |value| (segmentation logits reach 1e3)
    top1_agreement: Optional[float] = None  # classification
    top5_agreement: Optional[float] = None
    outputs: dict = field(default_factory=dict)  # per output: max_abs, cosine
    detections: Optional[dict] = None  # detection: agreement of the final detections
    masks: Optional[dict] = None  # segmentation: agreement of the final masks

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@torch.no_grad()
def reference_outputs(model: nn.Module, inputs: np.ndarray) -> List[np.ndarray]:
    """The model's outputs computed in float64: the gate then measures the artifact's own rounding, not the
    sum of it and PyTorch's float32 rounding (which alone moves DeepLabv3-EdgeFormer-S's logits by up to 3e-6 of
    the largest between batch sizes on one machine)."""
    with torch.no_grad():
        out = copy.deepcopy(model).double().eval()(torch.from_numpy(inputs).double())
    return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]


def _cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    r = reference.reshape(len(reference), -1).astype(np.float64)
    c = candidate.reshape(len(candidate), -1).astype(np.float64)
    return (r * c).sum(1) / (np.linalg.norm(r, axis=1) * np.linalg.norm(c, axis=1) + 1e-30)


def compare(reference: np.ndarray, candidate: np.ndarray, label: str) -> Parity:
    """Classifier logits [N, classes]."""
    reference, candidate = reference.astype(np.float64), candidate.astype(np.float64)
    top5_ref = np.argsort(-reference, axis=1)[:, :5]
    top5_out = np.argsort(-candidate, axis=1)[:, :5]
    return Parity(reference=label, samples=len(reference),
                  max_abs=float(np.abs(reference - candidate).max()),
                  cosine=float(_cosines(reference, candidate).min()),
                  top1_agreement=float((top5_ref[:, 0] == top5_out[:, 0]).mean()),
                  top5_agreement=float(np.mean([set(a) == set(b) for a, b in zip(top5_ref, top5_out)])))


def compare_outputs(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], names: Sequence[str],
                    label: str) -> Parity:
    """Every output, by name; the overall max-abs and worst cosine are over all of them."""
    per = {}
    for name, ref, out in zip(names, reference, candidate):
        out = np.asarray(out).reshape(ref.shape)
        max_abs = float(np.abs(ref.astype(np.float64) - out).max())
        per[name] = {"max_abs": max_abs, "max_rel": max_abs / max(float(np.abs(ref).max()), 1e-30),
                     "cosine": float(_cosines(ref, out).min())}
    return Parity(reference=label, samples=len(reference[0]), max_abs=max(v["max_abs"] for v in per.values()),
                  cosine=min(v["cosine"] for v in per.values()), outputs=per,
                  max_rel=max(v["max_rel"] for v in per.values()))


def _matched(a: Detections, b: Detections) -> int:
    """Detections of ``a`` with a twin in ``b``: same class, IoU >= DETECTION_IOU, score within DETECTION_SCORE."""
    hits = 0
    for label in np.unique(a.labels):
        ia, ib = np.flatnonzero(a.labels == label), np.flatnonzero(b.labels == label)
        if not len(ib):
            continue
        close = (box_iou(a.boxes[ia], b.boxes[ib]) >= DETECTION_IOU) & (
            np.abs(a.scores[ia][:, None] - b.scores[ib][None, :]) <= DETECTION_SCORE)
        hits += int(close.any(axis=1).sum())
    return hits


def compare_detections(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], anchors: np.ndarray,
                       params: DetectionParams = DetectionParams()) -> dict:
    """Final detections (official post-processing) of both models on every sample."""
    ref_n = out_n = ref_hit = out_hit = 0
    for i in range(len(reference[0])):
        ref = postprocess(reference[0][i], reference[1][i], anchors, params)
        out = postprocess(np.asarray(candidate[0][i]), np.asarray(candidate[1][i]), anchors, params)
        ref_n, out_n = ref_n + len(ref), out_n + len(out)
        ref_hit, out_hit = ref_hit + _matched(ref, out), out_hit + _matched(out, ref)
    agreement = min(ref_hit / max(ref_n, 1), out_hit / max(out_n, 1))
    return {"reference": ref_n, "artifact": out_n, "agreement": round(agreement, 6),
            "rule": f"same class, IoU >= {DETECTION_IOU}, |score diff| <= {DETECTION_SCORE}, both ways"}


def check_parity(model: nn.Module, run: Callable[[np.ndarray], List[np.ndarray]], imgsz: int,
                 input_order: str = "RGB", model_order: str = "RGB", task: str = "classification",
                 mode: str = "center_crop", names: Sequence[str] = ("logits",),
                 anchors: Optional[np.ndarray] = None) -> Parity:
    """``run`` (the artifact, fed ``input_order``) against the un-lowered model fed what it was trained on
    (``model_order``): the photos through the same preprocessing, channels reversed if the orders differ."""
    inputs, _ = verification_inputs(imgsz, channel_order=input_order, mode=mode)
    reference_inputs = inputs if input_order == model_order else np.ascontiguousarray(inputs[:, ::-1])
    reference = reference_outputs(model, reference_inputs)
    candidate = [np.asarray(o) for o in run(inputs)]
    if task == "classification":
        return compare(reference[0], candidate[0].reshape(reference[0].shape), "pytorch (un-lowered)")
    parity = compare_outputs(reference, candidate, names, "pytorch (un-lowered)")
    if task == "detection":
        candidate = [c.reshape(r.shape) for c, r in zip(candidate, reference)]
        parity.detections = compare_detections(reference, candidate, anchors)
    if task == "segmentation":
        parity.masks = compare_masks(reference[0], candidate[0].reshape(reference[0].shape), imgsz)
    return parity


def compare_masks(reference: np.ndarray, candidate: np.ndarray, imgsz: int) -> dict:
    """Final masks at the network size (the board's exact x16 bilinear + argmax) of both models."""
    factor = imgsz // reference.shape[-1]
    same = total = 0
    for ref, out in zip(reference, candidate):
        a, b = official_mask(ref, factor, imgsz, imgsz), official_mask(out, factor, imgsz, imgsz)
        same, total = same + int((a == b).sum()), total + a.size
    return {"pixels": total, "pixel_agreement": round(same / total, 7)}
