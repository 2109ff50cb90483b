"""The MobileNetV1 base network of qfgaohao/pytorch-ssd (`mobilenetv1_ssd.py`: `base_net`
is `MobileNetV1(1001).model` of vision/nn/mobilenet.py).

Keys: base_net.0.{0,1} the stem (conv_bn: Conv, BN, ReLU); base_net.i.{0 depthwise conv,
1 its BN, 3 pointwise conv, 4 its BN} for i = 1..13 (conv_dw; 2 and 5 are the ReLUs). The
SSD's own layers (extras, classification_headers, regression_headers) are reported as
ignored: the file is a backbone without classifier.

Preprocessing as the SSD's (config/mobilenetv1_ssd_config.py, PredictionTransform): the
whole RGB image resized to the input size (300 there: convert with --input-size 300), then
(x - 127) / 128 on 0..255 pixels.
"""
from ..architecture import NUM_BLOCKS
from .plan import mobilenet_v1_plan

NAME = "ssd"
# What the source network runs (mobilenet.py: nn.ReLU, padding 1): the self-check's reference.
SOURCE = dict(activation="relu", padding="torch")
DEFAULTS = dict(SOURCE, mean=(127 / 255,) * 3, std=(128 / 255,) * 3, interpolation="bilinear",
                crop_pct=1.0, resize="central_crop", bn_eps=1e-5)
PREFIX = "base_net."


def matches(keys):
    """True when the keys hold an SSD's MobileNetV1 `base_net`."""
    return f"{PREFIX}0.0.weight" in keys and f"{PREFIX}1.0.weight" in keys


def ignored(keys):
    """The SSD's keys outside base_net (extras, headers): not MobileNetV1."""
    return sorted(key for key in keys if not key.startswith(PREFIX))


def plan(keys):
    """The SourceLayer plan: stem and 13 conv_dw blocks, no classifier."""
    blocks = [(f"{PREFIX}{i}.0", f"{PREFIX}{i}.1", f"{PREFIX}{i}.3", f"{PREFIX}{i}.4")
              for i in range(1, NUM_BLOCKS + 1)]
    return mobilenet_v1_plan(stem=(f"{PREFIX}0.0", f"{PREFIX}0.1"), blocks=blocks, head=None,
                             classifier=None)
