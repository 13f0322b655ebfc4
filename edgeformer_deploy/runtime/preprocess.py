"""Image preprocessing of the official ml-cvnets evaluation, in numpy + Pillow only.

RGB, resize the short side to ``resize`` (bilinear), center-crop ``crop`` x ``crop``, scale to [0, 1].
Export verification uses this same code, so what is verified is what the board computes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

ImageLike = Union[str, Path, Image.Image, np.ndarray]

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "samples"


def sample_images() -> list[Path]:
    """Real photos shipped with the package (public domain / CC0, see assets/samples/LICENSE.md)."""
    return sorted(SAMPLES_DIR.glob("*.jpg"))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image (RGBA, palette, grayscale, 16-bit, CMYK …) as 8-bit RGB, EXIF orientation applied."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grayscale: Pillow's convert() clips instead of scaling; keep the top 8 bits.
        array = np.asarray(image, dtype=np.uint32)
        shift = 8 if array.max(initial=0) > 255 else 0
        image = Image.fromarray((array >> shift).clip(0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        image = Image.fromarray(np.asarray(image).clip(0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def load_image(source: ImageLike) -> Image.Image:
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, np.ndarray):
        if source.ndim == 2:
            source = np.stack([source] * 3, axis=-1)
        if source.dtype != np.uint8:
            raise ValueError("numpy images must be uint8 HxW or HxWx3 (RGB)")
        return Image.fromarray(source[..., :3])
    with Image.open(source) as image:
        image.load()
        return to_rgb(image)


def resize_crop(image: Image.Image, resize: int, crop: int) -> np.ndarray:
    """Short side to ``resize`` (bilinear), center crop -> HxWx3 uint8."""
    width, height = image.size
    scale = resize / min(width, height)
    new_w, new_h = max(crop, round(width * scale)), max(crop, round(height * scale))
    image = image.resize((new_w, new_h), Image.BILINEAR)
    left, top = (new_w - crop) // 2, (new_h - crop) // 2
    return np.asarray(image.crop((left, top, left + crop, top + crop)), dtype=np.uint8)


def preprocess(source: ImageLike, imgsz: int, resize: int | None = None) -> np.ndarray:
    """One image -> float32 NCHW [1, 3, imgsz, imgsz] in [0, 1] (the models' native input)."""
    pixels = resize_crop(load_image(source), resize or imgsz + 32, imgsz)
    return (pixels.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
