"""Calibration images for int8 exports: a folder of photos, preprocessed exactly like inference."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..runtime.preprocess import preprocess, sample_images

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def calibration_images(data: Path | None) -> list[Path]:
    """JPEG/PNG/… files of ``--data`` (sorted), or the shipped sample photos when no folder is given."""
    if data is None:
        return sample_images()
    data = Path(data)
    if not data.is_dir():
        raise ExportError(f"--data {data} is not a folder of images")
    try:
        images = sorted(p for p in data.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as exc:
        raise ExportError(f"--data {data} cannot be read: {exc.strerror}") from None
    if not images:
        raise ExportError(f"--data {data} holds no JPEG/PNG/BMP/WebP images")
    return images


def calibration_tensor(images: list[Path], imgsz: int, mode: str = "center_crop") -> np.ndarray:
    """float32 NHWC [n, H, W, 3] in [0, 1], preprocessed exactly like inference (``mode``: the task's resize)."""
    batch = []
    for image in images:
        try:
            batch.append(preprocess(image, imgsz, mode=mode)[0].transpose(1, 2, 0))
        except Exception as exc:  # Pillow raises many types for broken files
            raise ExportError(f"calibration image {image} cannot be read: {exc}") from None
    return np.stack(batch).astype(np.float32)
