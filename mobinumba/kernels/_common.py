"""Compile options and helpers shared by every kernel module."""
import math
import warnings

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

# Fast-math flags without `nnan`/`ninf`: reductions may be reassociated and multiply-adds
# contracted into FMAs, but comparisons against inf (the ReLU "no upper bound") stay exact.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

ZERO = np.float32(0.0)


def activate(x, act_max, slope):
    """Every kernel's epilogue on one value: min(max(x, 0), act_max) (ReLU for act_max = inf,
    ReLU6 for 6) when `slope` is None, else LeakyReLU min(max(x, slope * x), act_max) (for a
    slope in [0, 1), max(x, slope * x) is x above 0 and slope * x below, as torch computes it).

    Decided at compile time on slope's type: the kernels take `slope=None` as an omitted last
    argument, so a ReLU/ReLU6 call compiles to the clamp it always was (bit-identical, no
    extra instruction) and only a call passing a float32 slope gets the leaky variant.
    """
    if slope is None:
        return min(max(x, ZERO), act_max)
    return min(max(x, slope * x), act_max)


@overload(activate, inline="always", jit_options={"fastmath": FASTMATH})
def _activate_for_types(x, act_max, slope):
    if isinstance(slope, (types.NoneType, types.Omitted)):
        return lambda x, act_max, slope: min(max(x, ZERO), act_max)
    return lambda x, act_max, slope: min(max(x, slope * x), act_max)


def _cache_probe():
    """Stands in for the kernels (same directory) when asking Numba where it would cache."""


def _caching_possible():
    """Whether Numba has a writable place for this directory's compiled kernels.

    Numba tries NUMBA_CACHE_DIR, then __pycache__ beside the source, then a user-wide cache
    directory (~/.cache/numba); when none is writable, `njit(cache=True)` raises at
    decoration time, which would make `import mobinumba` fail on a read-only install.
    Decorating a probe function asks the same question without compiling anything.
    """
    try:
        njit(cache=True)(_cache_probe)
    except RuntimeError:
        return False
    return True


# Every kernel is compiled with cache=CACHE: on disk when possible, else in memory each run.
CACHE = _caching_possible()
if not CACHE:
    warnings.warn("mobinumba: no writable cache directory for compiled kernels (the package "
                  "directory and ~/.cache are read-only); kernels are compiled on every run. "
                  "Set NUMBA_CACHE_DIR to a writable directory to keep them.", RuntimeWarning,
                  stacklevel=2)


# Byte alignment of every buffer a kernel streams through: a 512-bit vector is one 64-byte
# cache line, and numpy's large arrays start 16 bytes past one (glibc's mmap chunk header),
# so every full-vector load and store of them straddles two lines. Aligned buffers made the
# depthwise kernel 1.4-1.7x faster (docs/performance.md).
ALIGNMENT = 64


def aligned_zeros(shape, alignment=ALIGNMENT):
    """A zeroed C-contiguous float32 array of `shape` whose data starts on an
    `alignment`-byte boundary."""
    count = math.prod(shape) if isinstance(shape, tuple) else int(shape)
    raw = np.zeros(count * 4 + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + count * 4].view(np.float32).reshape(shape)


def aligned_copy(array, alignment=ALIGNMENT):
    """`array` as a C-contiguous float32 copy starting on an `alignment`-byte boundary."""
    copy = aligned_zeros(array.shape, alignment)
    copy[...] = array
    return copy


def _stack_array_f32(shape):
    """(type, codegen) of a C-contiguous float32 array of literal `shape` in an LLVM alloca."""
    if not all(isinstance(size, types.IntegerLiteral) for size in shape):
        return None
    lengths = [size.literal_value for size in shape]
    array_type = types.Array(types.float32, len(lengths), "C")

    def codegen(context, builder, signature, args):
        element = context.get_value_type(types.float32)
        data = cgutils.alloca_once(builder, element, size=math.prod(lengths))
        array = context.make_array(array_type)(context, builder)
        intp = lambda value: context.get_constant(types.intp, value)  # noqa: E731
        strides = [4 * math.prod(lengths[axis + 1:]) for axis in range(len(lengths))]
        context.populate_array(
            array, data=data, shape=[intp(length) for length in lengths],
            strides=[intp(stride) for stride in strides], itemsize=intp(4), meminfo=None,
        )
        return array._getvalue()

    return array_type(*shape), codegen


@intrinsic
def stack_buffer_f32(typingctx, size):
    """A float32 1-D array of compile-time `size` living in a stack slot (an LLVM alloca).

    LLVM promotes such a buffer to vector registers once its loops are unrolled, which a heap
    array from np.empty never gets: this is what lets a GEMM tile keep its accumulators in
    registers. `size` must be an integer literal (a global or closure constant). The contents
    start uninitialised.
    """
    return _stack_array_f32((size,))


@intrinsic
def stack_matrix_f32(typingctx, rows, cols):
    """A C-contiguous float32 (rows, cols) array in a stack slot, like stack_buffer_f32.

    Its shape and strides are LLVM constants, so loops bounded by `acc.shape[...]` have
    constant trip counts and unroll fully.
    """
    return _stack_array_f32((rows, cols))
