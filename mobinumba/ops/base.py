"""What every layer kind provides, and the pieces they share (BN folding, the PyTorch block).

A layer kind (one module of mobinumba/ops/ each) owns every fact about its layers:

    shapes        weight_shape(Cin, Cout), channels(weight shape) and the reader's rule
                  weight_problem(shape); kernel_size, allowed strides, bias/BN presence
    chain         where it may stand (first, body, last) and whether it takes (N, C) features
    counts        params, weight_count (the paper's rule), macs, output_size
    runtime       build(record, activation, padding, input_quantization) (activation: an
                  activation.Activation or a name): the op that folds, packs and binds the
                  kernel that runs it; float32 records get op_class, int8 records
                  (record.quant set) int8_op_class
    reference     torch_layers(record, activation, padding): its PyTorch block (reference.py)

Nothing outside mobinumba/ops/ compares kind strings: it asks the kind object.
"""
import numpy as np

from ..activation import activation_of
from ..errors import FormatError
from ..padding import conv_output_size, symmetric_pad

FLOAT32_MAX = float(np.finfo(np.float32).max)


class LayerKind:
    """A kind of layer. Subclasses set the class attributes and override what differs."""

    name = ""             # the file format's `kind` attribute
    description = ""      # for messages: "a 1x1 conv"
    kernel_size = 1
    weight_rank = 4       # dimensions of its stored weight
    strides = (1,)        # strides the runtime supports
    has_weights = True
    has_bn = True         # batch norm after it (convolutions); dense has none
    bias_required = False
    flat_input = False    # takes (N, C) features: global pooling comes before it
    flat_output = False   # gives (N, C) features, no spatial axes
    first = False         # may be the network's first layer (takes the RGB input; the
                          # `keras` padding rule pads it as the stem)
    last = False          # may be the network's last layer (gives the logits)
    body = False          # may stand between the first and the last layer in a weight file
    op_class = None       # the runtime op: op_class(record, activation, padding)
    int8_op_class = None  # int8: int8_op_class(record, activation, padding, input_quantization)

    def weight_shape(self, in_channels, out_channels):
        """The PyTorch-layout weight shape of a layer of this kind."""
        return (out_channels, in_channels, self.kernel_size, self.kernel_size)

    def channels(self, weight_shape):
        """(in_channels, out_channels) that a weight of `weight_shape` describes."""
        return weight_shape[1], weight_shape[0]

    def weight_problem(self, shape):
        """Why a stored weight of `shape` (of weight_rank dimensions, each >= 1) cannot be
        this kind's, or None."""
        if shape[2:] != (self.kernel_size, self.kernel_size):
            return (f"shape {shape}, expected a {self.kernel_size}x{self.kernel_size} kernel "
                    f"for a {self.name} layer")
        return None

    def weight_count(self, spec):
        """Conv and FC weights only, as the MobileNets paper counts parameters."""
        return (spec.out_channels * spec.in_channels * self.kernel_size ** 2
                if self.has_weights else 0)

    def params(self, spec):
        """Trainable parameters as PyTorch counts them: weights, BN gamma and beta, bias."""
        extra = 2 * spec.out_channels if self.has_bn else 0
        extra += spec.out_channels if self.bias_required else 0
        return self.weight_count(spec) + extra

    def macs(self, spec, out_h, out_w):
        """Multiply-adds to produce an (out_h, out_w) output of one image."""
        return out_h * out_w * self.weight_count(spec)

    def output_size(self, spec, height, width, padding):
        """(out_h, out_w, pad_top, pad_left) on an (height, width) input."""
        if self.flat_output:
            return 1, 1, 0, 0
        out_h, pad_top = conv_output_size(height, self.kernel_size, spec.stride, padding,
                                          self.first)
        out_w, pad_left = conv_output_size(width, self.kernel_size, spec.stride, padding,
                                           self.first)
        return out_h, out_w, pad_top, pad_left

    def build(self, record, activation, padding, input_quantization=None):
        """The runtime op of a validated record: folded, packed weights and its kernel. An
        int8 record (record.quant set) gets the int8 op, which needs the quantization of
        its input (the previous op's output, or the model's input quantization)."""
        if record.quant is None:
            return self.op_class(record, activation, padding)
        return self.int8_op_class(record, activation, padding, input_quantization)

    def conv_groups(self, record):
        """The `groups` of the equivalent nn.Conv2d: 1, or C for a depthwise conv."""
        return 1

    def torch_layers(self, record, activation, padding):
        """[nn.Module] computing this layer from the record's own (unfolded) tensors: by
        default a convolution's [padding, Conv2d, BatchNorm2d, activation]."""
        return torch_conv_layers(record, activation, padding, self.conv_groups(record),
                                 self.first)

    def __repr__(self):
        return f"<layer kind {self.name}>"


def batch_norm_affine(record):
    """(scale, shift) float64 (C,) with BN(conv(x) + bias) = scale * conv(x) + shift:
    scale = gamma / sqrt(var + eps), shift = beta + (bias - mean) * scale."""
    bn = record.bn
    scale = bn.gamma.astype(np.float64) / np.sqrt(bn.var.astype(np.float64) + bn.eps)
    conv_bias = 0.0 if record.bias is None else record.bias.astype(np.float64)
    return scale, bn.beta.astype(np.float64) + (conv_bias - bn.mean.astype(np.float64)) * scale


def folding_overflows(record):
    """True when folding the record's batch norm would overflow float32 (checked cheaply: per
    output channel, the largest |weight| times |scale|, and the folded bias)."""
    scale, shift = batch_norm_affine(record)
    largest = np.abs(record.weight.reshape(len(scale), -1)).max(axis=1) * np.abs(scale)
    with np.errstate(invalid="ignore"):
        return not (np.all(largest <= FLOAT32_MAX) and np.all(np.abs(shift) <= FLOAT32_MAX))


def fold_batch_norm(record):
    """(weight, bias) float32 of a conv record with its batch norm folded in, computed in
    float64: weight * scale per output channel, and shift (see batch_norm_affine)."""
    scale, shift = batch_norm_affine(record)
    weight = record.weight.astype(np.float64) * scale.reshape(-1, *(1,) * (record.weight.ndim - 1))
    weight, bias = weight.astype(np.float32), shift.astype(np.float32)
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise FormatError(f"layer {record.name!r}: folding batch norm overflows float32 "
                          f"(a variance near zero with a large gamma?)")
    return weight, bias


def torch_conv_layers(record, activation, padding, groups, stem=False):
    """[padding, Conv2d, BatchNorm2d, activation] holding a conv record's own tensors, as
    PyTorch users run MobileNetV1 (eval mode). Symmetric padding goes into the Conv2d (what
    an ONNX export should see); other rules get an explicit pad computed per input (`stem`:
    the conv on the RGB input, see padding.py)."""
    import torch
    from torch import nn

    from ..reference import ExplicitPad

    weight = torch.from_numpy(np.ascontiguousarray(record.weight))  # OIHW
    out_channels, in_per_group, kernel, _ = weight.shape
    symmetric = symmetric_pad(kernel, padding)
    conv = nn.Conv2d(in_per_group * groups, out_channels, kernel, record.stride,
                     padding=symmetric or 0, groups=groups, bias=record.bias is not None)
    bn = nn.BatchNorm2d(out_channels, eps=record.bn.eps)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if record.bias is not None:
            conv.bias.copy_(torch.from_numpy(record.bias))
        bn.weight.copy_(torch.from_numpy(record.bn.gamma))
        bn.bias.copy_(torch.from_numpy(record.bn.beta))
        bn.running_mean.copy_(torch.from_numpy(record.bn.mean))
        bn.running_var.copy_(torch.from_numpy(record.bn.var))
    pad = [] if symmetric is not None else [ExplicitPad(kernel, record.stride, padding, stem)]
    return pad + [conv, bn, torch_activation(activation)]


def torch_activation(activation):
    """The nn.Module of an activation (an Activation or a name): ReLU, ReLU6 (TF-slim, timm)
    or LeakyReLU(slope) (RetinaFace)."""
    return activation_of(activation).torch_module()


# ------------------------------------------------------------------------- int8 layers

class Int8Epilogue:
    """What every int8 kernel's epilogue needs: per-channel (multiplier, shift) int32 (C,)
    from input_scale * weight_scale[c] / output_scale (quantization.requantization), as the
    (5, C) table the kernels read (kernels/qcommon.requantize_table), the output zero point
    and the fused activation's int8 range."""

    def __init__(self, record, input_quantization, activation):
        from ..kernels.qcommon import aligned_array, requantize_table
        from ..quantization import activation_range, requantization

        output = record.quant.output
        multiplier, shift = requantization(input_quantization.scale, record.quant.weight_scale,
                                           output.scale)
        self.multiplier = aligned_array(multiplier, np.int32)  # (C,)
        self.shift = aligned_array(shift, np.int32)  # (C,)
        self.table = requantize_table(multiplier, shift)  # (5, C)
        self.zero_point = output.zero_point
        name = None if activation is None else activation_of(activation).name
        self.low, self.high = activation_range(name, output)
        self.output_quantization = output

    @property
    def args(self):
        """(table, zero point, low, high): the epilogue's kernel arguments."""
        return self.table, self.zero_point, self.low, self.high


def int8_bias(record, input_zero_point, fold):
    """The int32 bias (C,) an int8 kernel starts from, after checking that no accumulator
    can overflow int32 (Numba wraps silently; TFLite's C++ would be undefined).

    fold: subtract input_zero_point * sum_k w[c, k] (kernels that multiply raw x by w);
    else the kernel multiplies (x - zero point), which is at most 255 in magnitude.
    """
    from ..quantization import INT32_MAX

    weight = record.weight.astype(np.int64).reshape(record.weight.shape[0], -1)  # (C, K)
    bias = record.bias.astype(np.int64)
    if fold:
        bias = bias - input_zero_point * weight.sum(axis=1)
        largest_input = 128
    else:
        largest_input = 255
    bound = np.abs(bias) + largest_input * np.abs(weight).sum(axis=1)
    if bound.max() > INT32_MAX:
        raise FormatError(f"layer {record.name!r}: its int32 accumulators could overflow "
                          f"(bias and weights up to {int(bound.max())}); requantize the model")
    return bias.astype(np.int32)
