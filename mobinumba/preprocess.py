"""Image decoding and the evaluation transform stored with the weights.

Two transforms, chosen by the weight file's `resize` attribute:
- `shorter_side` (timm's / torchvision's eval pipeline): resize the shorter side to
  floor(size / crop_pct) with the file's interpolation, then center-crop size x size;
- `central_crop` (TF-slim's inception_preprocessing.preprocess_for_eval): crop the central
  crop_pct of each side (tf.image.central_crop), then resize that to size x size, aspect
  ratio not kept;
- `whole_image` (TensorFlow's retrain.py for MobileNet): resize the whole image to size x
  size, aspect ratio not kept, no crop (crop_pct is not used).
Then pixels are scaled to [0, 1], `mean` is subtracted and the result divided by `std`.

Interpolations are Pillow's filters (antialiased when shrinking), plus `bilinear_tf`:
TensorFlow 1.x tf.image.resize_bilinear (align_corners=False, no half-pixel centers, no
antialiasing), which TF-slim's evaluation used.

Decoding takes untrusted files: anything that is not a regular file, declares more than
MAX_IMAGE_PIXELS pixels (checked from the header, before any pixel is decoded), or fails
to decode is refused with an InputError naming the file.
"""
import math
import os

import numpy as np
from PIL import Image, ImageOps

from .errors import InputError, check_regular_file

RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}

# Larger images are refused before decoding (a decompression bomb is a small file that
# declares a huge image). 2**26 = 67,108,864 pixels, e.g. 8192 x 8192: 192 MiB as 8-bit
# RGB. Below Pillow's own DecompressionBombWarning threshold, so Pillow never warns.
MAX_IMAGE_PIXELS = 2 ** 26
# Integer modes holding 16-bit samples (PNG, TIFF, PGM): scaled by 255 / 65535 to 8 bits.
# Pillow's own convert("RGB") clips them at 255 instead, which whitens the image.
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def load_image(source):
    """An RGB PIL image from a path or a PIL image, upright per its EXIF orientation.

    Raises InputError naming the file when it is missing, not a regular file, larger than
    MAX_IMAGE_PIXELS, not a decodable image, or in a mode with no RGB meaning.
    """
    if isinstance(source, Image.Image):
        name = "image"
    else:
        name = os.fspath(source)
        check_regular_file(name, InputError, "an image")
    try:
        if isinstance(source, Image.Image):
            return _checked_rgb(source, name)
        with Image.open(name) as opened:
            return _checked_rgb(opened, name)
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure to decode untrusted bytes
        # Pillow's decoders raise UnidentifiedImageError, OSError ("image file is
        # truncated"), DecompressionBombError, and for damaged headers also SyntaxError,
        # ValueError, struct.error, EOFError, IndexError, ...: all mean "not a usable image".
        raise InputError(f"{name}: cannot decode image ({_describe(error)})") from None


def _checked_rgb(image, name):
    """Check the declared size, decode, and return the upright RGB image."""
    _check_pixels(image, name)
    image.load()
    return _upright_rgb(image, name)


def _check_pixels(image, name):
    width, height = image.size
    if width < 1 or height < 1:
        raise InputError(f"{name}: image has no pixels ({width}x{height})")
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(f"{name}: image is {width}x{height} = {width * height:,} pixels, more "
                         f"than the limit of {MAX_IMAGE_PIXELS:,}")


def _upright_rgb(image, name):
    """A new RGB image, rotated/flipped as its EXIF Orientation tag says."""
    if image.mode == "F":
        raise InputError(f"{name}: 32-bit floating-point images (mode F) have no defined "
                         f"pixel range; save it with 8 or 16 bits per sample")
    image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT_MODES:
        samples = np.asarray(image).astype(np.float64)  # (H, W)
        scaled = np.clip(samples, 0, 65535) * (255.0 / 65535.0)
        image = Image.fromarray(np.rint(scaled).astype(np.uint8))  # mode L
    return image.convert("RGB")


def _describe(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def preprocess_image(image, size, crop_pct, interpolation, mean, std, resize="shorter_side"):
    """A (3, size, size) float32 array from an RGB PIL image, by the transform above."""
    if resize == "central_crop":
        pixels = _central_crop_then_resize(image, size, crop_pct, interpolation)
    elif resize == "whole_image":
        pixels = _central_crop_then_resize(image, size, 1.0, interpolation)  # crops nothing
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
    new_width, new_height = max(new_width, 1), max(new_height, 1)
    top = int(round((new_height - size) / 2.0))
    left = int(round((new_width - size) / 2.0))
    if interpolation == "bilinear_tf":  # samples the crop window only, at any size
        return _resize_bilinear_tf(_to_float(image), new_height, new_width, top, left, size)
    resample = RESAMPLING[interpolation]
    if new_width * new_height <= MAX_IMAGE_PIXELS:
        resized = image.resize((new_width, new_height), resample)
        cropped = resized.crop((left, top, left + size, top + size))
    else:
        # An extreme aspect ratio (a 1 x 100,000 strip is 25.6 billion pixels once its short
        # side is 256): resample only the crop window, mapped back onto the source. Same
        # geometry and filter; results can differ from the two-step path by rounding.
        sx, sy = width / new_width, height / new_height
        cropped = image.resize((size, size), resample,
                               box=(left * sx, top * sy, (left + size) * sx, (top + size) * sy))
    return _to_float(cropped)


def _central_crop_then_resize(image, size, crop_pct, interpolation):
    """(size, size, 3) float32 in [0, 1]: tf.image.central_crop(crop_pct), then a resize."""
    width, height = image.size
    top = int((height - height * crop_pct) / 2)
    left = int((width - width * crop_pct) / 2)
    cropped = image.crop((left, top, width - left, height - top))
    if interpolation == "bilinear_tf":
        return _resize_bilinear_tf(_to_float(cropped), size, size, 0, 0, size)
    return _to_float(cropped.resize((size, size), RESAMPLING[interpolation]))


def _to_float(image):
    """(H, W, 3) float32 in [0, 1] from an RGB PIL image."""
    return np.asarray(image, dtype=np.float32) / np.float32(255.0)


def _resize_bilinear_tf(pixels, out_h, out_w, top, left, size):
    """The (size, size, 3) window at (top, left) of TF 1.x resize_bilinear of (H, W, 3)
    pixels to (out_h, out_w, 3), float32; only the window's pixels are computed.

    Output row y samples input row y * H / out_h (no half-pixel offset), interpolating
    between floor and floor + 1 (clamped to the last row); the same for columns.
    """
    in_h, in_w = pixels.shape[:2]
    y0, y1, fy = _bilinear_tf_taps(in_h, out_h, top, size)
    x0, x1, fx = _bilinear_tf_taps(in_w, out_w, left, size)
    fx = fx[None, :, None]
    upper = pixels[y0][:, x0] + (pixels[y0][:, x1] - pixels[y0][:, x0]) * fx  # (size, size, 3)
    lower = pixels[y1][:, x0] + (pixels[y1][:, x1] - pixels[y1][:, x0]) * fx
    return upper + (lower - upper) * fy[:, None, None]


def _bilinear_tf_taps(in_size, out_size, start, count):
    """Lower index, upper index and upper weight of output positions start .. start+count-1
    along one axis, in TF's float32 arithmetic."""
    positions = np.arange(start, start + count, dtype=np.float32)
    source = positions * np.float32(in_size / out_size)
    lower = np.floor(source).astype(np.int64)
    upper = np.minimum(lower + 1, in_size - 1)
    return lower, upper, (source - lower).astype(np.float32)
