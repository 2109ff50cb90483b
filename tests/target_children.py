"""Children built for another compile target (NUMBA_CPU_NAME=<cpu> NUMBA_CPU_FEATURES= and a
fresh NUMBA_CACHE_DIR), one process per target for the whole session.

test_targets.py checks the float kernels built for haswell and x86-64, test_qkernels.py the
int8 network built for haswell, x86-64 and alderlake. Each used to start its own child per
target, and both compiled the float kernels (the int8 child calibrates on the float model),
so each target's float kernels were compiled twice. Now one child per target runs every
check of that target in a fixed order, float first: the float check reads the pointwise
kernel's machine code, which only a kernel compiled in the process has (one loaded from the
cache has none), and its first signature must be the float check's own call. The int8 check
then finds the float kernels already compiled in the same process. Each target keeps its own
empty cache directory, which is what these tests check.
"""
import json
import os
import subprocess
import sys
import textwrap

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)

# Each check prints one JSON line last: its report.
CHECKS = {}

# Float: the kernels at the target's tiles against the naive references, and the shipped
# model against the float64 PyTorch reference (test_targets.py).
CHECKS["float"] = textwrap.dedent("""
    import json
    import numpy as np
    import mobinumba
    from mobinumba.kernels.targets import compile_target, target_tiles
    from mobinumba.kernels.conv import conv3x3_nchw_to_nhwc_clamp, pack_conv3x3_weights
    from mobinumba.kernels.pointwise import pack_pointwise_weights, pwconv_nhwc_clamp
    from mobinumba.reference import reference_logits
    from mobinumba.weights import read_model_file
    from test_kernels import assert_close, clamp, naive_conv3x3, random
    from kernel_asm import innermost_loops, loop_counts  # bench/

    tiles = target_tiles()
    rng = np.random.default_rng(0)
    nr = tiles.pointwise.nr
    for rows, c_in, c_out in ((1, 3, 5), (61, 33, 2 * nr + 3), (7, 13, nr - 1), (29, 7, nr)):
        x = random(rng, rows, c_in)
        weight, bias = random(rng, c_out, c_in, 1, 1) * 3, random(rng, c_out)
        out = np.full((rows, c_out), np.nan, np.float32)
        pwconv_nhwc_clamp(x, *pack_pointwise_weights(weight, bias), np.float32(6), out)
        assert_close(out, clamp(x.astype(np.float64) @ weight[:, :, 0, 0].T.astype(np.float64)
                                + bias, np.float32(6)), f"pwconv {rows}x{c_in}->{c_out}")
    # The reduction loops of the pointwise kernel (full tiles and row tiles), counted.
    asm = next(iter(pwconv_nhwc_clamp.compiled.inspect_asm().values()))
    loops = [loop_counts(body) for _, body in innermost_loops(asm)]
    for loop in loops:
        loop["registers"] = len(loop["registers"])
    for c_out, out_w, stride in ((32, 17, 2), (32, 5, 1), (tiles.stem.nr + 3, 9, 2)):
        out_h = 4
        height, width = (out_h - 1) * stride + 3, (out_w - 1) * stride + 3
        x = random(rng, 2, 3, height, width)
        weight, bias = random(rng, c_out, 3, 3, 3) * 3, random(rng, c_out)
        out = np.full((2, out_h, out_w, c_out), np.nan, np.float32)
        conv3x3_nchw_to_nhwc_clamp(x, *pack_conv3x3_weights(weight, bias), stride,
                                   np.float32(6), out)
        expected = naive_conv3x3(x, weight, bias, stride, (0, 0, 0, 0), 1)
        assert_close(out, clamp(expected, np.float32(6)).transpose(0, 2, 3, 1),
                     f"stem {c_out} Wo={out_w} s{stride}")
    model = mobinumba.load()
    model_file = read_model_file(model.path)
    x = rng.uniform(-1, 1, (2, 3, 224, 224)).astype(np.float32)
    logits = model(x)
    expected = reference_logits(model_file.layers, model.info.activation, model.info.padding,
                                x)
    error = float((np.abs(logits - expected) / np.maximum(1, np.abs(expected))).max())
    print(json.dumps({"target": str(compile_target()), "bits": compile_target().vector_bits,
                      "pointwise": str(tiles.pointwise), "stem": str(tiles.stem),
                      "logit_error": error, "pointwise_loops": loops}))
""")

# Int8: the int8 network against the reference; the pointwise variant and the stem,
# depthwise and fused-block kernels it ran (test_qkernels.py).
CHECKS["int8"] = textwrap.dedent("""
    import json
    import numpy as np
    import qreference
    from mobinumba.bench.synthetic import random_model_file
    from mobinumba.model import Model
    from mobinumba.quantize import quantize_model_file

    model_file = random_model_file(0.25, 11, 40, seed=3)
    rng = np.random.default_rng(5)
    batches = [rng.standard_normal((2, 3, 40, 40)).astype(np.float32)]
    int8_file, _ = quantize_model_file(model_file, batches)
    model = Model(int8_file)
    exact = True
    for size in (40, 64):  # 64: fused depthwise + pointwise blocks where VNNI runs
        q = rng.integers(-128, 128, (2, size, size, 3)).astype(np.int8)
        exact &= bool(np.array_equal(model.run_quantized(q), qreference.forward(int8_file, q)))
    variants = sorted({op.variant for op in model._ops if hasattr(op, "variant")})
    workspace = model._workspaces[(2, 64, 64)]
    ran = sorted({kernel.py_func.__name__ for _, kernel, _ in workspace.calls
                  + workspace.block_calls if "conv" in kernel.py_func.__name__
                  and "pwconv" not in kernel.py_func.__name__
                  or "block" in kernel.py_func.__name__})
    print(json.dumps({"exact": exact, "variants": variants, "kernels": ran}))
""")

# What each target's child runs, in order (the float check first: see the docstring).
TARGET_CHECKS = {"haswell": ("float", "int8"), "x86-64": ("float", "int8"),
                 "alderlake": ("int8",)}

# The child: runs the checks named on its command line, each in a fresh namespace, and prints
# {check: the last JSON line it printed}.
RUNNER = textwrap.dedent("""
    import contextlib, io, json, sys
    from target_children import CHECKS
    reports = {}
    for name in sys.argv[1:]:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(CHECKS[name], f"<{name} check>", "exec"), {"__name__": "__main__"})
        reports[name] = json.loads(printed.getvalue().splitlines()[-1])
    print(json.dumps(reports))
""")


class TargetChildren:
    """The reports of each target's child, run once per session on first request."""

    def __init__(self, cache_root):
        self.cache_root = cache_root
        self.reports = {}

    def report(self, cpu, check):
        """The JSON report of `check` ("float" or "int8") in the child built for `cpu`."""
        if cpu not in self.reports:
            self.reports[cpu] = self._run(cpu, TARGET_CHECKS.get(cpu, (check,)))
        return self.reports[cpu][check]

    def _run(self, cpu, checks):
        cache = os.path.join(self.cache_root, cpu)
        os.makedirs(cache)
        env = dict(os.environ, NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES="", NUMBA_CACHE_DIR=cache,
                   PYTHONPATH=os.pathsep.join([ROOT, TESTS, os.path.join(ROOT, "bench"),
                                               os.environ.get("PYTHONPATH", "")]))
        result = subprocess.run([sys.executable, "-c", RUNNER, *checks], env=env,
                                capture_output=True, text=True, timeout=900 * len(checks),
                                cwd=ROOT)
        assert result.returncode == 0, f"child for {cpu} running {checks}: " \
                                       f"{result.stderr[-3000:]}"
        return json.loads(result.stdout.splitlines()[-1])
