"""Time several git revisions of mobinumba in one run: end to end and by layer kind.

    python bench/compare_revisions.py MODEL.h5 REV [REV ...] [--threads 2] [--batch 1]
        [--rounds 5] [--runs 20]

Each revision is checked out into a temporary git worktree and timed in its own child
process (so engines and JIT caches never share a process), with the revisions alternating
round by round (A B C A B C ...) to spread machine drift evenly. Each round reports the
median of --runs calls after warm-up, and the median per-layer times of as many profiled
calls (Model.profile), summed by layer kind (stem conv, depthwise, pointwise, head). The
table gives the median over rounds and the ratio to the first revision.
docs/performance.md quotes this script's output.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
import numpy as np
import mobinumba
path = sys.argv[1]
threads, batch, size, runs = (int(value) for value in sys.argv[2:6])
mobinumba.set_threads(threads)
model = mobinumba.load(path)
x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
for _ in range(10):
    model(x)
times = []
for _ in range(runs):
    start = time.perf_counter()
    model(x)
    times.append(time.perf_counter() - start)
layers = {}
for _ in range(runs):
    for name, seconds in model.profile(x):
        layers.setdefault(name, []).append(seconds)
kinds = {"stem": 0.0, "depthwise": 0.0, "pointwise": 0.0, "head": 0.0}
for name, seconds in layers.items():
    kind = ("stem" if name == "conv_stem" else "depthwise" if name.endswith("_dw")
            else "pointwise" if name.endswith("_pw") or name == "conv_head" else "head")
    kinds[kind] += float(np.median(seconds))
print(json.dumps({"median": float(np.median(times)), "min": float(np.min(times)),
                  "module": mobinumba.__file__, **kinds}))
"""
KINDS = ("stem", "depthwise", "pointwise", "head")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("revisions", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True,
                         text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as scratch:
        trees = {}
        for revision in args.revisions:
            tree = os.path.join(scratch, revision.replace("/", "_"))
            subprocess.run(["git", "-C", top, "worktree", "add", "--detach", "-q", tree,
                            revision], check=True)
            trees[revision] = tree
        try:
            rounds = {revision: [] for revision in args.revisions}
            for _ in range(args.rounds):
                for revision, tree in trees.items():
                    rounds[revision].append(_time(tree, args, scratch))
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", top, "worktree", "remove", "--force", tree],
                               check=False)
    print(f"batch {args.batch}, {args.size}x{args.size}, {args.threads} threads, "
          f"{args.rounds} rounds x {args.runs} runs")
    print_table("revision", rounds)

def print_table(what, rounds):
    """Print the summary of {name: [child result per round]}: median p50, best, the ratio to
    the first name, and the median time per layer kind (also used by compare_targets.py)."""
    first = statistics.median(r["median"] for r in next(iter(rounds.values())))
    print(f"{what:<14}{'p50 ms':>9}{'best ms':>9}{'vs first':>10}"
          + "".join(f"{kind + ' ms':>14}" for kind in KINDS))
    for name, results in rounds.items():
        median = statistics.median(r["median"] for r in results)
        best = min(r["min"] for r in results)
        by_kind = "".join(f"{statistics.median(r[kind] for r in results) * 1e3:14.3f}"
                          for kind in KINDS)
        print(f"{name:<14}{median * 1e3:9.3f}{best * 1e3:9.3f}{median / first:10.2f}"
              + by_kind)


def _time(tree, args, scratch):
    env = dict(os.environ, PYTHONPATH=tree, NUMBA_CACHE_DIR=os.path.join(scratch, "cache",
                                                                          os.path.basename(tree)))
    # cwd=tree: `python -c` puts the working directory first on sys.path, so running from a
    # checkout would import that checkout's mobinumba instead of the revision's.
    result = subprocess.run(
        [sys.executable, "-c", CHILD, os.path.abspath(args.model), str(args.threads),
         str(args.batch), str(args.size), str(args.runs)], env=env, cwd=tree,
        capture_output=True, text=True, check=True)
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    if not answer["module"].startswith(tree):
        raise RuntimeError(f"the child imported {answer['module']}, not the revision in {tree}")
    return answer


if __name__ == "__main__":
    main()
