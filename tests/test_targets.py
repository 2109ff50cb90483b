"""The compile target and its register tiles (mobinumba/kernels/targets.py).

Unit tests: every table entry fits its register file, and CPU names / feature strings map to
the right vector ISA. Slow tests build the kernels for other x86 targets in a child process
(NUMBA_CPU_NAME=<cpu> NUMBA_CPU_FEATURES= and a fresh NUMBA_CACHE_DIR; this machine runs the
code) and check them against the naive NumPy references of test_kernels.py and the whole
shipped model against the float64 PyTorch reference; and that Numba's cache never serves
one target's machine code to another.
"""
import os
import subprocess
import sys
import textwrap

import numba
import pytest

from mobinumba.kernels import targets
from mobinumba.kernels.targets import TILES, TargetISA, isa_from_features, parse_features, \
    tiles_for

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


@pytest.mark.parametrize("key", sorted(TILES), ids=lambda key: f"{key[0]}x{key[1]}")
def test_each_tile_fits_its_register_file(key):
    """The pointwise hot loop keeps mr * nr / lanes accumulators, the mr broadcast A values
    and one weight vector live (tile_update loads each weight vector once for the mr rows),
    plus a product register without FMA (SSE): they must fit the register file. Both tiles
    are whole vectors wide. (The stem's reduction is only 27 long: its tile is the fastest
    measured, which may spill, e.g. SSE's 6x32.)"""
    bits, registers = key
    lanes = bits // 32
    without_fma = 1 if key == (128, 16) else 0
    entry = TILES[key]
    assert entry.pointwise.nr % lanes == 0 and entry.stem.nr % lanes == 0, key
    pointwise = entry.pointwise
    live = pointwise.mr * pointwise.nr // lanes + pointwise.mr + 1 + without_fma
    assert live <= registers, (key, pointwise, live)


def test_avx512_entry_is_the_tuned_default():
    """The native AVX-512 (Zen 4/5) build keeps the tiles it was tuned with."""
    assert TILES[(512, 32)].pointwise.mr == 6 and TILES[(512, 32)].pointwise.nr == 64
    assert (TILES[(512, 32)].stem.mr, TILES[(512, 32)].stem.nr) == (6, 32)


@pytest.mark.parametrize("cpu,bits,registers,noted", [
    ("haswell", 256, 16, False), ("skylake", 256, 16, False), ("znver3", 256, 16, False),
    ("sandybridge", 256, 16, False),
    ("skylake-avx512", 256, 32, False),  # LLVM's prefer-256-bit tuning: ymm, 32 of them
    ("icelake-server", 256, 32, False),
    ("znver4", 512, 32, False), ("znver5", 512, 32, False), ("x86-64-v4", 512, 32, False),
    ("x86-64", 128, 16, False), ("x86-64-v2", 128, 16, False), ("nehalem", 128, 16, False),
    ("some-future-cpu", 128, 16, True)])
def test_x86_names_without_features(cpu, bits, registers, noted):
    """NUMBA_CPU_FEATURES set but empty: LLVM takes the features from the name."""
    target = isa_from_features("x86_64", cpu, None)
    assert (target.vector_bits, target.registers) == (bits, registers)
    assert bool(target.note) == noted
    if noted:
        assert cpu in target.note and "128-bit" in target.note


@pytest.mark.parametrize("cpu", ["apple-m1", "neoverse-n1", "neoverse-v1", "cortex-a72",
                                 "generic"])
def test_aarch64_is_neon_with_32_registers(cpu):
    target = isa_from_features("aarch64", cpu, None)
    assert (target.vector_bits, target.registers, target.isa) == (128, 32, "NEON")
    assert tiles_for(target) == TILES[(128, 32)]


def test_explicit_features_win_over_the_name():
    assert parse_features("+avx2,-avx512f,+fma,+sse2") == ({"avx2", "fma", "sse2"},
                                                            {"avx512f"})
    znver4_without_avx512 = isa_from_features("x86_64", "znver4",
                                              *parse_features("-avx512f,+avx2,+fma"))
    assert (znver4_without_avx512.vector_bits, znver4_without_avx512.registers) == (256, 16)
    assert isa_from_features("x86_64", "haswell", {"sse2"}).vector_bits == 128
    assert isa_from_features("x86_64", "znver4", {"avx512f", "avx2"}).vector_bits == 512
    # The prefer-256-bit tuning flag, either way (LLVM then uses ymm / zmm).
    assert isa_from_features("x86_64", "znver5",
                             *parse_features("+avx512f,+prefer-256-bit")).vector_bits == 256
    assert isa_from_features("x86_64", "skylake-avx512",
                             *parse_features("+avx512f,-prefer-256-bit")).vector_bits == 512
    assert isa_from_features("x86_64", "skylake-avx512", {"avx512f"}).vector_bits == 256


def test_unknown_architecture_falls_back_to_128_bits():
    target = isa_from_features("riscv64", "generic-rv64", None)
    assert tiles_for(target) == TILES[(128, 16)] and "riscv64" in target.note


def test_compile_target_reads_numbas_config(monkeypatch):
    """Read as Numba's codegen reads it: a name with empty features -> from the name; a name
    with features -> those features; nothing set -> the host's."""
    monkeypatch.setattr(numba.config, "CPU_NAME", "haswell")
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "")
    assert (targets.compile_target().cpu, targets.compile_target().vector_bits) == ("haswell",
                                                                                    256)
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "+sse2,-avx")
    assert targets.compile_target().vector_bits == 128
    monkeypatch.setattr(numba.config, "CPU_NAME", None)
    monkeypatch.setattr(numba.config, "CPU_FEATURES", None)
    import llvmlite.binding as llvm
    host = targets.compile_target()
    assert host.cpu == llvm.get_host_cpu_name()
    assert isinstance(host, TargetISA) and (host.vector_bits, host.registers) in TILES


def run_child(code, cpu, cache_dir, *args):
    """Run `code` in a child compiled for `cpu` with NUMBA_CACHE_DIR=cache_dir; its stdout."""
    env = dict(os.environ, NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES="",
               NUMBA_CACHE_DIR=str(cache_dir),
               PYTHONPATH=os.pathsep.join([ROOT, TESTS, os.path.join(ROOT, "bench"),
                                           os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                            text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("cpu,bits", [("haswell", 256), ("x86-64", 128)])
def test_kernels_built_for_another_target(target_children, cpu, bits):
    """The kernels compiled for `cpu` at its table entry's tiles agree with the naive
    references, and the shipped model's logits with float64 PyTorch (1e-4 * max(1, |logit|)).
    The register model of the table holds in the machine code: the pointwise full tile's
    reduction loop has its MR x NR / lanes multiply-adds (FMAs; a multiply and an add each
    without FMA) vectorised, within the 16 vector registers and without any stack access
    (bench/kernel_asm.py counts them)."""
    report = target_children.report(cpu, "float")  # tests/target_children.py
    assert report["target"].startswith(cpu + " (") and report["bits"] == bits
    entry = TILES[(bits, 16)]
    assert (report["pointwise"], report["stem"]) == (str(entry.pointwise), str(entry.stem))
    assert report["logit_error"] <= 1e-4
    vectors = entry.pointwise.mr * entry.pointwise.nr // (bits // 32)
    kind = "fma" if bits == 256 else "mul"
    tile_loops = [loop for loop in report["pointwise_loops"] if loop[kind] == vectors
                  and loop["add"] == (vectors if kind == "mul" else 0)]
    assert tile_loops, report["pointwise_loops"]
    for loop in tile_loops:
        assert loop["stack"] == 0 and loop["scalar"] == 0 and loop["registers"] <= 16, loop


# One small pointwise kernel (Tile 2x8): its result, whether it came from the cache, and
# whether its machine code uses 256-bit registers.
CACHE_CHILD = textwrap.dedent("""
    import numpy as np
    from mobinumba.kernels._tile import Tile
    from mobinumba.kernels.pointwise import pack_pointwise_weights, pwconv_nhwc_clamp_kernel
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (11, 19)).astype(np.float32)
    weight = rng.uniform(-1, 1, (37, 19, 1, 1)).astype(np.float32)
    bias = rng.uniform(-1, 1, 37).astype(np.float32)
    kernel = pwconv_nhwc_clamp_kernel(Tile(2, 8))
    out = np.full((11, 37), np.nan, np.float32)
    kernel(x, *pack_pointwise_weights(weight, bias, 8), np.float32(np.inf), out)
    expected = np.maximum(x.astype(np.float64) @ weight[:, :, 0, 0].T + bias, 0)
    hits = sum(kernel.compiled.stats.cache_hits.values())
    # Machine code loaded from the cache has no assembly text to inspect.
    ymm = "cached" if hits else any("%ymm" in asm
                                    for asm in kernel.compiled.inspect_asm().values())
    print(bool(np.allclose(out, expected, rtol=1e-5, atol=1e-5)), hits, ymm)
""")


@pytest.mark.slow
def test_cache_never_serves_another_target(tmp_path):
    """One NUMBA_CACHE_DIR shared by a haswell build and an x86-64 build: the x86-64 process
    finds the haswell entry but compiles its own code (a cache miss; no ymm register in it),
    and later processes of each target get a hit each, so the cache holds two entries
    (Numba keys them by triple, CPU name and features)."""
    assert run_child(CACHE_CHILD, "haswell", tmp_path).split() == ["True", "0", "True"]
    assert run_child(CACHE_CHILD, "x86-64", tmp_path).split() == ["True", "0", "False"]
    assert run_child(CACHE_CHILD, "haswell", tmp_path).split() == ["True", "1", "cached"]
    assert run_child(CACHE_CHILD, "x86-64", tmp_path).split() == ["True", "1", "cached"]
