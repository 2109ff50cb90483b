"""Latency of the calls that follow an idle pause, by position, for OpenMP spin counts.

    python bench/after_idle.py [--precision int8] [--spincounts 1000 2000] [--pause 0.3]
        [--rounds 15] [--calls 40] [--threads 2]

For each spin count a process of its own (GOMP_SPINCOUNT set before mobinumba is imported)
loads the shipped model, warms up, then --rounds times sleeps --pause seconds and times
--calls calls of m(x) (batch 1). Prints the median of each call position over the rounds
(calls 1-12) and the median of the calls from 20 on: a stretch of slow calls after the pause
shows as calls 3.. far above the steady median. docs/performance.md quotes it (the spin
count, threads.GOMP_SPINCOUNT).
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

CHILD = r"""
import json, sys, time
import numpy as np
import mobinumba
from mobinumba.threads import set_threads
precision, threads, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rounds, calls = int(sys.argv[4]), int(sys.argv[5])
set_threads(threads)
model = mobinumba.load(precision=precision)
x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
for _ in range(100):
    model(x)
times = []
for _ in range(rounds):
    time.sleep(pause)
    row = []
    for _ in range(calls):
        start = time.perf_counter()
        model(x)
        row.append(time.perf_counter() - start)
    times.append(row)
print(json.dumps(times))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="int8", choices=["int8", "float32"])
    parser.add_argument("--spincounts", nargs="+", default=["1000", "2000"])
    parser.add_argument("--pause", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.calls < 21:
        parser.error("--calls must be at least 21 (the steady median is of calls 20 on)")
    for spincount in args.spincounts:
        env = dict(os.environ, GOMP_SPINCOUNT=spincount)
        output = subprocess.run(
            [sys.executable, "-c", CHILD, args.precision, str(args.threads), str(args.pause),
             str(args.rounds), str(args.calls)], env=env, check=True, capture_output=True,
            text=True).stdout
        times = np.array(json.loads(output)) * 1e3  # (rounds, calls) ms
        first = " ".join(f"{value:.2f}" for value in np.median(times, axis=0)[:12])
        print(f"GOMP_SPINCOUNT={spincount:>7}  calls 1-12: {first}  | calls 20-: "
              f"{np.median(times[:, 19:]):.2f} ms")


if __name__ == "__main__":
    main()
