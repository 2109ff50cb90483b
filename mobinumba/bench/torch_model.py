"""The peers' model: a PyTorch nn.Module built from a weight file's layer records, and its
ONNX export. Needs torch (and onnx for the export); imported only when peers are measured.

The module holds the file's own tensors, unfolded: Conv2d + BatchNorm2d (eval) + ReLU/ReLU6
per layer, mean pooling and Linear, as PyTorch users run MobileNetV1. The ONNX graph is
exported from this same module (same state dict) with the TorchScript-based exporter
(`dynamo=False`): it needs only the `onnx` package, where torch >= 2.9's default
torch.export-based exporter also needs onnxscript.
"""
import inspect
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ONNX_OPSET = 17


class SamePad(nn.Module):
    """TensorFlow's "SAME" padding for a 3x3 conv of `stride` (asymmetric, computed per input)."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        pads = []
        for size in (x.shape[3], x.shape[2]):  # F.pad order: (left, right, top, bottom)
            total = max((math.ceil(size / self.stride) - 1) * self.stride + 3 - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads)


class RecordsNet(nn.Module):
    """MobileNetV1 from LayerRecords: features (conv layers) -> mean over H, W -> classifier."""

    def __init__(self, layers, activation, padding):
        super().__init__()
        features = []
        for record in layers[:-1]:
            features.extend(_conv_block(record, activation, padding))
        self.features = nn.Sequential(*features)
        dense = layers[-1]
        self.classifier = nn.Linear(dense.weight.shape[1], dense.weight.shape[0])
        with torch.no_grad():
            self.classifier.weight.copy_(torch.from_numpy(dense.weight))
            self.classifier.bias.copy_(torch.from_numpy(dense.bias))

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def _conv_block(record, activation, padding):
    """[optional SamePad, Conv2d, BatchNorm2d, activation] holding one record's tensors."""
    weight = torch.from_numpy(np.ascontiguousarray(record.weight))  # OIHW
    out_channels, in_per_group, kernel, _ = weight.shape
    groups = out_channels if record.kind == "dwconv" else 1
    same = padding == "tf_same" and kernel > 1
    conv = nn.Conv2d(in_per_group * groups, out_channels, kernel, record.stride,
                     padding=0 if same else kernel // 2, groups=groups,
                     bias=record.bias is not None)
    bn = nn.BatchNorm2d(out_channels, eps=record.bn.eps)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if record.bias is not None:
            conv.bias.copy_(torch.from_numpy(record.bias))
        bn.weight.copy_(torch.from_numpy(record.bn.gamma))
        bn.bias.copy_(torch.from_numpy(record.bn.beta))
        bn.running_mean.copy_(torch.from_numpy(record.bn.mean))
        bn.running_var.copy_(torch.from_numpy(record.bn.var))
    act = nn.ReLU6() if activation == "relu6" else nn.ReLU()
    return ([SamePad(record.stride)] if same else []) + [conv, bn, act]


def torch_module(model_file):
    """The float32 eval-mode nn.Module of a ModelFile's layers."""
    info = model_file.info
    return RecordsNet(model_file.layers, info.activation, info.padding).eval()


def export_onnx(module, x, path):
    """Export `module` traced on x (N, 3, H, W) to an ONNX file at `path`, batch axis dynamic."""
    options = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        options["dynamo"] = False  # the TorchScript exporter: no onnxscript needed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice in torch >= 2.9
        torch.onnx.export(module, (torch.from_numpy(x),), path, input_names=["input"],
                          output_names=["logits"], opset_version=ONNX_OPSET,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          **options)
    return path
