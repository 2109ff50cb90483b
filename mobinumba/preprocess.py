"""Image decoding and the evaluation transform stored with the weights.

The transform is timm's / torchvision's eval pipeline: resize the shorter side to
floor(size / crop_pct) with the file's interpolation, center-crop size x size, scale to
[0, 1], subtract `mean` and divide by `std` per channel.
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


def preprocess_image(image, size, crop_pct, interpolation, mean, std):
    """A (3, size, size) float32 array from an RGB PIL image, by the eval transform above."""
    scale = math.floor(size / crop_pct)
    width, height = image.size
    if width <= height:
        new_width, new_height = scale, int(scale * height / width)
    else:
        new_width, new_height = int(scale * width / height), scale
    resized = image.resize((max(new_width, 1), max(new_height, 1)), RESAMPLING[interpolation])
    top = int(round((resized.height - size) / 2.0))
    left = int(round((resized.width - size) / 2.0))
    cropped = resized.crop((left, top, left + size, top + size))
    pixels = np.asarray(cropped, dtype=np.float32) / np.float32(255.0)  # (size, size, 3)
    pixels = (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # (3, size, size)
