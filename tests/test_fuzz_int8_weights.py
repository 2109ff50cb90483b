"""Fuzzing the int8 weight-file reader (format_version 2) as test_fuzz_weights.py fuzzes the
float one: byte mutations of a valid int8 file, and listed corruptions of its int8 fields.

Each case runs in the isolated worker (tests/fuzz_worker.py, target "int8"): it must end in
a one-line FormatError starting with the file and naming what is wrong, or load and give
int8 logits bit-identical to tests/qreference.py computed on the tensors h5py reads.
"""
import os

import h5py
import numpy as np
import pytest
from hypothesis import given

from fuzzing import STATS, FuzzWorker, Timer, apply_byte_edits, check_answer, examples, \
    examples_count
from mobinumba.bench.synthetic import random_model_file
from mobinumba.quantize import quantize_model_file
from mobinumba.weights import write_model_file
from test_fuzz_weights import NAMING, SeedFile, byte_edits

pytestmark = pytest.mark.slow  # a fuzzer: ~400 cases in a worker process

INT8_NAMING = NAMING + r"|precision|weight_scale|bias|_zero_point|_scale|pool"


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz_int8")
    model_file = random_model_file(0.25, 10, 24, seed=4)
    batch = np.random.default_rng(2).standard_normal((2, 3, 24, 24)).astype(np.float32)
    int8_file, _ = quantize_model_file(model_file, [batch])
    path = directory / "seed.h5"
    write_model_file(path, int8_file)
    return SeedFile(str(path), directory)


@pytest.fixture(scope="module")
def worker(seed):
    process = FuzzWorker({"target": "int8", "path": seed.path})
    yield process
    process.close()


def run_case(worker, seed, path):
    with Timer("int8"):
        answer = worker.run({"target": "int8", "path": path})
    check_answer("int8", answer, path, ("FormatError",), INT8_NAMING,
                 os.path.join(seed.directory, "failures"))
    return answer


def test_seed_runs_bit_exact(seed, worker):
    assert run_case(worker, seed, seed.path)["outcome"] == "ok"


def test_byte_mutations(seed, worker):
    path = os.path.join(seed.directory, "bytes.h5")

    @examples(300)
    @given(edits=byte_edits(seed))
    def case(edits):
        with open(path, "wb") as stream:
            stream.write(apply_byte_edits(seed.data, edits))
        run_case(worker, seed, path)

    with STATS.watching() as seen:
        case()
    cases = seen.cases["int8"]
    assert cases == examples_count(300)
    assert seen.outcomes["int8"]["ok"] >= cases // 10  # flips in weights that still load


def _set_attr(name, key, value):
    return lambda h5: h5[name].attrs.__setitem__(key, value)


def _replace(name, data):
    def edit(h5):
        del h5[name]
        h5.create_dataset(name, data=data)
    return edit


CORRUPTIONS = {
    "zero weight scale": (lambda h5: h5["layers/02_block01_pw/weight_scale"].__setitem__(
        0, 0.0), "layers/02_block01_pw/weight_scale: scales must be > 0"),
    "NaN weight scale": (lambda h5: h5["layers/01_block01_dw/weight_scale"].__setitem__(
        1, np.nan), "weight_scale: contains NaN or Inf"),
    "zero point out of int8": (_set_attr("layers/00_conv_stem", "output_zero_point", 200),
                               "attribute 'output_zero_point' is 200, expected -128..127"),
    "zero input scale": (_set_attr("/", "input_scale", 0.0), "attribute 'input_scale' is 0.0"),
    "tiny input scale": (_set_attr("/", "input_scale", 1e-60), "which is 0 in float32"),
    "infinite output scale": (_set_attr("layers/27_classifier", "output_scale", np.inf),
                              "attribute 'output_scale' is inf"),
    "float weight": (lambda h5: _replace("layers/02_block01_pw/weight", h5[
        "layers/02_block01_pw/weight"][()].astype(np.float32))(h5),
                     "layers/02_block01_pw/weight: dtype float32, expected int8"),
    "int16 weight": (lambda h5: _replace("layers/02_block01_pw/weight", h5[
        "layers/02_block01_pw/weight"][()].astype(np.int16))(h5), "expected int8"),
    "bias beyond int32": (lambda h5: _replace("layers/27_classifier/bias", np.full(
        10, 2 ** 40, np.int64))(h5), "layers/27_classifier/bias: values outside the int32"),
    "bias that overflows the accumulator": (lambda h5: _replace(
        "layers/27_classifier/bias", np.full(10, 2 ** 31 - 1, np.int64))(h5),
        "could overflow the int32 accumulators"),
    "float bias": (lambda h5: _replace("layers/27_classifier/bias", np.zeros(10, np.float32))(
        h5), "layers/27_classifier/bias: dtype float32, expected integer"),
    "missing weight scales": (lambda h5: h5.__delitem__("layers/00_conv_stem/weight_scale"),
                              "missing dataset 'weight_scale'"),
    "short weight scales": (lambda h5: _replace("layers/00_conv_stem/weight_scale",
                                                np.ones(3, np.float32))(h5),
                            "weight_scale: shape (3,), expected (8,)"),
    "int8 in a version-1 file": (_set_attr("/", "format_version", 1),
                                 "precision 'int8' needs format_version 2"),
    "unknown precision": (_set_attr("/", "precision", "int4"), "attribute 'precision' is"),
    "unknown pool": (_set_attr("layers/27_classifier", "pool", "max"),
                     "attribute 'pool' is 'max'"),
    "average pool requantizing": (_set_attr("layers/27_classifier", "pool_scale", 0.5),
                                  "pool 'average' keeps its input's quantization"),
    "batch norm in an int8 layer": (lambda h5: h5["layers/01_block01_dw"].create_dataset(
        "gamma", data=np.ones(8, np.float32)), "batch norm folded"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_listed_corruptions(seed, worker, name, tmp_path):
    edit, message = CORRUPTIONS[name]
    path = str(tmp_path / "case.h5")
    with open(path, "wb") as stream:
        stream.write(seed.data)
    with h5py.File(path, "r+") as h5:
        edit(h5)
    answer = run_case(worker, seed, path)
    assert answer["outcome"] == "refused" and message in answer["message"], answer


def test_mean_pool_loads_and_runs_exactly(seed, worker, tmp_path):
    """A requantizing MEAN pool (another pool quantization) is valid and computed exactly."""
    path = str(tmp_path / "mean.h5")
    with open(path, "wb") as stream:
        stream.write(seed.data)
    with h5py.File(path, "r+") as h5:
        h5["layers/27_classifier"].attrs["pool"] = "mean"
        h5["layers/27_classifier"].attrs["pool_scale"] = np.float32(0.037)
        h5["layers/27_classifier"].attrs["pool_zero_point"] = np.int64(-100)
    assert run_case(worker, seed, path)["outcome"] == "ok"
