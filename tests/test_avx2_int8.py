"""The AVX2 int8 pointwise GEMM (kernels/avx2_int8.py, `vpmaddwd`): bit-exact against the
NumPy reference of TFLite's arithmetic (tests/qreference.py) and the portable kernel.

The kernel compiles only for a target with AVX2: on this host when it has AVX2 (else
skipped), and in a child process built for Haswell (NUMBA_CPU_NAME=haswell, a fresh cache),
where the assembly must hold the vpmaddwd tile. About 10 s (the child compiles its kernels).
"""
import json
import os
import subprocess
import sys
import textwrap

import llvmlite.binding as llvm
import numpy as np
import pytest

import qreference
from mobinumba.kernels.qcommon import requantize_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
HOST_HAS_AVX2 = bool(llvm.get_host_cpu_features().get("avx2"))


def pointwise_case(rows, depth, c_out, seed):
    """(x, weight OIHW, bias, requantization table, zero points, expected int8 output)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (rows, depth)).astype(np.int8)
    weight = rng.integers(-127, 128, (c_out, depth, 1, 1)).astype(np.int8)
    bias = rng.integers(-5000, 5000, c_out).astype(np.int32)
    in_zp, out_zp = -7, 3
    multiplier = rng.integers(1 << 30, (1 << 31) - 1, c_out).astype(np.int32)
    shift = rng.integers(-12, -6, c_out).astype(np.int32)
    acc = qreference.dense(x, weight.reshape(c_out, depth), bias, in_zp)
    expected = qreference.requantize(acc, multiplier, shift, out_zp, -128, 127)
    folded = (bias - in_zp * weight.reshape(c_out, depth).astype(np.int64).sum(1))
    return (x, weight, folded.astype(np.int32), requantize_table(multiplier, shift), out_zp,
            expected)


SHAPES = [(7, 33, 19), (196, 512, 512), (13, 1, 5), (50, 64, 130), (6, 2, 16), (1, 1024, 17)]


@pytest.mark.skipif(not HOST_HAS_AVX2, reason="this host has no AVX2")
@pytest.mark.parametrize("rows,depth,c_out", SHAPES)
def test_avx2_pointwise_is_bit_exact(rows, depth, c_out):
    """Odd Cin (a zero-padded last pair), Cout not a multiple of the 16-channel panel, rows
    not a multiple of the 6-row tile, Cin = 1."""
    from mobinumba.kernels.avx2_int8 import AVX2_TILE, pack_avx2_weights, qpwconv_nhwc_avx2_kernel
    from mobinumba.kernels.qpointwise import pack_qpointwise_weights, qpwconv_nhwc

    x, weight, folded, table, out_zp, expected = pointwise_case(
        rows, depth, c_out, seed=rows + depth)
    out = np.full((rows, c_out), 99, np.int8)
    qpwconv_nhwc_avx2_kernel()(x, pack_avx2_weights(weight, AVX2_TILE.nr), folded,
                               table, out_zp, -128, 127, out)
    assert np.array_equal(out, expected)
    portable = np.full((rows, c_out), 99, np.int8)
    qpwconv_nhwc(x, pack_qpointwise_weights(weight), folded, table, out_zp,
                 -128, 127, portable)
    assert np.array_equal(out, portable)
    assert len(np.unique(expected)) > min(20, rows * c_out // 4)


HASWELL_CHILD = textwrap.dedent("""
    import json, re
    import numpy as np
    from test_avx2_int8 import SHAPES, pointwise_case
    from mobinumba.kernels.avx2_int8 import (AVX2_TILE, pack_avx2_weights,
                                             qpwconv_nhwc_avx2_kernel)

    kernel = qpwconv_nhwc_avx2_kernel()
    exact = []
    for rows, depth, c_out in SHAPES:
        x, weight, folded, table, out_zp, expected = pointwise_case(
            rows, depth, c_out, seed=rows + depth)
        out = np.empty((rows, c_out), np.int8)
        kernel(x, pack_avx2_weights(weight, AVX2_TILE.nr), folded, table, out_zp,
               -128, 127, out)
        exact.append(bool(np.array_equal(out, expected)))
    asm = "\\n".join(kernel.inspect_asm().values())
    count = lambda name: len(re.findall(r"\\b" + name + r"\\b", asm))
    print(json.dumps({"exact": exact, "vpmaddwd": count("vpmaddwd"),
                      "vpmulld": count("vpmulld")}))
""")


def test_avx2_pointwise_built_for_haswell(tmp_path):
    """Haswell (AVX2, no AVX-512, no VNNI): every shape bit-exact, and the inner loop is
    the 6 x 2 vpmaddwd tile (12 per step over 2 input channels), not vpmulld."""
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES="",
               NUMBA_CACHE_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join([ROOT, TESTS, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", HASWELL_CHILD], env=env,
                            capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report == {"exact": [True] * len(SHAPES), "vpmaddwd": 12, "vpmulld": 0}
