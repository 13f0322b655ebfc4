"""``edgeformer-predict --save DIR``: the image with its detections drawn, or a segmentation mask as a
palette PNG plus a blended overlay (Pillow only). Files appear complete or not at all."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw

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
    if target.suffix.lower() not in (".jpg", ".jpeg", ".png", ".bmp", ".webp"):
        target = target.with_suffix(".png")
    return _save(image, target)


def _save(image: Image.Image, target: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=".draw-", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    try:
        image.save(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def voc_palette() -> list:
    """PASCAL VOC's colour map (class c -> the bits of c spread over R, G, B), 256 entries."""
    palette = []
    for c in range(256):
        r = g = b = 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


OVERLAY_ALPHA = 0.5


def save_mask(path: Path, mask, folder: Path) -> tuple:
    """``<stem>_mask.png`` (palette PNG, VOC colours, pixel value = class id) and ``<stem>_overlay.png``
    (the image blended with the coloured mask)."""
    image = read_image(path)
    stem = Path(path).stem
    height, width = mask.shape
    palette_image = Image.frombytes("P", (width, height), mask.astype("uint8").tobytes())
    palette_image.putpalette(voc_palette())
    overlay = Image.blend(image, palette_image.convert("RGB"), OVERLAY_ALPHA)
    return (_save(palette_image, Path(folder) / f"{stem}_mask.png"),
            _save(overlay, Path(folder) / f"{stem}_overlay.png"))
