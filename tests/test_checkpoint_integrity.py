"""Damaged torch.save zips and bfloat16 safetensors, found by the checkpoint fuzzer at
MOBINUMBA_FUZZ_SCALE=10.

torch.load trusts a zip's central directory and skips the records' CRC-32: one flipped bit
marking a data record as a directory made it return a storage of uninitialised memory, and
the converter wrote a model that computed garbage. These tests make that damage on purpose.
"""
import struct
import zipfile

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import build_reference, run_cli

CENTRAL_HEADER = b"PK\x01\x02"
EXTERNAL_ATTR_OFFSET = 38  # in a central directory entry: 4-byte external attributes
DOS_DIRECTORY = 0x10


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """A width-0.25 timm state dict and its torch.save zip."""
    model = build_reference("timm", 0.25, "relu6", head=False, num_classes=10, seed=3)
    path = tmp_path_factory.mktemp("integrity") / "m.pth"
    torch.save(model.state_dict(), path)
    return model.state_dict(), path


def largest_data_record(path):
    """The ZipInfo of the largest storage record of a torch.save zip."""
    with zipfile.ZipFile(path) as archive:
        return max((info for info in archive.infolist() if "/data/" in info.filename),
                   key=lambda info: info.file_size)


def damaged_copy(path, tmp_path, edit):
    data = bytearray(path.read_bytes())
    edit(data)
    out = tmp_path / "damaged.pth"
    out.write_bytes(bytes(data))
    return out


def mark_as_directory(data, record):
    """Set the DOS directory bit in the record's central directory entry (the fuzzer's find)."""
    name = record.filename.encode()
    entry = data.index(name, data.index(CENTRAL_HEADER)) - 46  # name follows the fixed part
    assert data[entry:entry + 4] == CENTRAL_HEADER
    data[entry + EXTERNAL_ATTR_OFFSET] |= DOS_DIRECTORY


def test_a_record_marked_as_a_directory_is_refused(state, tmp_path, capsys):
    _, path = state
    record = largest_data_record(path)
    damaged = damaged_copy(path, tmp_path, lambda data: mark_as_directory(data, record))
    # The damage is real: torch loads it without complaint, and the tensor is not the saved one.
    loaded = torch.load(damaged, weights_only=True)
    saved = torch.load(path, weights_only=True)
    assert any(not torch.equal(loaded[key], saved[key]) for key in saved)
    output = tmp_path / "out.h5"
    assert run_cli("convert", damaged, "-o", output, "--no-check") == 1
    assert "corrupt PyTorch checkpoint" in capsys.readouterr().err
    assert not output.exists()


def test_a_flipped_bit_in_tensor_data_is_refused(state, tmp_path, capsys):
    _, path = state
    record = largest_data_record(path)

    def flip(data):
        name_length, extra_length = struct.unpack_from("<HH", data, record.header_offset + 26)
        start = record.header_offset + 30 + name_length + extra_length
        data[start + record.file_size // 2] ^= 0x40

    damaged = damaged_copy(path, tmp_path, flip)
    output = tmp_path / "out.h5"
    assert run_cli("convert", damaged, "-o", output, "--no-check") == 1
    assert "corrupt PyTorch checkpoint" in capsys.readouterr().err
    assert not output.exists()
    assert run_cli("convert", path, "-o", output, "--no-check") == 0  # the intact file


def test_bfloat16_safetensors_convert_to_the_same_weights_as_the_pth(state, tmp_path):
    state_dict, _ = state
    bf16 = {key: (value.bfloat16() if value.is_floating_point() else value).contiguous()
            for key, value in state_dict.items()}
    save_file(bf16, tmp_path / "m.safetensors")
    torch.save(bf16, tmp_path / "m.pth")
    for name in ("m.safetensors", "m.pth"):
        assert run_cli("convert", tmp_path / name, "-o", tmp_path / f"{name}.h5") == 0
    with h5py.File(tmp_path / "m.safetensors.h5") as a, h5py.File(tmp_path / "m.pth.h5") as b:
        layers = list(a["layers"])
        assert layers == list(b["layers"])
        for layer in layers:
            for name in a["layers"][layer]:
                np.testing.assert_array_equal(a["layers"][layer][name][()],
                                              b["layers"][layer][name][()])
        # bfloat16 -> float32 is exact: the stored weight is the bfloat16 value itself.
        stem = a["layers"][layers[0]]["weight"][()]
        np.testing.assert_array_equal(stem, bf16["conv_stem.weight"].float().numpy())
