"""Fuzzing the `.tflite` reader: corrupted TensorFlow Lite files must be refused by name or
convert and run right.

Seeds: two width-0.25, 10-class files written by `export --tflite`, one with PyTorch's
padding (explicit PAD ops) and one with TensorFlow's SAME, and the int8 form of the second
(quantized, then exported: QUANTIZE, per-channel int8 weights, int32 biases, DEQUANTIZE). Cases flip, overwrite and cut
bytes, 4 in 5 in the FlatBuffer's structure (vtables, offsets, vectors, options, shapes;
everything but the weight data), the rest anywhere. Each runs `convert_checkpoint` in the
isolated worker (tests/fuzz_worker.py) and must end in CheckpointError with a one-line
message that starts with the file and says what is wrong (an operator, a tensor, a field,
or that the file is not a valid TensorFlow Lite model / not a MobileNetV1), or convert and
agree with a float64 reference read from the same file by the `tflite` package (an int8
file: run bit-exact against the NumPy reference of TFLite's integer arithmetic). A crash,
hang, foreign exception or wrong result fails the test.
"""

import numpy as np
import pytest
from hypothesis import given

from fuzzing import (STATS, FuzzWorker, Timer, apply_byte_edits, at_least, check_answer,
                     examples, structural_byte_edits)
from mobinumba.bench.synthetic import random_model_file
from mobinumba.export_tflite import tflite_bytes
from mobinumba.quantize import quantize_model_file
from mobinumba.weights import ModelInfo, ModelFile

pytestmark = pytest.mark.slow  # a fuzzer: ~600 cases in a worker process

NAMING = (r"not a valid TensorFlow Lite model|not a MobileNetV1 graph|operator \d+|tensor \d+|"
          r"quantiz|\bkey\b|shape|activations|padding|subgraph|missing key|unexpected key|"
          r"NaN|overflows|--padding")


class Seeds:
    """{name: (bytes, structure offsets)} of the seed files, and their directory."""

    def __init__(self, directory):
        tflite = pytest.importorskip("tflite")
        self.directory = directory
        self.files = {}
        for name, padding, seed in (("torch.tflite", "torch", 31), ("same.tflite", "tf_same",
                                                                    32)):
            model_file = random_model_file(0.25, 10, 32, seed=seed)
            info = ModelInfo(**{**model_file.info.__dict__, "padding": padding})
            model_file = ModelFile(info=info, layers=model_file.layers)
            data, _ = tflite_bytes(model_file)
            self.files[name] = (data, _structure(tflite, data))
            (directory / name).write_bytes(data)
            if padding == "tf_same":  # its int8 form, calibrated on random images
                batches = [np.random.default_rng(seed).standard_normal((4, 3, 32, 32))
                           .astype(np.float32)]
                data, _ = tflite_bytes(quantize_model_file(model_file, batches)[0])
                self.files["int8.tflite"] = (data, _structure(tflite, data))


def _structure(tflite, data):
    """Offsets of every byte outside the constant buffers' data."""
    model = tflite.Model.GetRootAsModel(data, 0)
    weight_bytes = np.zeros(len(data), bool)
    for index in range(model.BuffersLength()):
        buffer = model.Buffers(index)
        if buffer.DataLength():
            start = buffer._tab.Vector(buffer._tab.Offset(4))
            weight_bytes[start:start + buffer.DataLength()] = True
    return np.flatnonzero(~weight_bytes)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return Seeds(tmp_path_factory.mktemp("fuzz_tflite"))


@pytest.fixture(scope="module")
def worker(seeds):
    directory = seeds.directory
    process = FuzzWorker({"target": "tflite", "path": str(directory / "torch.tflite"),
                          "output": str(directory / "warmup.h5")})
    yield process
    process.close()


@pytest.mark.parametrize("name,count", [("torch.tflite", 250), ("same.tflite", 150),
                                        ("int8.tflite", 200)])
def test_byte_mutations(seeds, worker, name, count):
    data, structure = seeds.files[name]
    path = seeds.directory / f"bytes-{name}"

    @examples(count)
    @given(edits=structural_byte_edits(len(data), structure, max_overwrite=8))
    def case(edits):
        path.write_bytes(apply_byte_edits(data, edits))
        with Timer("tflite"):
            answer = worker.run({"target": "tflite", "path": str(path),
                                 "output": str(seeds.directory / "out.h5")})
        check_answer("tflite", answer, str(path), ("CheckpointError",), NAMING,
                     str(seeds.directory / "failures"))

    with STATS.watching() as seen:
        case()
    outcomes = seen.outcomes["tflite"]
    assert outcomes["refused"] >= at_least(count // 5) and outcomes["ok"] >= at_least(5), \
        (outcomes, sorted(seen.classes["tflite"]))
