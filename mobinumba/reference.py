"""The PyTorch reference network: MobileNetV1 from layer records, as PyTorch users run it.

One nn.Module serves every place that compares mobinumba with PyTorch: the converter's
self-check (float64, over the source's own tensors before anything is folded or packed), the
benchmark's PyTorch and ONNX Runtime peers (float32, exported to ONNX) and the tests. Each
layer kind contributes its block (LayerKind.torch_layers: Conv2d + BatchNorm2d in eval mode +
activation, or Linear), global average pooling comes before the classifier, and padding rules
other than PyTorch's symmetric one are an explicit zero pad computed per input
(padding.pads), so the reference shares no arithmetic with the runtime's kernels.

Needs torch, imported only when a reference is built.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .ops import kind_of
from .padding import pads


class ExplicitPad(nn.Module):
    """Zero padding of `rule` for a `kernel`-wide conv of `stride` (`stem`: on the RGB input),
    computed per input."""

    def __init__(self, kernel, stride, rule, stem=False):
        super().__init__()
        self.kernel, self.stride, self.rule, self.stem = kernel, stride, rule, stem

    def forward(self, x):
        top, bottom = pads(x.shape[2], self.kernel, self.stride, self.rule, self.stem)
        left, right = pads(x.shape[3], self.kernel, self.stride, self.rule, self.stem)
        return F.pad(x, (left, right, top, bottom))


class ReferenceNet(nn.Module):
    """MobileNetV1 from LayerRecords: features (every spatial layer) -> mean over H, W ->
    the layers on flat features (the classifier)."""

    def __init__(self, layers, activation, padding):
        super().__init__()
        features, head = [], []
        for record in layers:
            kind = kind_of(record.kind)
            (head if kind.flat_input else features).extend(
                kind.torch_layers(record, activation, padding))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(*head)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def reference_module(layers, activation, padding, dtype=torch.float32):
    """The eval-mode ReferenceNet of `layers` (LayerRecords) in `dtype`."""
    return ReferenceNet(layers, activation, padding).to(dtype).eval()


def reference_logits(layers, activation, padding, x):
    """Logits (N, K) float64 of `layers` for x (N, 3, H, W), computed by torch in float64."""
    module = reference_module(layers, activation, padding, torch.float64)
    with torch.no_grad():
        return module(torch.from_numpy(x).to(torch.float64)).numpy()
