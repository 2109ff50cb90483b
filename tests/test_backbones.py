"""Backbones without classifier, LeakyReLU and feature maps, end to end.

RetinaFace's MobileNetV1 0.25 (the pretrain with its fc, and the detector checkpoint with the
backbone under `body.`), pytorch-ssd's `base_net` and timm with num_classes=0 are built in
torch with their projects' modules and key names (backbone_models.py), converted, and
compared with the torch modules themselves in float64: m(x) against the pooled last stage,
feature_maps(stride8/16/32) against the stage outputs the detectors tap. Plus: the
self-check refusing a conversion that would run another activation or padding than the
source, predict's refusal, and the format's validation of the new attributes.
"""
import copy
import shutil

import h5py
import numpy as np
import pytest
import torch

import mobinumba
from backbone_models import (retinaface_backbone, retinaface_detector_state,
                             retinaface_pretrain_state, ssd_model)
from conftest import build_reference, run_cli
from mobinumba.convert import convert_checkpoint
from mobinumba.errors import CheckpointError, FormatError, InputError

SIZE = 64  # input_size of the converted files: a quick self-check


def batch(seed=0, height=64, width=80):
    return np.random.default_rng(seed).standard_normal((2, 3, height, width)).astype(np.float32)


def torch64(module, x):
    """module(x) in float64 without touching the fixture's module; x a numpy batch."""
    with torch.no_grad():
        return copy.deepcopy(module).double()(torch.from_numpy(x).double())


def nhwc(tensor):
    return tensor.numpy().transpose(0, 2, 3, 1)


def assert_close(actual, expected, what):
    scale = max(1.0, float(np.abs(expected).max()))
    difference = float(np.abs(actual - expected).max())
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert difference <= 1e-4 * scale, f"{what}: max difference {difference:.3g}"


def bgr(x):
    """RetinaFace's network takes BGR: the same batch with the channels reversed."""
    return np.ascontiguousarray(x[:, ::-1])


@pytest.fixture(scope="module")
def retinaface(tmp_path_factory):
    """(backbone module, directory, detector .h5, its ConversionReport)."""
    directory = tmp_path_factory.mktemp("retinaface")
    model = retinaface_backbone(seed=31)
    torch.save(retinaface_detector_state(model), directory / "mobilenet0.25_Final.pth")
    report = convert_checkpoint(directory / "mobilenet0.25_Final.pth", directory / "det.h5",
                                input_size=SIZE, check=True)
    return model, directory, directory / "det.h5", report


def test_retinaface_detector_backbone(retinaface):
    model, _, path, report = retinaface
    assert (report.layout, report.num_classes, report.width_multiplier) == ("retinaface", 0,
                                                                           0.25)
    assert report.activation == "leaky_relu (slope 0.1)"
    assert report.check_difference <= report.check_allowed
    # Every detector key outside body.* is reported, none of the backbone's.
    expected_ignored = sorted(key for key in retinaface_detector_state(model)
                              if not key.startswith("body."))
    assert report.ignored == expected_ignored
    m = mobinumba.load(path)
    assert (m.info.activation, m.info.activation_slope, m.num_classes) == ("leaky_relu", 0.1, 0)
    # detect.py: BGR pixels minus (104, 117, 123), unscaled; the file says it for RGB.
    np.testing.assert_allclose(np.asarray(m.info.mean) * 255, (123, 117, 104))
    np.testing.assert_allclose(np.asarray(m.info.std) * 255, (1, 1, 1))
    x = batch()
    stages = copy.deepcopy(model).double()
    with torch.no_grad():
        s8, s16, s32 = stages.stages(torch.from_numpy(bgr(x)).double())
    assert_close(m(x), s32.mean(dim=(2, 3)).numpy(), "pooled features")
    maps = m.feature_maps(x)
    assert list(maps) == ["stride8", "stride16", "stride32"]
    for name, expected in zip(maps, (s8, s16, s32)):
        assert maps[name].dtype == np.float32
        assert_close(maps[name], nhwc(expected), name)
    # The same maps by layer name (inspect's names), and the pooled features.
    by_name = m.feature_maps(x, ["block05_pw", "block11_pw", "block13_pw", "avgpool"])
    np.testing.assert_array_equal(by_name["block05_pw"], maps["stride8"])
    np.testing.assert_array_equal(by_name["block13_pw"], maps["stride32"])
    np.testing.assert_array_equal(by_name["avgpool"], m(x))


def test_retinaface_pretrain_keeps_its_classifier(tmp_path):
    model = retinaface_backbone(seed=32)
    # The pretrain is a .tar written by torch.save: {'state_dict': {'module.stage1...'}}.
    torch.save(retinaface_pretrain_state(model), tmp_path / "mobilenetV1X0.25_pretrain.tar")
    report = convert_checkpoint(tmp_path / "mobilenetV1X0.25_pretrain.tar", tmp_path / "p.h5",
                                input_size=SIZE, check=True)
    assert (report.layout, report.num_classes, report.ignored) == ("retinaface", 1000, [])
    m = mobinumba.load(tmp_path / "p.h5")
    assert m.labels is not None and len(m.labels) == 1000  # 1000 classes: ImageNet's
    x = batch(1)
    assert_close(m(x), torch64(model, bgr(x)).numpy(), "pretrain logits")


@pytest.mark.parametrize("option,words", [
    (dict(activation="relu"), ["activation relu where the source runs leaky_relu (slope 0.1)"]),
    (dict(activation="leaky_relu", activation_slope=0.2),
     ["leaky_relu (slope 0.2) where the source runs leaky_relu (slope 0.1)"]),
    (dict(padding="tf_same"), ["padding tf_same where the source runs torch"]),
])
def test_self_check_runs_the_sources_semantics(retinaface, tmp_path, option, words):
    """The reference follows net.py (LeakyReLU 0.1, PyTorch padding), not the options: a file
    that would run anything else fails the check and is not written."""
    _, directory, _, _ = retinaface
    output = tmp_path / "other.h5"
    with pytest.raises(CheckpointError) as info:
        convert_checkpoint(directory / "mobilenet0.25_Final.pth", output, input_size=SIZE,
                           check=True, **option)
    message = str(info.value)
    assert "self-check failed" in message and "\n" not in message
    for word in words:
        assert word in message, message
    assert not output.exists()


def test_bad_activation_options(retinaface, tmp_path):
    _, directory, _, _ = retinaface
    source = directory / "mobilenet0.25_Final.pth"
    for option, words in ((dict(activation="relu", activation_slope=0.1), "takes no slope"),
                          (dict(activation_slope=1.0), "expected a number in [0, 1)")):
        with pytest.raises(CheckpointError, match=words.replace("[", r"\[").replace(
                "(", r"\(").replace(")", r"\)")):
            convert_checkpoint(source, tmp_path / "x.h5", input_size=SIZE, check=False, **option)
    with pytest.raises(CheckpointError, match="no classifier"):
        convert_checkpoint(source, tmp_path / "x.h5", labels="imagenet", check=False)


def test_ssd_base_net(tmp_path):
    ssd = ssd_model(seed=33)
    torch.save(ssd.state_dict(), tmp_path / "mb1-ssd.pth")
    report = convert_checkpoint(tmp_path / "mb1-ssd.pth", tmp_path / "ssd.h5", input_size=SIZE,
                                check=True)
    assert (report.layout, report.num_classes, report.width_multiplier) == ("ssd", 0, 1.0)
    assert report.ignored == sorted(key for key in ssd.state_dict()
                                    if not key.startswith("base_net."))
    assert any(key.startswith("extras.") for key in report.ignored)
    m = mobinumba.load(tmp_path / "ssd.h5")
    # (x - 127) / 128 on 0..255 pixels, the whole image resized.
    np.testing.assert_allclose(np.asarray(m.info.mean) * 255, (127,) * 3)
    np.testing.assert_allclose(np.asarray(m.info.std) * 255, (128,) * 3)
    assert (m.info.activation, m.info.resize, m.info.crop_pct) == ("relu", "central_crop", 1.0)
    x = batch(2)
    base = copy.deepcopy(ssd.base_net).double()
    with torch.no_grad():
        tapped = base[:12](torch.from_numpy(x).double())  # the SSD's first source layer
        last = base[12:](tapped)
    assert_close(m(x), last.mean(dim=(2, 3)).numpy(), "pooled features")
    maps = m.feature_maps(x, ["stride16", "stride32"])
    assert_close(maps["stride16"], nhwc(tapped), "stride16")
    assert_close(maps["stride32"], nhwc(last), "stride32")


def test_timm_num_classes_0(tmp_path):
    model = build_reference("timm", 0.5, "relu6", head=False, num_classes=10, seed=34)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    torch.save(state, tmp_path / "timm_backbone.pth")
    report = convert_checkpoint(tmp_path / "timm_backbone.pth", tmp_path / "t.h5",
                                input_size=SIZE, check=True)
    assert (report.layout, report.num_classes) == ("timm", 0)
    m = mobinumba.load(tmp_path / "t.h5")
    x = batch(3, 64, 64)
    features = copy.deepcopy(model).double()
    with torch.no_grad():
        stem = features.act1(features.bn1(features.conv_stem(torch.from_numpy(x).double())))
        expected = features.blocks(stem)
    assert_close(m(x), expected.mean(dim=(2, 3)).numpy(), "timm pooled features")
    assert "no classifier" in repr(m)


def test_feature_map_names_are_validated(retinaface):
    _, _, path, _ = retinaface
    m = mobinumba.load(path)
    x = batch()
    before = m(x)
    for layers, words in ((["stride4"], "unknown feature map 'stride4'"),
                          ([], "no layers given")):
        with pytest.raises(InputError) as info:
            m.feature_maps(x, layers)
        message = str(info.value)
        assert words in message and "valid: conv_stem, block01_dw" in message
        assert "stride8, stride16, stride32" in message
    m.feature_maps(x, "block01_dw")  # one name as a string
    np.testing.assert_array_equal(m(x), before)  # the copies left m(x) as it was


def test_predict_and_inspect_on_a_backbone(retinaface, tmp_path, capsys):
    from PIL import Image

    _, _, path, _ = retinaface
    image = tmp_path / "face.png"
    Image.new("RGB", (40, 30), (200, 100, 50)).save(image)
    assert run_cli("predict", "--weights", path, image) != 0
    err = capsys.readouterr().err.strip()
    assert "no classifier" in err and "mobinumba embed" in err and "\n" not in err
    with pytest.raises(InputError, match="no classifier"):
        mobinumba.load(path).predict([str(image)])
    assert run_cli("inspect", path) == 0
    out = capsys.readouterr().out
    assert "0 (no classifier" in out and "leaky_relu (slope 0.1)" in out
    assert "block13_pw" in out and "avgpool" in out


def corrupted(path, tmp_path, edit):
    copy_path = tmp_path / "bad.h5"
    shutil.copy(path, copy_path)
    with h5py.File(copy_path, "r+") as h5:
        edit(h5)
    return copy_path


@pytest.mark.parametrize("edit,words", [
    (lambda h5: h5.attrs.__setitem__("activation_slope", 1.0),
     "attribute 'activation_slope' is 1.0, expected a number in [0, 1)"),
    (lambda h5: h5.attrs.__setitem__("activation_slope", -0.1), "activation_slope' is -0.1"),
    (lambda h5: h5.attrs.__setitem__("activation_slope", np.nan), "activation_slope' is nan"),
    (lambda h5: h5.attrs.__setitem__("activation_slope", "0.1"), "activation_slope' is str"),
    (lambda h5: h5.attrs.__delitem__("activation_slope"), "missing attribute 'activation_slope'"),
    (lambda h5: h5.attrs.__setitem__("activation", "relu"),
     "'activation_slope' is only for activation leaky_relu, not relu"),
    (lambda h5: h5.create_dataset("labels", data=[], dtype=h5py.string_dtype()),
     "has labels but num_classes is 0"),
    (lambda h5: h5.attrs.__setitem__("num_classes", 256),
     "last layer 'block13_pw' is pwconv, expected dense (num_classes is 256; 0 means no "
     "classifier)"),
    (lambda h5: h5.attrs.__setitem__("num_classes", -1), "'num_classes' is -1, expected 0.."),
])
def test_backbone_format_validation(retinaface, tmp_path, edit, words):
    _, _, path, _ = retinaface
    with pytest.raises(FormatError) as info:
        mobinumba.load(corrupted(path, tmp_path, edit))
    assert words in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_a_classifier_in_a_file_saying_num_classes_0(tmp_path):
    model = build_reference("classic", 0.25, "relu", head=False, num_classes=10, seed=35)
    torch.save(model.state_dict(), tmp_path / "c.pth")
    convert_checkpoint(tmp_path / "c.pth", tmp_path / "c.h5", check=False)
    path = corrupted(tmp_path / "c.h5", tmp_path, lambda h5: h5.attrs.__setitem__(
        "num_classes", 0))
    with pytest.raises(FormatError, match="layer 'classifier' is dense; between the stem and "
                                          r"the end \(num_classes is 0\)"):
        mobinumba.load(path)
