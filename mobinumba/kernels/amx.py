"""int8 pointwise GEMM on AMX: `tdpbssd`, a 16 x 16 int32 tile += 16 x 64 s8 by 64 x 16 s8.

Only imported when the compile target has AMX-INT8 and the operating system lets this
process use the tile registers (qtargets.matrix_tiles: Linux asks each process to request
them, arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), as XNNPACK does; without that
request the first tile instruction raises SIGILL).

AMX has 8 tile registers of up to 16 rows x 64 bytes, shaped by a 64-byte configuration
that each thread loads (ldtilecfg) before its first tile instruction. One tdpbssd multiplies
16 rows x K bytes of A by K/4 rows x 64 bytes of B (16 columns x 4 bytes, VNNI order: the
layout of kernels/vnni.pack_vnni_weights) into 16 x 16 int32: 16,384 multiply-adds, against
64 for one zmm vpdpbusd. The tile here is 2 x 2 registers: 32 pixels x 32 output
channels in tiles 0-3, two A tiles (4, 5) and two B tiles (6, 7), 4 tdpbssd per 4 loads.
The accumulators leave the tiles through a stack matrix (tilestored) into the same epilogue
as the vpdpbusd tile (qcommon.requantize_tile), so the results are the same bits.

tdpbssd multiplies signed bytes by signed bytes: the activations go in as they are and the
bias absorbs the input zero point (sum (x - zp) w = sum x w - zp sum w), with no +128 shift.

Measured (docs/performance.md, a 2-core Xeon with AMX): the 14x14 layers (196 x 512 x 512)
0.110 -> 0.042 ms each against the vpdpbusd kernel (2.4 int8 TOPS), the shipped int8 model's
m(x) 2.17 -> 1.44 ms.
"""
import ctypes
import functools
import platform
import sys

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._common import CACHE
from .qcommon import requantize_tile, stack_matrix_i32
from .vnni import _data_pointer, pack_vnni_weights

_SYS_ARCH_PRCTL = 158  # x86-64
_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18


@functools.cache
def request_tile_data():
    """Whether Linux grants this process the AMX tile data (arch_prctl(ARCH_REQ_XCOMP_PERM,
    XFEATURE_XTILEDATA) returns 0): asked once per process; False on other systems and on
    CPUs without AMX."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False  # the syscall number is x86-64 Linux's
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return False


def _void_function(builder, name, argument_types):
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), argument_types), name)


def _tile_number(value):
    return ir.Constant(ir.IntType(8), value)


@intrinsic
def tile_ensure_config(typingctx, config):
    """This thread's tile shapes set to `config`, a 64-byte uint8 array (tile_config):
    sttilecfg into a stack slot, and ldtilecfg only when the two differ. ldtilecfg costs
    ~0.3 us (once per tile, the 112x112 layer took 495 us instead of 258), the check 0.07.
    The tiles stay configured after the kernel (no tilerelease): the next call, or any other
    code, loads its own shapes when they differ."""
    if not (isinstance(config, types.Array) and config.dtype == types.uint8):
        return None

    def codegen(context, builder, signature, args):
        i8, i64 = ir.IntType(8), ir.IntType(64)
        wanted = _data_pointer(context, builder, signature.args[0], args[0], i8)
        slot = cgutils.alloca_once(builder, ir.ArrayType(i8, 64))
        slot.align = 64  # the <8 x i64> load below promises 8; sttilecfg needs none
        current = builder.bitcast(slot, i8.as_pointer())
        builder.call(_void_function(builder, "llvm.x86.sttilecfg", [current.type]), [current])
        vector = ir.VectorType(i64, 8).as_pointer()
        differs = builder.icmp_unsigned("!=", builder.load(builder.bitcast(current, vector),
                                                           align=8),
                                        builder.load(builder.bitcast(wanted, vector), align=1))
        any_differs = builder.icmp_unsigned("!=", builder.bitcast(differs, i8),
                                            ir.Constant(i8, 0))
        with builder.if_then(any_differs, likely=False):
            builder.call(_void_function(builder, "llvm.x86.ldtilecfg", [wanted.type]),
                         [wanted])
        return context.get_dummy_value()

    return types.none(config), codegen


def _tile_memory_intrinsic(name, doc):
    """tileloadd64 or tilestored64 as an intrinsic (tile, array, byte_offset, row_stride)."""

    def tile_memory(typingctx, tile, array, byte_offset, row_stride):
        if not (isinstance(tile, types.IntegerLiteral) and isinstance(array, types.Array)):
            return None
        number = tile.literal_value

        def codegen(context, builder, signature, args):
            data = _data_pointer(context, builder, signature.args[1], args[1], ir.IntType(8))
            address = builder.gep(data, [context.cast(builder, args[2], signature.args[2],
                                                      types.intp)])
            stride = context.cast(builder, args[3], signature.args[3], types.int64)
            function = _void_function(builder, f"llvm.x86.{name}",
                                      [ir.IntType(8), address.type, ir.IntType(64)])
            builder.call(function, [_tile_number(number), address, stride])
            return context.get_dummy_value()

        return types.none(tile, array, byte_offset, row_stride), codegen

    tile_memory.__name__ = tile_memory.__qualname__ = f"tile_{name[4:-2]}"
    tile_memory.__doc__ = doc
    return intrinsic(tile_memory)


tile_load = _tile_memory_intrinsic("tileloadd64", """tileloadd: tile `tile` (a literal)
<- its configured rows, row r from the bytes of `array` at byte_offset + r * row_stride.
The caller checks the bounds.""")
tile_store = _tile_memory_intrinsic("tilestored64", """tilestored: tile `tile` (a literal)
-> the bytes of `array` at byte_offset + r * row_stride for each configured row r. The
caller checks the bounds.""")


@intrinsic
def tile_dot_s8(typingctx, c, a, b):
    """tdpbssd: tile c (int32) += tile a (s8 rows of 4-byte groups) . tile b (s8, VNNI
    order); c, a, b literals."""
    if not all(isinstance(tile, types.IntegerLiteral) for tile in (c, a, b)):
        return None
    numbers = [tile.literal_value for tile in (c, a, b)]

    def codegen(context, builder, signature, args):
        i8 = ir.IntType(8)
        builder.call(_void_function(builder, "llvm.x86.tdpbssd", [i8, i8, i8]),
                     [_tile_number(number) for number in numbers])
        return context.get_dummy_value()

    return types.none(c, a, b), codegen


def depth_step(depth):
    """The input channels per tdpbssd (the A tiles' bytes per row): the largest of 64, 32,
    16, 8, 4 dividing `depth`, so that no tile reads past a pixel's channels; None when
    depth is not a multiple of 4 (the op then uses the vpdpbusd kernel)."""
    return next((step for step in (64, 32, 16, 8, 4) if depth % step == 0), None)


def tile_config(step):
    """The 64-byte ldtilecfg operand: palette 1; tiles 0-3 (C) 16 rows x 64 bytes (16
    int32); tiles 4, 5 (A) 16 rows x `step` bytes; tiles 6, 7 (B) step / 4 rows x 64
    bytes."""
    config = np.zeros(64, np.uint8)
    config[0] = 1  # palette
    bytes_per_row = config[16:48].view(np.uint16)  # colsb of tiles 0..15
    rows = config[48:64]
    bytes_per_row[:4], rows[:4] = 64, 16
    bytes_per_row[4:6], rows[4:6] = step, 16
    bytes_per_row[6:8], rows[6:8] = 64, step // 4
    return config


def pack_amx_weights(weight, bias):
    """OIHW int8 (Cout, Cin, 1, 1), int32 (Cout,) -> (P, ceil(Cin / 4), 128) int8 panels of
    32 channels (pack_vnni_weights' layout: B tile 0 is bytes 0-63 of each row, B tile 1
    bytes 64-127) and (P, 32) int32 bias."""
    return pack_vnni_weights(weight, bias, 32)


@njit(inline="always")
def amx_tile(x, i0, count, panel, bias, step, table, j0, width, out_zero_point, low, high,
             out):
    """out[i0:i0 + count, j0:j0 + width] = requantize(x[i0:i0 + 32] @ panel + bias): one
    2 x 2 register tile. x (M, Cin) int8 C-contiguous with M >= i0 + 32; panel (G, 128) int8
    and bias (32,) int32, one panel of pack_amx_weights; step: depth_step(Cin), the
    configured A tile width; table, out: as vnni.vnni_tile's."""
    depth = x.shape[1]
    tile_load(0, bias, 0, 0)  # every row of a C tile starts from the bias (row stride 0)
    tile_load(1, bias, 64, 0)
    tile_load(2, bias, 0, 0)
    tile_load(3, bias, 64, 0)
    for k0 in range(0, depth, step):
        tile_load(4, x, i0 * depth + k0, depth)
        tile_load(5, x, (i0 + 16) * depth + k0, depth)
        tile_load(6, panel, (k0 // 4) * 128, 128)
        tile_load(7, panel, (k0 // 4) * 128 + 64, 128)
        tile_dot_s8(0, 4, 6)
        tile_dot_s8(1, 4, 7)
        tile_dot_s8(2, 5, 6)
        tile_dot_s8(3, 5, 7)
    acc = stack_matrix_i32(32, 32)
    tile_store(0, acc, 0, 128)
    tile_store(1, acc, 64, 128)
    tile_store(2, acc, 16 * 128, 128)
    tile_store(3, acc, 16 * 128 + 64, 128)
    requantize_tile(acc, table, j0, out_zero_point, low, high, width, out, i0, count, 32, 32)


# Row blocks per task: one configuration check (tile_ensure_config, 0.07 us) per 8 tiles.
RUN = 8


@njit(parallel=True, cache=CACHE)
def qpwconv_nhwc_amx(x, packed, packed_bias, table, out_zero_point, low, high, config, step,
                     out):
    """out = requantize(x @ W + bias) with tdpbssd.

    x (M, Cin) int8 C-contiguous, Cin a multiple of `step`; packed (P, Cin / 4, 128) int8 and
    packed_bias (P, 32) int32 from pack_amx_weights (the input zero point folded into the
    bias); table (5, Cout) int32 (qcommon.requantize_table); config: tile_config(step);
    out (M, Cout) int8. M below 32 goes through a zero-padded copy of x.
    """
    rows, depth = x.shape
    if rows < 32:  # the tiles read 32 rows
        padded = np.zeros((32, depth), np.int8)
        padded[:rows] = x
        x = padded
    c_out = out.shape[1]
    panels = packed.shape[0]
    row_blocks = (rows + 31) // 32
    runs = (row_blocks + RUN - 1) // RUN  # per panel
    # Runs of rows outside, panels inside: each thread's static share of the tasks is a
    # band of pixels, the rows the depthwise kernel before it wrote on the same core, and
    # the rows the next one reads there (panels outside: m(x) 1.465 -> 1.375 ms).
    for task in prange(panels * runs):
        tile_ensure_config(config)
        run = task // panels
        p = task - run * panels
        first = run * RUN
        j0 = p * 32
        for block in range(first, min(first + RUN, row_blocks)):
            # The last row block ends at the last row (M >= 32): it recomputes a few rows
            # of the block before it, the same values.
            i0 = min(block * 32, max(rows, 32) - 32)
            amx_tile(x, i0, min(32, rows - i0), packed[p], packed_bias[p], step, table, j0,
                     min(32, c_out - j0), out_zero_point, low, high, out)
