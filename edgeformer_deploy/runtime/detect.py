"""SSD post-processing in numpy: the official ``SingleShotDetector.predict`` (ml-cvnets v0.1), vectorised.

softmax over all classes (background included) -> decode against the anchors (variances 0.1 / 0.2) -> per
class 1..C-1 keep ``prob > threshold`` -> greedy NMS (suppress IoU > iou, as torchvision's CPU kernel computes
it in float32) -> the first ``top_k`` per class -> concatenated class-major. Every step runs in float32 with
the official operation order, so the official detections are reproduced bit for bit from the same raw
outputs. Options the official code lacks (a global cap, class-agnostic NMS) are off by default.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Sequence

import numpy as np


class DetectionParams(NamedTuple):
    score_threshold: float = 0.05
    iou_threshold: float = 0.5
    top_k: int = 200  # per class, after NMS
    max_det: Optional[int] = None  # overall cap (highest scores); None = the official: no cap
    class_agnostic: bool = False  # one NMS over all classes instead of one per class
    center_variance: float = 0.1
    size_variance: float = 0.2


@dataclass(frozen=True)
class Detections:
    """One image's detections: ``labels`` are the network's class indices (1..C-1; 0 is background),
    ``boxes`` corner form (x1, y1, x2, y2) normalised to the network input, not clipped."""
    labels: np.ndarray  # int64 [n]
    scores: np.ndarray  # float32 [n]
    boxes: np.ndarray  # float32 [n, 4]

    def __len__(self) -> int:
        return len(self.labels)


def anchor_count(levels: Sequence[dict]) -> int:
    """Anchors described by the manifest's levels (each ``{"grid": [h, w], "sizes": [[w, h], …]}``)."""
    if not isinstance(levels, list) or not levels:
        raise ValueError("anchors must be a non-empty list of levels")
    return sum(int(level["grid"][0]) * int(level["grid"][1]) * len(level["sizes"]) for level in levels)


def expand_anchors(levels: Sequence[dict]) -> np.ndarray:
    """[N, 4] center-form priors from the manifest's per-level grid and prior sizes, in the official order
    (levels, then (y, x) row-major, then the level's priors); centres computed in float64 and rounded to
    float32 as the official Python loop + ``torch.tensor`` does."""
    rows = []
    for level in levels:
        h, w = (int(v) for v in level["grid"])
        sizes = np.asarray(level["sizes"], dtype=np.float32).reshape(-1, 2)
        cy, cx = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
        centres = np.stack([cx.ravel(), cy.ravel()], axis=1).astype(np.float32)  # [h*w, 2]
        grid = np.concatenate([np.repeat(centres, len(sizes), axis=0), np.tile(sizes, (h * w, 1))], axis=1)
        rows.append(grid)
    return np.clip(np.concatenate(rows), 0, 1).astype(np.float32)


def assemble_levels(maps: Sequence[np.ndarray], num_classes: int, layout: str = "NCHW") -> tuple:
    """Per-level head maps [B, A * (4 + C), H, W] (or NHWC) -> the official (confidences [B, N, C],
    locations [B, N, 4]): rows (y, x, anchor) row-major, per anchor 4 box codes then C logits, levels in
    order — exactly the model's own permute + view + split + cat."""
    rows = []
    for m in maps:
        m = np.asarray(m, dtype=np.float32)
        nhwc = m.transpose(0, 2, 3, 1) if layout == "NCHW" else m
        rows.append(nhwc.reshape(len(m), -1, 4 + num_classes))
    joined = np.concatenate(rows, axis=1)
    return np.ascontiguousarray(joined[..., 4:]), np.ascontiguousarray(joined[..., :4])


def softmax32(logits: np.ndarray) -> np.ndarray:
    """float32 softmax over the last axis: exp(x - max) / sum."""
    x = np.asarray(logits, dtype=np.float32)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def decode_boxes(locations: np.ndarray, anchors: np.ndarray, center_variance: float = 0.1,
                 size_variance: float = 0.2) -> np.ndarray:
    """Official ``convert_locations_to_boxes`` + ``center_form_to_corner_form`` in float32."""
    loc = np.asarray(locations, dtype=np.float32)
    wh = np.exp(loc[..., 2:] * np.float32(size_variance)) * anchors[..., 2:]
    centre = loc[..., :2] * np.float32(center_variance) * anchors[..., 2:] + anchors[..., :2]
    half = wh / np.float32(2)
    return np.concatenate([centre - half, centre + half], axis=-1)


_UPPER = np.zeros((0, 0), dtype=bool)


def _upper(n: int) -> np.ndarray:
    """[n, n] strictly upper triangular mask, a view of one cached mask."""
    global _UPPER
    if len(_UPPER) < n:
        _UPPER = np.triu(np.ones((max(n, 2 * len(_UPPER)),) * 2, dtype=bool), k=1)
    return _UPPER[:n, :n]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS, in decreasing score order (torchvision's CPU ``nms``: stable descending
    sort, IoU = inter / (area_i + area_j - inter) in float32, suppress when IoU > threshold).

    Vectorised: the pairwise IoU once, then the greedy recursion solved as a fixed point over the few
    "would suppress" pairs — box j survives iff no surviving earlier box suppresses it; iterating from
    "all survive" settles after as many rounds as the longest suppression chain.
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (np.ascontiguousarray(v) for v in boxes[order].T)
    areas = (x2 - x1) * (y2 - y1)
    w = np.minimum.outer(x2, x2)
    w -= np.maximum.outer(x1, x1)
    np.maximum(w, 0, out=w)
    h = np.minimum.outer(y2, y2)
    h -= np.maximum.outer(y1, y1)
    np.maximum(h, 0, out=h)
    w *= h  # intersections
    union = np.add.outer(areas, areas)
    union -= w
    with np.errstate(divide="ignore", invalid="ignore"):
        w /= union  # IoU
    over = w > np.float32(iou_threshold)
    over &= _upper(len(order))  # only an earlier (higher-scoring) box suppresses a later one
    first, second = np.nonzero(over)
    keep = np.ones(len(order), dtype=bool)
    while len(first):
        new = np.ones(len(order), dtype=bool)
        new[second[keep[first]]] = False
        if np.array_equal(new, keep):
            break
        keep = new
    return order[keep]


def postprocess(confidences: np.ndarray, locations: np.ndarray, anchors: np.ndarray,
                params: DetectionParams = DetectionParams()) -> Detections:
    """One image's raw SSD outputs ([N, C] logits, [N, 4] codes) -> :class:`Detections`."""
    scores = softmax32(confidences)
    boxes = decode_boxes(locations, anchors, params.center_variance, params.size_variance)
    labels, kept_scores, kept_boxes = [], [], []
    if params.class_agnostic:
        best = scores[:, 1:].argmax(axis=1) + 1
        best_score = scores[np.arange(len(scores)), best]
        candidates = np.flatnonzero(best_score > np.float32(params.score_threshold))
        keep = candidates[nms(boxes[candidates], best_score[candidates], params.iou_threshold)][:params.top_k]
        labels, kept_scores, kept_boxes = [best[keep]], [best_score[keep]], [boxes[keep]]
    else:
        # candidates of every class at once: (class, anchor) pairs in class-major order
        classes, anchors_of = np.nonzero(scores[:, 1:].T > np.float32(params.score_threshold))
        bounds = np.searchsorted(classes, np.arange(scores.shape[1]))
        for c in np.unique(classes) + 1:
            candidates = anchors_of[bounds[c - 1]:bounds[c]]
            keep = candidates[nms(boxes[candidates], scores[candidates, c], params.iou_threshold)][:params.top_k]
            labels.append(np.full(len(keep), c, dtype=np.int64))
            kept_scores.append(scores[keep, c])
            kept_boxes.append(boxes[keep])
    if not labels:
        return Detections(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, 4), np.float32))
    result = Detections(np.concatenate(labels).astype(np.int64), np.concatenate(kept_scores).astype(np.float32),
                        np.concatenate(kept_boxes).astype(np.float32))
    if params.max_det is not None and len(result) > params.max_det:
        top = np.sort(np.argsort(-result.scores, kind="stable")[:params.max_det])  # keep class-major order
        result = Detections(result.labels[top], result.scores[top], result.boxes[top])
    return result


def scale_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Normalised boxes -> original-image pixels, clipped to the image (official ``predict_and_save``)."""
    scaled = np.asarray(boxes, dtype=np.float32) * np.array([width, height, width, height], dtype=np.float32)
    return np.clip(scaled, 0, np.array([width, height, width, height], dtype=np.float32))


class Detection(NamedTuple):
    box: List[float]  # x1, y1, x2, y2 in original-image pixels
    score: float
    class_id: int  # 0-79, COCO's 80-class order (the network's label minus 1)
    label: str
