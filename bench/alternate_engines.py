"""m(x) of mobinumba checkouts and LiteRT, alternated block by block in separate processes.

    python bench/alternate_engines.py SPEC [SPEC ...] [--precision int8] [--batch 1]
        [--blocks 12] [--calls 200] [--threads 2]

A SPEC is a checkout directory (its mobinumba, on PYTHONPATH, runs the shipped model of
--precision) or `litert` (LiteRT with XNNPACK on `export --tflite`'s file of that shipped
model, bench/peers), optionally followed by `:NAME=VALUE,...` environment variables for that
process (`/path/to/checkout:GOMP_SPINCOUNT=1000`). Each process warms up, then the processes
take turns, --blocks times, timing --calls // --batch calls each, with no pause between
blocks (the quiet-machine, back-to-back case; bench/busy_machine.py adds load and
`mobinumba bench` pauses). Prints p50 and p10 per SPEC and p50 over the last SPEC's.
docs/performance.md quotes it.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

CHILD = r"""
import json, sys, tempfile
import numpy as np
kind, precision = sys.argv[1], sys.argv[2]
batch, threads, calls = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
x = np.random.default_rng(0).uniform(-1, 1, (batch, 3, 224, 224)).astype(np.float32)
if kind == "litert":
    from mobinumba.bench.peers import BUILDERS
    from mobinumba.model import default_weights_path
    name = "litert_int8" if precision == "int8" else "litert"
    call, _ = BUILDERS[name](default_weights_path(precision), x, threads, tempfile.mkdtemp())
else:
    import mobinumba
    mobinumba.set_threads(threads)
    model = mobinumba.load(precision=precision)
    call = lambda: model(x)
from mobinumba.bench.timing import time_calls
time_calls(call, 0, 50)
print("ready", flush=True)
for _ in sys.stdin:
    print(json.dumps(time_calls(call, max(1, calls // batch))), flush=True)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="+")
    parser.add_argument("--precision", default="int8", choices=["int8", "float32"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    processes = []
    for spec in args.specs:
        root, _, extra = spec.partition(":")
        env = dict(os.environ, PYTHONPATH=here if root == "litert" else os.path.abspath(root))
        env.update(item.split("=", 1) for item in filter(None, extra.split(",")))
        processes.append(subprocess.Popen(
            [sys.executable, "-c", CHILD, "litert" if root == "litert" else "mobinumba",
             args.precision, str(args.batch), str(args.threads), str(args.calls)],
            env=env, cwd="/", stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    try:
        for process, spec in zip(processes, args.specs):
            while (line := process.stdout.readline()).strip() != "ready":
                if not line:
                    raise SystemExit(f"alternate_engines.py: {spec} did not start")
        times = [[] for _ in processes]
        for _ in range(args.blocks):
            for process, samples in zip(processes, times):
                process.stdin.write("go\n")
                process.stdin.flush()
                samples += json.loads(process.stdout.readline())
    finally:
        for process in processes:
            process.stdin.close()
            process.wait()
    last = np.median(times[-1])
    print(f"batch {args.batch}, {args.threads} threads, {args.precision}, "
          f"{args.blocks} alternated blocks")
    for spec, samples in zip(args.specs, times):
        p50, p10 = np.median(samples), np.percentile(samples, 10)
        print(f"{spec:40s} p50 {p50 * 1e3:7.3f} ms  p10 {p10 * 1e3:7.3f}  "
              f"p50 / last {p50 / last:.3f}")


if __name__ == "__main__":
    main()
