"""Which int8 dot-product instructions the compile target has.

The int8 pointwise GEMM has a `vpdpbusd` kernel (kernels/vnni.py) that may only be compiled
for a target with AVX-512 VNNI: LLVM cannot select the intrinsic otherwise. The target is
read as kernels/targets.py reads it (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, else the host).
"""
import functools

import llvmlite.binding as llvm
import numba

from .targets import parse_features

# CPU names LLVM gives AVX-512 VNNI (used when NUMBA_CPU_FEATURES is set but empty: LLVM then
# takes the features from the name).
_VNNI_NAMES = frozenset({
    "cascadelake", "cooperlake", "icelake-client", "icelake-server", "tigerlake", "rocketlake",
    "sapphirerapids", "emeraldrapids", "graniterapids", "graniterapids-d", "diamondrapids",
    "znver4", "znver5"})


@functools.cache
def int8_dot_product():
    """'avx512vnni' when the compile target has AVX-512 VNNI (with AVX-512 BW), else None
    (the portable kernels run)."""
    if numba.config.CPU_FEATURES is not None:
        text = numba.config.CPU_FEATURES
        if not text.strip():
            cpu = numba.config.CPU_NAME or llvm.get_host_cpu_name()
            return "avx512vnni" if cpu.lower() in _VNNI_NAMES else None
        features, _ = parse_features(text)
    else:
        features = {name for name, on in llvm.get_host_cpu_features().items() if on}
    if {"avx512vnni", "avx512bw", "avx512f"} <= features:
        return "avx512vnni"
    return None
