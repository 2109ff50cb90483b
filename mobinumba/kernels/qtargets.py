"""Which int8 dot-product instructions the compile target has.

The int8 pointwise GEMM has a `vpdpbusd` kernel (kernels/vnni.py) that may only be compiled
for a target with AVX-512 VNNI or AVX-VNNI, and a `vpmaddwd` one (kernels/avx2_int8.py) for
a target with AVX2: LLVM cannot select their intrinsics otherwise. The target is read as
kernels/targets.py reads it (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, else the host).
"""
import functools
import os

import llvmlite.binding as llvm
import numba

from .targets import parse_features

# CPU names LLVM gives AVX-512 VNNI, and AVX-VNNI without AVX-512 (used when
# NUMBA_CPU_FEATURES is set but empty: LLVM then takes the features from the name).
_VNNI_NAMES = frozenset({
    "cascadelake", "cooperlake", "icelake-client", "icelake-server", "tigerlake", "rocketlake",
    "sapphirerapids", "emeraldrapids", "graniterapids", "graniterapids-d", "diamondrapids",
    "znver4", "znver5"})
_AVX_VNNI_NAMES = frozenset({
    "alderlake", "raptorlake", "meteorlake", "arrowlake", "arrowlake-s", "lunarlake",
    "pantherlake", "gracemont", "sierraforest", "grandridge", "clearwaterforest"})
# CPU names LLVM gives AVX-512 VBMI (byte_permute).
_VBMI_NAMES = frozenset({
    "cannonlake", "icelake-client", "icelake-server", "tigerlake", "rocketlake",
    "sapphirerapids", "emeraldrapids", "graniterapids", "graniterapids-d", "diamondrapids",
    "znver4", "znver5"})
# ... and AVX2 without either.
_AVX2_NAMES = frozenset({
    "haswell", "broadwell", "skylake", "skylake-avx512", "cannonlake", "core-avx2",
    "x86-64-v3", "x86-64-v4", "bdver4", "znver1", "znver2", "znver3"})


@functools.cache
def int8_dot_product():
    """'avx512vnni' when the compile target has AVX-512 VNNI (with AVX-512 BW and VL),
    'avxvnni' when it has AVX-VNNI (256-bit), 'avx2' when it has AVX2 only (vpmaddwd),
    else None (the portable kernels run)."""
    features = _target_features()
    if features is None:  # NUMBA_CPU_FEATURES set but empty: LLVM goes by the CPU name
        cpu = _target_cpu()
        return ("avx512vnni" if cpu in _VNNI_NAMES
                else "avxvnni" if cpu in _AVX_VNNI_NAMES
                else "avx2" if cpu in _AVX2_NAMES else None)
    if {"avx512vnni", "avx512bw", "avx512vl", "avx512f"} <= features:
        return "avx512vnni"
    if {"avxvnni", "avx2"} <= features:
        return "avxvnni"
    if "avx2" in features:
        return "avx2"
    return None


@functools.cache
def byte_permute():
    """Whether the compile target has AVX-512 VBMI, whose vpermb / vpermt2b permute bytes
    across a whole zmm in one instruction (the VNNI depthwise builds its quads with it,
    kernels/vnni_depthwise.py; Cascade Lake has VNNI without it)."""
    features = _target_features()
    if features is None:
        return _target_cpu() in _VBMI_NAMES
    return "avx512vbmi" in features


# CPU names LLVM gives AMX-INT8 (matrix_tiles).
_AMX_NAMES = frozenset({"sapphirerapids", "emeraldrapids", "graniterapids", "graniterapids-d",
                        "diamondrapids"})


@functools.cache
def matrix_tiles():
    """Whether the int8 GEMM runs on AMX tiles (kernels/amx.py): the compile target has
    AMX-INT8 and AMX-TILE, the operating system grants this process the tile data
    (amx.request_tile_data) and MOBINUMBA_AMX is not 0 (set it to 0 to compare with the
    vpdpbusd kernels)."""
    if os.environ.get("MOBINUMBA_AMX", "").strip() == "0":
        return False
    features = _target_features()
    if features is None:
        has_amx = _target_cpu() in _AMX_NAMES
    else:
        has_amx = {"amx-int8", "amx-tile"} <= features
    if not has_amx:
        return False
    from .amx import request_tile_data

    return request_tile_data()


def _target_cpu():
    return (numba.config.CPU_NAME or llvm.get_host_cpu_name()).lower()


def _target_features():
    """The compile target's feature names, or None when NUMBA_CPU_FEATURES is set but empty
    (LLVM then takes the features from the CPU name)."""
    if numba.config.CPU_FEATURES is not None:
        text = numba.config.CPU_FEATURES
        if not text.strip():
            return None
        features, _ = parse_features(text)
        return features
    return {name for name, on in llvm.get_host_cpu_features().items() if on}
