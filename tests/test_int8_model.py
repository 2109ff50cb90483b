"""The shipped int8 model, `mobinumba quantize`, `predict --precision int8` and the int8
load() options: what users see (agreement with float32, sizes, one-line errors, atomic
output). The arithmetic itself is tested bit-exact in test_qkernels.py."""
import dataclasses
import os

import numpy as np
import pytest

import mobinumba
from conftest import run_cli
from mobinumba.bench.synthetic import random_model_file
from mobinumba.model import default_weights_path
from mobinumba.weights import read_model_file, write_model_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "weights", "samples")
PHOTOS = [os.path.join(SAMPLES, name) for name in sorted(os.listdir(SAMPLES))]


@pytest.fixture(scope="module")
def int8_model():
    return mobinumba.load(precision="int8")


def test_default_int8_model_agrees_with_float32_on_every_sample_photo(int8_model):
    float_model = mobinumba.load()
    assert int8_model.precision == "int8" and float_model.precision == "float32"
    float_top = [p[0].index for p in float_model.predict(PHOTOS, topk=1)]
    int8_top = [p[0].index for p in int8_model.predict(PHOTOS, topk=1)]
    assert int8_top == float_top == [286, 968, 458]  # Egyptian cat, espresso, bow tie


def test_default_int8_model_is_small(int8_model):
    assert os.path.getsize(default_weights_path("int8")) < 5 * 2 ** 20
    assert int8_model.info.format_version == 2 and int8_model.labels[0] == "background"


def test_predict_with_precision_int8(capsys):
    assert run_cli("predict", "--precision", "int8", PHOTOS[1], "--topk", "1") == 0
    assert "espresso (968)" in capsys.readouterr().out


def test_precision_of_a_given_file_must_match(tmp_path, capsys):
    path = default_weights_path()
    with pytest.raises(mobinumba.InputError, match="float32, not int8; make an int8 file"):
        mobinumba.load(path, precision="int8")
    assert run_cli("predict", "--weights", path, "--precision", "int8", PHOTOS[0]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "mobinumba quantize" in error


@pytest.fixture(scope="module")
def float_file(tmp_path_factory):
    """A small float32 file (width 0.25, 10 classes, input 32)."""
    path = tmp_path_factory.mktemp("int8") / "small.h5"
    write_model_file(path, random_model_file(0.25, 10, 32, seed=2))
    return str(path)


def test_quantize_command(float_file, tmp_path, capsys):
    output = tmp_path / "small-int8.h5"
    assert run_cli("quantize", float_file, "-o", output, "--calibrate", SAMPLES) == 0
    out = capsys.readouterr().out
    assert "int8, calibration 3 images, min/max" in out
    assert "top-1 agreement with the float32 model on the calibration images" in out
    int8 = read_model_file(output)
    assert int8.info.precision == "int8" and all(r.weight.dtype == np.int8 for r in int8.layers)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    logits, reference = mobinumba.load(output)(x), mobinumba.load(float_file)(x)
    assert np.abs(logits - reference).max() < 0.15 * np.abs(reference).max()
    # Without calibration (ReLU6): [0, 6] everywhere.
    assert run_cli("quantize", float_file, "-o", tmp_path / "plain.h5") == 0
    assert "calibration none: [0, 6]" in capsys.readouterr().out


@pytest.mark.parametrize("case,message", [
    ("exists", "exists; use --force"), ("already int8", "is already int8"),
    ("relu without calibration", "uses relu, whose outputs have no known range"),
    ("missing image", "nothing.png")])
def test_quantize_errors_are_one_line(float_file, tmp_path, capsys, case, message):
    output = tmp_path / "out.h5"
    source, extra = float_file, []
    if case == "exists":
        output.write_bytes(b"keep")
    elif case == "already int8":
        source = default_weights_path("int8")
    elif case == "relu without calibration":
        model_file = random_model_file(0.25, 10, 32)
        model_file.info = dataclasses.replace(model_file.info, activation="relu")
        source = str(tmp_path / "relu.h5")
        write_model_file(source, model_file)
    else:
        extra = ["--calibrate", str(tmp_path / "nothing.png")]
    assert run_cli("quantize", source, "-o", output, *extra) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error, error
    assert (output.read_bytes() == b"keep") if case == "exists" else not output.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_run_quantized_checks_its_input(int8_model):
    with pytest.raises(mobinumba.InputError, match="int8 \\(N, H, W, 3\\)"):
        int8_model.run_quantized(np.zeros((1, 3, 224, 224), np.int8))
    with pytest.raises(mobinumba.InputError, match="needs an int8 model"):
        mobinumba.load().run_quantized(np.zeros((1, 224, 224, 3), np.int8))


def test_float32_models_never_import_the_int8_kernels():
    """The int8 kernels compile only when an int8 model is used: a float32 model's process
    never imports their modules (so a cold start compiles what it compiled before)."""
    import subprocess
    import sys

    code = ("import sys, numpy as np, mobinumba; m = mobinumba.load(); "
            "m(np.zeros((1, 3, 224, 224), np.float32)); "
            "print(sorted(n for n in sys.modules if n.startswith('mobinumba.kernels.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = result.stdout.strip()
    assert "kernels.pointwise" in loaded
    for module in ("qcommon", "qconv", "qdepthwise", "qpointwise", "qhead", "vnni",
                   "vnni_depthwise", "vnni_stem", "qtargets", "amx"):
        assert f"kernels.{module}'" not in loaded, loaded


# A child that runs a small int8 network and prints, per kernel it called, whether Numba
# loaded it from the disk cache. The network is quantized without calibration (a ReLU6
# network's known ranges): calibrating would run, and so compile, every float32 kernel too,
# which this test does not look at (the int8 model's calls are all int8 kernels).
CACHE_CHILD = """
import json, numpy as np
from mobinumba.bench.synthetic import random_model_file
from mobinumba.model import Model
from mobinumba.quantize import quantize_model_file
model_file = random_model_file(0.25, 10, 32, seed=1)
batch = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
model = Model(quantize_model_file(model_file)[0])
model(batch)
model(np.zeros((1, 3, 64, 64), np.float32))  # 64x64: fused blocks on VNNI hosts
kernels = {kernel.py_func.__qualname__: kernel for workspace in model._workspaces.values()
           for _, kernel, _ in workspace.calls + workspace.block_calls}
print(json.dumps({name: sum(k.stats.cache_hits.values()) for name, k in kernels.items()}))
"""


@pytest.mark.slow
def test_int8_kernels_load_from_the_disk_cache(tmp_path):
    """A second process finds every int8 kernel in NUMBA_CACHE_DIR (cold start with a warm
    cache: no compilation). ~1 minute: the first process compiles them."""
    import json
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), PYTHONPATH=ROOT)
    runs = []
    for _ in range(2):
        result = subprocess.run([sys.executable, "-c", CACHE_CHILD], capture_output=True,
                                text=True, timeout=900, cwd=ROOT, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    assert any("vnni" in name or "qpwconv" in name for name in runs[1])
    assert all(hits >= 1 for hits in runs[1].values()), runs[1]


@pytest.mark.slow
def test_bench_precision_int8(float_file, tmp_path, capsys):
    """`mobinumba bench --precision int8` on a small float32 file (quantized without
    calibration): both models timed, every layer profiled, cold starts of both in fresh
    processes (about 30 s: those compile the kernels in empty caches)."""
    import json

    out = tmp_path / "report"
    assert run_cli("bench", "--precision", "int8", "--weights", float_file, "--runs", "5",
                   "--warmup", "1", "--threads", "1", "--out", out) == 0
    printed = capsys.readouterr().out
    assert "mobinumba int8" in printed and "mobinumba float32" in printed
    report = json.loads((out / "int8.json").read_text())
    assert set(report["latency_ms"]) == {"int8", "float32"}
    assert all(stats["p50_ms"] > 0 for stats in report["latency_ms"].values())
    names = [row["layer"] for row in report["layers"]]
    assert names[0] == "conv_stem" and names[-2:] == ["avgpool", "classifier"]
    assert all(row["int8_ms"] > 0 and row["float32_ms"] > 0 for row in report["layers"])
    assert set(report["cold_start"]) == {"int8", "float32"}
    for runs in report["cold_start"].values():
        assert runs["warm_cache"]["first_inference_s"] < runs["empty_cache"]["first_inference_s"]
    markdown = (out / "int8.md").read_text()
    assert "| block01_pw |" in markdown and "int8 / float32 p50" in markdown


def test_int8_report_names_the_clock_behind_its_peak():
    """The report's VNNI peak line: its factors and the clock caveat, or 'unknown' when
    /proc/cpuinfo gives no clock (a None must not break the Markdown)."""
    from mobinumba.bench.int8 import _peak_text

    text = _peak_text({"ghz": 2.596124, "threads": 2, "vnni_macs_per_cycle_per_core": 128})
    assert "2 cores x 2.60 GHz x 128 MACs x 2" in text and "above 100%" in text
    assert "AMX" not in text
    text = _peak_text({"ghz": 2.6, "threads": 2, "vnni_macs_per_cycle_per_core": 128,
                       "amx_macs_per_cycle_per_core": 1024})
    assert "AMX tiles here, whose peak is 8x the VNNI one (1024 MACs per cycle)" in text
    assert "unknown" in _peak_text({"ghz": None, "threads": 2,
                                    "vnni_macs_per_cycle_per_core": 128})
