"""Section 6: mobinumba beside PyTorch eager, ONNX Runtime and LiteRT, same weights, threads
and run.

Engines disturb each other inside one process: their worker threads keep spinning after a
call and take the cores from whoever runs next, and PyTorch brings an OpenMP runtime of its
own beside the one Numba uses (with all engines in one process, blocks of PyTorch calls
took over a second each while the machine was busy). So every engine,
mobinumba included, runs in a process of its own (multiprocessing, "spawn"), driven from
here: the engines are timed in blocks of calls after a pause, one engine at a time, and
the blocks repeat in turn (A B C A B C ...) to spread slow drift of the machine over all of
them. A peer that is not installed, not requested or that fails is listed as skipped with
the reason, never dropped.
"""
import importlib
from importlib import metadata
import multiprocessing
import os
import time

import numpy as np

from .timing import latency_stats, time_calls

PEERS = ("torch", "onnxruntime", "litert")
# `bench --precision int8` compares with this one (bench/int8.py), on an int8 weight file.
INT8_PEERS = ("litert_int8",)
LABELS = {"mobinumba": "mobinumba", "torch": "PyTorch eager (CPU)",
          "onnxruntime": "ONNX Runtime (CPU)", "litert": "LiteRT float32 (XNNPACK)",
          "litert_int8": "LiteRT int8 (XNNPACK)"}
INSTALL_HINT = "pip install 'mobinumba[bench]'"
# Engines agree when their logits differ by at most this much relative to max(1, |logit|).
AGREEMENT_TOLERANCE = 1e-3
# Seconds an engine process may take to start (import, build, ONNX export) or run a block.
ENGINE_TIMEOUT_S = 600


class PeerUnavailable(Exception):
    """A peer cannot run here (a package is missing); the message says why."""


def measure_peers(weights_path, x, threads, runs, warmup, rounds, pause_s, requested,
                  workdir, peers=PEERS):
    """The section's dict: `engines` (mobinumba first, then each peer that ran) with latency
    statistics, the ratio mobinumba / peer of the p50s and the agreement of the logits;
    `skipped` with a reason for every peer that did not run; `method`.

    weights_path: the .h5 every engine builds its model from; x (N, 3, H, W) float32.
    peers: the engines beside mobinumba (INT8_PEERS for an int8 file).
    """
    engines, skipped = {}, []
    try:
        for name in ("mobinumba",) + tuple(peers):
            if name != "mobinumba" and name not in requested:
                skipped.append({"name": name, "label": LABELS[name],
                                "reason": "not requested (--peers)"})
                continue
            try:
                engines[name] = EngineProcess(name, weights_path, x, threads, workdir)
            except PeerUnavailable as error:
                if name == "mobinumba":
                    raise
                skipped.append({"name": name, "label": LABELS[name], "reason": str(error)})
        per_block = max(1, -(-runs // rounds))
        block_warmup = max(1, warmup // rounds)
        seconds = {name: [] for name in engines}
        for _ in range(rounds):
            for name, engine in engines.items():
                time.sleep(pause_s)
                seconds[name] += engine.block(per_block, block_warmup)
        logits = {name: engine.logits() for name, engine in engines.items()}
    finally:
        for engine in engines.values():
            engine.close()
    reference = logits["mobinumba"]
    scale = max(1.0, float(np.abs(reference).max()))
    mobinumba_p50 = latency_stats(seconds["mobinumba"])["p50_ms"]
    rows = []
    for name, engine in engines.items():
        stats = latency_stats(seconds[name])
        difference = float(np.abs(logits[name] - reference).max())
        rows.append({"name": name, "label": LABELS[name], "version": engine.version,
                     **stats,
                     "block_p50_ms": [float(np.median(block)) * 1e3
                                      for block in _blocks(seconds[name], per_block)],
                     "mobinumba_over_peer": mobinumba_p50 / stats["p50_ms"],
                     "max_abs_logit_diff": difference,
                     "agrees": difference <= AGREEMENT_TOLERANCE * scale})
    return {"threads": threads, "batch": int(x.shape[0]), "size": int(x.shape[2]),
            "engines": rows, "skipped": skipped,
            "agreement_tolerance": AGREEMENT_TOLERANCE,
            "method": (f"one process per engine; each engine timed in its own block of "
                       f"{per_block} calls after {block_warmup} warm-up call(s) and a "
                       f"{pause_s:g} s pause, the others idle; {rounds} rounds of the blocks "
                       f"in turn ({' '.join(engines)} {' '.join(engines)} ...)")}


class EngineProcess:
    """One engine built and timed in a spawned process of its own.

    Raises PeerUnavailable when the engine cannot be built there (a missing package, or a
    failure, with the reason).
    """

    def __init__(self, name, weights_path, x, threads, workdir, serve=None):
        # serve(connection, name, ...): the process's loop; bench/busy_machine.py passes one
        # that applies its variants' options first.
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=serve or _serve, daemon=True,
                                       args=(child, name, weights_path, x, threads, workdir))
        self.process.start()
        child.close()
        status, detail = self._receive()
        if status != "ready":
            self.close()
            raise PeerUnavailable(detail)
        self.version = detail

    def block(self, calls, warmup):
        """Seconds of `calls` timed calls after `warmup` untimed ones."""
        self.connection.send(("block", (calls, warmup)))
        return self._receive()[1]

    def logits(self):
        """(N, K) float64 logits of the engine for the input."""
        self.connection.send(("logits", None))
        return self._receive()[1]

    def close(self):
        """Stop the process (politely, then by force)."""
        try:
            self.connection.send(("stop", None))
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()

    def _receive(self):
        if not self.connection.poll(ENGINE_TIMEOUT_S):
            raise RuntimeError(f"engine process gave no answer in {ENGINE_TIMEOUT_S} s")
        try:
            return self.connection.recv()
        except EOFError:
            raise PeerUnavailable(f"failed: the engine process exited with "
                                  f"{self.process.exitcode}") from None


def _serve(connection, name, weights_path, x, threads, workdir):
    """The engine process: build the engine, then answer block / logits / stop requests."""
    try:
        call, version = BUILDERS[name](weights_path, x, threads, workdir)
    except PeerUnavailable as error:
        connection.send(("unavailable", str(error)))
        return
    except Exception as error:  # noqa: BLE001 - a peer's own failure is reported
        connection.send(("failed", f"failed: {type(error).__name__}: {error}"))
        return
    connection.send(("ready", version))
    while True:
        command, argument = connection.recv()
        if command == "block":
            calls, warmup = argument
            connection.send(("ok", time_calls(call, calls, warmup)))
        elif command == "logits":
            connection.send(("ok", _numpy(call())))
        else:
            return


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


def _import(package, distribution=None):
    """The imported module; PeerUnavailable naming the distribution to install if missing."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise PeerUnavailable(f"{distribution or package} is not installed "
                              f"({INSTALL_HINT})") from None


def _mobinumba_engine(weights_path, x, threads, workdir):
    """mobinumba itself on `threads` kernel threads."""
    from .. import load, set_threads

    set_threads(threads)
    model = load(weights_path)
    return (lambda: model(x)), _version("mobinumba")


def _torch_engine(weights_path, x, threads, workdir):
    """PyTorch eager: the records' nn.Module under inference_mode with `threads` threads."""
    torch = _import("torch")
    from ..weights import read_model_file
    from .torch_model import torch_module

    torch.set_num_threads(threads)
    module = torch_module(read_model_file(weights_path))
    tensor = torch.from_numpy(x)

    def call():
        with torch.inference_mode():
            return module(tensor)
    return call, torch.__version__


def _onnxruntime_engine(weights_path, x, threads, workdir):
    """ONNX Runtime CPU on the ONNX export of the same module, intra_op_num_threads=threads."""
    _import("torch")
    _import("onnx")
    ort = _import("onnxruntime")
    from ..weights import read_model_file
    from .torch_model import export_onnx, torch_module

    path = export_onnx(torch_module(read_model_file(weights_path)), x,
                       os.path.join(workdir, "model.onnx"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def call():
        return session.run(None, {"input": x})[0]
    return call, ort.__version__


def _litert_engine(weights_path, x, threads, workdir):
    """LiteRT (ai-edge-litert) with its default XNNPACK delegate on `threads` threads, running
    `export --tflite`'s float32 file of the same weights. Its input is NHWC, its own layout:
    the transpose is made once, outside the timed calls (mobinumba's own NCHW -> NHWC step
    is inside its calls)."""
    return _litert_on(weights_path, x, threads, workdir, "float32")


def _litert_int8_engine(weights_path, x, threads, workdir):
    """LiteRT with XNNPACK on `export --tflite`'s fully quantized file of an int8 weight
    file: float32 input, QUANTIZE, the int8 network, DEQUANTIZE (as mobinumba's int8 m(x))."""
    return _litert_on(weights_path, x, threads, workdir, "int8")


def _litert_on(weights_path, x, threads, workdir, precision):
    """(call, version) of LiteRT's default interpreter (XNNPACK delegate) on the exported
    `.tflite` of `weights_path`, which must be a `precision` file."""
    _import("flatbuffers")
    interpreter_module = _import("ai_edge_litert.interpreter", "ai-edge-litert")
    from ..export_tflite import tflite_bytes
    from ..weights import read_model_file

    model_file = read_model_file(weights_path)
    if model_file.info.precision != precision:
        raise PeerUnavailable(f"needs a {precision} weight file; "
                              f"{os.path.basename(weights_path)} is "
                              f"{model_file.info.precision}")
    data, _ = tflite_bytes(model_file)
    path = os.path.join(workdir, f"model-{precision}.tflite")
    with open(path, "wb") as stream:
        stream.write(data)
    interpreter = interpreter_module.Interpreter(model_path=path, num_threads=threads)
    source = interpreter.get_input_details()[0]["index"]
    if x.shape[0] != 1:
        interpreter.resize_tensor_input(source, [x.shape[0], x.shape[2], x.shape[3], 3])
    interpreter.allocate_tensors()
    output = interpreter.get_output_details()[0]["index"]
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))

    def call():
        interpreter.set_tensor(source, nhwc)
        interpreter.invoke()
        return interpreter.get_tensor(output)
    return call, _version("ai-edge-litert")


BUILDERS = {"mobinumba": _mobinumba_engine, "torch": _torch_engine,
            "onnxruntime": _onnxruntime_engine, "litert": _litert_engine,
            "litert_int8": _litert_int8_engine}
