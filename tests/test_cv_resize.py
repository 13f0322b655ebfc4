"""``cv_resize.resize_linear`` = ``cv2.resize(..., INTER_LINEAR)`` on uint8, pixel for pixel (OpenCV is the
reference here, from the dev extra; the board runs the numpy code without it)."""
from __future__ import annotations

import numpy as np
import pytest

from edgeformer_deploy.runtime.cv_resize import resize_linear

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (dev extra) is the reference")


def _image(rng, h, w, c, smooth):
    image = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    return cv2.GaussianBlur(image, (7, 7), 3).reshape(h, w, c) if smooth else image


@pytest.mark.parametrize("seed", range(4))
def test_random_sizes_up_and_down(seed):
    rng = np.random.default_rng(seed)
    for trial in range(150):
        h, w = (int(v) for v in rng.integers(1, 160, 2))
        new_h, new_w = (int(v) for v in rng.integers(1, 240, 2))
        image = _image(rng, h, w, int(rng.choice([1, 3, 4])), smooth=trial % 2 == 0)
        reference = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR).reshape(new_h, new_w, -1)
        assert np.array_equal(resize_linear(image, new_w, new_h), reference), (h, w, new_h, new_w)


def test_window_equals_the_crop_of_the_full_resize():
    rng = np.random.default_rng(7)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(2, 700, 2))
        new_h, new_w = (int(v) for v in rng.integers(2, 500, 2))
        image = _image(rng, h, w, 3, smooth=True)
        r0, c0 = int(rng.integers(0, new_h)), int(rng.integers(0, new_w))
        r1, c1 = int(rng.integers(r0 + 1, new_h + 1)), int(rng.integers(c0 + 1, new_w + 1))
        full = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(resize_linear(image, new_w, new_h, rows=(r0, r1), cols=(c0, c1)), full[r0:r1, c0:c1])


def test_same_size_and_integer_factors():
    rng = np.random.default_rng(3)
    image = _image(rng, 64, 96, 3, smooth=False)
    for new_w, new_h in [(96, 64), (48, 32), (192, 128), (24, 16), (96, 32)]:  # copy, x2 (INTER_AREA path), ...
        assert np.array_equal(resize_linear(image, new_w, new_h),
                              cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR))
