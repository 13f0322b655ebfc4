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


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS, in decreasing score order (torchvision's CPU ``nms``: stable descending
    sort, IoU = inter / (area_i + area_j - inter) in float32, suppress when IoU > threshold)."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    columns = [np.ascontiguousarray(v) for v in np.asarray(boxes, dtype=np.float32)[order].T]
    return order[_grouped_nms(*columns, np.zeros(len(order), np.int64), iou_threshold)]


PAIRS_PER_CHUNK = 1 << 20  # bounds the pair arrays (~30 MB) whatever the candidate count


def _grouped_nms(x1, y1, x2, y2, groups, iou_threshold: float, top_k: Optional[int] = None) -> np.ndarray:
    """Keep mask of greedy NMS run separately in each group, over boxes sorted by group and then by
    decreasing score (float32 columns); with ``top_k``, only each group's first top_k survivors.

    Instead of every group's n x n IoU matrix, a sweep over the boxes sorted by (group, x1) lists the pairs
    that can suppress: IoU <= x-overlap / width of either box, so box k can only suppress, or be suppressed
    by, a later box j whose x1 < x2_k - iou * width_k. That bound is taken with a 1e-5 relative slack — far
    more than float32 rounding moves an IoU (relative 1e-6: the coordinates are exact, nothing cancels) — so
    every pair that could pass is scored, with torchvision's float32 IoU operation for operation. The greedy
    recursion is then a fixed point over the suppressing pairs: box j survives iff no surviving earlier box
    of its group suppresses it; iterating from "all survive" settles after as many rounds as the longest
    suppression chain. A box with a non-finite coordinate has a non-finite area, hence an IoU of 0 or NaN
    with anything: it neither suppresses nor is suppressed, as in torchvision.
    """
    n = len(x1)
    keep = np.ones(n, dtype=bool)
    finite = np.flatnonzero(np.isfinite(x1) & np.isfinite(y1) & np.isfinite(x2) & np.isfinite(y2))
    if len(finite) < 2:
        return _first_per_group(keep, groups, top_k)
    x_min = float(min(x1[finite].min(), x2[finite].min()))
    span = 2.0 * (float(max(x1[finite].max(), x2[finite].max())) - x_min) + 2.0  # > any box's x-extent
    base = groups[finite] * span - x_min  # float64 sort keys base + x1: groups apart, x1 ascending in each
    keys = base + x1[finite]
    order = np.argsort(keys, kind="stable")
    by_x, base, keys = finite[order].astype(np.int32), base[order], keys[order]
    X1, Y1, X2, Y2 = x1[by_x], y1[by_x], x2[by_x], y2[by_x]
    areas = (X2 - X1) * (Y2 - Y1)  # float32, once per box as torchvision does
    width = X2.astype(np.float64) - X1
    reach = X2 - np.float64(iou_threshold) * (1 - 1e-5) * width
    tiny = width < 1e-6 * span  # the bound's float64 arithmetic is not exact enough: the whole overlap
    reach[tiny] = X2[tiny]
    # (rounding in the keys is monotonic: it can only widen the ranges, never drop a pair)
    counts = np.maximum(np.searchsorted(keys, base + reach, side="right") - np.arange(1, len(keys) + 1), 0)
    firsts, seconds = [], []
    starts = np.flatnonzero(counts).astype(np.int32)
    lengths = counts[starts].astype(np.int64)
    cuts = np.searchsorted(np.cumsum(lengths), np.arange(PAIRS_PER_CHUNK, lengths.sum(), PAIRS_PER_CHUNK))
    for begin, end in zip(np.r_[0, cuts], np.r_[cuts, len(starts)]):
        a, b = _ragged_pairs(starts[begin:end], lengths[begin:end])
        w = np.minimum(X2[a], X2[b])
        w -= np.maximum(X1[a], X1[b])
        np.maximum(w, 0, out=w)
        h = np.minimum(Y2[a], Y2[b])
        h -= np.maximum(Y1[a], Y1[b])
        np.maximum(h, 0, out=h)
        w *= h  # intersections
        union = areas[a] + areas[b]
        union -= w
        with np.errstate(divide="ignore", invalid="ignore"):
            w /= union
        over = w > np.float32(iou_threshold)
        i, j = by_x[a[over]], by_x[b[over]]
        firsts.append(np.minimum(i, j))  # the higher-scoring box of the pair is the earlier one
        seconds.append(np.maximum(i, j))
    first, second = np.concatenate(firsts), np.concatenate(seconds)
    while len(first):
        new = np.ones(n, dtype=bool)
        new[second[keep[first]]] = False
        if np.array_equal(new, keep):
            break
        keep = new
    return _first_per_group(keep, groups, top_k)


def _first_per_group(keep: np.ndarray, groups: np.ndarray, top_k: Optional[int]) -> np.ndarray:
    """``keep`` limited to the first ``top_k`` survivors of each group (groups contiguous), in place."""
    kept = np.flatnonzero(keep)
    if top_k is not None and len(kept) > top_k:
        starts = np.flatnonzero(np.r_[True, groups[kept][1:] != groups[kept][:-1]])
        rank = np.arange(len(kept)) - np.repeat(starts, np.diff(np.r_[starts, len(kept)]))
        keep[kept[rank >= top_k]] = False
    return keep


def _ragged_pairs(starts: np.ndarray, lengths: np.ndarray) -> tuple:
    """Index pairs (k, k + 1 .. k + length) for each k in ``starts`` (int32), without a Python loop."""
    total = int(lengths.sum())
    if not total:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    step = np.ones(total, np.int32)  # b as a running sum: +1 inside a run, a jump to the next run's first
    offsets = np.cumsum(lengths) - lengths
    step[0] = starts[0] + 1
    step[offsets[1:]] = (starts[1:] + 1) - (starts[:-1] + lengths[:-1]).astype(np.int32)
    return np.repeat(starts, lengths), np.cumsum(step, dtype=np.int32)


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
    else:  # (anchor, class) candidates, one NMS per class
        foreground = scores[:, 1:]
        flat = np.flatnonzero(foreground > threshold)
        anchor_ids, groups = np.divmod(flat, foreground.shape[1])
        classes = groups + 1
        cand_scores = scores[anchor_ids, classes]
    # one stable sort: by group, then decreasing score (ties keep anchor order, as torchvision's stable sort);
    # the float64 key 2 * group - score is exact and keeps groups apart (scores in [0, 1])
    order = np.argsort(2.0 * groups - cand_scores, kind="stable")
    groups, classes, anchor_ids, cand_scores = groups[order], classes[order], anchor_ids[order], cand_scores[order]
    columns = [np.ascontiguousarray(v) for v in boxes[anchor_ids].T]
    keep = _grouped_nms(*columns, groups, params.iou_threshold, params.top_k)
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
