"""What every source layout produces: a plan of source layers, turned into LayerRecords.

A layout module (timm.py, classic.py, ...) only knows its key names. It returns a list of
SourceLayer saying which keys hold each weight layer; `records_from_plan` then checks every
key and shape in one place, so error messages are uniform and name the source key.
"""
from dataclasses import dataclass

import numpy as np

from ..architecture import BLOCK_STRIDES, STEM_STRIDE
from ..errors import CheckpointError
from ..ops import kind_of
from ..ops.base import folding_overflows
from ..ops.dense import KIND as DENSE
from ..ops.depthwise import KIND as DEPTHWISE
from ..ops.pointwise import KIND as POINTWISE
from ..ops.stem import KIND as STEM
from ..weights import BatchNorm, LayerRecord

BN_KEYS = {"gamma": "weight", "beta": "bias", "mean": "running_mean", "var": "running_var"}


@dataclass(frozen=True)
class SourceLayer:
    """One weight layer of a source checkpoint: its keys, in the runtime's terms.

    weight_key holds an OIHW conv weight (or (K, C) for dense); bias_key an optional bias;
    bn_prefix the batch norm whose weight/bias/running_mean/running_var follow it.
    reverse_input_channels: the stem of a source fed BGR images; its weight's input-channel
    axis is reversed so that the file takes RGB like every other (an exact rewrite).
    """

    name: str
    kind: str
    stride: int
    weight_key: str
    bias_key: str | None = None
    bn_prefix: str | None = None
    reverse_input_channels: bool = False


def mobilenet_v1_plan(stem, blocks, head, classifier, bgr=False):
    """SourceLayers in execution order from key prefixes.

    stem, head: (conv_key_prefix, bn_prefix) or None for head; blocks: 13 tuples
    (dw_conv_prefix, dw_bn_prefix, pw_conv_prefix, pw_bn_prefix); classifier: prefix, or
    None for a backbone without one. bgr: the source takes BGR input (see SourceLayer).
    Strides follow the MobileNetV1 table.
    """
    plan = [SourceLayer("conv_stem", STEM.name, STEM_STRIDE, f"{stem[0]}.weight",
                        f"{stem[0]}.bias", stem[1], reverse_input_channels=bgr)]
    for index, (dw, dw_bn, pw, pw_bn) in enumerate(blocks, start=1):
        plan.append(SourceLayer(f"block{index:02d}_dw", DEPTHWISE.name,
                                BLOCK_STRIDES[index - 1], f"{dw}.weight", f"{dw}.bias", dw_bn))
        plan.append(SourceLayer(f"block{index:02d}_pw", POINTWISE.name, 1, f"{pw}.weight",
                                f"{pw}.bias", pw_bn))
    if head is not None:
        plan.append(SourceLayer("conv_head", POINTWISE.name, 1, f"{head[0]}.weight",
                                f"{head[0]}.bias", head[1]))
    if classifier is not None:
        plan.append(SourceLayer("classifier", DENSE.name, 1, f"{classifier}.weight",
                                f"{classifier}.bias"))
    return plan


def records_from_plan(plan, state, bn_eps, source):
    """LayerRecords for `plan` from `state`, checking every key and shape.

    Raises CheckpointError for a missing key, a tensor of the wrong shape, or keys the plan
    does not use (a different architecture wearing similar names).
    """
    records = []
    used = set()
    channels = 3
    for layer in plan:
        kind = kind_of(layer.kind)
        weight = _tensor(state, layer.weight_key, source)
        used.add(layer.weight_key)
        # The output channels are the source's own (first axis); the input ones must chain.
        expected = kind.weight_shape(channels, weight.shape[0])
        if weight.shape != expected:
            raise CheckpointError(f"{source}: {layer.weight_key} has shape {weight.shape}, "
                                  f"expected {expected} ({kind.description} over {channels} "
                                  f"input channels)")
        out_channels = weight.shape[0]
        if layer.reverse_input_channels:  # (Cout, 3, 3, 3): BGR taps -> RGB taps
            weight = np.ascontiguousarray(weight[:, ::-1])
        bias = None
        if layer.bias_key in state or kind.bias_required:
            bias = _vector(state, layer.bias_key, out_channels, source)
            used.add(layer.bias_key)
        bn = None
        if layer.bn_prefix is not None:
            keys = {field: f"{layer.bn_prefix}.{suffix}" for field, suffix in BN_KEYS.items()}
            arrays = {field: _vector(state, key, out_channels, source)
                      for field, key in keys.items()}
            if (arrays["var"] < 0).any():
                raise CheckpointError(f"{source}: {keys['var']} has negative values")
            used.update(keys.values())
            bn = BatchNorm(eps=bn_eps, **arrays)
        record = LayerRecord(name=layer.name, kind=layer.kind, stride=layer.stride,
                             weight=weight, bias=bias, bn=bn,
                             source_name=layer.weight_key.rsplit(".", 1)[0])
        if bn is not None and folding_overflows(record):
            raise CheckpointError(f"{source}: folding {layer.bn_prefix} into "
                                  f"{layer.weight_key} overflows float32 (weight * "
                                  f"gamma / sqrt(running_var + eps) is too large)")
        records.append(record)
        channels = out_channels
    unused = sorted(set(state) - used)
    if unused:
        shown = ", ".join(unused[:5]) + (", ..." if len(unused) > 5 else "")
        raise CheckpointError(f"{source}: {len(unused)} unexpected key(s) for MobileNetV1: "
                              f"{shown}")
    return records


def _tensor(state, key, source):
    if key not in state:
        raise CheckpointError(f"{source}: missing key {key!r}")
    value = state[key]
    if value.ndim == 0 or 0 in value.shape:
        raise CheckpointError(f"{source}: {key} has shape {value.shape}, expected a non-empty "
                              f"tensor")
    if not np.isfinite(value).all():
        raise CheckpointError(f"{source}: {key} contains NaN or Inf")
    return value


def _vector(state, key, length, source):
    value = _tensor(state, key, source)
    if value.shape != (length,):
        raise CheckpointError(f"{source}: {key} has shape {value.shape}, expected ({length},)")
    return value
