"""The Model API and the predict / inspect commands."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import mobinumba
from conftest import random_batch, run_cli, torch_logits


@pytest.fixture(scope="module")
def model(timm_model):
    return mobinumba.load(timm_model[1])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three small photos-like images (gradients with noise) of different sizes and modes."""
    directory = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for index, (width, height, mode) in enumerate([(320, 240, "RGB"), (200, 300, "L"),
                                                   (256, 256, "RGBA")]):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).convert(mode)
        path = directory / f"image{index}.{'png' if mode == 'RGBA' else 'jpg'}"
        image.save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("x,words", [
    (np.zeros((3, 224, 224), np.float32), ["(N, 3, H, W)", "batch axis"]),
    (np.zeros((1, 4, 32, 32), np.float32), ["4 channels"]),
    (np.zeros((1, 32, 32, 3), np.float32), ["32 channels"]),
    (np.zeros((1, 3, 32, 32), np.int64), ["dtype is int64"]),
    (np.zeros((1, 3, 32, 32), np.uint8), ["dtype is uint8"]),
    (np.zeros((0, 3, 32, 32), np.float32), ["every dimension"]),
    (np.zeros((1, 3, 0, 32), np.float32), ["every dimension"]),
    (np.full((1, 3, 8, 8), np.nan, np.float32), ["NaN or Inf", "(0, 0, 0, 0)"]),
    (np.pad(np.full((1, 3, 1, 1), np.inf, np.float32), ((0, 0), (0, 0), (2, 0), (0, 0))),
     ["NaN or Inf", "(0, 0, 2, 0)"]),
    ("not an array", ["dtype is <U12"]),
])
def test_bad_inputs_raise_input_error(model, x, words):
    with pytest.raises(mobinumba.InputError) as info:
        model(x)
    for word in words:
        assert word in str(info.value)


def test_huge_batch_is_refused_up_front(model):
    # np.broadcast_to makes a read-only view of 1 float: no memory is spent on the input.
    x = np.broadcast_to(np.float32(0), (4096, 3, 224, 224))
    with pytest.raises(mobinumba.InputError, match="GiB"):
        model(x)


def test_float64_input_and_non_contiguous_views_match(model, timm_model):
    x = random_batch(2, 96)
    expected = torch_logits(timm_model[0], x)
    np.testing.assert_allclose(model(x.astype(np.float64)), expected, atol=1e-4, rtol=0)
    wide = np.concatenate([x, x], axis=3)[:, :, :, ::2]  # strided view of a different batch
    np.testing.assert_allclose(model(wide), torch_logits(timm_model[0],
                                                         np.ascontiguousarray(wide)),
                               atol=1e-4, rtol=0)


def test_odd_and_tiny_sizes(model, timm_model):
    for height, width in [(1, 1), (2, 3), (33, 17), (225, 224)]:
        x = np.random.default_rng(height).standard_normal((1, 3, height, width)).astype(np.float32)
        np.testing.assert_allclose(model(x), torch_logits(timm_model[0], x), atol=1e-4, rtol=0,
                                   err_msg=f"{height}x{width}")


def test_repeated_calls_do_not_share_output_buffers(model, timm_model):
    """Each call returns its own array: a later call (same shape, same workspace) leaves an
    earlier result untouched. `first` is compared with a reference computed apart, not with
    a later model(a), which would be the same buffer if outputs were workspace views."""
    a, b = random_batch(1, 64, seed=1), random_batch(1, 64, seed=2)
    first = model(a)
    second = model(b)
    assert not np.shares_memory(first, second)
    np.testing.assert_allclose(first, torch_logits(timm_model[0], a), atol=1e-4, rtol=0)
    np.testing.assert_allclose(second, torch_logits(timm_model[0], b), atol=1e-4, rtol=0)


def test_every_buffer_a_kernel_streams_is_64_byte_aligned(model):
    """Workspace buffers and packed weights start on a cache line (full 512-bit vectors),
    unlike numpy's large arrays (16 bytes past one)."""
    from mobinumba.kernels._common import aligned_zeros

    for shape in [(1,), (3, 5), (7, 1, 9), (1, 112, 112, 32)]:
        array = aligned_zeros(shape)
        assert array.shape == shape and array.dtype == np.float32
        assert array.ctypes.data % 64 == 0 and array.flags.c_contiguous and not array.any()
    model(random_batch(1, 64))
    workspace = model._workspace(1, 64, 64)
    arrays = [(op.spec.name, arg) for op, _, args in workspace.calls for arg in args
              if isinstance(arg, np.ndarray)]
    assert len(arrays) > 90
    misaligned = [(name, a.shape) for name, a in arrays if a.ctypes.data % 64 != 0]
    assert not misaligned, misaligned


def test_predict_matches_softmax_of_reference(model, timm_model, images):
    results = model.predict(images, topk=5)
    assert len(results) == 3
    batch = np.stack([model.preprocess(path) for path in images])
    with torch.no_grad():
        probabilities = torch.softmax(torch.from_numpy(torch_logits(timm_model[0], batch)),
                                      dim=1).numpy()
    for row, predictions in zip(probabilities, results):
        assert [p.index for p in predictions] == list(np.argsort(-row)[:5])
        np.testing.assert_allclose([p.probability for p in predictions],
                                   np.sort(row)[::-1][:5], rtol=1e-3)
        assert predictions[0].label == model.labels[predictions[0].index]
    assert model.predict(images[0], topk=1)[0][0].index == results[0][0].index


def test_preprocess_follows_the_timm_eval_transform(model, images):
    # Independent reference: torchvision-style resize of the shorter side to
    # floor(224 / 0.875) = 256 with bicubic, center crop 224, then (x - 0.5) / 0.5.
    image = Image.open(images[0]).convert("RGB")  # 320x240
    resized = image.resize((341, 256), Image.Resampling.BICUBIC)
    crop = np.asarray(resized.crop((58, 16, 282, 240)), np.float32) / 255
    expected = ((crop - 0.5) / 0.5).transpose(2, 0, 1)
    np.testing.assert_allclose(model.preprocess(images[0]), expected, atol=1e-6)


def test_predict_rejects_a_non_image(model, tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not an image")
    with pytest.raises(mobinumba.InputError, match="notes.jpg"):
        model.predict([path])
    with pytest.raises(mobinumba.InputError, match="topk"):
        model.predict([path], topk=0)


def test_summary_totals_match_the_paper(model):
    text = model.summary()
    assert "4,231,976" in text and "568,740,352" in text
    assert text.count("dwconv") == 13 and text.count("pwconv") == 13


def test_cli_predict_text_json_and_errors(timm_model, images, tmp_path, capsys):
    weights = timm_model[1]
    assert run_cli("predict", "--weights", weights, *images, "--topk", "3") == 0
    out = capsys.readouterr().out
    assert out.count("  1. ") == 3 and str(images[1]) in out
    assert run_cli("predict", "--weights", weights, images[0], "--json") == 0
    parsed = json.loads(capsys.readouterr().out)
    assert parsed[0]["path"] == str(images[0]) and len(parsed[0]["predictions"]) == 5
    assert set(parsed[0]["predictions"][0]) == {"index", "label", "probability"}
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    assert run_cli("predict", "--weights", weights, bad, images[0], "--threads", "1") == 1
    captured = capsys.readouterr()
    assert "bad.jpg" in captured.err and "Traceback" not in captured.err
    assert str(images[0]) in captured.out  # carried on past the bad file


def test_cli_inspect_prints_metadata_and_totals(timm_model, capsys):
    assert run_cli("inspect", timm_model[1]) == 0
    out = capsys.readouterr().out
    assert "4,231,976" in out and "568,740,352" in out and "relu6" in out
    assert "timm layout" in out and "bicubic" in out


def test_set_threads_validates(model, timm_model):
    with pytest.raises(ValueError):
        mobinumba.set_threads(0)
    previous = mobinumba.get_threads()
    x = random_batch(1, 64)
    mobinumba.set_threads(1)
    try:
        assert mobinumba.get_threads() == 1
        single = model(x)
    finally:
        mobinumba.set_threads(previous)
    default = model(x)
    # Two results of the same workspace: distinct arrays, each checked against the reference
    # (comparing them with each other alone would pass if both were the workspace's buffer).
    assert not np.shares_memory(single, default)
    expected = torch_logits(timm_model[0], x)
    np.testing.assert_allclose(single, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(default, expected, atol=1e-4, rtol=0)
