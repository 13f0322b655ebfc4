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


ROWS_PER_CHUNK = 64  # bounds the float64 scratch to C x 64 x W (about 6 MB for 21 classes at W = 600)


def official_mask(logits_os16: np.ndarray, factor: int, height: int, width: int) -> np.ndarray:
    """[C, h, w] stride-16 logits -> the official H x W uint8 class mask (bilinear x factor, nearest to
    H x W, argmax; ties to the lowest class, as torch.argmax), computed in chunks of rows."""
    c, h, w = logits_os16.shape
    rows, cols = nearest_index(h * factor, height), nearest_index(w * factor, width)
    mask = np.empty((height, width), dtype=np.uint8)
    for start in range(0, height, ROWS_PER_CHUNK):
        chunk = rows[start:start + ROWS_PER_CHUNK]
        mask[start:start + len(chunk)] = upsampled_logits(logits_os16, factor, chunk, cols).argmax(axis=0)
    return mask
