"""Image decoding and the evaluation transform stored with the weights.

Two transforms, chosen by the weight file's `resize` attribute:
- `shorter_side` (timm's / torchvision's eval pipeline): resize the shorter side to
  floor(size / crop_pct) with the file's interpolation, then center-crop size x size;
- `central_crop` (TF-slim's inception_preprocessing.preprocess_for_eval): crop the central
  crop_pct of each side (tf.image.central_crop), then resize that to size x size, aspect
  ratio not kept.
Then pixels are scaled to [0, 1], `mean` is subtracted and the result divided by `std`.

Interpolations are Pillow's filters (antialiased when shrinking), plus `bilinear_tf`:
TensorFlow 1.x tf.image.resize_bilinear (align_corners=False, no half-pixel centers, no
antialiasing), which TF-slim's evaluation used.
"""
import math
import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def load_image(source):
    """An RGB PIL image from a path or a PIL image, upright per its EXIF orientation.

    Raises InputError naming the file when it is missing, a directory, or not a decodable
    image.
    """
    if isinstance(source, Image.Image):
        return _upright_rgb(source)
    path = os.fspath(source)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, not an image")
    try:
        with Image.open(path) as opened:
            opened.load()
            return _upright_rgb(opened)
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file Pillow can decode") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"{path}: cannot decode image ({error})") from None


def _upright_rgb(image):
    """A new RGB image, rotated/flipped as its EXIF Orientation tag says."""
    return ImageOps.exif_transpose(image).convert("RGB")


def preprocess_image(image, size, crop_pct, interpolation, mean, std, resize="shorter_side"):
    """A (3, size, size) float32 array from an RGB PIL image, by the transform above."""
    if resize == "central_crop":
        pixels = _central_crop_then_resize(image, size, crop_pct, interpolation)
    else:
        pixels = _resize_shorter_side_then_crop(image, size, crop_pct, interpolation)
    pixels = (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # (3, size, size)


def _resize_shorter_side_then_crop(image, size, crop_pct, interpolation):
    """(size, size, 3) float32 in [0, 1]: timm's Resize(floor(size / crop_pct)) + CenterCrop."""
    scale = math.floor(size / crop_pct)
    width, height = image.size
    if width <= height:
        new_width, new_height = scale, int(scale * height / width)
    else:
        new_width, new_height = int(scale * width / height), scale
    new_size = (max(new_width, 1), max(new_height, 1))
    if interpolation == "bilinear_tf":
        resized = _resize_bilinear_tf(_to_float(image), new_size[1], new_size[0])
    else:
        resized = _to_float(image.resize(new_size, RESAMPLING[interpolation]))
    top = int(round((resized.shape[0] - size) / 2.0))
    left = int(round((resized.shape[1] - size) / 2.0))
    return resized[top:top + size, left:left + size]


def _central_crop_then_resize(image, size, crop_pct, interpolation):
    """(size, size, 3) float32 in [0, 1]: tf.image.central_crop(crop_pct), then a resize."""
    width, height = image.size
    top = int((height - height * crop_pct) / 2)
    left = int((width - width * crop_pct) / 2)
    cropped = image.crop((left, top, width - left, height - top))
    if interpolation == "bilinear_tf":
        return _resize_bilinear_tf(_to_float(cropped), size, size)
    return _to_float(cropped.resize((size, size), RESAMPLING[interpolation]))


def _to_float(image):
    """(H, W, 3) float32 in [0, 1] from an RGB PIL image."""
    return np.asarray(image, dtype=np.float32) / np.float32(255.0)


def _resize_bilinear_tf(pixels, out_h, out_w):
    """TF 1.x resize_bilinear of (H, W, 3) pixels to (out_h, out_w, 3), float32.

    Output row y samples input row y * H / out_h (no half-pixel offset), interpolating
    between floor and floor + 1 (clamped to the last row); the same for columns.
    """
    in_h, in_w = pixels.shape[:2]
    y0, y1, fy = _bilinear_tf_taps(in_h, out_h)
    x0, x1, fx = _bilinear_tf_taps(in_w, out_w)
    fx = fx[None, :, None]
    top = pixels[y0][:, x0] + (pixels[y0][:, x1] - pixels[y0][:, x0]) * fx  # (out_h, out_w, 3)
    bottom = pixels[y1][:, x0] + (pixels[y1][:, x1] - pixels[y1][:, x0]) * fx
    return top + (bottom - top) * fy[:, None, None]


def _bilinear_tf_taps(in_size, out_size):
    """Lower index, upper index and upper weight along one axis, in TF's float32 arithmetic."""
    source = np.arange(out_size, dtype=np.float32) * np.float32(in_size / out_size)
    lower = np.floor(source).astype(np.int64)
    upper = np.minimum(lower + 1, in_size - 1)
    return lower, upper, (source - lower).astype(np.float32)
