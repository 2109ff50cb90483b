"""Numba kernels: pure functions on arrays that write into a caller-provided `out`.

Naming follows XNNPACK: op, kernel size, layout, fused epilogue. Every kernel ends in a
`clamp(0, act_max)` epilogue, which is ReLU for `act_max = inf` and ReLU6 for `act_max = 6`,
so one compiled specialisation serves both activations. Passing a float32 `slope` as the
last argument compiles a second specialisation whose epilogue is LeakyReLU capped at
act_max (_common.activate); calls without it are unchanged.

Kernels do no validation: Numba runs them without bounds checks, so callers (graph.py) must
hand them arrays of consistent shapes, float32, C-contiguous. The one check inside is the
register-tile kernels' (stem, pointwise): they refuse weights packed for another panel
width, which the caller cannot see from shapes alone.
"""
