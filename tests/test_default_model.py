"""The shipped model: TF-slim's ImageNet MobileNetV1 1.0 224 (weights/README.md).

Its logits against a PyTorch functional reference built from the file's own tensors (read
with h5py, not mobinumba) that pads each 3x3 conv explicitly as TensorFlow's SAME does; its
predictions on the sample photos; and proof that the padding attribute is honoured: the same
tensors with PyTorch padding give different logits, which match a symmetric-padding reference.
"""
import json
import os
import shutil

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mobinumba
from conftest import run_cli
from tfslim_graphs import tf_same_pads

TOLERANCE = 1e-4
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "weights", "samples")
CAT, COFFEE, HOPPER = (os.path.join(SAMPLES, name)
                       for name in ("chelsea.png", "coffee.png", "grace_hopper.jpg"))


@pytest.fixture(scope="module")
def model():
    return mobinumba.load()


@pytest.fixture(scope="module")
def photos(model):
    """The three sample photos, preprocessed by the file's metadata: (3, 3, 224, 224)."""
    return np.stack([model.preprocess(path) for path in (CAT, COFFEE, HOPPER)])


def reference_logits(path, x, padding):
    """float64 logits of the weight file at `path` for x (N, 3, H, W), by torch functional ops.

    padding "tf_same": explicit F.pad per tf_same_pads, then an unpadded conv; "torch":
    padding=1. Batch norm is applied unfolded with the file's own epsilon.
    """
    y = torch.from_numpy(np.asarray(x, np.float64))
    with h5py.File(path, "r") as h5:
        groups = [h5["layers"][name] for name in sorted(h5["layers"])]
        for group in groups:
            tensor = {key: torch.from_numpy(np.asarray(group[key][()], np.float64))
                      for key in group}
            kind, stride = group.attrs["kind"], int(group.attrs["stride"])
            if kind == "dense":
                y = F.linear(y.mean(dim=(2, 3)), tensor["weight"], tensor["bias"])
                continue
            weight = tensor["weight"]
            groups_ = weight.shape[0] if kind == "dwconv" else 1
            if weight.shape[-1] == 1:
                y = F.conv2d(y, weight)
            elif padding == "tf_same":
                top, bottom = tf_same_pads(y.shape[2], stride)
                left, right = tf_same_pads(y.shape[3], stride)
                y = F.conv2d(F.pad(y, (left, right, top, bottom)), weight, stride=stride,
                             groups=groups_)
            else:
                y = F.conv2d(y, weight, stride=stride, padding=1, groups=groups_)
            y = F.batch_norm(y, tensor["mean"], tensor["var"], tensor["gamma"], tensor["beta"],
                             training=False, eps=float(tensor["eps"]))
            y = torch.clamp(y, 0.0, 6.0)
    return y.numpy()


def assert_matches(actual, expected, what):
    difference = float(np.abs(actual - expected).max())
    allowed = TOLERANCE * max(1.0, float(np.abs(expected).max()))
    assert difference <= allowed, f"{what}: max |logit difference| {difference} > {allowed}"
    for row, (a, e) in enumerate(zip(actual, expected)):
        assert list(np.argsort(-a)[:5]) == list(np.argsort(-e)[:5]), f"{what}: row {row} top-5"
    return difference


def test_metadata_of_the_shipped_file(model):
    info = model.info
    assert os.path.basename(model.path) == "mobilenet_v1_1.0_224_imagenet.h5"
    assert (info.width_multiplier, info.num_classes, info.input_size) == (1.0, 1001, 224)
    assert (info.activation, info.padding, info.interpolation, info.crop_pct, info.resize) == (
        "relu6", "tf_same", "bilinear_tf", 0.875, "central_crop")
    assert info.mean == (0.5,) * 3 and info.std == (0.5,) * 3
    assert (info.source_file, info.source_layout) == ("retrained_graph.pb", "tf-slim")
    assert info.source_sha256 == \
        "3b90af536f810f5f75e9f6d431bc2e8a3c4fc2ff4f693aa0dd4ae429816f8735"
    assert model.labels[0] == "background" and model.labels[1] == "tench"
    assert model.labels[653] == "military uniform" and model.labels[968] == "espresso"
    with h5py.File(model.path, "r") as h5:
        eps = {float(h5["layers"][name]["eps"][()]) for name in h5["layers"]
               if "eps" in h5["layers"][name]}
    assert eps == {float(np.float32(0.001))}
    assert "4,231,976" not in model.summary()  # 1001 classes: 1,025 more parameters
    assert "4,233,001" in model.summary()


def test_logits_match_a_tf_padding_reference(model, photos):
    random = np.random.default_rng(0).uniform(-1, 1, (2, 3, 224, 224)).astype(np.float32)
    x = np.concatenate([photos, random])
    difference = assert_matches(model(x), reference_logits(model.path, x, "tf_same"),
                                "shipped model vs TF-padding reference")
    print(f"shipped model: max |logit difference| {difference:.3g} vs the TF-padding reference")


def test_sample_photo_predictions_from_the_cli_without_weights(capsys):
    assert run_cli("predict", CAT, COFFEE, HOPPER, "--json") == 0
    results = {os.path.basename(r["path"]): [p["label"] for p in r["predictions"]]
               for r in json.loads(capsys.readouterr().out)}
    assert results["chelsea.png"][0] in ("tabby", "tiger cat", "Egyptian cat")
    assert results["coffee.png"][0] == "espresso"
    assert "military uniform" in results["grace_hopper.jpg"][:5]


def test_torch_padding_on_the_same_tensors_is_honoured_and_differs(model, photos, tmp_path):
    copy = tmp_path / "torch_padding.h5"
    shutil.copyfile(model.path, copy)
    with h5py.File(copy, "r+") as h5:
        h5.attrs["padding"] = "torch"
    forced = mobinumba.load(copy)
    assert_matches(forced(photos), reference_logits(copy, photos, "torch"),
                   "torch padding vs symmetric reference")
    tf_logits, torch_logits = model(photos), forced(photos)
    assert np.abs(tf_logits - torch_logits).max() > 0.5
    assert not np.array_equal(np.argsort(-tf_logits, axis=1)[:, :5],
                              np.argsort(-torch_logits, axis=1)[:, :5])


def test_inspect_without_a_file_shows_the_shipped_model(capsys):
    assert run_cli("inspect") == 0
    out = capsys.readouterr().out
    assert "mobilenet_v1_1.0_224_imagenet.h5" in out and "tf_same" in out
    assert "1001 (background, tench, goldfish, ...)" in out


def test_a_missing_default_model_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setattr("mobinumba.model.DEFAULT_WEIGHTS", "absent.h5")
    with pytest.raises(mobinumba.FormatError, match="absent.h5 is not installed"):
        mobinumba.load()
    assert run_cli("predict", CAT) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "default model absent.h5 is not installed" in err
