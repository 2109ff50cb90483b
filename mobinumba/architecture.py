"""The MobileNetV1 architecture table (Howard et al. 2017, Table 1) and layer specs.

A LayerSpec describes one weight layer independently of its weights: kind, channels, stride.
Specs give the per-layer parameter and multiply-add counts used by `inspect`, `summary()` and
the benchmark report, and the geometry (output size and padding) used by the runner.
"""
from dataclasses import dataclass

KINDS = ("conv", "dwconv", "pwconv", "dense")
PADDINGS = ("torch", "tf_same")

STEM_CHANNELS = 32
STEM_STRIDE = 2
# (output channels, depthwise stride) of the 13 depthwise-separable blocks.
BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)
BLOCK_STRIDES = tuple(stride for _, stride in BLOCKS)
NUM_BLOCKS = len(BLOCKS)


@dataclass(frozen=True)
class LayerSpec:
    """One layer: conv (3x3), dwconv (depthwise 3x3), pwconv (1x1), dense, or pool.

    `pool` (global average pooling) is the one layer without weights; its additions are not
    counted as multiply-adds, as in the paper.
    """

    name: str
    kind: str
    in_channels: int
    out_channels: int
    stride: int = 1

    @property
    def kernel_size(self):
        """Spatial kernel size: 3 for conv and dwconv, 1 for pwconv and dense."""
        return 3 if self.kind in ("conv", "dwconv") else 1

    @property
    def params(self):
        """Trainable parameters as PyTorch counts them: weights, plus BN gamma and beta."""
        if self.kind == "pool":
            return 0
        if self.kind == "dense":
            return self.in_channels * self.out_channels + self.out_channels
        if self.kind == "dwconv":
            weights = self.out_channels * 9
        else:
            weights = self.out_channels * self.in_channels * self.kernel_size ** 2
        return weights + 2 * self.out_channels

    @property
    def weight_count(self):
        """Conv and FC weights only, without biases and batch-norm parameters.

        This is how the MobileNets paper counts parameters (its Table 2 shares come out
        exactly this way); `params` is PyTorch's count.
        """
        if self.kind == "pool":
            return 0
        if self.kind == "dwconv":
            return self.out_channels * 9
        return self.out_channels * self.in_channels * self.kernel_size ** 2

    def output_size(self, height, width, padding):
        """(out_h, out_w, pad_top, pad_left) of this layer on an (height, width) input."""
        if self.kind in ("dense", "pool"):
            return 1, 1, 0, 0
        out_h, pad_top = conv_geometry(height, self.kernel_size, self.stride, padding)
        out_w, pad_left = conv_geometry(width, self.kernel_size, self.stride, padding)
        return out_h, out_w, pad_top, pad_left

    def macs(self, out_h, out_w):
        """Multiply-adds to produce an (out_h, out_w) output (one image)."""
        if self.kind == "pool":
            return 0
        if self.kind == "dense":
            return self.in_channels * self.out_channels
        if self.kind == "dwconv":
            return out_h * out_w * self.out_channels * 9
        return out_h * out_w * self.out_channels * self.in_channels * self.kernel_size ** 2


def conv_geometry(size, kernel, stride, padding):
    """(output size, padding before) along one axis.

    `torch`: symmetric padding (kernel - 1) // 2 on both sides.
    `tf_same`: TensorFlow's "SAME": output ceil(size / stride), total padding
    max((out - 1) * stride + kernel - size, 0), the smaller half before.
    """
    if padding == "torch":
        pad = (kernel - 1) // 2
        return (size + 2 * pad - kernel) // stride + 1, pad
    if padding == "tf_same":
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return out, total // 2
    raise ValueError(f"unknown padding {padding!r}; expected one of {PADDINGS}")


def scaled_channels(channels, width_multiplier):
    """Channels of a layer at a width multiplier, by TF-slim's rule max(int(c * alpha), 8)."""
    return max(int(channels * width_multiplier), 8)


def mobilenet_v1_specs(width_multiplier=1.0, num_classes=1000, head_channels=0,
                       standard_convs=False):
    """The LayerSpecs of MobileNetV1 at a width multiplier, in execution order, with pooling.

    head_channels > 0 adds timm's optional 1x1 head conv before pooling. standard_convs=True
    gives the paper's "Conv MobileNet" baseline: each depthwise-separable block replaced by
    one standard 3x3 conv (Table 4).
    """
    specs = []
    channels = scaled_channels(STEM_CHANNELS, width_multiplier)
    specs.append(LayerSpec("conv_stem", "conv", 3, channels, STEM_STRIDE))
    for index, (base, stride) in enumerate(BLOCKS, start=1):
        out = scaled_channels(base, width_multiplier)
        if standard_convs:
            specs.append(LayerSpec(f"block{index:02d}_conv", "conv", channels, out, stride))
        else:
            specs.append(LayerSpec(f"block{index:02d}_dw", "dwconv", channels, channels, stride))
            specs.append(LayerSpec(f"block{index:02d}_pw", "pwconv", channels, out, 1))
        channels = out
    if head_channels:
        specs.append(LayerSpec("conv_head", "pwconv", channels, head_channels, 1))
        channels = head_channels
    specs.append(LayerSpec("avgpool", "pool", channels, channels))
    specs.append(LayerSpec("classifier", "dense", channels, num_classes, 1))
    return specs


def count(specs, height, width, padding="torch"):
    """Per-layer (spec, out_h, out_w, params, macs) for one image of size (height, width)."""
    rows = []
    for spec in specs:
        out_h, out_w, _, _ = spec.output_size(height, width, padding)
        rows.append((spec, out_h, out_w, spec.params, spec.macs(out_h, out_w)))
        height, width = out_h, out_w
    return rows
