"""`mobinumba bench`: run every section of the report in order and write the files.

The sections are measured in this process, except the cold starts (fresh processes) and the
peers (one process per engine, see peers.py), with the same thread count for every engine,
and written as report.json (all figures), report.md (rendered from the JSON) and report.png
(charts, when matplotlib is installed).
"""
import json
import os
import tempfile
from dataclasses import asdict, dataclass

import numpy as np

from ..architecture import count
from ..atomic import AtomicFile, write_atomically
from ..errors import InputError
from ..graph import build_ops, workspace_bytes
from ..model import MAX_WORKSPACE_BYTES, Model
from ..ops.stem import KIND as STEM
from ..progress import Progress
from ..threads import get_threads
from ..weights import read_model_file, write_model_file
from .environment import collect_environment, load_average
from .latency import THROUGHPUT_BATCHES, cold_start, steady_state, throughput
from .layers import layer_profile, pointwise_vs_blas
from .paper import paper_tables
from .peers import PEERS, measure_peers
from .separable import compare_separable
from .synthetic import conv_mobilenet_specs, random_model_file

FULL = {"width": 1.0, "size": None, "runs": 100, "warmup": 10}  # size None: the file's
QUICK = {"width": 0.25, "size": 64, "runs": 10, "warmup": 2}


@dataclass(frozen=True)
class BenchConfig:
    """What to measure. Run counts of the slower sections derive from `runs` (see below)."""

    weights: str | None
    width: float | None
    size: int | None
    batch: int
    threads: int
    runs: int
    warmup: int
    peers: tuple
    out: str
    quick: bool
    command: str

    @property
    def block_runs(self):
        """Runs of each method per separable block (the naive conv is slow)."""
        return 2 if self.quick else max(3, self.runs // 10)

    @property
    def network_runs(self):
        """Runs of each whole network (Conv MobileNet direct, im2col, MobileNet)."""
        return 2 if self.quick else max(3, self.runs // 20)

    @property
    def throughput_runs(self):
        """Runs per batch size of the throughput measurement."""
        return 3 if self.quick else max(3, self.runs // 10)

    @property
    def peer_rounds(self):
        """Rounds of per-engine blocks in the peers section."""
        return 2 if self.quick else 5

    @property
    def peer_pause_s(self):
        """Pause before each engine's block, letting other engines' threads go idle."""
        return 0.02 if self.quick else 0.3


def make_config(weights=None, width=None, size=None, batch=1, threads=None, runs=None,
                warmup=None, peers=PEERS, out="bench-report", quick=False,
                command="mobinumba.bench.runner.run_benchmarks (Python)"):
    """A BenchConfig with the defaults of a full or --quick run filled in.

    Raises InputError for --width together with --weights (the file has its own width).
    """
    if weights is not None and width is not None:
        raise InputError("--width sets the width of the random-weight model; --weights "
                         f"{weights} has its own width")
    defaults = QUICK if quick else FULL
    return BenchConfig(weights=weights,
                       width=None if weights else (width or defaults["width"]),
                       size=size or defaults["size"], batch=batch,
                       threads=threads or get_threads(),
                       runs=runs or defaults["runs"],
                       warmup=defaults["warmup"] if warmup is None else warmup,
                       peers=tuple(peers), out=out, quick=quick, command=command)


def run_benchmarks(config):
    """Measure everything, write report.json / report.md / report.png under config.out and
    return the report dict (with the written paths under "files")."""
    if config.weights is not None:
        model_file = read_model_file(config.weights)
    else:
        model_file = random_model_file(config.width)
    _check_memory(model_file, config.size, config.batch)
    _prepare_output(config.out)
    load_at_start = load_average()
    steps = 11
    with Progress(steps, "mobinumba bench", "step") as progress, \
            tempfile.TemporaryDirectory(prefix="mobinumba-") as tmp:
        progress.step("model")
        weights_path = config.weights
        if weights_path is None:  # the cold-start processes load the model from a file
            weights_path = os.path.join(tmp, f"mobilenet_v1_random_{config.width:g}.h5")
            write_model_file(weights_path, model_file)
        model = Model(model_file)
        size = config.size or model_file.info.input_size
        x = np.random.default_rng(0).standard_normal(
            (config.batch, 3, size, size)).astype(np.float32)  # (N, 3, H, W)
        report = {"command": config.command, "config": _config_dict(config, model_file, size)}

        progress.step("paper tables")
        report["paper"] = paper_tables()

        progress.step("cold start (fresh processes)")
        latency = {"cold_start": cold_start(weights_path, size, config.batch, config.threads,
                                            tmp)}
        progress.step("steady-state latency")
        latency["steady_state"] = steady_state(model, x, config.runs, config.warmup)
        progress.step("throughput at batch 1, 8, 32")
        latency["throughput"] = throughput(model, size, config.throughput_runs, 2)
        report["latency"] = latency

        progress.step("per-layer profile")
        layers = layer_profile(model, x, config.runs, config.warmup)
        progress.step("pointwise GEMM vs BLAS")
        layers["pointwise_vs_blas"] = pointwise_vs_blas(model, size, size, config.batch,
                                                        config.threads, config.runs)
        report["layers"] = layers

        progress.step("depthwise-separable vs standard conv")
        report["separable"] = compare_separable(model_file, size, config.batch,
                                                config.block_runs, config.network_runs,
                                                progress=progress.tick)
        progress.step("peers")
        report["peers"] = measure_peers(weights_path, x, config.threads, config.runs,
                                        config.warmup, config.peer_rounds, config.peer_pause_s,
                                        config.peers, tmp)
        progress.step("environment")
        report["environment"] = collect_environment(config.threads, load_at_start)
        report["headline"] = headline(report)

        progress.step("writing the report")
        _write_files(report, config.out)
    return report


def headline(report):
    """The figures the README quotes: batch-N p50 per engine with mobinumba / engine, and the
    whole-network depthwise-separable speedup, measured (im2col and direct) and theoretical."""
    network = report["separable"]["network"]
    return {
        "batch": report["config"]["batch"], "size": report["config"]["size"],
        "width": report["config"]["width"], "threads": report["config"]["threads"],
        "engines": [{"label": row["label"], "p50_ms": row["p50_ms"],
                     "mobinumba_over_peer": row["mobinumba_over_peer"]}
                    for row in report["peers"]["engines"]],
        "skipped": [row["label"] for row in report["peers"]["skipped"]],
        "separable_speedup_im2col": network["im2col_speedup"],
        "separable_speedup_direct": network["direct_speedup"],
        "separable_speedup_theoretical": network["theoretical_speedup"],
    }


def _check_memory(model_file, size, batch):
    """Refuse, before any work, a --size / --batch whose buffers would exceed the runtime's
    limit: the network's workspace at the largest throughput batch, or the Conv MobileNet's
    workspace plus its im2col scratch at --batch."""
    info = model_file.info
    size = size or info.input_size
    ops = build_ops(model_file.layers, info.activation_function, info.padding)
    needs = {f"batch {max(THROUGHPUT_BATCHES)}":
             workspace_bytes(ops, max(THROUGHPUT_BATCHES), size, size)}
    specs = conv_mobilenet_specs([record.spec for record in model_file.layers])
    rows = count(specs, size, size, info.padding)
    scratch = max((4 * batch * out_h * out_w * 9 * spec.in_channels
                   for spec, out_h, out_w, _, _ in rows[1:] if spec.op is STEM), default=0)
    # The Conv MobileNet's activations have MobileNet's block output shapes (no wider).
    needs[f"the Conv MobileNet at batch {batch}"] = workspace_bytes(ops, batch, size, size) \
        + scratch
    for what, needed in needs.items():
        if needed > MAX_WORKSPACE_BYTES:
            raise InputError(f"--size {size} needs {needed / 2 ** 30:.1f} GiB of buffers for "
                             f"{what}, more than the {MAX_WORKSPACE_BYTES / 2 ** 30:.0f} GiB "
                             f"limit; use a smaller --size or --batch")


def _config_dict(config, model_file, size):
    info = model_file.info
    values = asdict(config)
    values.update(size=size, width=info.width_multiplier, num_classes=info.num_classes,
                  activation=str(info.activation_function), padding=info.padding,
                  weights=config.weights or "random weights",
                  peers=list(config.peers), block_runs=config.block_runs,
                  network_runs=config.network_runs, throughput_runs=config.throughput_runs,
                  peer_rounds=config.peer_rounds, peer_pause_s=config.peer_pause_s)
    return values


def _prepare_output(out):
    """Create the output directory now, so that a bad --out fails before minutes of work."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise InputError(f"--out {out}: exists and is not a directory")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise InputError(f"--out {out}: cannot create the directory ({error.strerror})") \
            from None
    if not os.access(out, os.W_OK):
        raise InputError(f"--out {out}: directory is not writable")


def _write_files(report, out):
    """Write report.png (if matplotlib is installed), report.json and report.md, each through
    atomic.py so that no half-written report is left behind; report["files"] names the files
    written."""
    from .charts import render_charts
    from .markdown import render_markdown

    files = {}
    png = os.path.join(out, "report.png")
    with AtomicFile(png, overwrite=True) as output:
        if render_charts(report, output.temp_path):
            files["png"] = png
        else:  # no matplotlib: no chart, and an older report.png is left as it was
            output.discard()
    files["json"] = os.path.join(out, "report.json")
    files["md"] = os.path.join(out, "report.md")
    report["files"] = {kind: os.path.basename(path) for kind, path in files.items()}
    write_atomically(files["json"], json.dumps(report, indent=2) + "\n", overwrite=True)
    write_atomically(files["md"], render_markdown(report) + "\n", overwrite=True)
