"""The converter's self-check: the written file against PyTorch on the source tensors.

The reference is a functional PyTorch forward pass (F.conv2d / F.batch_norm / activation /
F.linear) in float64 over the *original* state dict, with unfolded batch norm and PyTorch's
own grouped convolution for the depthwise layers: none of the runtime's folding, packing or
kernels is involved.
"""
import math

import numpy as np

from ..errors import CheckpointError, NumericError


def torch_available():
    """True when torch can be imported (the self-check needs it)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def reference_logits(plan, state, x, activation, padding, bn_eps):
    """Logits (N, K) float64 of the source network for x (N, 3, H, W), computed by torch."""
    import torch
    import torch.nn.functional as F

    def tensor(key):
        return torch.from_numpy(np.asarray(state[key], dtype=np.float64))

    y = torch.from_numpy(np.asarray(x, dtype=np.float64))
    for layer in plan:
        bias = tensor(layer.bias_key) if layer.bias_key in state else None
        if layer.kind == "dense":
            y = F.linear(y.mean(dim=(2, 3)), tensor(layer.weight_key), bias)
            continue
        weight = tensor(layer.weight_key)
        groups = weight.shape[0] if layer.kind == "dwconv" else 1
        kernel = weight.shape[-1]
        if padding == "torch":
            y = F.conv2d(y, weight, bias, stride=layer.stride, padding=kernel // 2,
                         groups=groups)
        else:
            top, bottom = _tf_same_pads(y.shape[2], kernel, layer.stride)
            left, right = _tf_same_pads(y.shape[3], kernel, layer.stride)
            y = F.conv2d(F.pad(y, (left, right, top, bottom)), weight, bias,
                         stride=layer.stride, groups=groups)
        bn = layer.bn_prefix
        y = F.batch_norm(y, tensor(f"{bn}.running_mean"), tensor(f"{bn}.running_var"),
                         tensor(f"{bn}.weight"), tensor(f"{bn}.bias"), training=False,
                         eps=bn_eps)
        y = F.relu(y) if activation == "relu" else F.relu6(y)
    return y.numpy()


def _tf_same_pads(size, kernel, stride):
    """(before, after) of TensorFlow's SAME padding along one axis."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def check_conversion(model_path, plan, state, info, bn_eps, tolerance, batch=2, seed=0):
    """Max |logit difference| between the runtime on `model_path` and the torch reference.

    Raises CheckpointError when it exceeds tolerance * max(1, max |reference logit|).
    Returns (max difference, allowed difference).
    """
    from ..model import load

    rng = np.random.default_rng(seed)
    size = info.input_size
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    expected = reference_logits(plan, state, x, info.activation, info.padding, bn_eps)
    try:
        actual = load(model_path)(x)
    except NumericError as error:
        raise CheckpointError(f"self-check failed: {error}; the output was not "
                              f"written") from None
    difference = float(np.abs(actual - expected).max())
    allowed = tolerance * max(1.0, float(np.abs(expected).max()))
    if not difference <= allowed:
        raise CheckpointError(f"self-check failed: max |logit difference| {difference:.3g} "
                              f"exceeds {allowed:.3g}; the output was not written")
    return difference, allowed
