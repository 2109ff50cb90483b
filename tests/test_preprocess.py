"""The two evaluation transforms, against references written pixel by pixel."""
import math

import numpy as np
import pytest
from PIL import Image

from mobinumba.preprocess import preprocess_image


def naive_resize_bilinear_tf(pixels, out_h, out_w):
    """TF 1.x resize_bilinear(align_corners=False) one output pixel at a time, float32."""
    in_h, in_w = pixels.shape[:2]
    scale_y, scale_x = np.float32(in_h / out_h), np.float32(in_w / out_w)
    out = np.zeros((out_h, out_w, pixels.shape[2]), np.float32)
    for y in range(out_h):
        source_y = np.float32(y) * scale_y
        top, fy = int(math.floor(source_y)), np.float32(source_y - math.floor(source_y))
        bottom = min(top + 1, in_h - 1)
        for x in range(out_w):
            source_x = np.float32(x) * scale_x
            left, fx = int(math.floor(source_x)), np.float32(source_x - math.floor(source_x))
            right = min(left + 1, in_w - 1)
            upper = pixels[top, left] + (pixels[top, right] - pixels[top, left]) * fx
            lower = pixels[bottom, left] + (pixels[bottom, right] - pixels[bottom, left]) * fx
            out[y, x] = upper + (lower - upper) * fy
    return out


@pytest.fixture(scope="module")
def photo():
    """A 61 x 47 RGB image with structure in both directions."""
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (47, 61, 3), dtype=np.uint8))


@pytest.mark.parametrize("size,crop_pct", [(16, 0.875), (32, 1.0), (40, 0.5), (64, 0.875)])
def test_central_crop_with_tf_bilinear_matches_tf_slim(photo, size, crop_pct):
    pixels = np.asarray(photo, np.float32) / 255  # (47, 61, 3)
    # tf.image.central_crop: start = int((side - side * fraction) / 2), the same cut at both ends.
    top, left = int((47 - 47 * crop_pct) / 2), int((61 - 61 * crop_pct) / 2)
    cropped = pixels[top:47 - top, left:61 - left]
    expected = (naive_resize_bilinear_tf(cropped, size, size) - 0.5) / 0.5
    actual = preprocess_image(photo, size, crop_pct, "bilinear_tf", (0.5,) * 3, (0.5,) * 3,
                              resize="central_crop")
    np.testing.assert_allclose(actual, expected.transpose(2, 0, 1), atol=1e-6)


def test_central_crop_with_a_pillow_filter_squashes_the_crop(photo):
    expected = np.asarray(photo.crop((3, 2, 58, 45)).resize((24, 24), Image.Resampling.BICUBIC),
                          np.float32) / 255  # crop_pct 0.9: int(6.1 / 2) = 3, int(4.7 / 2) = 2
    actual = preprocess_image(photo, 24, 0.9, "bicubic", (0.0,) * 3, (1.0,) * 3,
                              resize="central_crop")
    np.testing.assert_allclose(actual, expected.transpose(2, 0, 1), atol=1e-6)


def test_shorter_side_with_tf_bilinear(photo):
    # Shorter side 47 -> floor(32 / 0.8) = 40, longer 61 -> int(40 * 61 / 47) = 51; crop 32.
    pixels = np.asarray(photo, np.float32) / 255
    resized = naive_resize_bilinear_tf(pixels, 40, 51)
    top, left = int(round((40 - 32) / 2)), int(round((51 - 32) / 2))
    expected = resized[top:top + 32, left:left + 32]
    actual = preprocess_image(photo, 32, 0.8, "bilinear_tf", (0.0,) * 3, (1.0,) * 3)
    np.testing.assert_allclose(actual, expected.transpose(2, 0, 1), atol=1e-6)
