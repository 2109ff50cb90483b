"""Promises of README.md about the `mobinumba` command that no other test held it to.

convert: the self-check line (--no-check vs torch missing), --labels FILE|imagenet errors and
values, --padding on a .pth against a PyTorch reference that pads as TensorFlow does, and
--threads; inspect --threads; predict's text lines against a NumPy softmax of the model's
own logits. Everything runs through mobinumba.cli.main, in-process.
"""
import copy
import re

import numba
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mobinumba
from conftest import SMALL_LABELS, build_reference, make_photos, random_batch, run_cli
from conftest import torch_logits
from tfslim_graphs import tf_same_pads


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """name -> (reference module, .pth path): width-0.25 timm models with 1000, 1001 and 10
    classes."""
    directory = tmp_path_factory.mktemp("promises")
    found = {}
    for classes in (1000, 1001, 10):
        model = build_reference("timm", 0.25, "relu6", head=False, num_classes=classes, seed=7)
        path = directory / f"m{classes}.pth"
        torch.save(model.state_dict(), path)
        found[classes] = (model, path)
    return found


@pytest.fixture
def restore_threads():
    """--threads sets the process's kernel threads: put them back after the test."""
    before = mobinumba.get_threads()
    yield
    mobinumba.set_threads(before)


def convert(checkpoint, output, *extra):
    """`mobinumba convert` at input size 64: the self-check's forward passes stay cheap."""
    return run_cli("convert", checkpoint, "-o", output, "--input-size", 64, *extra)


# ----------------------------------------------------------------------- the self-check line

def test_no_check_says_so_and_the_default_runs_the_check(checkpoints, tmp_path, capsys):
    _, path = checkpoints[10]
    assert convert(path, tmp_path / "off.h5", "--no-check") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "self-check skipped (--no-check)"
    assert convert(path, tmp_path / "on.h5") == 0  # torch is installed: checked by default
    last = capsys.readouterr().out.splitlines()[-1]
    assert re.fullmatch(r"self-check against PyTorch: max \|logit difference\| \S+ "
                        r"\(allowed \S+\)", last), last


# ------------------------------------------------------------------------------ --labels

def test_labels_errors_are_one_line_and_write_nothing(checkpoints, tmp_path, capsys):
    _, path = checkpoints[10]
    not_utf8 = tmp_path / "latin1.txt"
    not_utf8.write_bytes("".join(f"caf\xe9 {i}\n" for i in range(10)).encode("latin-1"))
    nine = tmp_path / "nine.txt"
    nine.write_text("".join(f"class {i}\n" for i in range(9)))
    cases = [
        (tmp_path / "absent.txt", f"--labels {tmp_path / 'absent.txt'}: no such file"),
        (not_utf8, f"--labels {not_utf8}: not a UTF-8 text file"),
        (nine, f"--labels {nine}: 9 labels, but the checkpoint has 10 classes"),
        ("imagenet", "--labels imagenet: 1000 labels, but the checkpoint has 10 classes"),
    ]
    for labels, message in cases:
        assert convert(path, tmp_path / "x.h5", "--labels", labels) == 1, labels
        err = capsys.readouterr().err
        assert err == f"mobinumba: error: {message}\n"
        assert not (tmp_path / "x.h5").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# Well-known ImageNet-1k class indices (0-based, the standard synset order).
IMAGENET_SPOTS = {0: "tench", 1: "goldfish", 281: "tabby", 285: "Egyptian cat",
                  457: "bow tie", 504: "coffee mug", 967: "espresso", 999: "toilet tissue"}


def test_labels_imagenet(checkpoints, tmp_path):
    for classes, offset in ((1000, 0), (1001, 1)):  # 1001: TF-slim's background first
        output = tmp_path / f"{classes}.h5"
        assert convert(checkpoints[classes][1], output, "--labels", "imagenet",
                       "--no-check") == 0
        labels = mobinumba.load(output).labels
        assert len(labels) == len(set(labels)) == classes
        for index, name in IMAGENET_SPOTS.items():
            assert labels[index + offset] == name
        if offset:
            assert labels[0] == "background"


# ----------------------------------------------------------------------------- --padding

def tf_padded(module):
    """A copy of a torch module whose 3x3 convs pad as TensorFlow's SAME does (0 before and
    1 after along an even side at stride 2, else 1 and 1), by F.pad before an unpadded conv."""
    module = copy.deepcopy(module)

    def pad(conv, inputs):
        (x,) = inputs
        top, bottom = tf_same_pads(x.shape[2], conv.stride[0])
        left, right = tf_same_pads(x.shape[3], conv.stride[1])
        return (F.pad(x, (left, right, top, bottom)),)

    for conv in module.modules():
        if isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (3, 3):
            conv.padding = (0, 0)
            conv.register_forward_pre_hook(pad)
    return module


def test_padding_tf_same_on_a_pth(checkpoints, tmp_path):
    reference, path = checkpoints[10]
    assert convert(path, tmp_path / "tf.h5", "--padding", "tf_same") == 0
    model = mobinumba.load(tmp_path / "tf.h5")
    assert model.info.padding == "tf_same"
    x = random_batch(2, 64, seed=4)  # even sides: the stride-2 convs pad (0, 1)
    expected = torch_logits(tf_padded(reference), x)
    actual = model(x)
    np.testing.assert_allclose(actual, expected, rtol=0,
                               atol=1e-4 * max(1.0, np.abs(expected).max()))
    # The option mattered: PyTorch's own padding gives other logits on these tensors.
    assert np.abs(torch_logits(reference, x) - expected).max() > 100 * np.abs(
        actual - expected).max()


# ----------------------------------------------------------------------------- --threads

def test_threads_reach_the_kernels_of_convert_and_inspect(checkpoints, tmp_path, monkeypatch,
                                                          capsys, restore_threads):
    """convert's self-check runs the written file: its forward pass runs on --threads
    kernel threads; inspect takes --threads (bounded by Numba's pool) and prints the same."""
    seen = []
    real_call = mobinumba.Model.__call__

    def recording(self, x):
        logits = real_call(self, x)
        seen.append(numba.get_num_threads())  # as kernel_section left it for this pass
        return logits

    monkeypatch.setattr(mobinumba.Model, "__call__", recording)
    limit = numba.config.NUMBA_NUM_THREADS
    for threads in sorted({1, limit}):
        seen.clear()
        assert convert(checkpoints[10][1], tmp_path / f"t{threads}.h5", "--threads",
                       threads) == 0
        assert seen == [threads]
    capsys.readouterr()
    assert run_cli("inspect", tmp_path / "t1.h5") == 0
    plain = capsys.readouterr().out
    mobinumba.set_threads(limit)
    assert run_cli("inspect", tmp_path / "t1.h5", "--threads", 1) == 0
    assert capsys.readouterr().out == plain and mobinumba.get_threads() == 1
    for bad in (0, limit + 1):
        with pytest.raises(SystemExit) as exit_info:
            run_cli("inspect", tmp_path / "t1.h5", "--threads", bad)
        assert exit_info.value.code == 2
        assert f"argument --threads: {bad} is not in [1, {limit}]" in capsys.readouterr().err


# ------------------------------------------------------------------- predict's text lines

LINE = re.compile(r"  (\d+)\.  ([01]\.\d{4})  (.+) \((\d+)\)")


def test_predict_text_lines(checkpoints, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(SMALL_LABELS) + "\n")
    weights = tmp_path / "small.h5"
    assert convert(checkpoints[10][1], weights, "--labels", labels) == 0
    photos = make_photos(tmp_path / "photos", 3, seed=2)
    capsys.readouterr()
    assert run_cli("predict", *photos, "--weights", weights, "--topk", 4) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 * 5
    model = mobinumba.load(weights)
    for number, path in enumerate(photos):
        block = lines[5 * number:5 * number + 5]
        assert block[0] == path
        logits = model(model.preprocess(path)[None])[0].astype(np.float64)
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        order = np.argsort(-probabilities, kind="stable")[:4]
        for rank, (line, index) in enumerate(zip(block[1:], order), start=1):
            match = LINE.fullmatch(line)
            assert match, line
            assert int(match[1]) == rank and int(match[4]) == index
            assert match[3] == SMALL_LABELS[index]
            assert abs(float(match[2]) - probabilities[index]) <= 0.5e-4 + 1e-7, line
