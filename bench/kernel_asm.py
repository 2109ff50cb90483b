"""Count the instructions of the kernels' hot loops as built for the current target.

    NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES= NUMBA_CACHE_DIR=$(mktemp -d) \
    PYTHONPATH=<checkout> python bench/kernel_asm.py [--pointwise 1x32 ...] [--dump DIR]

Compiles the pointwise GEMM (the target's tile and any --pointwise tiles), the stem and the
depthwise kernels for the target Numba compiles for (LLVM builds for NUMBA_CPU_NAME; nothing
runs but a tiny call per kernel), finds each function's innermost loops in the assembly
(a label and the backward jump to it) and prints, for each loop that multiplies:
instructions, FMAs, packed multiplies and adds (SSE has no FMA), scalar multiplies and adds
(a loop LLVM did not vectorise), stack accesses (%rsp: spilled vectors or pointers, or
accumulators kept in memory) and the vector registers used. A kernel has several such loops
(full tiles, row tiles, vector remainders); docs/performance.md says which is the hot one.
x86 only (it reads AT&T x86 assembly).
"""
import argparse
import os
import re

import numpy as np

from mobinumba.kernels import depthwise
from mobinumba.kernels.conv import conv3x3_nchw_to_nhwc_clamp_kernel
from mobinumba.kernels.pointwise import pwconv_nhwc_clamp_kernel
from mobinumba.kernels.targets import compile_target, target_tiles
from tile_candidates import parse_tile  # bench/, beside this script

PATTERNS = {
    "fma": r"\bvfn?madd\d+ps\b",
    "mul": r"\bv?mulps\b",
    "add": r"\bv?addps\b",
    "scalar": r"\bv?(?:mul|add)ss\b|\bvfn?madd\d+ss\b",
    "stack": r"\(%rsp\)",
}
LABEL = re.compile(r"^(\.?\w+):")
JUMP = re.compile(r"^\s+j\w+\s+(\.\w+)")


def innermost_loops(asm):
    """[(label, instruction lines)] of the loops that contain no other loop."""
    lines = asm.splitlines()
    labels, loops = {}, []
    for number, line in enumerate(lines):
        if match := LABEL.match(line):
            labels[match.group(1)] = number
        elif (match := JUMP.match(line)) and match.group(1) in labels:
            loops.append((labels[match.group(1)], number, match.group(1)))
    inner = [loop for loop in loops
             if not any(loop[0] <= other[0] and other[1] <= loop[1] and other != loop
                        for other in loops)]
    return [(label, [line for line in lines[start:end + 1]
                     if line.startswith("\t") and not line.strip().startswith(".")])
            for start, end, label in inner]


def loop_counts(body):
    """{kind: count} for one loop body (a list of instruction lines)."""
    text = "\n".join(body)
    counts = {kind: len(re.findall(pattern, text)) for kind, pattern in PATTERNS.items()}
    counts["instructions"] = len(body)
    counts["registers"] = sorted(set(re.findall(r"%([xyz]mm\d+)", text)),
                                 key=lambda name: int(name[3:]))
    return counts


def report(name, asm, dump):
    """Print the innermost loops of `asm` that multiply, most multiplies first (loops with
    the same counts once: LLVM often emits a loop twice, e.g. for aliasing checks)."""
    if dump:
        with open(os.path.join(dump, f"{name.replace(' ', '_')}.s"), "w") as file:
            file.write(asm)
    seen = set()
    loops = [(label, loop_counts(body)) for label, body in innermost_loops(asm)]
    loops.sort(key=lambda item: -(item[1]["fma"] + item[1]["mul"] + item[1]["scalar"]))
    for label, counts in loops:
        registers = counts.pop("registers")
        key = tuple(counts.values())
        if key in seen or not (counts["fma"] or counts["mul"] or counts["scalar"]):
            continue
        seen.add(key)
        print(f"{name:<32} {label:<10} " + " ".join(f"{k} {v}" for k, v in counts.items())
              + f" vector registers {len(registers)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pointwise", nargs="*", type=parse_tile, default=[])
    parser.add_argument("--dump", help="also write each kernel's assembly to DIR/<name>.s")
    args = parser.parse_args()
    f32 = np.float32
    tiles = target_tiles()
    print(f"target {compile_target()}")
    for tile in [tiles.pointwise, *args.pointwise]:
        kernel = pwconv_nhwc_clamp_kernel(tile)
        kernel(np.zeros((7, 8), f32), np.zeros((1, 8, tile.nr), f32),
               np.zeros((1, tile.nr), f32), f32(6), np.zeros((7, tile.nr), f32))
        report(f"pointwise {tile}", next(iter(kernel.compiled.inspect_asm().values())),
               args.dump)
    kernel = conv3x3_nchw_to_nhwc_clamp_kernel(tiles.stem)
    kernel(np.zeros((1, 3, 9, 9), f32), np.zeros((1, 27, tiles.stem.nr), f32),
           np.zeros((1, tiles.stem.nr), f32), 2, f32(6), np.zeros((1, 4, 4, tiles.stem.nr), f32))
    report(f"stem {tiles.stem}", next(iter(kernel.compiled.inspect_asm().values())), args.dump)
    x = np.zeros((1, 8, 8, 32), f32)
    weight, bias = np.zeros((3, 3, 32), f32), np.zeros(32, f32)
    depthwise.dwconv3x3s1_nhwc_clamp(x, weight, bias,
                                     *depthwise.tile_dwconv3x3_weights(weight, bias), f32(6),
                                     np.zeros_like(x))
    depthwise.dwconv3x3_nhwc_clamp(x, weight, bias, 2, 0, 1, f32(6),
                                   np.zeros((1, 4, 4, 32), f32))
    for name in ("_interior_two_rows", "_interior_row", "dwconv3x3_nhwc_clamp"):
        report(f"depthwise {name}", next(iter(getattr(depthwise, name).inspect_asm().values())),
               args.dump)


if __name__ == "__main__":
    main()
