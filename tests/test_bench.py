"""`mobinumba bench`: the report generator on its tiny --quick configuration.

One quick run (width 0.25, 64x64, few runs, peers included) is shared by the module; it is
given every option that changes what is measured (--runs, --warmup, --threads, --weights FILE,
--peers LIST), so that the report can be checked for each of them. The tests
check that every section is there and every figure finite, recount the paper's tables with
PyTorch modules (parameters by numel, multiply-adds by forward hooks on the meta device),
and check the Conv MobileNet the report times against PyTorch. No test asserts a timing.
"""
import dataclasses
import json
import math
import re
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import run_cli
from reference_models import TimmMobileNetV1

from mobinumba.architecture import mobilenet_v1_specs
from mobinumba.bench.charts import render_charts
from mobinumba.bench.convnet import conv_mobilenet_workspace
from mobinumba.bench.markdown import render_markdown
from mobinumba.bench.peers import PEERS, measure_peers
from mobinumba.bench.synthetic import conv_mobilenet_specs, random_model_file, random_records
from mobinumba.cli import build_parser
from mobinumba.kernels.targets import compile_target, tiles_for
from mobinumba.progress import Progress
from mobinumba.reference import reference_logits
from mobinumba.threads import get_threads, set_threads
from mobinumba.weights import write_model_file

pytestmark = pytest.mark.slow  # the benchmark report, with its PyTorch and ONNX Runtime peers

HEADINGS = ("## Headline", "## 1. Environment", "## 2. The paper's tables",
            "## 3. Depthwise-separable vs standard convolution",
            "## 4. End-to-end latency and throughput", "## 5. Per-layer profile", "## 6. Peers")


# The options of the shared quick run: none is --quick's default (10 runs, 2 warm-up runs,
# all cores, random ReLU6 weights).
QUICK_RUNS, QUICK_WARMUP, QUICK_THREADS = 6, 3, 1  # 6: a multiple of the 2 peer rounds


@pytest.fixture(scope="module")
def quick_weights(tmp_path_factory):
    """A width-0.25, 64x64 weight file that differs from --quick's random model in its
    activation (ReLU, not ReLU6) and seed, so the report shows which model it measured."""
    path = tmp_path_factory.mktemp("bench_weights") / "relu.h5"
    model_file = random_model_file(0.25, input_size=64, seed=11)
    model_file.info = dataclasses.replace(model_file.info, activation="relu")
    write_model_file(path, model_file)
    return path


@pytest.fixture(scope="module")
def quick(tmp_path_factory, quick_weights):
    """(report dict from report.json, report.md text, output directory) of one quick run."""
    out = tmp_path_factory.mktemp("bench") / "report"
    threads = get_threads()
    try:
        assert run_cli("bench", "--quick", "--out", out, "--runs", QUICK_RUNS, "--warmup",
                       QUICK_WARMUP, "--threads", QUICK_THREADS, "--weights", quick_weights,
                       "--peers", "torch,onnxruntime,litert") == 0
    finally:
        set_threads(threads)  # --threads sets the process's kernel threads
    report = json.loads((out / "report.json").read_text())
    return report, (out / "report.md").read_text(), out


def numbers(value, path="report"):
    """Every (path, number) in a JSON value, recursively."""
    if isinstance(value, bool) or isinstance(value, str):
        return
    if isinstance(value, (int, float)):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from numbers(item, f"{path}[{index}]")
    else:
        raise AssertionError(f"{path}: unexpected {type(value).__name__} {value!r}")


def test_every_section_is_present(quick):
    report, markdown, out = quick
    positions = [markdown.index(heading) for heading in HEADINGS]
    assert positions == sorted(positions), "sections out of order"
    assert markdown == render_markdown(report) + "\n"  # the .md is rendered from the .json
    assert "mobinumba bench --quick --out" in markdown
    for key in ("environment", "paper", "separable", "latency", "layers", "peers", "headline"):
        assert report[key], key
    assert sorted(path.name for path in out.iterdir()) == ["report.json", "report.md",
                                                           "report.png"]


def test_every_number_is_finite_and_every_time_positive(quick):
    report = quick[0]
    found = list(numbers(report))
    assert len(found) > 300
    for path, value in found:
        assert math.isfinite(value), path
        if path.endswith(("_ms", "_s", "gflops", "images_per_s", "speedup")):
            assert value > 0, path


def test_sections_cover_the_whole_network(quick):
    report = quick[0]
    assert report["config"]["width"] == 0.25 and report["config"]["size"] == 64
    environment = report["environment"]
    assert environment["numba_threading_layer"] in ("omp", "tbb", "workqueue")
    # 28 weight layers and the pooling, with the mult-adds of architecture.count().
    layers = report["layers"]["layers"]
    assert [row["layer"] for row in layers][:3] == ["conv_stem", "block01_dw", "block01_pw"]
    assert len(layers) == 29 and sum(row["kind"] != "pool" for row in layers) == 28
    assert sum(row["macs"] for row in layers) == 3_584_512
    assert sum(row["share_percent"] for row in layers) == pytest.approx(100.0)
    # Every distinct pointwise shape once: 13 layers, blocks 7-11 share one shape.
    shapes = report["layers"]["pointwise_vs_blas"]["shapes"]
    assert sum(len(row["layers"]) for row in shapes) == 13 and len(shapes) == 9
    assert (shapes[0]["m"], shapes[0]["k"], shapes[0]["n"]) == (32 * 32, 8, 16)
    blocks = report["separable"]["blocks"]
    assert [block["block"] for block in blocks] == list(range(1, 14))
    for block in blocks:
        assert block["theoretical_ratio"] == 1 / block["out_channels"] + 1 / 9
    network = report["separable"]["network"]
    assert network["conv_mobilenet_macs"] == 25_249_792 and network["mobilenet_macs"] == 3_584_512
    assert report["separable"]["direct_vs_im2col_max_diff"] < 1e-5
    latency = report["latency"]
    assert [row["batch"] for row in latency["throughput"]] == [1, 8, 32]
    assert latency["steady_state"]["runs"] == QUICK_RUNS
    for run in latency["cold_start"].values():
        assert run["peak_rss_bytes"] > 2 ** 20
        assert run["import_s"] > 0.01  # numpy and numba really were imported in the child


def test_peers_ran_on_the_same_weights_and_agree(quick):
    report, markdown, _ = quick
    peers = report["peers"]
    assert [engine["name"] for engine in peers["engines"]] == ["mobinumba", *PEERS]
    assert peers["skipped"] == []
    for engine in peers["engines"]:
        assert engine["agrees"] and engine["max_abs_logit_diff"] < 1e-4, engine["name"]
        assert engine["runs"] == QUICK_RUNS and len(engine["block_p50_ms"]) == 2
        assert engine["label"] in markdown
    assert "rounds of the blocks in turn" in peers["method"]
    assert [row["label"] for row in report["headline"]["engines"]] == [
        "mobinumba", "PyTorch eager (CPU)", "ONNX Runtime (CPU)", "LiteRT float32 (XNNPACK)"]


def machine_cpu_flags(names):
    """{flag: present} for `names`, read from /proc/cpuinfo's first `flags` line with a
    regular expression (not the module's line parser)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            text = info.read()
    except OSError:
        pytest.skip("no /proc/cpuinfo on this system: nothing to compare the flags with")
    match = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)  # absent on ARM ("Features")
    present = set(match.group(1).split()) if match else set()
    return {name: name in present for name in names}


def test_detected_cpu_flags_are_the_machines(quick):
    flags = quick[0]["environment"]["cpu_flags"]
    # The vector extensions the kernels and the peers can use, each with its true value.
    assert set(flags) == {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                          "avx512_bf16"}
    assert flags == machine_cpu_flags(flags)


def test_report_names_the_kernel_target_and_tiles(quick):
    report, markdown, _ = quick
    environment = report["environment"]
    target = compile_target()  # the same environment as the bench's process
    tiles = tiles_for(target)
    assert environment["kernel_tiles"] == {"pointwise": str(tiles.pointwise),
                                           "stem": str(tiles.stem)}
    assert environment["kernel_target"] == str(target)
    assert environment["kernel_target"].startswith(environment["llvm_cpu_name"] + " (")
    assert (f"{environment['kernel_target']}: tiles pointwise {tiles.pointwise}, "
            f"stem {tiles.stem}") in markdown
    # The vectors the kernels use are never wider than the machine's own.
    flags = machine_cpu_flags(("avx512f", "avx2", "avx"))
    if any(flags.values()) and "NUMBA_CPU_NAME" not in environment["environment_variables"]:
        widest = 512 if flags["avx512f"] else 256 if flags["avx2"] or flags["avx"] else 128
        assert target.vector_bits <= widest


def test_options_reach_the_report(quick, quick_weights):
    report, markdown, _ = quick
    config = report["config"]
    assert (config["runs"], config["warmup"], config["threads"]) == (
        QUICK_RUNS, QUICK_WARMUP, QUICK_THREADS)
    assert config["weights"] == str(quick_weights) and config["peers"] == [
        "torch", "onnxruntime", "litert"]
    # The file's own settings, not --quick's random ReLU6 model.
    assert (config["activation"], config["width"], config["size"]) == ("relu", 0.25, 64)
    assert report["environment"]["threads_used"] == QUICK_THREADS
    assert report["peers"]["threads"] == QUICK_THREADS
    assert report["latency"]["steady_state"]["runs"] == QUICK_RUNS
    assert f"{QUICK_RUNS} runs after {QUICK_WARMUP} warm-up runs" in markdown
    assert [engine["runs"] for engine in report["peers"]["engines"]] == [QUICK_RUNS] * 4


def test_peers_all_and_none():
    parser = build_parser()
    assert parser.parse_args(["bench", "--peers", "all"]).peers == PEERS == (
        "torch", "onnxruntime", "litert")
    assert parser.parse_args(["bench"]).peers == PEERS
    assert parser.parse_args(["bench", "--peers", "none"]).peers == ()


def test_charts_are_a_png(quick):
    with Image.open(quick[2] / "report.png") as image:
        assert image.format == "PNG" and image.width > 500 and image.height > 400


# ---------------------------------------------------------------- the paper's tables, exactly

PAPER_MISMATCHES = {("table2", "Conv 3x3 (stem)"), ("table4", "Conv MobileNet"),
                    ("table7", 160)}


def torch_counts(module, size):
    """(paper-rule params, PyTorch params, mult-adds, mult-adds by layer kind) of a module on
    the meta device: weights by numel, multiply-adds by forward hooks on Conv2d and Linear."""
    macs = {"conv": 0, "dwconv": 0, "pwconv": 0, "dense": 0}

    def hook(layer, inputs, output):
        if isinstance(layer, nn.Linear):
            macs["dense"] += layer.in_features * layer.out_features
            return
        kind = ("dwconv" if layer.groups > 1 else "pwconv" if layer.kernel_size == (1, 1)
                else "conv")
        macs[kind] += output[0].numel() * layer.weight[0].numel()

    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            layer.register_forward_hook(hook)
    module(torch.zeros(1, 3, size, size, device="meta"))
    weights = sum(layer.weight.numel() for layer in module.modules()
                  if isinstance(layer, (nn.Conv2d, nn.Linear)))
    return weights, sum(p.numel() for p in module.parameters()), sum(macs.values()), macs


def conv_mobilenet_module():
    """The paper's Conv MobileNet in PyTorch: each depthwise-separable block a 3x3 conv."""
    layers, c_in = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()], 32
    for spec in mobilenet_v1_specs(1.0, standard_convs=True)[1:-2]:
        layers += [nn.Conv2d(c_in, spec.out_channels, 3, spec.stride, 1, bias=False),
                   nn.BatchNorm2d(spec.out_channels), nn.ReLU6()]
        c_in = spec.out_channels
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, 1000))


def test_paper_tables_match_pytorch_counts_and_the_paper(quick):
    paper = quick[0]["paper"]
    with torch.device("meta"):
        mobilenets = {width: TimmMobileNetV1(width) for width in (1.0, 0.75, 0.5, 0.25)}
        conv_mobilenet = conv_mobilenet_module()

    weights, pytorch_params, total, by_kind = torch_counts(mobilenets[1.0], 224)
    for row in paper["table2"]:
        assert row["macs"] == by_kind[row["kind"]]
        assert row["macs_percent"] == round(100 * by_kind[row["kind"]] / total, 2)
    assert [(r["paper_macs_percent"], r["paper_params_percent"]) for r in paper["table2"]] == [
        (94.86, 74.59), (3.06, 1.06), (1.19, 0.02), (0.18, 24.33)]
    assert [r["params_percent"] for r in paper["table2"]] == [74.59, 1.06, 0.02, 24.33]
    assert [r["macs_percent"] for r in paper["table2"]] == [94.86, 3.06, 1.91, 0.18]

    conv = torch_counts(conv_mobilenet, 224)
    table4 = {row["model"]: row for row in paper["table4"]}
    assert (table4["MobileNet"]["params"], table4["MobileNet"]["pytorch_params"],
            table4["MobileNet"]["macs"]) == (weights, pytorch_params, total)
    assert (table4["Conv MobileNet"]["params"], table4["Conv MobileNet"]["pytorch_params"],
            table4["Conv MobileNet"]["macs"]) == conv[:3]
    assert (table4["MobileNet"]["macs"], table4["Conv MobileNet"]["macs"]) == (568_740_352,
                                                                               4_867_293_184)
    assert pytorch_params == 4_231_976 and conv[1] == 29_294_088
    assert [(r["paper_macs_millions"], r["paper_params_millions"]) for r in paper["table4"]] \
        == [(4866, 29.3), (569, 4.2)]

    table6 = [(1.0, 569, 4.2), (0.75, 325, 2.6), (0.5, 149, 1.3), (0.25, 41, 0.5)]
    for row, (width, macs, params) in zip(paper["table6"], table6):
        weights, pytorch_params, total, _ = torch_counts(mobilenets[width], 224)
        assert (row["width"], row["macs"], row["params"], row["pytorch_params"]) == (
            width, total, weights, pytorch_params)
        assert (row["paper_macs_millions"], row["paper_params_millions"]) == (macs, params)
        assert (row["macs_millions"], row["params_millions"]) == (macs, params)

    for row, (size, macs) in zip(paper["table7"], [(224, 569), (192, 418), (160, 290),
                                                   (128, 186)]):
        assert (row["resolution"], row["macs"]) == (size, torch_counts(mobilenets[1.0], size)[2])
        assert row["paper_macs_millions"] == macs
    assert [row["macs_millions"] for row in paper["table7"]] == [569, 418, 291, 186]

    mismatches = {(table, row.get("layer_type") or row.get("model") or row.get("resolution"))
                  for table, rows in paper.items() for row in rows if not row["matches"]}
    assert mismatches == PAPER_MISMATCHES
    for table, rows in paper.items():
        for row in rows:
            assert ("note" in row) == (table != "table6" and not row["matches"])


# ------------------------------------------------------------------ pieces, against PyTorch

@pytest.mark.parametrize("method", ["direct", "im2col"])
def test_conv_mobilenet_matches_pytorch(method):
    """The Conv MobileNet that section 3 times computes what PyTorch computes."""
    specs = conv_mobilenet_specs([s for s in mobilenet_v1_specs(0.25, 10) if s.kind != "pool"])
    assert [s.kind for s in specs] == ["conv"] * 14 + ["dense"]
    records = random_records(specs, seed=3)
    x = np.random.default_rng(0).standard_normal((2, 3, 33, 32)).astype(np.float32)
    workspace = conv_mobilenet_workspace(records, "relu6", "torch", method, 2, 33, 32)
    np.copyto(workspace.input, x)
    workspace.run()
    expected = reference_logits(records, "relu6", "torch", x)
    np.testing.assert_allclose(workspace.logits, expected, rtol=0,
                               atol=1e-4 * max(1.0, np.abs(expected).max()))


def test_missing_or_unrequested_peers_are_listed_as_skipped(monkeypatch, tmp_path):
    weights = tmp_path / "model.h5"
    write_model_file(weights, random_model_file(0.25, num_classes=10))
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    # Engines run in spawned processes, which start with this process's sys.path: a module
    # named onnxruntime that fails to import, first on it, is what they see when onnxruntime
    # is not installed.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "onnxruntime.py").write_text("raise ImportError('not installed')\n")
    (shadow / "ai_edge_litert.py").write_text("raise ImportError('not installed')\n")
    monkeypatch.syspath_prepend(str(shadow))
    peers = measure_peers(str(weights), x, threads=1, runs=2, warmup=1, rounds=1,
                          pause_s=0.0, requested=PEERS, workdir=str(tmp_path))
    assert [engine["name"] for engine in peers["engines"]] == ["mobinumba", "torch"]
    assert peers["skipped"] == [{"name": "onnxruntime", "label": "ONNX Runtime (CPU)",
                                 "reason": "onnxruntime is not installed "
                                           "(pip install 'mobinumba[bench]')"},
                                {"name": "litert", "label": "LiteRT float32 (XNNPACK)",
                                 "reason": "ai-edge-litert is not installed "
                                           "(pip install 'mobinumba[bench]')"}]
    assert peers["method"].startswith("one process per engine")
    none = measure_peers(str(weights), x, threads=1, runs=2, warmup=1, rounds=1,
                         pause_s=0.0, requested=(), workdir=str(tmp_path))
    assert [row["reason"] for row in none["skipped"]] == ["not requested (--peers)"] * 3
    assert [engine["name"] for engine in none["engines"]] == ["mobinumba"]


def test_markdown_lists_skipped_peers(quick):
    report = json.loads(json.dumps(quick[0]))  # a copy
    report["peers"]["engines"] = report["peers"]["engines"][:1]
    report["peers"]["skipped"] = [{"name": "onnxruntime", "label": "ONNX Runtime (CPU)",
                                   "reason": "onnxruntime is not installed"}]
    report["headline"]["engines"] = report["headline"]["engines"][:1]
    report["headline"]["skipped"] = ["ONNX Runtime (CPU)"]
    markdown = render_markdown(report)
    assert "- ONNX Runtime (CPU): skipped, onnxruntime is not installed" in markdown
    assert "| ONNX Runtime (CPU) | skipped (see section 6) |" in markdown


@pytest.mark.parametrize("argv,message", [
    (["--weights", "missing.h5"], "missing.h5: no such file"),
    (["--weights", "missing.h5", "--width", "0.5"], "--width sets the width"),
])
def test_bad_options_are_one_line_errors(argv, message, tmp_path, capsys):
    assert run_cli("bench", "--quick", "--out", tmp_path / "out", *argv) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error and "Traceback" not in error


def test_sizes_beyond_the_memory_limit_are_refused_up_front(tmp_path, capsys):
    assert run_cli("bench", "--quick", "--size", "1024", "--batch", "256", "--out",
                   tmp_path / "out") == 1
    error = capsys.readouterr().err
    assert "GiB of buffers for the Conv MobileNet at batch 256" in error
    assert not (tmp_path / "out").exists()


def test_report_without_matplotlib_or_tqdm(quick, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "tqdm", None)
    assert not render_charts(quick[0], str(tmp_path / "report.png"))
    with Progress(2, "mobinumba bench", "step") as progress:
        progress.step("first")
        progress.step("second")
    assert capsys.readouterr().err == ("mobinumba bench [1/2] first\n"
                                       "mobinumba bench [2/2] second\n")
    report = dict(quick[0], files={"json": "report.json", "md": "report.md"})
    assert "![charts]" not in render_markdown(report)


def test_out_must_be_a_directory(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("")
    assert run_cli("bench", "--quick", "--out", path) == 1
    assert "is not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["tensorflow", "torch,,nope", ""])
def test_bad_peer_lists_are_refused(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("bench", "--peers", value)
    assert exit_info.value.code == 2
    assert "--peers" in capsys.readouterr().err
