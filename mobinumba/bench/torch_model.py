"""The peers' model: mobinumba.reference's PyTorch network of a weight file, and its ONNX
export. Needs torch (and onnx for the export); imported only when peers are measured.

The module holds the file's own tensors, unfolded: Conv2d + BatchNorm2d (eval) + ReLU/ReLU6
per layer, mean pooling and Linear, as PyTorch users run MobileNetV1. The ONNX graph is
exported from this same module (same state dict) with the TorchScript-based exporter
(`dynamo=False`): it needs only the `onnx` package, where torch >= 2.9's default
torch.export-based exporter also needs onnxscript.
"""
import inspect
import warnings

import torch

from ..reference import reference_module

ONNX_OPSET = 17


def torch_module(model_file):
    """The float32 eval-mode reference network (mobinumba.reference) of a ModelFile's layers."""
    info = model_file.info
    return reference_module(model_file.layers, info.activation_function, info.padding)


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
