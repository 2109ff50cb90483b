"""The HDF5 loader: round trip, and every kind of bad file raises FormatError by name."""
import shutil

import h5py
import numpy as np
import pytest
import torch

import mobinumba
from conftest import build_reference, random_batch, run_cli, torch_logits
from mobinumba.weights import FORMAT_VERSION, read_model_file


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    """(reference module, path) of a converted width-0.25, 10-class classic model."""
    directory = tmp_path_factory.mktemp("weights")
    model = build_reference("classic", 0.25, "relu", head=False, num_classes=10, seed=5)
    torch.save(model.state_dict(), directory / "m.pth")
    assert run_cli("convert", directory / "m.pth", "-o", directory / "m.h5") == 0
    return model, directory / "m.h5"


def corrupted(small_file, tmp_path, edit):
    """A copy of the small file with `edit(h5py.File)` applied."""
    path = tmp_path / "bad.h5"
    shutil.copy(small_file[1], path)
    with h5py.File(path, "r+") as h5:
        edit(h5)
    return path


def expect_format_error(path, *words):
    with pytest.raises(mobinumba.FormatError) as info:
        mobinumba.load(path)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


def test_round_trip_keeps_tensors_and_metadata(small_file):
    reference, path = small_file
    model_file = read_model_file(path)
    assert [layer.kind for layer in model_file.layers] == (
        ["conv"] + ["dwconv", "pwconv"] * 13 + ["dense"])
    assert [layer.stride for layer in model_file.layers if layer.kind != "pwconv"] == [
        2, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1]
    state = reference.state_dict()
    np.testing.assert_array_equal(model_file.layers[3].weight, state["model.2.0.weight"].numpy())
    np.testing.assert_array_equal(model_file.layers[3].bn.var,
                                  state["model.2.1.running_var"].numpy())
    assert model_file.layers[3].bn.eps == pytest.approx(1e-5)
    assert model_file.layers[3].source_name == "model.2.0"
    x = random_batch(2, 64)
    np.testing.assert_allclose(mobinumba.load(path)(x), torch_logits(reference, x),
                               atol=1e-5, rtol=0)


def test_not_hdf5(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("hello\n")
    expect_format_error(path, "not a readable HDF5 file")


def test_truncated_hdf5(small_file, tmp_path):
    path = tmp_path / "truncated.h5"
    data = small_file[1].read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect_format_error(path, str(path))


def test_missing_file_and_directory(tmp_path):
    expect_format_error(tmp_path / "absent.h5", "no such file")
    expect_format_error(tmp_path, "is a directory")


def test_missing_dataset(small_file, tmp_path):
    path = corrupted(small_file, tmp_path, lambda h5: h5["layers/05_block03_dw"].pop("var"))
    expect_format_error(path, "layers/05_block03_dw", "missing dataset 'var'")


def test_shape_that_does_not_match_its_neighbours(small_file, tmp_path):
    def edit(h5):
        group = h5["layers/06_block03_pw"]
        out_channels = group["weight"].shape[0]
        del group["weight"]
        group["weight"] = np.ones((out_channels, 7, 1, 1), np.float32)
    message = expect_format_error(corrupted(small_file, tmp_path, edit), "block03_pw")
    assert "7 input channels" in message


def test_format_version_from_the_future(small_file, tmp_path):
    def edit(h5):
        h5.attrs["format_version"] = FORMAT_VERSION + 1
    expect_format_error(corrupted(small_file, tmp_path, edit), "format_version",
                        f"supports ({FORMAT_VERSION})")


@pytest.mark.parametrize("edit,words", [
    (lambda h5: h5.attrs.__delitem__("activation"), ["missing attribute 'activation'"]),
    (lambda h5: h5.attrs.__setitem__("activation", "gelu"), ["activation", "gelu"]),
    (lambda h5: h5.attrs.__setitem__("num_classes", 11), ["num_classes is 11"]),
    (lambda h5: h5.attrs.__setitem__("std", [0.2, 0.0, 0.2]), ["std"]),
    (lambda h5: h5.attrs.__setitem__("format", "keras"), ["format", "keras"]),
    (lambda h5: h5["layers/01_block01_dw"].attrs.__setitem__("stride", 3), ["stride", "3"]),
    # A strided 1x1 conv is not something the runner can execute (found by fuzzing: it was
    # silently run with stride 1).
    (lambda h5: h5["layers/02_block01_pw"].attrs.__setitem__("stride", 2),
     ["02_block01_pw", "stride' is 2", "pwconv layer has 1"]),
    (lambda h5: h5["layers/01_block01_dw"].attrs.__setitem__("kind", "lstm"), ["kind"]),
    (lambda h5: h5["layers/02_block01_pw/weight"].__setitem__(
        (0, 0, 0, 0), np.nan), ["02_block01_pw/weight", "NaN"]),
    (lambda h5: h5["layers"].move("03_block02_dw", "07_block02_dw"), ["layer indices"]),
    (lambda h5: h5.__delitem__("layers"), ["missing group 'layers'"]),
])
def test_bad_attributes_and_values(small_file, tmp_path, edit, words):
    expect_format_error(corrupted(small_file, tmp_path, edit), *words)


def test_wrong_dtype(small_file, tmp_path):
    def edit(h5):
        group = h5["layers/00_conv_stem"]
        shape = group["weight"].shape
        del group["weight"]
        group["weight"] = np.ones(shape, np.int32)
    expect_format_error(corrupted(small_file, tmp_path, edit), "00_conv_stem/weight", "int32")


def test_cli_inspect_reports_bad_files_in_one_line(tmp_path, capsys):
    path = tmp_path / "text.h5"
    path.write_text("hello\n")
    assert run_cli("inspect", path) == 1
    err = capsys.readouterr().err
    assert err.startswith("mobinumba: error: ") and err.count("\n") == 1


def test_virtual_datasets_are_refused(small_file, tmp_path):
    """A virtual dataset reads its values from other files: refused even when the values it
    maps in are the right ones."""
    name = "layers/02_block01_pw/beta"
    with h5py.File(small_file[1], "r") as h5:
        values = h5[name][()]
    source = tmp_path / "source.h5"
    with h5py.File(source, "w") as h5:
        h5["beta"] = values

    def virtual(h5):
        del h5[name]
        layout = h5py.VirtualLayout(values.shape, values.dtype)
        layout[:] = h5py.VirtualSource(str(source), "beta", values.shape)
        h5.create_virtual_dataset(name, layout)

    path = corrupted(small_file, tmp_path, virtual)
    with h5py.File(path, "r") as h5:
        assert h5[name].is_virtual and np.array_equal(h5[name][()], values)
    expect_format_error(path, f"{name}: is a virtual dataset, which is not allowed")
