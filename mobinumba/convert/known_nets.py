"""Name a well-known network that is not a MobileNetV1 from its state dict's keys.

A checkpoint of another net (a torchvision MobileNetV2, a timm EfficientNet) would otherwise
get "unknown layout ... force one with --layout", and every --layout then fails on a missing
key; naming the net tells the user what they have instead. The rules look for keys no
MobileNetV1 layout has (`conv_pwl`, `features.N.conv`, `layer1.0.conv1`, ...), so they never
claim a MobileNetV1 checkpoint:

  torchvision mobilenet_v2     features.1.conv.0.0.weight ... classifier.1.weight
  torchvision mobilenet_v3_*   features.1.block.0.0.weight ... classifier.3.weight
  torchvision efficientnet_*   features.1.0.block.0.0.weight ...
  timm mobilenetv2_*           blocks.1.0.conv_pw / conv_dw / conv_pwl, conv_head + bn2
  timm mobilenetv3_*           ... conv_pwl, se.conv_reduce, conv_head with a bias, no bn2
  timm efficientnet_*          ... conv_pwl, se.conv_reduce, conv_head + bn2
  ResNet (torchvision, timm)   layer1.0.conv1.weight, fc.weight
  VGG (torchvision)            features.N.weight, classifier.6.weight
  DenseNet                     features.denseblock1.denselayer1...
  Vision Transformer           patch_embed.proj.weight (timm), conv_proj.weight (torchvision)
"""
import re

TV_MOBILENET_V2 = re.compile(r"features\.\d+\.conv\.\d+\.")
TV_MOBILENET_V3 = re.compile(r"features\.(\d+)\.block\.\d+\.")
TV_EFFICIENTNET = re.compile(r"features\.\d+\.\d+\.block\.\d+\.")
TIMM_INVERTED_RESIDUAL = re.compile(r"blocks\.\d+\.\d+\.conv_pwl\.weight")
TIMM_SQUEEZE_EXCITE = re.compile(r"blocks\.\d+\.\d+\.se\.conv_reduce\.weight")
VGG_FEATURE = re.compile(r"features\.\d+\.weight")
TV_FEATURE = re.compile(r"features\.(\d+)\.")
# torchvision's mobilenet_v3_small has features 0..12, mobilenet_v3_large 0..16.
MOBILENET_V3_LAST_FEATURE = {12: "MobileNetV3-Small", 16: "MobileNetV3-Large"}


def name_network(keys):
    """"a MobileNetV2 checkpoint (torchvision layout)" and the like for the state dict keys
    of a known network that is not a MobileNetV1, else None."""
    keys = set(keys)

    def any_key(pattern):
        return any(pattern.match(key) for key in keys)

    if any_key(TV_MOBILENET_V2):
        return "a MobileNetV2 checkpoint (torchvision layout)"
    if any_key(TV_EFFICIENTNET):
        return "an EfficientNet checkpoint (torchvision layout)"
    if any_key(TV_MOBILENET_V3):
        last = max(int(match[1]) for match in map(TV_FEATURE.match, keys) if match)
        variant = MOBILENET_V3_LAST_FEATURE.get(last, "MobileNetV3")
        return f"a {variant} checkpoint (torchvision layout)"
    if any_key(TIMM_INVERTED_RESIDUAL):
        return _timm_inverted_residual(keys, any_key(TIMM_SQUEEZE_EXCITE))
    if "layer1.0.conv1.weight" in keys and "fc.weight" in keys:
        return "a ResNet checkpoint"
    if "classifier.6.weight" in keys and any_key(VGG_FEATURE):
        return "a VGG checkpoint (torchvision layout)"
    if any("denseblock" in key for key in keys):
        return "a DenseNet checkpoint"
    if "patch_embed.proj.weight" in keys or "conv_proj.weight" in keys:
        return "a Vision Transformer checkpoint"
    return None


def _timm_inverted_residual(keys, squeeze_excite):
    """timm's EfficientNet-family nets with inverted residual blocks (conv_pwl): MobileNetV3
    has squeeze-excite and a head conv with a bias and no batch norm; EfficientNet has
    squeeze-excite and a batch-normed head (top-level bn2); MobileNetV2 has no squeeze-excite
    (EfficientNet-Lite and MnasNet-B1 share its keys)."""
    if not squeeze_excite:
        return ("a MobileNetV2 checkpoint (timm layout; EfficientNet-Lite and MnasNet-B1 "
                "share its keys)")
    if "conv_head.bias" in keys and "bn2.weight" not in keys:
        return "a MobileNetV3 checkpoint (timm layout)"
    if "bn2.weight" in keys:
        return "an EfficientNet checkpoint (timm layout)"
    return "a MobileNetV3 or EfficientNet checkpoint (timm layout)"
