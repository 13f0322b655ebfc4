"""Preprocessing = the official ml-cvnets (v0.1, OpenCV) evaluation transform, for every image kind."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgeformer_deploy.runtime.errors import ImageError
from edgeformer_deploy.runtime.preprocess import (load_image, preprocess, read_image, resize_crop,
                                                  resized_size, sample_images, to_model_input)


def opencv_reference(rgb: np.ndarray, resize: int, crop: int) -> np.ndarray:
    """The official transform, verbatim in structure: ml-cvnets v0.1 ``_resize_fn`` + ``CenterCrop``."""
    try:
        import cv2
    except ImportError:
        pytest.fail("opencv-python-headless is needed as the reference (it is in the [dev] extra)")
    h, w = rgb.shape[:2]
    if not ((w <= h and w == resize) or (h <= w and h == resize)):
        size_w, size_h = (resize, int(resize * h / w)) if w < h else (int(resize * w / h), resize)
        rgb = cv2.resize(rgb, dsize=(size_w, size_h), interpolation=cv2.INTER_LINEAR)
    h, w = rgb.shape[:2]
    i, j = (h - crop) // 2, (w - crop) // 2
    return rgb[i:i + crop, j:j + crop]


@pytest.mark.parametrize("shape", [(384, 577), (577, 384), (300, 451), (288, 400), (100, 61), (1200, 900)])
def test_matches_opencv_exactly(shape):
    rng = np.random.default_rng(sum(shape))
    smooth = rng.integers(0, 256, (shape[0] // 8 + 2, shape[1] // 8 + 2, 3), dtype=np.uint8)
    rgb = np.asarray(Image.fromarray(smooth).resize(shape[::-1], Image.Resampling.BICUBIC))
    rgb = np.clip(rgb.astype(int) + rng.integers(-20, 21, rgb.shape), 0, 255).astype(np.uint8)  # + detail
    ours = resize_crop(Image.fromarray(rgb), 288, 256)
    reference = opencv_reference(rgb, 288, 256)
    assert ours.shape == reference.shape == (256, 256, 3)
    assert np.array_equal(ours, reference)  # OpenCV's fixed-point arithmetic, reproduced bit for bit


def test_real_photos_match_opencv():
    for path in sample_images():
        rgb = np.asarray(Image.open(path).convert("RGB"))
        assert np.array_equal(resize_crop(Image.fromarray(rgb), 288, 256), opencv_reference(rgb, 288, 256)), path.name


def test_long_side_is_truncated_like_ml_cvnets():
    assert resized_size(577, 384, 288) == (432, 288)  # 288 * 577 / 384 = 432.75 -> 432, not 433
    assert resized_size(384, 577, 288) == (288, 432)


def test_preprocess_contract():
    x = preprocess(sample_images()[0], 256)
    assert x.shape == (1, 3, 256, 256) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1


def _asymmetric(size=(90, 60)) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def test_exif_orientation_is_applied(tmp_path):
    rgb = _asymmetric()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(rgb).save(tmp_path / "rotated.png", exif=exif)
    shown = np.asarray(load_image(tmp_path / "rotated.png"))
    assert np.array_equal(shown, np.rot90(rgb, k=-1))


@pytest.mark.parametrize("kind", ["png_rgba", "png_palette_transparent", "png_gray", "png_16bit",
                                  "bmp", "webp_lossless", "jpeg_cmyk"])
def test_image_kinds(tmp_path, kind):
    rgb = _asymmetric()
    gray = rgb[..., 0]
    path = tmp_path / f"img.{kind.split('_')[0]}"
    if kind == "png_rgba":
        alpha = np.full(gray.shape, 255, np.uint8)
        alpha[:, :10] = 0  # fully transparent strip -> white background
        Image.fromarray(np.dstack([rgb, alpha])).save(path)
        expected = rgb.copy()
        expected[:, :10] = 255
    elif kind == "png_palette_transparent":
        image = Image.fromarray(rgb).quantize(16)
        image.info["transparency"] = 0
        image.save(path, transparency=0)
        expected = np.asarray(image.convert("RGBA"))
        expected = np.where(expected[..., 3:] == 0, 255, expected[..., :3]).astype(np.uint8)
    elif kind == "png_gray":
        Image.fromarray(gray).save(path)
        expected = np.dstack([gray] * 3)
    elif kind == "png_16bit":
        Image.fromarray(gray.astype(np.uint16) * 257).save(path)  # 16-bit grayscale PNG
        expected = np.dstack([gray] * 3)  # top 8 bits, as OpenCV's 8-bit read
    elif kind == "bmp":
        Image.fromarray(rgb).save(path)
        expected = rgb
    elif kind == "webp_lossless":
        Image.fromarray(rgb).save(path, lossless=True)
        expected = rgb
    else:
        Image.fromarray(rgb).convert("CMYK").save(path)
        expected = np.asarray(Image.open(path).convert("RGB"))
    assert np.array_equal(np.asarray(read_image(path)), expected)


def test_bad_files_raise_one_line_errors(tmp_path):
    (tmp_path / "notes.jpg").write_text("not an image")
    good = tmp_path / "good.jpg"
    Image.fromarray(_asymmetric((400, 300))).save(good, quality=95)
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:2000])
    for name, reason in [("missing.jpg", "file not found"), ("notes.jpg", "not an image"),
                         ("cut.jpg", "truncated or corrupt")]:
        with pytest.raises(ImageError, match=reason) as info:
            read_image(tmp_path / name)
        assert "\n" not in str(info.value)


def test_model_input_layouts_and_quantisation():
    pixels = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3) * 2
    nchw = to_model_input(pixels, "NCHW", "float32")
    assert nchw.shape == (2, 3, 4, 4) and np.array_equal(nchw, pixels.transpose(0, 3, 1, 2) / np.float32(255))
    assert np.array_equal(to_model_input(pixels, "NHWC", "uint8"), pixels)  # RKNN: raw pixels
    q = to_model_input(pixels, "NHWC", "int8", scale=1 / 255, zero_point=-128)
    assert q.dtype == np.int8 and np.array_equal(q.astype(int), pixels.astype(int) - 128)
    coarse = to_model_input(pixels, "NHWC", "int8", scale=0.5 / 255, zero_point=0)  # saturates at 127
    assert coarse.max() == 127 and np.array_equal(coarse.astype(int), np.minimum(pixels.astype(int) * 2, 127))
