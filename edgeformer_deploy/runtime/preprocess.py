"""Image preprocessing of the official ml-cvnets evaluation, in numpy + Pillow only.

The official EdgeFormer (ParC-Net, on ml-cvnets v0.1) evaluation reads images with ``cv2.imread`` (BGR)
and transforms them with OpenCV: short side to ``resize`` with ``cv2.INTER_LINEAR`` (long side
``int(resize * long / short)``, no resize when the short side already has that size), center crop
``crop`` x ``crop`` at ``(h - crop) // 2``, scale to [0, 1], no mean/std. The resize here is OpenCV's
fixed-point arithmetic reproduced bit for bit (:mod:`.cv_resize`), computed only for the crop window.
Images are decoded as RGB (Pillow and OpenCV decode JPEGs to the same pixels); the channel order the
artifact takes is applied last, in :func:`to_model_input`. Export verification uses this same code, so
what is verified is what the board computes.
"""
from __future__ import annotations

import stat
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .cv_resize import resize_linear
from .errors import ImageError

ImageLike = Union[str, Path, Image.Image, np.ndarray]

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "samples"
CHANNEL_ORDERS = ("RGB", "BGR")
# "center_crop": the classification evaluation (short side to resize, center crop);
# "stretch": the detection evaluation (--resize-input-images: cv2.resize straight to crop x crop)
RESIZE_MODES = ("center_crop", "stretch")


def sample_images() -> list[Path]:
    """Real photos shipped with the package (public domain / CC0, see assets/samples/LICENSE.md)."""
    return sorted(SAMPLES_DIR.glob("*.jpg"))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image (RGBA, palette, grayscale, 16-bit, CMYK …) as 8-bit RGB, EXIF orientation applied."""
    if image.getexif().get(0x0112, 1) not in (0, 1):  # EXIF orientation; transposing copies, so only if needed
        image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grayscale: Pillow's convert() clips instead of scaling; keep the top 8 bits.
        array = np.asarray(image, dtype=np.uint32)
        shift = 8 if array.max(initial=0) > 255 else 0
        image = Image.fromarray((array >> shift).clip(0, 255).astype(np.uint8))
    elif image.mode == "F":
        image = Image.fromarray(np.asarray(image).clip(0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image if image.mode == "RGB" else image.convert("RGB")  # convert() would copy an RGB image


def read_image(path: Union[str, Path]) -> Image.Image:
    """Open an image file as RGB; raises :class:`ImageError` with a one-line reason. Only regular files
    are opened (a FIFO or device named like a photo would block or never end)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise ImageError(f"{path}: is a folder, not an image")
    if not stat.S_ISREG(mode):
        raise ImageError(f"{path}: not a regular file (a pipe, socket or device), not opened")
    try:
        # Large photos are fine: only the crop window is resized. Pillow's hard limit (2x MAX_IMAGE_PIXELS)
        # still refuses decompression bombs, as an error instead of a warning.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return to_rgb(image)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image (Pillow cannot identify the file)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: image too large ({exc})") from None
    except MemoryError:
        raise ImageError(f"{path}: image too large to decode in the memory available") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{path}: truncated or corrupt image ({exc})") from None


def load_image(source: ImageLike) -> Image.Image:
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, np.ndarray):
        if source.ndim == 2:
            source = np.stack([source] * 3, axis=-1)
        if source.dtype != np.uint8 or source.ndim != 3 or source.shape[-1] not in (3, 4):
            raise ImageError("numpy images must be uint8 HxW, HxWx3 (RGB) or HxWx4 (RGBA)")
        return to_rgb(Image.fromarray(np.ascontiguousarray(source)))
    return read_image(source)


def resized_size(width: int, height: int, resize: int) -> tuple[int, int]:
    """ml-cvnets' ``_resize_fn`` for an int size: short side -> resize, long side truncated."""
    if width < height:
        return resize, int(resize * height / width)
    return int(resize * width / height), resize


def resize_crop(image: Union[Image.Image, np.ndarray], resize: int, crop: int) -> np.ndarray:
    """Short side to ``resize`` (OpenCV INTER_LINEAR, bit-exact), center crop -> crop x crop x 3 uint8.

    Only the crop window of the resized image is computed: the cost is bounded by the crop, whatever
    the image's size or aspect ratio."""
    if resize < crop:
        raise ValueError(f"resize ({resize}) must be at least the crop size ({crop})")
    width, height = image.size if isinstance(image, Image.Image) else image.shape[1::-1]
    if min(width, height) == resize:  # ml-cvnets leaves an image whose short side fits untouched
        top, left = (height - crop) // 2, (width - crop) // 2
        return _pixels(image, (left, top, left + crop, top + crop))
    new_w, new_h = resized_size(width, height, resize)
    top, left = (new_h - crop) // 2, (new_w - crop) // 2
    rows, cols = (top, top + crop), (left, left + crop)
    if not isinstance(image, Image.Image):
        return resize_linear(np.asarray(image, dtype=np.uint8), new_w, new_h, rows=rows, cols=cols)
    # Only the source rows the crop window reads are copied out of the decoded image (a 10000 x 10000
    # photo for a 64 x 64 model is never converted to an array whole).
    def fetch_rows(index: np.ndarray, x0: int, x1: int) -> np.ndarray:
        return np.stack([np.asarray(image.crop((x0, int(y), x1, int(y) + 1)), dtype=np.uint8)[0]
                         for y in index])

    return resize_linear(None, new_w, new_h, rows=rows, cols=cols, source_shape=(height, width),
                         fetch_rows=fetch_rows)


def resize_stretch(image: Union[Image.Image, np.ndarray], size: int) -> np.ndarray:
    """``cv2.resize(image, (size, size), INTER_LINEAR)`` bit-exactly (aspect ratio not kept)."""
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.shape[:2] == (size, size):
        return np.ascontiguousarray(pixels)
    return resize_linear(pixels, size, size, rows=(0, size), cols=(0, size))


def fit_image(image: Union[Image.Image, np.ndarray], resize: int, crop: int, mode: str = "center_crop") -> np.ndarray:
    """The network's crop x crop x 3 uint8 view of ``image`` under ``mode`` (see RESIZE_MODES)."""
    if mode == "stretch":
        return resize_stretch(image, crop)
    return resize_crop(image, resize, crop)


def _pixels(image: Union[Image.Image, np.ndarray], box) -> np.ndarray:
    """H x W x 3 uint8 of ``image`` cropped to ``box`` (left, top, right, bottom)."""
    left, top, right, bottom = box
    if isinstance(image, Image.Image):
        return np.asarray(image.crop(box), dtype=np.uint8)
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[top:bottom, left:right])


def preprocess(source: ImageLike, imgsz: int, resize: Optional[int] = None,
               channel_order: str = "RGB", mode: str = "center_crop") -> np.ndarray:
    """One image -> float32 NCHW [1, 3, imgsz, imgsz] in [0, 1], channels in ``channel_order``
    (``"BGR"`` is what the official pipeline feeds the official checkpoints)."""
    pixels = fit_image(load_image(source), resize or imgsz + 32, imgsz, mode)[None]
    return to_model_input(pixels, "NCHW", "float32", channel_order=channel_order)


def check_channel_order(order: str) -> str:
    """``order`` upper-cased if it is RGB or BGR, else ``ValueError``."""
    name = str(order).upper()
    if name not in CHANNEL_ORDERS:
        raise ValueError(f"channel order must be RGB or BGR, got {order!r}")
    return name


def to_model_input(pixels: np.ndarray, layout: str, dtype: str, scale: Optional[float] = None,
                   zero_point: Optional[int] = None, channel_order: str = "RGB") -> np.ndarray:
    """NHWC uint8 RGB crops -> the artifact's input tensor (channels reordered to ``channel_order``).

    float32/float16: [0, 1] (identical arithmetic to :func:`preprocess`); uint8 without quantisation:
    the raw pixels (RKNN normalises on the NPU); quantised int8/uint8: ``round(x / scale) + zero_point``
    of the [0, 1] values, saturated, as TFLite's own quantiser does.
    """
    if check_channel_order(channel_order) == "BGR":
        pixels = pixels[..., ::-1]
    if dtype == "uint8" and scale is None:
        tensor = np.ascontiguousarray(pixels, dtype=np.uint8)
    else:
        x = pixels.astype(np.float32) / 255.0
        if scale is not None:
            info = np.iinfo(dtype)
            scaled = x / np.float32(scale)
            # round half away from zero (std::round, TFLite's quantiser), not numpy's half-to-even
            q = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5) + int(zero_point or 0)
            tensor = np.clip(q, info.min, info.max).astype(dtype)
        else:
            tensor = x.astype(dtype, copy=False)
    return np.ascontiguousarray(tensor.transpose(0, 3, 1, 2)) if layout == "NCHW" else tensor
