"""``edgeformer-predict --save DIR``: the image with its detections drawn (Pillow only)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

from PIL import ImageDraw

from .errors import PredictError
from .folders import folder_problem
from .preprocess import read_image

PALETTE = [(255, 56, 56), (255, 157, 151), (255, 112, 31), (255, 178, 29), (207, 210, 49), (72, 249, 10),
           (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168), (0, 194, 255),
           (52, 69, 147), (100, 115, 255), (0, 24, 236), (132, 56, 255), (82, 0, 133), (203, 56, 255),
           (255, 149, 200), (255, 55, 199)]


def prepare_folder(folder: Path) -> None:
    """Create ``folder`` (one line if it cannot be), before any image is processed."""
    problem = folder_problem(folder, "--save folder")
    if problem:
        raise PredictError(problem)


def draw_detections(path: Path, detections: Sequence, folder: Path) -> Path:
    """Write ``<folder>/<image name>`` (same format; PNG for formats Pillow cannot write) with the boxes and
    labels drawn; the file appears complete or not at all."""
    image = read_image(path).copy()
    canvas = ImageDraw.Draw(image)
    width = max(1, round(min(image.size) / 300))
    for d in sorted(detections, key=lambda d: d.score):  # highest scores drawn last, on top
        color = PALETTE[d.class_id % len(PALETTE)]
        canvas.rectangle(d.box, outline=color, width=width)
        text = f"{d.label} {d.score:.2f}"
        left, top = d.box[0], max(0, d.box[1] - 11)
        box = canvas.textbbox((left, top), text)
        canvas.rectangle(box, fill=color)
        canvas.text((left, top), text, fill=(255, 255, 255))
    target = Path(folder) / Path(path).name
    suffix = target.suffix.lower()
    if suffix not in (".jpg", ".jpeg", ".png", ".bmp", ".webp"):
        target = target.with_suffix(".png")
    fd, tmp = tempfile.mkstemp(prefix=".draw-", suffix=target.suffix, dir=folder)
    os.close(fd)
    try:
        image.save(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
