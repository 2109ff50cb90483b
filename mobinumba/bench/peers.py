"""Section 6: mobinumba beside PyTorch eager and ONNX Runtime, same weights, threads and run.

Engines disturb each other inside one process (their worker threads keep spinning after a
call and take the cores from whoever runs next), so each engine is timed in its own block of
calls after a pause, and the blocks repeat in turn (A B C A B C ...) to spread slow drift of
the machine over all engines. A peer that is not installed, not requested or that fails is
listed as skipped with the reason, never dropped.
"""
import importlib
from importlib import metadata
import os
import time

import numpy as np

from .timing import latency_stats

PEERS = ("torch", "onnxruntime")
LABELS = {"mobinumba": "mobinumba", "torch": "PyTorch eager (CPU)",
          "onnxruntime": "ONNX Runtime (CPU)"}
INSTALL_HINT = "pip install 'mobinumba[bench]'"
# Engines agree when their logits differ by at most this much relative to max(1, |logit|).
AGREEMENT_TOLERANCE = 1e-3


class PeerUnavailable(Exception):
    """A peer cannot run here (a package is missing); the message says why."""


def measure_peers(model, model_file, x, threads, runs, warmup, rounds, pause_s, requested,
                  workdir):
    """The section's dict: `engines` (mobinumba first, then each peer that ran) with latency
    statistics, the ratio mobinumba / peer of the p50s and the agreement of the logits;
    `skipped` with a reason for every peer that did not run; `method`."""
    engines = {"mobinumba": (lambda: model(x), _version("mobinumba"))}
    skipped, restore = [], []
    try:
        for name in PEERS:
            if name not in requested:
                skipped.append({"name": name, "label": LABELS[name],
                                "reason": "not requested (--peers)"})
                continue
            try:
                engines[name] = BUILDERS[name](model_file, x, threads, workdir, restore)
            except PeerUnavailable as error:
                skipped.append({"name": name, "label": LABELS[name], "reason": str(error)})
            except Exception as error:  # noqa: BLE001 - a peer's own failure is reported
                skipped.append({"name": name, "label": LABELS[name],
                                "reason": f"failed: {type(error).__name__}: {error}"})
        per_block = max(1, -(-runs // rounds))
        block_warmup = max(1, warmup // rounds)
        seconds = _time_in_blocks(engines, rounds, per_block, block_warmup, pause_s)
        reference = np.asarray(engines["mobinumba"][0](), dtype=np.float64)
        scale = max(1.0, float(np.abs(reference).max()))
        mobinumba_p50 = latency_stats(seconds["mobinumba"])["p50_ms"]
        rows = []
        for name, (call, version) in engines.items():
            stats = latency_stats(seconds[name])
            difference = float(np.abs(_numpy(call()) - reference).max())
            rows.append({"name": name, "label": LABELS[name], "version": version,
                         **stats,
                         "block_p50_ms": [float(np.median(block)) * 1e3
                                          for block in _blocks(seconds[name], per_block)],
                         "mobinumba_over_peer": mobinumba_p50 / stats["p50_ms"],
                         "max_abs_logit_diff": difference,
                         "agrees": difference <= AGREEMENT_TOLERANCE * scale})
    finally:
        for undo in restore:
            undo()
    return {"threads": threads, "batch": int(x.shape[0]), "size": int(x.shape[2]),
            "engines": rows, "skipped": skipped,
            "agreement_tolerance": AGREEMENT_TOLERANCE,
            "method": (f"one process; each engine timed in its own block of {per_block} calls "
                       f"after {block_warmup} warm-up call(s) and a {pause_s:g} s pause; "
                       f"{rounds} rounds of the blocks in turn "
                       f"({' '.join(engines)} {' '.join(engines)} ...)")}


def _time_in_blocks(engines, rounds, per_block, warmup, pause_s):
    seconds = {name: [] for name in engines}
    for _ in range(rounds):
        for name, (call, _) in engines.items():
            time.sleep(pause_s)
            for _ in range(warmup):
                call()
            for _ in range(per_block):
                start = time.perf_counter()
                call()
                seconds[name].append(time.perf_counter() - start)
    return seconds


def _blocks(values, size):
    return [values[start:start + size] for start in range(0, len(values), size)]


def _numpy(logits):
    if hasattr(logits, "detach"):
        logits = logits.detach().numpy()
    return np.asarray(logits, dtype=np.float64)


def _version(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _import(package):
    try:
        return importlib.import_module(package)
    except ImportError:
        raise PeerUnavailable(f"{package} is not installed ({INSTALL_HINT})") from None


def _torch_engine(model_file, x, threads, workdir, restore):
    """PyTorch eager: the records' nn.Module under inference_mode with `threads` threads."""
    torch = _import("torch")
    from .torch_model import torch_module

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    restore.append(lambda: torch.set_num_threads(previous))
    module = torch_module(model_file)
    tensor = torch.from_numpy(x)

    def call():
        with torch.inference_mode():
            return module(tensor)
    return call, torch.__version__


def _onnxruntime_engine(model_file, x, threads, workdir, restore):
    """ONNX Runtime CPU on the ONNX export of the same module, intra_op_num_threads=threads."""
    _import("torch")
    _import("onnx")
    ort = _import("onnxruntime")
    from .torch_model import export_onnx, torch_module

    path = export_onnx(torch_module(model_file), x, os.path.join(workdir, "model.onnx"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def call():
        return session.run(None, {"input": x})[0]
    return call, ort.__version__


BUILDERS = {"torch": _torch_engine, "onnxruntime": _onnxruntime_engine}
