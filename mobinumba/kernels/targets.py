"""The CPU the kernels are compiled for, and the register tiles chosen for it.

Numba compiles for `NUMBA_CPU_NAME` / `NUMBA_CPU_FEATURES` when they are set, else for the
host CPU llvmlite reports. `compile_target()` reads that the way Numba's codegen does and
derives a `TargetISA`: the vector width LLVM will vectorise the kernels with and the number
of vector registers. `TILES[(vector_bits, registers)]` gives the pointwise and stem tiles
for it; the ops (ops/pointwise.py, ops/stem.py) take their tiles from `target_tiles()`.

Numba's on-disk cache keys every entry by the codegen's (triple, CPU name, features) tuple,
so a cache filled for one target is never served to another (tests/test_targets.py checks
it across processes).

Why each tile: see TILES below and docs/performance.md ("Tiles per target").
"""
import platform
from dataclasses import dataclass

import llvmlite.binding as llvm
import numba

from ._tile import Tile

# x86 CPU names LLVM knows whose vector ISA we can tell from the name alone (used when
# NUMBA_CPU_FEATURES is set but empty: LLVM then takes the features from the name).
_AVX512_NAMES = frozenset({
    "knl", "knm", "skylake-avx512", "skx", "cascadelake", "cooperlake", "cannonlake",
    "icelake-client", "icelake-server", "tigerlake", "rocketlake", "sapphirerapids",
    "emeraldrapids", "graniterapids", "graniterapids-d", "diamondrapids", "znver4", "znver5",
    "x86-64-v4"})
_AVX2_NAMES = frozenset({
    "haswell", "core-avx2", "broadwell", "skylake", "alderlake", "raptorlake", "meteorlake",
    "arrowlake", "arrowlake-s", "lunarlake", "pantherlake", "gracemont", "sierraforest",
    "grandridge", "clearwaterforest", "znver1", "znver2", "znver3", "bdver4", "x86-64-v3"})
# 256-bit AVX without AVX2: still 256-bit float vectors, 16 ymm.
_AVX_NAMES = frozenset({
    "sandybridge", "corei7-avx", "ivybridge", "core-avx-i", "bdver1", "bdver2", "bdver3",
    "btver2"})
# LLVM's "prefer-256-bit" tuning: on Intel's AVX-512 cores (not KNL/KNM, not AMD Zen 4/5)
# the vectoriser keeps to 256-bit ymm vectors although 32 zmm exist. Measured: built for
# skylake-avx512 the 6x64 pointwise tile compiles to ymm FMAs only (56 of them, 292 stack
# moves), as for haswell.
_PREFER_256_NAMES = _AVX512_NAMES - {"knl", "knm", "znver4", "znver5", "x86-64-v4"}


@dataclass(frozen=True)
class TargetISA:
    """What the kernels are compiled for: `cpu` and `arch` as LLVM sees them, and the vector
    width (bits) and vector register count the tiles are sized by. `note` says how the ISA
    was worked out when it was not from explicit features (e.g. an unknown CPU name)."""

    arch: str
    cpu: str
    vector_bits: int
    registers: int
    isa: str
    note: str = ""

    @property
    def lanes(self):
        """float32 lanes per vector register."""
        return self.vector_bits // 32

    def __str__(self):
        return f"{self.cpu} ({self.arch}, {self.isa}: {self.vector_bits}-bit x {self.registers})"


@dataclass(frozen=True)
class TargetTiles:
    """The register tiles for one (vector bits, registers) entry, and why."""

    pointwise: Tile
    stem: Tile
    reason: str


# Keyed by (vector bits, vector registers). tile_update loads each weight vector once and
# uses it for the tile's MR rows, so the hot loop keeps MR * NR / lanes accumulators, MR
# broadcast A values and one weight vector live: that must fit the register file or LLVM
# spills inside the loop. A second constraint is LLVM's: the tile is vectorised along NR by
# the loop vectoriser only when NR spans enough vectors (Numba leaves the SLP vectoriser off);
# with NR = 1-2 vectors (SSE 6x8, 4x8, 3x16; AVX2 8x8) the loop was fully unrolled into scalar
# code, 10-20x slower. Each entry is the fastest candidate of bench/tile_candidates.py
# (docs/performance.md, "Tiles per target").
TILES = {
    # AVX-512 (Zen 4/5), 32 zmm, 16 lanes: 24 acc + 6 A + 1 w = 31; stem 12 + 6 + 1 = 19
    # (its 32 output channels are one 2-zmm panel).
    (512, 32): TargetTiles(Tile(6, 64), Tile(6, 32),
                           "24 zmm accumulators + 6 broadcasts + 1 weight vector of 32"),
    # Intel AVX-512 with prefer-256-bit: 32 ymm, 8 lanes. Pointwise 4x48: 24 acc + 4 + 1 = 29
    # (0.94 ms on 14x14x512 vs 6x32's 1.34, 31 registers); stem 6x32: 24 + 6 + 1 = 31.
    (256, 32): TargetTiles(Tile(4, 48), Tile(6, 32),
                           "24 ymm accumulators + 4 broadcasts + 1 weight vector of 32"),
    # AVX2, 16 ymm, 8 lanes. Pointwise 3x32: 12 acc + 3 + 1 = 16 (0.91 ms; 6x16 needs 19 and
    # took 2.0, 6x64 1.2); stem 2x32: 8 + 2 + 1 = 11 (0.25 ms; 4x16 0.33, 6x32 0.68).
    (256, 16): TargetTiles(Tile(3, 32), Tile(2, 32),
                           "12 ymm accumulators + 3 broadcasts + 1 weight vector of 16"),
    # SSE (x86-64 baseline: no FMA, so a multiply and an add), 16 xmm, 4 lanes. Pointwise
    # 1x48: 12 acc + 1 + 1 (+1 product) = 15 (2.22 ms; 2x32 3.16, 6x64 4.25; 1x32, 2x24, 3x16,
    # 4x8, 6x8 not vectorised: 12-20 ms). Stem 6x32 (0.63 ms; 4x32 0.66, 2x32 0.83): its
    # reduction is 27 long and its time goes to gathering the image and storing; it spills.
    (128, 16): TargetTiles(Tile(1, 48), Tile(6, 32),
                           "12 xmm accumulators + 1 broadcast + 1 weight + 1 product of 16"),
    # NEON (aarch64), 32 q registers, 4 lanes, not run here (docs/performance.md): 3x32 =
    # 24 acc + 3 A + 1 w = 28, an NR that LLVM vectorised at 4 lanes on SSE (3.19 ms there).
    (128, 32): TargetTiles(Tile(3, 32), Tile(3, 32),
                           "24 q accumulators + 3 A values + 1 weight vector of 32"),
}


def parse_features(text):
    """'+avx2,-avx512f,+fma' -> ({'avx2', 'fma'}, {'avx512f'}): the enabled and the disabled
    features of an LLVM feature string."""
    items = [item.strip() for item in text.split(",")]
    return ({item[1:] for item in items if item.startswith("+")},
            {item[1:] for item in items if item.startswith("-")})


def isa_from_features(arch, cpu, features, disabled=frozenset()):
    """The TargetISA for `arch` ('x86_64', 'aarch64', ...), LLVM CPU name `cpu` and the
    enabled feature set `features` (None: take them from the CPU name). `disabled` matters
    for one tuning flag: '-prefer-256-bit' lets an Intel AVX-512 core use zmm, as
    '+prefer-256-bit' keeps any core to ymm (docs/performance.md, "512-bit vectors")."""
    if arch in ("aarch64", "arm64"):
        # NEON is mandatory on AArch64: 32 x 128-bit registers (SVE is not used by Numba's
        # loop vectoriser at fixed width beyond 128 bits here).
        return TargetISA("aarch64", cpu, 128, 32, "NEON")
    if arch not in ("x86_64", "amd64"):
        return TargetISA(arch, cpu, 128, 16, "unknown",
                         f"architecture {arch!r} not in the table: using the 128-bit entry")
    note = ""
    if features is None:
        name = cpu.lower()
        if name in _AVX512_NAMES:
            features = {"avx512f", "avx2", "fma", "avx"}
        elif name in _AVX2_NAMES:
            features = {"avx2", "fma", "avx"}
        elif name in _AVX_NAMES:
            features = {"avx"}
        else:
            features = set()
            if name not in ("x86-64", "x86-64-v2", "generic", "nehalem", "westmere", "core2",
                            "penryn", "silvermont", "goldmont", "goldmont-plus", "tremont",
                            "btver1", "k8", "opteron", "athlon64", "pentium4", "nocona"):
                note = f"CPU name {cpu!r} not in the table: assuming SSE (the 128-bit entry)"
    if "avx512f" in features:
        prefers_256 = "prefer-256-bit" in features or (
            cpu.lower() in _PREFER_256_NAMES and "prefer-256-bit" not in disabled)
        if prefers_256:
            return TargetISA("x86_64", cpu, 256, 32, "AVX-512 (256-bit vectors preferred)",
                             note)
        return TargetISA("x86_64", cpu, 512, 32, "AVX-512", note)
    if "avx2" in features or "avx" in features:
        return TargetISA("x86_64", cpu, 256, 16, "AVX2" if "avx2" in features else "AVX",
                         note)
    return TargetISA("x86_64", cpu, 128, 16, "SSE", note)


def compile_target():
    """The TargetISA Numba compiles the kernels for in this process, read as Numba's codegen
    reads it: NUMBA_CPU_NAME / NUMBA_CPU_FEATURES when set, else the host's name and
    features. An empty NUMBA_CPU_FEATURES means LLVM derives them from the name."""
    cpu = numba.config.CPU_NAME or llvm.get_host_cpu_name()
    if numba.config.CPU_FEATURES is not None:
        text = numba.config.CPU_FEATURES
        features, disabled = parse_features(text) if text.strip() else (None, frozenset())
    else:
        features = {name for name, on in llvm.get_host_cpu_features().items() if on}
        disabled = frozenset()
    arch = llvm.get_process_triple().split("-")[0] or platform.machine()
    return isa_from_features(arch.lower(), cpu, features, disabled)


def tiles_for(target):
    """The TargetTiles entry for a TargetISA (128-bit x 16 for anything not in TILES)."""
    return TILES.get((target.vector_bits, target.registers), TILES[(128, 16)])


def target_tiles():
    """The TargetTiles for this process's compile target."""
    return tiles_for(_TARGET)


_TARGET = compile_target()
