"""RetinaFace's MobileNetV1 0.25 (biubug6/Pytorch_Retinaface, models/net.py `MobileNetV1`).

Keys: stage1.0.{0,1} the stem (conv_bn: Conv, BN, LeakyReLU); then conv_dw blocks
stageS.B.{0 depthwise conv, 1 its BN, 3 pointwise conv, 4 its BN} (2 and 5 are the
LeakyReLUs): stage1 holds the stem and blocks 1-5, stage2 blocks 6-11, stage3 blocks 12-13
(their outputs are the detector's stride 8, 16 and 32 maps). Every activation is
LeakyReLU(0.1): conv_dw's default `leaky=0.1`, and the stem's passed explicitly.

Two files carry it: the ImageNet pretrain (`mobilenetV1X0.25_pretrain.tar`, under
`module.`, which the checkpoint reader strips) with its `fc` classifier (256 -> 1000), kept;
and the detector checkpoint, where the backbone is `body.*` beside the detector's own
layers (fpn, ssh1-3, ClassHead, BboxHead, LandmarkHead), which are reported as ignored.

The detector is fed BGR images minus (104, 117, 123), unscaled (detect.py). The format's
preprocessing is RGB, so the plan reverses the stem's input channels (exact) and the mean
and std say the same thing for RGB pixels in [0, 1]: (x * 255 - (123, 117, 104)) / 1.
"""
from .plan import mobilenet_v1_plan

NAME = "retinaface"
# What the source network runs (net.py), whatever the options say: the self-check's
# reference uses it, so a conversion to another activation or padding fails.
SOURCE = dict(activation="leaky_relu", activation_slope=0.1, padding="torch")
DEFAULTS = dict(SOURCE, mean=(123 / 255, 117 / 255, 104 / 255), std=(1 / 255,) * 3,
                interpolation="bilinear", crop_pct=1.0, resize="central_crop", bn_eps=1e-5)
DETECTOR_PREFIX = "body."
# The 13 conv_dw blocks as (stage, index), in order: stage1.0 is the stem.
BLOCKS = ([("stage1", i) for i in range(1, 6)] + [("stage2", i) for i in range(6)]
          + [("stage3", i) for i in range(2)])


def matches(keys):
    """True for RetinaFace's MobileNetV1 keys, bare (the pretrain) or under `body.`."""
    return "stage1.0.0.weight" in keys or f"{DETECTOR_PREFIX}stage1.0.0.weight" in keys


def _prefix(keys):
    return DETECTOR_PREFIX if f"{DETECTOR_PREFIX}stage1.0.0.weight" in keys else ""


def ignored(keys):
    """The detector's keys outside the backbone (fpn, ssh, heads): not MobileNetV1."""
    prefix = _prefix(keys)
    return sorted(key for key in keys if not key.startswith(prefix)) if prefix else []


def plan(keys):
    """The SourceLayer plan: stem, 13 conv_dw blocks, `fc` when present (the pretrain)."""
    prefix = _prefix(keys)
    blocks = [tuple(f"{prefix}{stage}.{index}.{entry}" for entry in (0, 1, 3, 4))
              for stage, index in BLOCKS]
    return mobilenet_v1_plan(stem=(f"{prefix}stage1.0.0", f"{prefix}stage1.0.1"),
                             blocks=blocks, head=None,
                             classifier="fc" if f"{prefix}fc.weight" in keys else None,
                             bgr=True)
