"""Time the shipped model built for several CPU targets in one run: end to end and by kind.

    PYTHONPATH=<checkout> python bench/compare_targets.py [MODEL.h5] [--targets native
        haswell x86-64] [--threads 2] [--batch 1] [--rounds 5] [--runs 20]

Each target is timed in its own child process with its own NUMBA_CACHE_DIR (empty at the
start of the run, so no build ever sees another's cache), compiled with NUMBA_CPU_NAME=<cpu>
NUMBA_CPU_FEATURES= (LLVM takes the features from the name; this machine runs the code);
`native` leaves both unset. Targets alternate round by round (A B C A B C ...) to spread
machine drift; every round is printed with the 1-minute load average at its start, then
the median over rounds, the ratio to the first target, and the per-kind medians of
Model.profile (the child is compare_revisions.py's). docs/performance.md quotes the output.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from compare_revisions import CHILD, KINDS, print_table

TARGET_CHILD = CHILD.replace(
    "print(json.dumps({", "from mobinumba.kernels.targets import compile_target, target_tiles\n"
    "tiles = target_tiles()\n"
    "print(json.dumps({'target': str(compile_target()), 'tiles': f'pw {tiles.pointwise} "
    "stem {tiles.stem}', ")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=None,
                        help="weight file (default: the shipped model)")
    parser.add_argument("--targets", nargs="+", default=["native", "haswell", "x86-64"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    model = os.path.abspath(args.model) if args.model else os.path.join(
        top, "weights", "mobilenet_v1_1.0_224_imagenet.h5")
    rounds = {target: [] for target in args.targets}
    print(f"batch {args.batch}, {args.size}x{args.size}, {args.threads} threads, "
          f"{args.rounds} rounds x {args.runs} runs")
    with tempfile.TemporaryDirectory() as scratch:
        for number in range(args.rounds):
            for target in args.targets:
                load = os.getloadavg()[0]
                result = _time(top, model, target, os.path.join(scratch, target), args)
                rounds[target].append(result)
                print(f"round {number + 1} {target:<10} load {load:5.2f}  p50 "
                      f"{result['median'] * 1e3:7.3f} ms  "
                      + "  ".join(f"{kind} {result[kind] * 1e3:.3f}" for kind in KINDS)
                      + f"  [{result['target']}; {result['tiles']}]", flush=True)
    print_table("target", rounds)

def _time(top, model, target, cache_dir, args):
    """One child process's timings for `target` ('native' or an LLVM CPU name)."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")}
    env.update(PYTHONPATH=top, NUMBA_CACHE_DIR=cache_dir)
    if target != "native":
        env.update(NUMBA_CPU_NAME=target, NUMBA_CPU_FEATURES="")
    result = subprocess.run(
        [sys.executable, "-c", TARGET_CHILD, model, str(args.threads), str(args.batch),
         str(args.size), str(args.runs)], env=env, cwd=top, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the {target} child failed:\n{result.stderr[-2000:]}")
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    if not answer["module"].startswith(top):
        raise RuntimeError(f"the child imported {answer['module']}, not {top}")
    return answer


if __name__ == "__main__":
    main()
