"""Latency on a busy machine: each engine timed while N busy-loop processes compete for the cores.

    python bench/busy_machine.py MODEL.h5 [--busy 0 2] [--engines mobinumba onnxruntime litert]
        [--calls 300] [--rounds 10] [--threads 2] [--json FILE]

Every engine runs in a process of its own (spawned, like `mobinumba bench`'s peers:
mobinumba with the model file, batch 1; ONNX Runtime on the ONNX export of the same weights,
intra_op_num_threads=--threads; LiteRT with XNNPACK, num_threads=--threads, on the float32
.tflite that `mobinumba export --tflite` writes of the same weights). For each busy level,
--busy N starts N processes spinning in `while True` (bounded by a deadline, and killed when
the level ends or the script exits), then
times --calls calls of each engine in --rounds blocks, the engines alternating block by block
(A B A B ...), and reports p50 / p90 / p99 / max. Level 0 is the quiet run.

An engine can be a variant, `NAME:KEY=VALUE,...`: upper-case keys are environment variables
set in its process before anything is imported (`mobinumba:OMP_WAIT_POLICY=PASSIVE`);
`chunksize=N` calls numba.set_parallel_chunksize(N) around each mobinumba call.
docs/performance.md quotes this script's output.
"""
import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time

import numpy as np

# A busy loop stops by itself this long after it starts, even if nobody kills it.
BUSY_DEADLINE_S = 900
ENGINE_TIMEOUT_S = 600


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 2],
                        help="numbers of busy-loop processes, one level each (default 0 2)")
    parser.add_argument("--engines", nargs="+", default=["mobinumba", "onnxruntime", "litert"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=300, help="timed calls per engine and level")
    parser.add_argument("--rounds", type=int, default=10, help="blocks per engine and level")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before each block")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    results = {"machine": _machine(), "threads": args.threads, "calls": args.calls,
               "rounds": args.rounds, "levels": []}
    # Imported here, not at the top: each engine process re-imports this module, and must set
    # its variant's environment before mobinumba (and its OpenMP runtime) is loaded.
    from mobinumba.bench.peers import EngineProcess, PeerUnavailable

    with tempfile.TemporaryDirectory() as workdir:
        engines = {}
        try:
            for spec in args.engines:
                try:
                    engines[spec] = EngineProcess(spec, os.path.abspath(args.model), x,
                                                  args.threads, workdir, serve=_serve)
                except PeerUnavailable as error:
                    raise SystemExit(f"busy_machine.py: engine {spec!r} did not start: "
                                     f"{error}") from None
            per_block = max(1, -(-args.calls // args.rounds))
            for busy in args.busy:
                results["levels"].append(_level(engines, busy, per_block, args))
        finally:
            for engine in engines.values():
                engine.close()
    _print(results)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=1)


def _level(engines, busy, per_block, args):
    """Time every engine with `busy` busy loops running; the level's dict."""
    context = multiprocessing.get_context("spawn")
    loops = [context.Process(target=_spin, args=(time.monotonic() + BUSY_DEADLINE_S,),
                             daemon=True) for _ in range(busy)]
    seconds = {spec: [] for spec in engines}
    try:
        for loop in loops:
            loop.start()
        time.sleep(1.0 if busy else 0.2)
        load_start = os.getloadavg()[0]
        for _ in range(args.rounds):
            for spec, engine in engines.items():
                seconds[spec] += engine.block(per_block, args.warmup)
        load_end = os.getloadavg()[0]
    finally:
        for loop in loops:
            loop.kill()
        for loop in loops:
            loop.join()
    return {"busy": busy, "load_start": load_start, "load_end": load_end,
            "engines": {spec: _stats(values) for spec, values in seconds.items()}}


def _spin(deadline):
    """A busy loop: pure Python, stops at `deadline` (time.monotonic) at the latest."""
    while time.monotonic() < deadline:
        pass


def _stats(seconds):
    ms = np.asarray(seconds) * 1e3
    return {"calls": len(ms), "p50": float(np.percentile(ms, 50)),
            "p90": float(np.percentile(ms, 90)), "p99": float(np.percentile(ms, 99)),
            "max": float(ms.max())}


def _serve(connection, spec, weights_path, x, threads, workdir):
    """The engine process: apply the variant's options, build the engine, answer requests."""
    name, _, options = spec.partition(":")
    chunksize = None
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        if key == "chunksize":
            chunksize = int(value)
        else:
            os.environ[key] = value  # before numba or onnxruntime is imported
    try:
        from mobinumba.bench.peers import BUILDERS
        from mobinumba.bench.timing import time_calls
        call, version = BUILDERS[name](weights_path, x, threads, workdir)
    except Exception as error:  # noqa: BLE001 - reported to the parent
        connection.send(("failed", f"{type(error).__name__}: {error}"))
        return
    if chunksize is not None:
        import numba
        numba.set_parallel_chunksize(chunksize)
    connection.send(("ready", version))
    while True:
        command, argument = connection.recv()
        if command != "block":
            return
        calls, warmup = argument
        connection.send(("ok", time_calls(call, calls, warmup)))


def _machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            cpu = next(line.split(":", 1)[1].strip() for line in file
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": sys.version.split()[0],
            "time_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _print(results):
    machine = results["machine"]
    print(f"{machine['time_utc']}, {machine['cpu']}, {machine['cores']} cores, "
          f"{results['threads']} threads, batch 1, {results['calls']} calls per engine and "
          f"level in {results['rounds']} alternated blocks")
    print(f"{'busy':>4} {'load':>10}  {'engine':<36}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}")
    for level in results["levels"]:
        load = f"{level['load_start']:.2f}-{level['load_end']:.2f}"
        for spec, stats in level["engines"].items():
            print(f"{level['busy']:>4} {load:>10}  {spec:<36}{stats['p50']:8.2f}"
                  f"{stats['p90']:8.2f}{stats['p99']:8.2f}{stats['max']:8.2f}")


if __name__ == "__main__":
    main()
