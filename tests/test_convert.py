"""The converter: file formats, wrappers, layouts, metadata, labels, and its error paths.

Every bad input must give one line on stderr naming the problem, a non-zero exit status, no
traceback, and no output file (nor temp file) left behind.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import mobinumba
from conftest import build_reference, random_batch, run_cli, torch_logits


@pytest.fixture(scope="module")
def small_timm():
    """A width-0.25 timm reference: small, quick to convert."""
    return build_reference("timm", 0.25, "relu6", head=False, seed=3)


def convert_ok(checkpoint, output, *extra):
    assert run_cli("convert", checkpoint, "-o", output, *extra) == 0
    return mobinumba.load(output)


def test_wrapped_and_prefixed_state_dicts_convert_identically(small_timm, tmp_path):
    state = small_timm.state_dict()
    x = random_batch(2, 96)
    expected = torch_logits(small_timm, x)
    variants = {
        "plain.pth": state,
        "wrapped.pth.tar": {"state_dict": state, "epoch": 3},
        "dataparallel.pt": {f"module.{k}": v for k, v in state.items()},
        "both.pth": {"state_dict": {f"module.{k}": v for k, v in state.items()}},
    }
    for name, obj in variants.items():
        torch.save(obj, tmp_path / name)
        model = convert_ok(tmp_path / name, tmp_path / f"{name}.h5")
        np.testing.assert_allclose(model(x), expected, rtol=0, atol=1e-4, err_msg=name)


def test_missing_num_batches_tracked_is_tolerated(small_timm, tmp_path):
    state = {k: v for k, v in small_timm.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "m.safetensors")
    convert_ok(tmp_path / "m.safetensors", tmp_path / "m.h5")


def test_metadata_defaults_per_layout(tmp_path):
    timm_model = build_reference("timm", 0.25, "relu6", head=False)
    classic_model = build_reference("classic", 0.25, "relu", head=False, num_classes=10)
    torch.save(timm_model.state_dict(), tmp_path / "t.pth")
    torch.save(classic_model.state_dict(), tmp_path / "c.pth")
    timm_info = convert_ok(tmp_path / "t.pth", tmp_path / "t.h5").info
    classic = convert_ok(tmp_path / "c.pth", tmp_path / "c.h5")
    assert (timm_info.activation, timm_info.mean, timm_info.std, timm_info.interpolation,
            timm_info.crop_pct) == ("relu6", (0.5,) * 3, (0.5,) * 3, "bicubic", 0.875)
    info = classic.info
    assert (info.activation, info.mean, info.std, info.interpolation, info.crop_pct) == (
        "relu", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear", 0.875)
    assert timm_info.width_multiplier == 0.25 and timm_info.num_classes == 1000
    assert timm_info.source_layout == "timm" and info.source_layout == "classic"
    assert len(timm_info.source_sha256) == 64 and timm_info.source_file == "t.pth"
    # 1000 classes get ImageNet labels by default; 10 classes get none.
    assert mobinumba.load(tmp_path / "t.h5").labels[:2] == ["tench", "goldfish"]
    assert classic.labels is None


def test_metadata_flags_override_defaults(small_timm, tmp_path):
    torch.save(small_timm.state_dict(), tmp_path / "m.pth")
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class {i}\n" for i in range(1000)))
    info = convert_ok(tmp_path / "m.pth", tmp_path / "m.h5", "--mean", "0.1", "0.2", "0.3",
                      "--std", "0.4", "0.5", "0.6", "--interpolation", "bilinear",
                      "--crop-pct", "0.9", "--input-size", "160", "--labels", labels,
                      "--layout", "timm").info
    assert (info.mean, info.std, info.interpolation, info.crop_pct, info.input_size) == (
        (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), "bilinear", 0.9, 160)
    assert mobinumba.load(tmp_path / "m.h5").labels[7] == "class 7"
    convert_ok(tmp_path / "m.pth", tmp_path / "none.h5", "--labels", "none")
    assert mobinumba.load(tmp_path / "none.h5").labels is None


def test_bn_eps_flag_changes_the_folding(small_timm, tmp_path):
    torch.save(small_timm.state_dict(), tmp_path / "m.pth")
    default = convert_ok(tmp_path / "m.pth", tmp_path / "a.h5")
    custom = convert_ok(tmp_path / "m.pth", tmp_path / "b.h5", "--bn-eps", "0.1")
    x = random_batch(1, 64)
    assert np.abs(default(x) - custom(x)).max() > 1e-3


def test_existing_output_needs_force(small_timm, tmp_path, capsys):
    torch.save(small_timm.state_dict(), tmp_path / "m.pth")
    output = tmp_path / "m.h5"
    output.write_bytes(b"keep me")
    assert run_cli("convert", tmp_path / "m.pth", "-o", output) == 1
    assert "exists" in capsys.readouterr().err
    assert output.read_bytes() == b"keep me"
    assert run_cli("convert", tmp_path / "m.pth", "-o", output, "--force") == 0
    assert mobinumba.load(output).num_classes == 1000


def test_self_check_failure_leaves_no_file(small_timm, tmp_path, capsys):
    torch.save(small_timm.state_dict(), tmp_path / "m.pth")
    # A 1e-12 relative tolerance cannot be met by float32 arithmetic.
    assert run_cli("convert", tmp_path / "m.pth", "-o", tmp_path / "m.h5",
                   "--tolerance", "1e-12") == 1
    assert "self-check failed" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["m.pth"]


def _bad_checkpoints(tmp_path, small_timm):
    """(name, path, expected words in the message) for each kind of bad input."""
    state = small_timm.state_dict()
    cases = []

    def save(name, obj):
        torch.save(obj, tmp_path / name)
        return tmp_path / name

    missing = dict(state)
    del missing["blocks.3.2.conv_pw.weight"]
    cases.append(("missing key", save("missing.pth", missing), "blocks.3.2.conv_pw.weight"))
    wrong = dict(state)
    wrong["blocks.1.0.conv_dw.weight"] = torch.zeros(24, 1, 3, 3)
    cases.append(("wrong shape", save("wrong.pth", wrong), "blocks.1.0.conv_dw.weight"))
    extra = dict(state)
    extra["blocks.0.0.se.conv_reduce.weight"] = torch.zeros(4, 8, 1, 1)
    cases.append(("extra key", save("extra.pth", extra), "se.conv_reduce"))
    unknown = {"stem.conv.weight": torch.zeros(8, 3, 3, 3), "head.weight": torch.zeros(10, 8)}
    cases.append(("unknown layout", save("unknown.pth", unknown), "unknown layout"))
    good = save("good.pth", state)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases.append(("truncated", truncated, "not a readable PyTorch checkpoint"))
    text = tmp_path / "notes.pth"
    text.write_text("this is not a checkpoint\n")
    cases.append(("not a checkpoint", text, "not a readable PyTorch checkpoint"))
    bad_safetensors = tmp_path / "bad.safetensors"
    bad_safetensors.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    cases.append(("bad safetensors", bad_safetensors, "not a readable safetensors file"))
    cases.append(("no such file", tmp_path / "absent.pth", "no such file"))
    cases.append(("a directory", tmp_path, "is a directory"))
    nan = dict(state)
    nan["classifier.bias"] = torch.full((1000,), float("nan"))
    cases.append(("NaN weights", save("nan.pth", nan), "classifier.bias"))
    strings = dict(state)
    strings["bn1.weight"] = "gamma"
    cases.append(("non-tensor value", save("strings.pth", strings), "bn1.weight"))
    resnet = {"conv1.weight": torch.zeros(64, 3, 7, 7), "bn1.weight": torch.zeros(64),
              "layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3), "fc.weight": torch.zeros(10, 512)}
    cases.append(("another network", save("resnet.pth", resnet),
                  "mobinumba runs MobileNetV1; this is a ResNet checkpoint"))
    return cases


def test_bad_checkpoints_fail_cleanly_in_process(small_timm, tmp_path, capsys):
    sources = tmp_path / "sources"
    sources.mkdir()
    outputs = tmp_path / "out"
    outputs.mkdir()
    for name, path, words in _bad_checkpoints(sources, small_timm):
        assert run_cli("convert", path, "-o", outputs / "x.h5") == 1, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("mobinumba: error: "), (name, err)
        assert words in err, (name, err)
        assert "Traceback" not in err
        assert os.listdir(outputs) == [], name


def test_bad_checkpoints_fail_cleanly_from_the_console_script(small_timm, tmp_path):
    sources = tmp_path / "sources"
    sources.mkdir()
    cases = _bad_checkpoints(sources, small_timm)
    for name, path, words in [cases[0], cases[3], cases[4], cases[7]]:
        result = subprocess.run([sys.executable, "-m", "mobinumba.cli", "convert", str(path),
                                 "-o", str(tmp_path / "x.h5")], capture_output=True, text=True)
        assert result.returncode == 1, name
        assert words in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
        assert not (tmp_path / "x.h5").exists()


def test_usage_errors_exit_2_without_traceback(tmp_path):
    for argv in (["convert"], ["convert", "x.pth", "-o", "y.h5", "--crop-pct", "2"],
                 ["convert", "x.pth", "-o", "y.h5", "--layout", "resnet"],
                 ["predict", "a.jpg", "--weights", "w.h5", "--threads", "0"]):
        result = subprocess.run([sys.executable, "-m", "mobinumba.cli", *argv],
                                capture_output=True, text=True)
        assert result.returncode == 2, argv
        assert "Traceback" not in result.stderr and "usage:" in result.stderr


def test_forced_layout_that_does_not_fit_names_the_missing_key(small_timm, tmp_path, capsys):
    torch.save(small_timm.state_dict(), tmp_path / "m.pth")
    assert run_cli("convert", tmp_path / "m.pth", "-o", tmp_path / "m.h5",
                   "--layout", "classic") == 1
    assert "missing key 'model.0.0.weight'" in capsys.readouterr().err


def test_pickle_with_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": Exploit()}, tmp_path / "evil.pth",
               _use_new_zipfile_serialization=True)
    assert run_cli("convert", tmp_path / "evil.pth", "-o", tmp_path / "e.h5") == 1
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err
    assert not marker.exists()
