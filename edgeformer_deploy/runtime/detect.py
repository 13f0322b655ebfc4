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
    """float32 softmax over the last axis: exp(x - max) / sum (in place on one new array)."""
    x = np.asarray(logits, dtype=np.float32)
    e = x - x.max(axis=-1, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=-1, keepdims=True)
    return e


def decode_boxes(locations: np.ndarray, anchors: np.ndarray, center_variance: float = 0.1,
                 size_variance: float = 0.2) -> np.ndarray:
    """Official ``convert_locations_to_boxes`` + ``center_form_to_corner_form`` in float32."""
    loc = np.asarray(locations, dtype=np.float32)
    wh = np.exp(loc[..., 2:] * np.float32(size_variance)) * anchors[..., 2:]
    centre = loc[..., :2] * np.float32(center_variance) * anchors[..., 2:] + anchors[..., :2]
    half = wh / np.float32(2)
    return np.concatenate([centre - half, centre + half], axis=-1)


class _Workspace:
    """Reused scratch matrices for :func:`nms`: fresh n x n temporaries above glibc's mmap threshold cost a
    page fault per page on every call (measured: 3x the arithmetic itself)."""

    def __init__(self):
        self.size = 0

    def get(self, n: int):
        if n > self.size:
            self.size = max(n, 2 * self.size, 64)
            self.a = np.empty(self.size * self.size, np.float32)
            self.b = np.empty(self.size * self.size, np.float32)
            self.over = np.empty(self.size * self.size, bool)
            self.upper = np.triu(np.ones((self.size, self.size), dtype=bool), k=1)
        return (self.a[:n * n].reshape(n, n), self.b[:n * n].reshape(n, n), self.over[:n * n].reshape(n, n),
                self.upper[:n, :n])


_WORKSPACE = _Workspace()


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS, in decreasing score order (torchvision's CPU ``nms``: stable descending
    sort, IoU = inter / (area_i + area_j - inter) in float32, suppress when IoU > threshold)."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    columns = [np.ascontiguousarray(v) for v in np.asarray(boxes, dtype=np.float32)[order].T]
    return order[_nms_sorted(*columns, iou_threshold)]


def _nms_sorted(x1, y1, x2, y2, iou_threshold: float) -> np.ndarray:
    """Keep mask of greedy NMS over boxes already in decreasing score order (float32 columns).

    Vectorised: the pairwise IoU once, then the greedy recursion solved as a fixed point over the few
    "would suppress" pairs — box j survives iff no surviving earlier box suppresses it; iterating from
    "all survive" settles after as many rounds as the longest suppression chain.
    """
    n = len(x1)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    areas = (x2 - x1) * (y2 - y1)
    w, h, over, upper = _WORKSPACE.get(n)
    np.minimum(x2[:, None], x2[None, :], out=w)
    w -= np.maximum(x1[:, None], x1[None, :], out=h)
    np.maximum(w, 0, out=w)
    np.minimum(y2[:, None], y2[None, :], out=h)
    h -= np.maximum(y1[:, None], y1[None, :])
    np.maximum(h, 0, out=h)
    w *= h  # intersections
    np.add(areas[:, None], areas[None, :], out=h)
    h -= w  # unions
    with np.errstate(divide="ignore", invalid="ignore"):
        w /= h  # IoU
    np.greater(w, np.float32(iou_threshold), out=over)
    over &= upper  # only an earlier (higher-scoring) box suppresses a later one
    pairs = np.flatnonzero(over)
    if not len(pairs):
        return keep
    first, second = np.divmod(pairs, n)
    while True:
        new = np.ones(n, dtype=bool)
        new[second[keep[first]]] = False
        if np.array_equal(new, keep):
            return keep
        keep = new


def postprocess(confidences: np.ndarray, locations: np.ndarray, anchors: np.ndarray,
                params: DetectionParams = DetectionParams()) -> Detections:
    """One image's raw SSD outputs ([N, C] logits, [N, 4] codes) -> :class:`Detections`."""
    scores = softmax32(confidences)
    boxes = decode_boxes(locations, anchors, params.center_variance, params.size_variance)
    threshold = np.float32(params.score_threshold)
    if params.class_agnostic:  # each anchor's best class, one NMS over all
        best = scores[:, 1:].argmax(axis=1) + 1
        best_score = scores[np.arange(len(scores)), best]
        anchor_ids = np.flatnonzero(best_score > threshold)
        classes, cand_scores = best[anchor_ids], best_score[anchor_ids]
        groups = np.zeros(len(anchor_ids), dtype=np.int64)
    else:  # (class, anchor) candidates, class-major: one NMS per class
        groups, anchor_ids = np.nonzero(scores[:, 1:].T > threshold)
        classes, cand_scores = groups + 1, scores[anchor_ids, groups + 1]
    # one stable sort: by group, then decreasing score (ties keep anchor order, as torchvision's stable sort)
    order = np.lexsort((-cand_scores, groups))
    groups, classes, anchor_ids, cand_scores = groups[order], classes[order], anchor_ids[order], cand_scores[order]
    columns = [np.ascontiguousarray(v) for v in boxes[anchor_ids].T]
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]]) if len(groups) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(groups)].astype(np.int64)
    keep = np.zeros(len(groups), dtype=bool)
    for lo, hi in zip(starts, ends):
        kept = lo + np.flatnonzero(_nms_sorted(*(c[lo:hi] for c in columns), params.iou_threshold))
        keep[kept[:params.top_k]] = True  # the first top_k per group, after NMS
    result = Detections(classes[keep].astype(np.int64), cand_scores[keep].astype(np.float32),
                        boxes[anchor_ids[keep]].astype(np.float32))
    if params.max_det is not None and len(result) > params.max_det:
        top = np.sort(np.argsort(-result.scores, kind="stable")[:params.max_det])  # keep class-major order
        result = Detections(result.labels[top], result.scores[top], result.boxes[top])
    return result


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU [len(a), len(b)] of corner-form boxes (x1, y1, x2, y2); an empty union gives 0."""
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-12)


def scale_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Normalised boxes -> original-image pixels, clipped to the image (official ``predict_and_save``)."""
    scaled = np.asarray(boxes, dtype=np.float32) * np.array([width, height, width, height], dtype=np.float32)
    return np.clip(scaled, 0, np.array([width, height, width, height], dtype=np.float32))


class Detection(NamedTuple):
    box: List[float]  # x1, y1, x2, y2 in original-image pixels
    score: float
    class_id: int  # 0-79, COCO's 80-class order (the network's label minus 1)
    label: str
