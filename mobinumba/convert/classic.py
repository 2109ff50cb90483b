"""The classic sequential layout of the widely copied `pytorch-mobilenet`.

Keys: model.0.0 stem conv, model.0.1 its BN; for i = 1..13 model.i.0 depthwise conv,
model.i.1 its BN, model.i.3 pointwise conv, model.i.4 its BN (i.2 and i.5 are the ReLUs);
then fc.
"""
from ..architecture import NUM_BLOCKS
from .plan import mobilenet_v1_plan

NAME = "classic"
DEFAULTS = dict(activation="relu", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                interpolation="bilinear",
                crop_pct=0.875, resize="shorter_side", bn_eps=1e-5, padding="torch")


def matches(keys):
    """True when the keys look like the classic `model.N.M` sequential MobileNet."""
    return "model.0.0.weight" in keys and "model.1.0.weight" in keys


def plan(keys):
    """The SourceLayer plan: stem, 13 depthwise-separable blocks, fc."""
    blocks = [(f"model.{i}.0", f"model.{i}.1", f"model.{i}.3", f"model.{i}.4")
              for i in range(1, NUM_BLOCKS + 1)]
    return mobilenet_v1_plan(stem=("model.0.0", "model.0.1"), blocks=blocks, head=None,
                             classifier="fc")
