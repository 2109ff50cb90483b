"""`mobinumba bench --precision int8`: the int8 model beside its float32 source, same run.

Measured in this process, alternating the two models round by round (a shared machine's load
hits both alike): steady-state latency at the configured batch, throughput at batch 8, and
the per-layer profile with each layer's int8 GOPS against the VNNI peak; LiteRT int8 (XNNPACK)
on the exported .tflite of the same int8 records, in a process of its own. Cold starts (empty
and warm Numba cache) run in fresh processes, for both models. Written as int8.json and
int8.md under the output directory.

Which models: without --weights the shipped model and its shipped int8 variant; with a
float32 --weights file, that file and its quantization without calibration (ReLU6 networks;
quantize.py); an int8 --weights file is measured alone.
"""
import json
import os
import tempfile

import numpy as np

from ..atomic import write_atomically
from ..kernels.qtargets import matrix_tiles
from ..model import Model, default_weights_path
from ..weights import read_model_file, write_model_file
from .environment import load_average
from .latency import cold_start
from .peers import INT8_PEERS, measure_peers
from .timing import latency_stats, median, time_calls

ROUNDS = 5
PEER_PAUSE_S = 0.3
THROUGHPUT_BATCH = 8
# int8 multiply-adds per cycle per core at the VNNI peak: vpdpbusd does 64 (16 lanes x 4) and
# Zen 4 / Zen 5 issue two per cycle (two vector integer multiply pipes), Intel's AVX-512
# server cores one or two (docs/performance.md says what was assumed for the figures).
VNNI_MACS_PER_CYCLE = 64 * 2
# ... and at the AMX peak (the pointwise GEMM where qtargets.matrix_tiles): one tdpbssd
# (16 x 16 x 64 = 16,384 multiply-adds) every 16 cycles per core.
AMX_MACS_PER_CYCLE = 1024


def int8_models(weights):
    """(float32 ModelFile or None, int8 ModelFile) for the --weights argument."""
    if weights is None:
        return (read_model_file(default_weights_path()),
                read_model_file(default_weights_path("int8")))
    model_file = read_model_file(weights)
    if model_file.info.precision == "int8":
        return None, model_file
    from ..quantize import quantize_model_file

    return model_file, quantize_model_file(model_file)[0]


def cpu_ghz():
    """The clock /proc/cpuinfo reports (the nominal one in a VM; boost may be higher), or
    None where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as stream:
            for line in stream:
                if line.startswith("cpu MHz"):
                    return float(line.split(":")[1]) / 1000
    except (OSError, ValueError):
        pass
    return None


def run_int8_benchmarks(weights, batch, threads, runs, warmup, out):
    """Measure, write int8.json and int8.md under `out`; returns the report dict."""
    ghz = cpu_ghz()
    float_file, int8_file = int8_models(weights)
    models = {"int8": Model(int8_file)}
    if float_file is not None:
        models["float32"] = Model(float_file)
    size = int8_file.info.input_size
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
    big = rng.uniform(-1, 1, (THROUGHPUT_BATCH, 3, size, size)).astype(np.float32)
    load_at_start = load_average()
    latencies = {name: [] for name in models}
    batch8 = {name: [] for name in models}
    profiles = {name: {} for name in models}
    per_round = max(1, runs // ROUNDS)
    for _ in range(ROUNDS):
        for name, model in models.items():
            latencies[name] += time_calls(lambda: model(x), per_round, warmup)
            batch8[name] += time_calls(lambda: model(big), max(1, per_round // 4), 1)
            for layer, seconds in model.profile(x):
                profiles[name].setdefault(layer, []).append(seconds)
    report = {"batch": batch, "threads": threads, "size": size, "runs": per_round * ROUNDS,
              "ghz": ghz, "vnni_macs_per_cycle_per_core": VNNI_MACS_PER_CYCLE,
              "amx_macs_per_cycle_per_core": AMX_MACS_PER_CYCLE if matrix_tiles() else None,
              "load_average": [load_at_start, load_average()],
              "latency_ms": {name: latency_stats(values) for name, values in latencies.items()},
              "batch8_images_per_s": {name: THROUGHPUT_BATCH / median(values)
                                      for name, values in batch8.items()},
              "layers": _layer_rows(models, profiles, batch, threads, size, ghz)}
    with tempfile.TemporaryDirectory(prefix="mobinumba-") as tmp:
        report["cold_start"] = {}
        for name, model_file in (("int8", int8_file), ("float32", float_file)):
            if model_file is None:
                continue
            path = os.path.join(tmp, f"{name}.h5")
            write_model_file(path, model_file)
            report["cold_start"][name] = cold_start(path, size, batch, threads, tmp)
        # LiteRT int8 (XNNPACK) beside mobinumba int8, each in its own process (peers.py),
        # on the exported .tflite of the same int8 records.
        int8_path = os.path.join(tmp, "int8.h5")
        report["peers"] = measure_peers(int8_path, x, threads, per_round * ROUNDS, warmup,
                                        ROUNDS, PEER_PAUSE_S, INT8_PEERS, tmp,
                                        peers=INT8_PEERS)
    os.makedirs(out, exist_ok=True)
    write_atomically(os.path.join(out, "int8.json"), json.dumps(report, indent=2),
                     overwrite=True)
    write_atomically(os.path.join(out, "int8.md"), int8_markdown(report), overwrite=True)
    return report


def _layer_rows(models, profiles, batch, threads, size, ghz):
    int8 = models["int8"]
    macs = {spec.name: count for spec, _, _, _, count in int8.layer_counts(size, size)}
    # GOPS counts a multiply-add as 2 operations.
    peak = None if ghz is None else threads * ghz * VNNI_MACS_PER_CYCLE * 2
    rows = []
    for layer, times in profiles["int8"].items():
        seconds = median(times)
        gops = 2 * macs.get(layer, 0) * batch / seconds / 1e9
        row = {"layer": layer, "int8_ms": seconds * 1e3, "int8_gops": gops,
               "of_vnni_peak": None if peak is None else gops / peak}
        if "float32" in profiles:
            row["float32_ms"] = median(profiles["float32"][layer]) * 1e3
        rows.append(row)
    return rows


def _peak_text(report):
    """How the VNNI peak of the layer table was computed, or that it was not."""
    if report["ghz"] is None:
        return "VNNI peak: unknown (no clock in /proc/cpuinfo)"
    text = (f"VNNI peak: {report['threads']} cores x {report['ghz']:.2f} GHz x "
            f"{report['vnni_macs_per_cycle_per_core']} MACs x 2 (the clock /proc/cpuinfo "
            f"gives, often the nominal one: cores that boost above it show layers above 100%)")
    if report.get("amx_macs_per_cycle_per_core"):
        text += (f"; the pointwise layers run on AMX tiles here, whose peak is "
                 f"{report['amx_macs_per_cycle_per_core'] // report['vnni_macs_per_cycle_per_core']}"
                 f"x the VNNI one ({report['amx_macs_per_cycle_per_core']} MACs per cycle)")
    return text


def int8_markdown(report):
    """The report as Markdown tables."""
    lines = [f"# int8 benchmark: batch {report['batch']}, {report['threads']} threads, "
             f"{report['size']}x{report['size']}", "",
             f"Load average at start / end: {report['load_average'][0]} / "
             f"{report['load_average'][1]}; " + _peak_text(report), "",
             "| model | p50 ms | p90 ms | batch 8 images/s |", "|---|---:|---:|---:|"]
    for name, stats in report["latency_ms"].items():
        lines.append(f"| {name} | {stats['p50_ms']:.2f} | {stats['p90_ms']:.2f} | "
                     f"{report['batch8_images_per_s'][name]:.0f} |")
    if "float32" in report["latency_ms"]:
        ratio = (report["latency_ms"]["int8"]["p50_ms"]
                 / report["latency_ms"]["float32"]["p50_ms"])
        lines += ["", f"int8 / float32 p50: {ratio:.2f}"]
    lines += ["", "| layer | int8 ms | float32 ms | int8 GOPS | of VNNI peak |",
              "|---|---:|---:|---:|---:|"]
    for row in report["layers"]:
        peak = "" if row["of_vnni_peak"] is None else f"{row['of_vnni_peak']:.1%}"
        float_ms = f"{row['float32_ms']:.3f}" if "float32_ms" in row else ""
        lines.append(f"| {row['layer']} | {row['int8_ms']:.3f} | {float_ms} | "
                     f"{row['int8_gops']:.1f} | {peak} |")
    lines += ["", "| cold start | cache | import s | load s | first inference s | total s |",
              "|---|---|---:|---:|---:|---:|"]
    for name, runs in report["cold_start"].items():
        for cache, run in runs.items():
            lines.append(f"| {name} | {cache} | {run['import_s']:.2f} | {run['load_s']:.2f} | "
                         f"{run['first_inference_s']:.2f} | {run['total_s']:.2f} |")
    peers = report.get("peers")
    if peers:
        lines += ["", f"Engines, each in its own process ({peers['method']}):", "",
                  "| engine | p50 ms | p90 ms | mobinumba int8 / engine | max abs logit diff |",
                  "|---|---:|---:|---:|---:|"]
        for row in peers["engines"]:
            lines.append(f"| {row['label']} | {row['p50_ms']:.2f} | {row['p90_ms']:.2f} | "
                         f"{row['mobinumba_over_peer']:.2f} | "
                         f"{row['max_abs_logit_diff']:.1e} |")
        lines += [f"- {row['label']}: skipped, {row['reason']}" for row in peers["skipped"]]
    return "\n".join(lines) + "\n"
