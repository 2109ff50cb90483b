"""The MobileNetV1 architecture table (Howard et al. 2017, Table 1) and layer specs.

A LayerSpec describes one weight layer independently of its weights: kind, channels, stride.
Specs give the per-layer parameter and multiply-add counts used by `inspect`, `summary()` and
the benchmark report, and the geometry (output size and padding) used by the runner.
"""
from dataclasses import dataclass

from .ops import kind_of
from .ops.dense import KIND as DENSE
from .ops.depthwise import KIND as DEPTHWISE
from .ops.pointwise import KIND as POINTWISE
from .ops.pool import KIND as POOL
from .ops.stem import KIND as STEM

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
    """One layer: its name, kind (a key of ops.KINDS), channels and stride.

    Shapes and counts come from the kind (`spec.op`, see mobinumba/ops/): pooling is the one
    layer without weights; its additions are not counted as multiply-adds, as in the paper.
    """

    name: str
    kind: str
    in_channels: int
    out_channels: int
    stride: int = 1

    @property
    def op(self):
        """The LayerKind of this layer."""
        return kind_of(self.kind)

    @property
    def kernel_size(self):
        """Spatial kernel size: 3 for conv and dwconv, 1 for pwconv and dense."""
        return self.op.kernel_size

    @property
    def params(self):
        """Trainable parameters as PyTorch counts them: weights, plus BN gamma and beta."""
        return self.op.params(self)

    @property
    def weight_count(self):
        """Conv and FC weights only, without biases and batch-norm parameters.

        This is how the MobileNets paper counts parameters (its Table 2 shares come out
        exactly this way); `params` is PyTorch's count.
        """
        return self.op.weight_count(self)

    def output_size(self, height, width, padding):
        """(out_h, out_w, pad_top, pad_left) of this layer on an (height, width) input."""
        return self.op.output_size(self, height, width, padding)

    def macs(self, out_h, out_w):
        """Multiply-adds to produce an (out_h, out_w) output (one image)."""
        return self.op.macs(self, out_h, out_w)


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
    specs.append(LayerSpec("conv_stem", STEM.name, 3, channels, STEM_STRIDE))
    for index, (base, stride) in enumerate(BLOCKS, start=1):
        out = scaled_channels(base, width_multiplier)
        if standard_convs:
            specs.append(LayerSpec(f"block{index:02d}_conv", STEM.name, channels, out, stride))
        else:
            specs.append(LayerSpec(f"block{index:02d}_dw", DEPTHWISE.name, channels, channels,
                                   stride))
            specs.append(LayerSpec(f"block{index:02d}_pw", POINTWISE.name, channels, out, 1))
        channels = out
    if head_channels:
        specs.append(LayerSpec("conv_head", POINTWISE.name, channels, head_channels, 1))
        channels = head_channels
    specs.append(LayerSpec("avgpool", POOL.name, channels, channels))
    specs.append(LayerSpec("classifier", DENSE.name, channels, num_classes, 1))
    return specs


def first_empty_layer(specs, height, width, padding="torch"):
    """The name of the first layer whose output has no pixels at input (height, width), else
    None. Only the `keras` rule gets there: its ZeroPadding2D((0, 1)) + "valid" turns a
    1-pixel map into an empty one at stride 2 (Keras refuses inputs under 32 for that)."""
    for spec in specs:
        height, width, _, _ = spec.output_size(height, width, padding)
        if height < 1 or width < 1:
            return spec.name
    return None


def count(specs, height, width, padding="torch"):
    """Per-layer (spec, out_h, out_w, params, macs) for one image of size (height, width)."""
    rows = []
    for spec in specs:
        out_h, out_w, _, _ = spec.output_size(height, width, padding)
        rows.append((spec, out_h, out_w, spec.params, spec.macs(out_h, out_w)))
        height, width = out_h, out_w
    return rows
