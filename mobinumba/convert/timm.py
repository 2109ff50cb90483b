"""timm's MobileNetV1 (`mobilenetv1_100`, `mobilenetv1_100h`, `mobilenetv1_125`, ...).

Keys: conv_stem, bn1 (stem BN); blocks.S.B.{conv_dw, bn1, conv_pw, bn2} for stages S = 0..4
holding 1, 2, 2, 6, 2 blocks; optional conv_head + top-level bn2 (the "h" variants); then
classifier, absent from a model created with `num_classes=0` (a backbone). Note the clash:
top-level bn1/bn2 belong to the stem/head, block-level bn1/bn2 to the depthwise/pointwise
convs.
"""
from .plan import mobilenet_v1_plan

NAME = "timm"
DEFAULTS = dict(activation="relu6", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                interpolation="bicubic",
                crop_pct=0.875, resize="shorter_side", bn_eps=1e-5, padding="torch")
STAGE_BLOCKS = (1, 2, 2, 6, 2)


def matches(keys):
    """True when the keys look like timm's EfficientNet-family MobileNetV1."""
    return "conv_stem.weight" in keys and any(key.startswith("blocks.") for key in keys)


def plan(keys):
    """The SourceLayer plan; the head conv is included when conv_head.weight is present, the
    classifier when classifier.weight is."""
    blocks = []
    for stage, count in enumerate(STAGE_BLOCKS):
        for block in range(count):
            prefix = f"blocks.{stage}.{block}"
            blocks.append((f"{prefix}.conv_dw", f"{prefix}.bn1",
                           f"{prefix}.conv_pw", f"{prefix}.bn2"))
    head = ("conv_head", "bn2") if "conv_head.weight" in keys else None
    return mobilenet_v1_plan(stem=("conv_stem", "bn1"), blocks=blocks, head=head,
                             classifier="classifier" if "classifier.weight" in keys else None)
