"""Guards found or added while fuzzing that the fuzz tests do not pin down directly:
float32 overflow, batch and predict sizing, size limits, special files, text checks."""
import os

import numpy as np
import pytest
import torch

import mobinumba
from conftest import build_reference, random_batch, run_cli
from mobinumba.graph import workspace_bytes
from mobinumba.model import MAX_WORKSPACE_BYTES, PREDICT_BATCH
from mobinumba.weights import read_model_file, write_model_file


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(directory, reference module, path) of a width-0.25, 10-class classic file."""
    directory = tmp_path_factory.mktemp("hostile")
    model = build_reference("classic", 0.25, "relu", head=False, num_classes=10, seed=12)
    torch.save(model.state_dict(), directory / "m.pth")
    assert run_cli("convert", directory / "m.pth", "-o", directory / "m.h5",
                   "--no-check") == 0
    return directory, model, directory / "m.h5"


def rewritten(small, tmp_path, change):
    """A copy of the small file with change(model_file) applied before writing."""
    model_file = read_model_file(small[2])
    change(model_file)
    path = tmp_path / "changed.h5"
    write_model_file(path, model_file)
    return path


def test_float32_overflow_is_an_error_not_nan_logits(small, tmp_path):
    def huge(model_file):  # finite and foldable, but 1e30 * 1e30 overflows float32
        model_file.layers[1].bn.beta[:] = 1e30
        model_file.layers[2].weight[:] = 1e30
    model = mobinumba.load(rewritten(small, tmp_path, huge))
    with pytest.raises(mobinumba.NumericError, match="overflowed float32"):
        model(random_batch(1, 32))


def test_finite_but_huge_input_is_an_error_not_nan_logits(small):
    model = mobinumba.load(small[2])
    with pytest.raises(mobinumba.NumericError):
        model(np.full((1, 3, 16, 16), 3e38, np.float32))


def test_absurd_batch_shapes_are_refused_with_the_size(small):
    model = mobinumba.load(small[2])
    # Read-only broadcast views of one float: no memory is spent on the input itself.
    for shape in [(4096, 3, 224, 224), (2 ** 40, 3, 1, 1), (1, 3, 2 ** 29, 2 ** 29)]:
        with pytest.raises(mobinumba.InputError, match=r"needs [\d.]+ GiB of buffers"):
            model(np.broadcast_to(np.float32(0), shape))


def test_predict_batches_by_memory_for_a_huge_input_size(small, tmp_path):
    def big_input(model_file):
        model_file.info = type(model_file.info)(**{**model_file.info.__dict__,
                                                   "input_size": 8192})
    model = mobinumba.load(rewritten(small, tmp_path, big_input))
    per_batch = model.images_per_batch()
    assert 1 <= per_batch < PREDICT_BATCH
    one_image = workspace_bytes(model._ops, 1, 8192, 8192) + 4 * 3 * 8192 ** 2
    assert per_batch * one_image <= MAX_WORKSPACE_BYTES < (per_batch + 1) * one_image
    assert mobinumba.load(small[2]).images_per_batch() == PREDICT_BATCH


def test_total_size_limit(small, monkeypatch):
    monkeypatch.setattr("mobinumba.weights.MAX_TOTAL_ELEMENTS", 1000)
    with pytest.raises(mobinumba.FormatError, match="values in all, more than the limit"):
        mobinumba.load(small[2])


def test_special_files_are_refused_without_blocking(small, tmp_path):
    fifo = tmp_path / "pipe.h5"
    os.mkfifo(fifo)
    with pytest.raises(mobinumba.FormatError, match="pipe.h5: not a regular file"):
        mobinumba.load(fifo)
    with pytest.raises(mobinumba.CheckpointError, match="pipe.h5: not a regular file"):
        from mobinumba.convert.checkpoint import read_state_dict
        read_state_dict(fifo)
    graph = tmp_path / "pipe.pb"
    os.mkfifo(graph)
    with pytest.raises(mobinumba.CheckpointError, match="pipe.pb: not a regular file"):
        from mobinumba.convert.graphdef import read_graphdef
        read_graphdef(graph)


def test_labels_file_with_control_characters(small, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class {i}\n" for i in range(9)) + "bad\x1b[2J\n")
    assert run_cli("convert", small[0] / "m.pth", "-o", tmp_path / "x.h5", "--labels",
                   labels, "--no-check") == 1
    assert "line 10 contains control characters" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()
    labels.write_text("".join(f"n0{i}\tclass {i}\n" for i in range(10)))  # tabs are fine
    assert run_cli("convert", small[0] / "m.pth", "-o", tmp_path / "x.h5", "--labels",
                   labels, "--no-check") == 0
    assert mobinumba.load(tmp_path / "x.h5").labels[3] == "n03\tclass 3"


def test_source_file_name_is_stored_printable(small, tmp_path):
    odd = tmp_path / "evil\x1b[2J.pth"
    odd.write_bytes((small[0] / "m.pth").read_bytes())
    assert run_cli("convert", odd, "-o", tmp_path / "x.h5", "--no-check") == 0
    assert mobinumba.load(tmp_path / "x.h5").info.source_file == "evil?[2J.pth"


def test_inspect_of_a_hostile_file_is_one_line(small, tmp_path, capsys):
    def escape(model_file):
        model_file.labels = ["ok"] * 9 + ["\x1b]0;title\x07"]
    path = tmp_path / "escape.h5"
    model_file = read_model_file(small[2])
    escape(model_file)
    write_model_file(path, model_file)
    assert run_cli("inspect", path) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "label 9 contains control characters" in err


@pytest.mark.parametrize("argv,words", [
    (("predict", "x.jpg", "--topk", "0"), "argument --topk: 0 is not in [1, 1000000]"),
    (("predict", "x.jpg", "--batch-size", "1.5"), "'1.5' is not a valid int"),
    (("convert", "m.pth", "-o", "m.h5", "--crop-pct", "0"), "0 is not in (0.0, 1.0]"),
    (("convert", "m.pth", "-o", "m.h5", "--tolerance", "nan"), "nan is not in (0.0, 1.0]"),
    (("bench", "--width", "inf"), "inf is not in (0.0, 4.0]"),
])
def test_out_of_range_options_are_refused_by_argparse(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*argv)
    assert exit_info.value.code == 2
    assert words in capsys.readouterr().err


@pytest.mark.parametrize("value", [0, True, 2.0, 10 ** 9])
def test_thread_counts_are_checked_like_every_integer_option(value):
    limit = numba_threads()
    with pytest.raises(ValueError) as refused:
        mobinumba.set_threads(value)
    assert str(refused.value) == (f"threads must be an integer in 1..{limit} "
                                  f"(NUMBA_NUM_THREADS), got {value!r}")


def numba_threads():
    import numba
    return numba.config.NUMBA_NUM_THREADS
