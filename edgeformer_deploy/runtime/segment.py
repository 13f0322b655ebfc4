"""DeepLabv3 masks in numpy, exactly as the official evaluation makes them — at the cost of the original
image size, not of the network's full-resolution logits.

Official: logits at output stride 16 -> x16 bilinear (align_corners False, inside the model) -> nearest
resize to the original H x W (on the logits) -> argmax. Every mask pixel reads one point of the bilinear x16
map, so the board evaluates the bilinear interpolation only at those H x W points (from the tiny stride-16
logits, 21 x 32 x 32 at 512) and takes the argmax: the 21 x 512 x 512 float map (22 MB) never exists. The
interpolation weights and the operation order are PyTorch's CPU kernel's, in float32.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


def bilinear_taps(in_size: int, out_size: int, scale: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch ``upsample_bilinear2d`` (align_corners False, given scale_factor) along one axis:
    (i0, i1, w0, w1) per output index: src = max((d + 0.5) / scale - 0.5, 0), i0 = floor(src),
    i1 = min(i0 + 1, in - 1), w1 = src - i0, w0 = 1 - w1 — in float32."""
    d = np.arange(out_size, dtype=np.float32)
    src = np.maximum((d + np.float32(0.5)) * np.float32(1.0 / scale) - np.float32(0.5), np.float32(0))
    i0 = src.astype(np.int64)  # src >= 0: truncation is floor
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = (src - i0.astype(np.float32)).astype(np.float32)
    w0 = (np.float32(1) - w1).astype(np.float32)
    return i0, i1, w0, w1


def nearest_index(in_size: int, out_size: int) -> np.ndarray:
    """PyTorch's legacy ``nearest`` source index of every output index (float32 scale, floor)."""
    d = np.arange(out_size)
    if out_size == in_size:
        return d
    if out_size == 2 * in_size:
        return d >> 1
    scale = np.float32(in_size) / np.float32(out_size)
    return np.minimum(np.floor(d.astype(np.float32) * scale).astype(np.int64), in_size - 1)


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 fused multiply-add: a * b is exact in float64, one rounding of the sum to float32 (PyTorch's
    CPU kernels are compiled with FMA contraction)."""
    return (a.astype(np.float64) * b + c).astype(np.float32)


def upsampled_logits(logits: np.ndarray, factor: int, rows: Optional[np.ndarray] = None,
                     cols: Optional[np.ndarray] = None) -> np.ndarray:
    """``F.interpolate(logits, scale_factor=factor, mode="bilinear")`` [C, h, w] -> [C, len(rows), len(cols)],
    evaluated only at the given output rows / columns of the factor x map (all by default); bit for bit
    PyTorch's CPU result: fma(fma(v00, wx0, v01 * wx1), wy0, fma(v10, wx0, v11 * wx1) * wy1)."""
    c, h, w = logits.shape
    rows = np.arange(h * factor) if rows is None else rows
    cols = np.arange(w * factor) if cols is None else cols
    y0, y1, wy0, wy1 = (t[rows] for t in bilinear_taps(h, h * factor, factor))
    x0, x1, wx0, wx1 = (t[cols] for t in bilinear_taps(w, w * factor, factor))
    x = np.asarray(logits, dtype=np.float32)
    top, bottom = x[:, y0], x[:, y1]  # [C, rows, w]
    t0 = _fma(top[:, :, x0], wx0, top[:, :, x1] * wx1)
    t1 = _fma(bottom[:, :, x0], wx0, bottom[:, :, x1] * wx1)
    return _fma(t0, wy0[:, None], t1 * wy1[:, None])


POINTS_PER_CHUNK = 1 << 15  # bounds the float64 scratch to C x 32768 values (about 5 MB for 21 classes)
# A cell of the stride-16 grid whose 4 corners share their best class with a margin above this fraction of
# the largest |logit| has that class at every point inside: the interpolation is a convex combination, and
# its float32 rounding error is a few ulps of the largest logit (~1e-6 relative) — 100x below the margin.
CERTAIN_MARGIN = 1e-4


def official_mask(logits_os16: np.ndarray, factor: int, height: int, width: int) -> np.ndarray:
    """[C, h, w] stride-16 logits -> the official H x W uint8 class mask (bilinear x factor, nearest to
    H x W, argmax; ties to the lowest class, as torch.argmax).

    Pixels in grid cells whose four corners agree with a clear margin take the corners' class directly;
    only the others are interpolated (PyTorch's arithmetic, in chunks) — the same mask at a fraction of
    the cost."""
    c, h, w = logits_os16.shape
    x = np.asarray(logits_os16, dtype=np.float32)
    rows, cols = nearest_index(h * factor, height), nearest_index(w * factor, width)
    y0, y1, wy0, wy1 = (t[rows] for t in bilinear_taps(h, h * factor, factor))
    x0, x1, wx0, wx1 = (t[cols] for t in bilinear_taps(w, w * factor, factor))
    top2 = np.partition(x, c - 2, axis=0)[c - 2:]  # second largest, largest
    best, margin = x.argmax(axis=0), top2[1] - top2[0]  # [h, w]
    tolerance = CERTAIN_MARGIN * float(np.abs(x).max())
    corners = [(best[yy][:, xx], margin[yy][:, xx]) for yy in (y0, y1) for xx in (x0, x1)]  # [H, W] each
    mask = corners[0][0].astype(np.uint8)
    certain = np.ones((height, width), dtype=bool)
    for b, m in corners:
        certain &= (b == corners[0][0]) & (m > tolerance)
    py, px = np.nonzero(~certain)
    for start in range(0, len(py), POINTS_PER_CHUNK):
        yy, xx = py[start:start + POINTS_PER_CHUNK], px[start:start + POINTS_PER_CHUNK]
        a, b = y0[yy], y1[yy]
        l, r = x0[xx], x1[xx]
        t0 = _fma(x[:, a, l], wx0[xx], x[:, a, r] * wx1[xx])
        t1 = _fma(x[:, b, l], wx0[xx], x[:, b, r] * wx1[xx])
        mask[yy, xx] = _fma(t0, wy0[yy], t1 * wy1[yy]).argmax(axis=0)
    return mask
