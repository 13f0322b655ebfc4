"""SSD post-processing in numpy: the official ``SingleShotDetector.predict`` (ml-cvnets v0.1), vectorised.

softmax over all classes (background included) -> decode against the anchors (variances 0.1 / 0.2) -> per
class 1..C-1 keep ``prob > threshold`` -> greedy NMS (suppress IoU > iou, as torchvision's CPU kernel computes
it in float32) -> the first ``top_k`` per class -> concatenated class-major. Every step runs in float32 with
the official operation order, so the official detections are reproduced bit for bit from the same raw
outputs. Options the official code lacks (a global cap, class-agnostic NMS) are off by default.
"""
from __future__ import annotations

import threading
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


PAIRS_PER_CHUNK = 1 << 17  # bounds the pair arrays (~3 MB) whatever the candidate count


class _Scratch(threading.local):
    """Per-thread arrays reused from call to call. A fresh multi-megabyte temporary costs a page fault per
    4 KiB page — on the x86 host as much time as all of post-processing's arithmetic (1,100 faults, ~5 of
    13 ms per call) — because glibc gives the freed memory back to the OS after every call. Arrays up to
    SCRATCH_BYTES each are kept (a few MB per thread)."""

    def __init__(self):
        self.arrays = {}

    def get(self, name: str, size: int, dtype) -> np.ndarray:
        """A 1-D array of ``size`` elements (contents undefined), the same memory as the last call's."""
        kept = self.arrays.get(name)
        if kept is None or kept.dtype != dtype or kept.size < size:
            kept = np.empty(size, dtype)
            if kept.nbytes <= SCRATCH_BYTES:
                self.arrays[name] = kept
        return kept[:size]


SCRATCH_BYTES = 1 << 21
_scratch = _Scratch()


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
    # (ndarray.take throughout: about half the instructions of fancy indexing on the boards' numpy)
    X1, X2 = x1.take(finite), x2.take(finite)
    x_min = float(min(X1.min(), X2.min()))
    span = 2.0 * (float(max(X1.max(), X2.max())) - x_min) + 2.0  # > any box's x-extent
    base = groups.take(finite) * span - x_min  # float64 sort keys base + x1: groups apart, x1 ascending in each
    keys = base + X1
    # ties in any order: equal keys always pair up (reach >= x1), except for boxes with x2 < x1, whose
    # intersection with anything is 0: they cannot suppress or be suppressed either way
    order = np.argsort(keys)
    by_x, base, keys, X1, X2 = finite.take(order), base.take(order), keys.take(order), X1.take(order), X2.take(order)
    Y1, Y2 = y1.take(by_x), y2.take(by_x)
    areas = (X2 - X1) * (Y2 - Y1)  # float32, once per box as torchvision does
    width = X2.astype(np.float64) - X1
    reach = X2 - np.float64(iou_threshold) * (1 - 1e-5) * width
    tiny = width < 1e-6 * span  # the bound's float64 arithmetic is not exact enough: the whole overlap
    reach[tiny] = X2[tiny]
    # (rounding in the keys is monotonic: it can only widen the ranges, never drop a pair)
    counts = np.maximum(np.searchsorted(keys, base + reach, side="right") - np.arange(1, len(keys) + 1), 0)
    firsts, seconds = [], []
    starts = np.flatnonzero(counts)
    lengths = counts.take(starts)
    cuts = np.searchsorted(np.cumsum(lengths), np.arange(PAIRS_PER_CHUNK, lengths.sum(), PAIRS_PER_CHUNK))
    for begin, end in zip(np.r_[0, cuts], np.r_[cuts, len(starts)]):
        # pairs (k, k + 1 .. k + run) in x order: the first box's values repeated over its run, the second
        # box's gathered into reused scratch arrays (take with mode="clip" writes to ``out`` unbuffered),
        # then torchvision's IoU operation for operation
        first_of, run = starts[begin:end], lengths[begin:end]
        b = _run_indices(first_of, run)
        total = len(b)
        p, q, r = (_scratch.get(name, total, np.float32) for name in ("p", "q", "r"))
        w = np.minimum(np.repeat(X2.take(first_of), run), X2.take(b, out=p, mode="clip"), out=p)
        w -= np.maximum(np.repeat(X1.take(first_of), run), X1.take(b, out=q, mode="clip"), out=q)
        np.maximum(w, 0, out=w)
        h = np.minimum(np.repeat(Y2.take(first_of), run), Y2.take(b, out=q, mode="clip"), out=q)
        h -= np.maximum(np.repeat(Y1.take(first_of), run), Y1.take(b, out=r, mode="clip"), out=r)
        np.maximum(h, 0, out=h)
        w *= h  # intersections
        union = np.add(np.repeat(areas.take(first_of), run), areas.take(b, out=r, mode="clip"), out=r)
        union -= w
        with np.errstate(divide="ignore", invalid="ignore"):
            w /= union
        over = np.flatnonzero(np.greater(w, np.float32(iou_threshold), out=_scratch.get("over", total, bool)))
        a = first_of[np.searchsorted(np.cumsum(run), over, side="right")]  # the pairs' first boxes
        i, j = by_x.take(a), by_x.take(b.take(over))
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


def _group_score_order(groups: np.ndarray, scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The permutation ordering candidates by group, then decreasing score, then id: per group, the stable
    descending sort torchvision's NMS does. Positive float32 scores order as their bit patterns, so
    (group, inverted score bits, id) packs into one unique int64 key, which any (fast, unstable) sort
    orders exactly that way."""
    id_bits, group_bits = (int(v.max()).bit_length() if len(v) else 0 for v in (ids, groups))
    if group_bits + 31 + id_bits > 63:
        return np.lexsort((ids, -scores, groups))
    inverted = (1 << 31) - 1 - np.ascontiguousarray(scores, np.float32).view(np.int32).astype(np.int64)
    return np.argsort((groups.astype(np.int64) << (31 + id_bits)) | (inverted << id_bits) | ids)


def _first_per_group(keep: np.ndarray, groups: np.ndarray, top_k: Optional[int]) -> np.ndarray:
    """``keep`` limited to the first ``top_k`` survivors of each group (groups contiguous), in place."""
    kept = np.flatnonzero(keep)
    if top_k is not None and len(kept) > top_k:
        starts = np.flatnonzero(np.r_[True, groups[kept][1:] != groups[kept][:-1]])
        rank = np.arange(len(kept)) - np.repeat(starts, np.diff(np.r_[starts, len(kept)]))
        keep[kept[rank >= top_k]] = False
    return keep


def _run_indices(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """k + 1 .. k + length for each k in ``starts``, concatenated (an intp scratch array), without a Python
    loop: a running sum of steps, +1 inside a run and a jump to the next run's first."""
    total = int(lengths.sum())
    b = _scratch.get("b", total, np.intp)
    if not total:
        return b
    offsets = np.cumsum(lengths) - lengths
    b.fill(1)
    b[0] = starts[0] + 1
    b[offsets[1:]] = (starts[1:] + 1) - (starts[:-1] + lengths[:-1])
    return np.cumsum(b, out=b)


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
    order = _group_score_order(groups, cand_scores, anchor_ids)
    groups, classes, anchor_ids, cand_scores = (v.take(order) for v in (groups, classes, anchor_ids, cand_scores))
    columns = [boxes[:, k].take(anchor_ids) for k in range(4)]
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
