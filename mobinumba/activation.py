"""The activation after every batch norm: its name and slope, as the kernels and PyTorch run it.

A weight file names it in `activation` (and `activation_slope` for leaky_relu); the ops turn
an Activation into the kernels' epilogue arguments (kernels/_common.activate) and
reference.py into its nn.Module.
"""
from dataclasses import dataclass

import numpy as np

LEAKY_RELU = "leaky_relu"
# The clamp bound each activation gives the kernels' epilogue: max(0, x) (or max(slope*x, x))
# then min(x, bound).
ACT_MAX = {"relu": np.float32(np.inf), "relu6": np.float32(6.0), LEAKY_RELU: np.float32(np.inf)}
ACTIVATIONS = tuple(ACT_MAX)


@dataclass(frozen=True)
class Activation:
    """An activation: `name` in ACTIVATIONS; `slope` (negative-side slope, in [0, 1)) for
    leaky_relu only, None for the others."""

    name: str
    slope: float | None = None

    def __post_init__(self):
        problem = activation_problem(self.name, self.slope)
        if problem:
            raise ValueError(problem)

    @property
    def act_max(self):
        """The epilogue's upper bound (float32): 6 for relu6, inf otherwise."""
        return ACT_MAX[self.name]

    @property
    def epilogue_args(self):
        """What a kernel call appends after its output for this activation: nothing for
        relu/relu6 (the clamp-only specialisation), (float32 slope,) for leaky_relu."""
        return () if self.slope is None else (np.float32(self.slope),)

    def torch_module(self):
        """The nn.Module computing it: ReLU, ReLU6 (TF-slim, timm) or LeakyReLU(slope)."""
        from torch import nn

        if self.name == LEAKY_RELU:
            return nn.LeakyReLU(self.slope)
        return {"relu": nn.ReLU, "relu6": nn.ReLU6}[self.name]()

    def __str__(self):
        return self.name if self.slope is None else f"{self.name} (slope {self.slope:g})"


def activation_problem(name, slope):
    """Why (name, slope) is not an activation, or None: name must be one of ACTIVATIONS, and
    leaky_relu needs a finite slope in [0, 1) that the others must not have."""
    if name not in ACTIVATIONS:
        return f"activation {name!r} is not one of {', '.join(ACTIVATIONS)}"
    if name != LEAKY_RELU:
        return None if slope is None else f"activation {name} takes no slope (got {slope!r})"
    if slope is None:
        return f"activation {LEAKY_RELU} needs a slope in [0, 1)"
    if isinstance(slope, bool) or not isinstance(slope, (int, float, np.integer, np.floating)) \
            or not (np.isfinite(slope) and 0.0 <= slope < 1.0):
        return f"activation {LEAKY_RELU} slope is {slope!r}, expected a number in [0, 1)"
    return None


def activation_of(value):
    """An Activation from an Activation or a name ("relu", "relu6"); ValueError for a name
    that needs a slope or is unknown."""
    return value if isinstance(value, Activation) else Activation(value)
