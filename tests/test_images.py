"""Hostile and unusual images: each is converted correctly or refused with a clear message.

Conversions are checked against references computed with NumPy from the pixels the test
wrote (not through Pillow's conversions); refusals must be one-line InputErrors naming the
file. `mobinumba predict` on a list carries on past bad files, reports each one, and exits
non-zero at the end.
"""
import io
import json
import os
import random
import time
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import mobinumba
from conftest import build_reference, run_cli
from fuzzing import (STATS, FuzzWorker, Timer, apply_byte_edits, at_least, check_answer,
                     examples)
from mobinumba.preprocess import MAX_IMAGE_PIXELS, load_image, preprocess_image


def gradient(height, width, seed=0):
    """A smooth RGB image (so JPEG keeps it close) with a little noise: (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1),
                       (x + y) * 127 / max(height + width - 2, 1)], axis=-1)
    return np.clip(pixels + rng.normal(0, 2, pixels.shape), 0, 255).astype(np.uint8)


def rgb(source):
    return np.asarray(load_image(source), dtype=np.int32)  # (H, W, 3)


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    return tmp_path_factory.mktemp("images")


# ------------------------------------------------------------------------ modes, rightly

def test_grayscale_is_replicated(directory):
    gray = gradient(20, 30)[..., 0]
    Image.fromarray(gray).save(directory / "gray.png")
    np.testing.assert_array_equal(rgb(directory / "gray.png"), np.repeat(gray[..., None], 3, 2))


def test_rgba_drops_alpha_like_the_training_pipelines(directory):
    pixels = gradient(20, 30)
    alpha = np.linspace(0, 255, 30, dtype=np.uint8)[None, :].repeat(20, 0)
    Image.fromarray(np.dstack([pixels, alpha])).save(directory / "rgba.png")
    np.testing.assert_array_equal(rgb(directory / "rgba.png"), pixels)


def test_palette_is_looked_up(directory):
    palette = np.random.default_rng(1).integers(0, 256, (256, 3), dtype=np.uint8)
    indices = np.random.default_rng(2).integers(0, 256, (20, 30), dtype=np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette.reshape(-1).tolist())
    image.info["transparency"] = 5
    image.save(directory / "palette.png", transparency=5)
    np.testing.assert_array_equal(rgb(directory / "palette.png"), palette[indices])


@pytest.mark.parametrize("name,array", [
    ("sixteen.png", np.arange(600, dtype=np.uint16).reshape(20, 30) * 109),  # mode I;16
    ("sixteen.tif", np.arange(600, dtype=np.uint16).reshape(20, 30) * 109),  # mode I;16
    ("thirtytwo.tif", np.arange(600, dtype=np.int32).reshape(20, 30) * 109),  # mode I
])
def test_sixteen_bit_samples_are_scaled_not_clipped(directory, name, array):
    # Pillow's own convert("RGB") clips these at 255; the right 8-bit value is v * 255 / 65535.
    Image.fromarray(array).save(directory / name)
    expected = np.rint(np.clip(array.astype(np.float64), 0, 65535) * 255 / 65535)
    np.testing.assert_array_equal(rgb(directory / name), np.repeat(expected[..., None], 3, 2))


def test_float_images_are_refused(directory):
    Image.fromarray(np.zeros((4, 5), np.float32)).save(directory / "float.tif")
    with pytest.raises(mobinumba.InputError, match="float.tif: 32-bit floating-point"):
        load_image(directory / "float.tif")


def test_cmyk_jpeg_round_trips(directory):
    pixels = gradient(32, 48)
    Image.fromarray(pixels).convert("CMYK").save(directory / "cmyk.jpg", quality=95)
    assert Image.open(directory / "cmyk.jpg").mode == "CMYK"
    difference = np.abs(rgb(directory / "cmyk.jpg") - pixels)
    assert difference.mean() < 3 and difference.max() < 40


def test_one_bit_and_gray_alpha(directory):
    bits = np.random.default_rng(3).integers(0, 2, (20, 30)).astype(bool)
    Image.fromarray(bits).save(directory / "bits.png")
    np.testing.assert_array_equal(rgb(directory / "bits.png"),
                                  np.repeat(bits[..., None] * 255, 3, 2))
    gray = gradient(20, 30)[..., 1]
    Image.fromarray(np.dstack([gray, gray // 2]), mode="LA").save(directory / "la.png")
    np.testing.assert_array_equal(rgb(directory / "la.png"), np.repeat(gray[..., None], 3, 2))


# EXIF Orientation -> how to display the stored pixels, in NumPy (TIFF 6.0 / EXIF 2.3).
ORIENTATIONS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_exif_orientation_is_applied(directory, orientation):
    stored = gradient(20, 30, seed=orientation)  # not symmetric in any axis
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = directory / f"exif{orientation}.png"
    Image.fromarray(stored).save(path, exif=exif)
    np.testing.assert_array_equal(rgb(path), ORIENTATIONS[orientation](stored))


def test_exif_rotated_jpeg_as_cameras_write_it(directory):
    stored = gradient(48, 64)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(directory / "camera.jpg", exif=exif, quality=95)
    upright = rgb(directory / "camera.jpg")
    assert upright.shape == (64, 48, 3)
    assert np.abs(upright - np.rot90(stored, -1)).mean() < 3


# ------------------------------------------------------------------------- sizes, rightly

def test_one_pixel_image(directory):
    Image.new("RGB", (1, 1), (255, 0, 128)).save(directory / "one.png")
    pixels = preprocess_image(load_image(directory / "one.png"), 224, 0.875, "bicubic",
                              (0.5,) * 3, (0.5,) * 3)
    expected = (np.array([255, 0, 128]) / 255 - 0.5) / 0.5
    np.testing.assert_allclose(pixels, np.broadcast_to(expected[:, None, None], (3, 224, 224)),
                               atol=1e-6)


def test_large_photo(directory):
    pixels = gradient(3000, 4000)
    Image.fromarray(pixels).save(directory / "large.jpg", quality=90)
    result = preprocess_image(load_image(directory / "large.jpg"), 224, 0.875, "bilinear",
                              (0.5,) * 3, (0.5,) * 3)
    # The gradient's center, downscaled: red ~ x, green ~ y, both about mid-range there.
    assert result.shape == (3, 224, 224) and np.abs(result[:2, 112, 112]).max() < 0.05


def test_extreme_aspect_ratio_resamples_only_the_crop(directory):
    # 1 x 100,000 pixels: the standard transform would first make a 256 x 25,600,000 image.
    strip = gradient(1, 100_000)
    Image.fromarray(strip).save(directory / "strip.png")
    start = time.perf_counter()
    result = preprocess_image(load_image(directory / "strip.png"), 224, 0.875, "bilinear",
                              (0,) * 3, (1,) * 3)
    assert time.perf_counter() - start < 10 and result.shape == (3, 224, 224)
    # The crop is the middle 224 / 256 of a 1-pixel-high strip around x = 50,000: every row
    # the same, columns following the source (bilinear over ~390 source pixels each).
    np.testing.assert_allclose(result[:, 0], result[:, 223], atol=1e-6)
    scale = 100_000 / 25_600_000
    centers = ((np.arange(224) + (25_600_000 - 224) / 2 + 0.5) * scale).astype(int)
    np.testing.assert_allclose(result[0, 100], strip[0, centers, 0] / 255, atol=0.05)


def test_crop_window_path_matches_the_two_step_transform(directory, monkeypatch):
    """The resample-only-the-crop path (forced here by a tiny limit) agrees with resize then
    crop, up to rounding, for every interpolation."""
    image = Image.fromarray(gradient(240, 320))
    for interpolation in ("nearest", "bilinear", "bicubic", "lanczos", "hamming", "box"):
        standard = preprocess_image(image, 224, 0.875, interpolation, (0,) * 3, (1,) * 3)
        with monkeypatch.context() as patch:
            patch.setattr("mobinumba.preprocess.MAX_IMAGE_PIXELS", 1000)
            windowed = preprocess_image(image, 224, 0.875, interpolation, (0,) * 3, (1,) * 3)
        difference = np.abs(windowed - standard)
        assert difference.mean() < 2 / 255 and difference.max() < 0.1, interpolation


def png_bomb(path, width, height, rows=None):
    """A PNG declaring width x height gray pixels, with `rows` (default: all) rows of zeros
    in its compressed data: a tiny file, a huge decode."""
    def chunk(kind, data):
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))

    rows = height if rows is None else rows
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    body = b"".join(compressor.compress(row) for _ in range(rows)) + compressor.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    with open(path, "wb") as stream:
        stream.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body)
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [9000, 20000])
def test_decompression_bomb_is_refused_before_decoding(directory, side):
    # 9000^2 = 81 M pixels: over our limit, under Pillow's own; 20000^2: over both.
    path = directory / f"bomb{side}.png"
    png_bomb(path, side, side, rows=side if side < 10000 else 16)
    assert path.stat().st_size < 200_000
    start = time.perf_counter()
    with pytest.raises(mobinumba.InputError) as info:
        load_image(path)
    assert time.perf_counter() - start < 2
    message = str(info.value)
    assert message.startswith(str(path)) and "pixels" in message and "\n" not in message
    if side < 10000:
        assert f"{side * side:,} pixels, more than the limit of {MAX_IMAGE_PIXELS:,}" in message


# --------------------------------------------------------------------- bad files, refused

@pytest.fixture(scope="module")
def bad_files(directory):
    """name -> (path, what the message must say) for every kind of unusable image."""
    photo = io.BytesIO()
    Image.fromarray(gradient(64, 64)).save(photo, "JPEG")
    png = io.BytesIO()
    Image.fromarray(gradient(64, 64)).save(png, "PNG")
    files = {}
    (directory / "cut.jpg").write_bytes(photo.getvalue()[: len(photo.getvalue()) // 2])
    files["truncated jpeg"] = (directory / "cut.jpg", "cannot decode image")
    (directory / "cut.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    files["truncated png"] = (directory / "cut.png", "cannot decode image")
    (directory / "notes.jpg").write_text("this is a text file\n")
    files["text named .jpg"] = (directory / "notes.jpg", "cannot decode image")
    (directory / "empty.png").write_bytes(b"")
    files["empty file"] = (directory / "empty.png", "cannot decode image")
    (directory / "folder.jpg").mkdir(exist_ok=True)
    files["directory"] = (directory / "folder.jpg", "is a directory")
    files["missing"] = (directory / "absent.jpg", "no such file")
    fifo = directory / "pipe.jpg"
    if not fifo.exists():
        os.mkfifo(fifo)
    files["fifo"] = (fifo, "not a regular file")
    png_bomb(directory / "bomb.png", 9000, 9000)
    files["decompression bomb"] = (directory / "bomb.png", "more than the limit")
    return files


@pytest.mark.parametrize("name", ["truncated jpeg", "truncated png", "text named .jpg",
                                  "empty file", "directory", "missing", "fifo",
                                  "decompression bomb"])
def test_bad_files_are_refused_by_name(bad_files, name):
    path, words = bad_files[name]
    with pytest.raises(mobinumba.InputError) as info:
        load_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and words in message and "\n" not in message


# -------------------------------------------------------------------- predict on a list

@pytest.fixture(scope="module")
def small_weights(directory):
    model = build_reference("classic", 0.25, "relu", head=False, num_classes=10, seed=4)
    torch.save(model.state_dict(), directory / "small.pth")
    assert run_cli("convert", directory / "small.pth", "-o", directory / "small.h5",
                   "--input-size", "64") == 0
    return directory / "small.h5"


def test_predict_carries_on_past_bad_files(small_weights, bad_files, directory, capsys):
    good = []
    for index in range(3):
        good.append(directory / f"good{index}.png")
        Image.fromarray(gradient(50 + index, 70, seed=index)).save(good[-1])
    bad = [bad_files[name][0] for name in ("truncated jpeg", "text named .jpg", "directory",
                                           "missing", "decompression bomb")]
    order = [good[0], bad[0], bad[1], good[1], bad[2], bad[3], bad[4], good[2]]
    assert run_cli("predict", "--weights", small_weights, *order, "--json",
                   "--topk", "3") == 1
    captured = capsys.readouterr()
    errors = captured.err.splitlines()
    assert len(errors) == len(bad) and "Traceback" not in captured.err
    for line, path in zip(errors, bad):
        assert line.startswith(f"mobinumba: error: {path}: "), line
    entries = json.loads(captured.out)
    assert [entry["path"] for entry in entries] == [str(p) for p in order]  # input order
    model = mobinumba.load(small_weights)
    expected = model.predict(good, topk=3)
    results = [entry for entry in entries if "predictions" in entry]
    assert [p for p in order if p in good] == [directory / r["path"] for r in results]
    for result, predictions in zip(results, expected):
        assert [p["index"] for p in result["predictions"]] == [p.index for p in predictions]
    for entry in entries:
        assert ("error" in entry) == (entry["path"] in map(str, bad))

    # Text output: every good image printed, exit status 1 at the end.
    assert run_cli("predict", "--weights", small_weights, *order) == 1
    out = capsys.readouterr().out
    assert all(f"{path}\n" in out for path in good) and out.count("  1. ") == len(good)
    # All good: exit 0.
    assert run_cli("predict", "--weights", small_weights, *good) == 0


def test_predict_with_only_bad_files_exits_1(small_weights, bad_files, capsys):
    assert run_cli("predict", "--weights", small_weights, bad_files["missing"][0]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1


# --------------------------------------------------------------------------- byte fuzz

def seed_images():
    """name -> bytes of small images in every format Pillow writes out of the box."""
    pixels = gradient(12, 16)
    images = {}
    for name, mode, fmt, options in [
            ("rgb.png", "RGB", "PNG", {}), ("p.png", "P", "PNG", {}),
            ("i16.png", "I;16", "PNG", {}), ("rgb.jpg", "RGB", "JPEG", {"quality": 90}),
            ("cmyk.jpg", "CMYK", "JPEG", {}), ("p.gif", "P", "GIF", {}),
            ("rgb.bmp", "RGB", "BMP", {}), ("rgb.tif", "RGB", "TIFF", {}),
            ("rgb.webp", "RGB", "WEBP", {}), ("rgb.ppm", "RGB", "PPM", {}),
            ("rgba.tga", "RGBA", "TGA", {}), ("rgb.ico", "RGB", "ICO", {})]:
        image = Image.fromarray(pixels)
        if mode == "I;16":
            image = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
        else:
            image = image.convert(mode)
        stream = io.BytesIO()
        image.save(stream, fmt, **options)
        images[name] = stream.getvalue()
    return images


@st.composite
def image_edits(draw, size):
    rnd = random.Random(draw(st.integers(0, 2 ** 64 - 1)))
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        # Headers hold what decoders trust (sizes, offsets, counts): aim there mostly.
        offset = rnd.randrange(min(size, 128)) if rnd.random() < 0.7 else rnd.randrange(size)
        kind = rnd.choices(["flip", "overwrite", "truncate"], weights=[70, 25, 5])[0]
        if kind == "flip":
            edits.append((kind, offset, 1 << rnd.randrange(8)))
        elif kind == "overwrite":
            edits.append((kind, offset, draw(st.sampled_from(
                [b"\xff\xff", b"\x00\x00", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x00"])
                | st.binary(min_size=1, max_size=8))))
        else:
            edits.append((kind, offset, None))
    return edits


@pytest.mark.slow  # a fuzzer
def test_image_byte_fuzz(directory):
    images = seed_images()
    worker = FuzzWorker({"target": "image", "path": str(directory / "warmup.png")})
    Image.fromarray(gradient(8, 8)).save(directory / "warmup.png")
    naming = r"cannot decode image|pixels|32-bit floating-point|no pixels"
    try:
        for name, data in images.items():
            path = str(directory / f"fuzz-{name}")

            @examples(50)
            @given(edits=image_edits(len(data)))
            def case(edits):
                with open(path, "wb") as stream:
                    stream.write(apply_byte_edits(data, edits))
                with Timer("images"):
                    answer = worker.run({"target": "image", "path": path})
                check_answer("images", answer, path, ("InputError",), naming,
                             str(directory / "failures"))

            with STATS.watching() as seen:
                case()
            assert seen.outcomes["images"]["refused"] >= at_least(3), (name, seen.outcomes)
    finally:
        worker.close()
