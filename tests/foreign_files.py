"""One small file of each format mobinumba recognises but does not run, written by each
format's own tools where they are installed (h5py, zipfile, flatbuffers, onnx, tensorboardX's
GraphDef classes, safetensors, torch), and state dicts of other well-known nets with their
real key names (torchvision and timm are not needed: the checks are on the keys).

keras_h5 follows what tf.keras 2 / Keras 3 write with model.save("x.h5"): root attributes
keras_version, backend, model_config (JSON) and a model_weights group whose attribute
layer_names lists the layers; keras_weights what model.save_weights("x.h5") writes (those
attributes at the root); keras_v3 the .keras zip (config.json, metadata.json,
model.weights.h5).
"""
import io
import json
import pickle
import zipfile

import h5py
import numpy as np
import torch

KERAS_CONFIG = {"class_name": "Functional", "config": {"name": "mobilenet_1.00_224",
                                                       "layers": []}}


def write_keras_h5(path, userblock=0):
    with h5py.File(path, "w", userblock_size=userblock) as h5:
        h5.attrs["keras_version"] = "2.15.0"
        h5.attrs["backend"] = "tensorflow"
        h5.attrs["model_config"] = json.dumps(KERAS_CONFIG)
        weights = h5.create_group("model_weights")
        weights.attrs["layer_names"] = np.array([b"conv1"])
        weights.create_group("conv1").create_group("conv1").create_dataset(
            "kernel:0", data=np.zeros((3, 3, 3, 8), np.float32))
    return path


def write_keras_weights(path):
    with h5py.File(path, "w") as h5:
        h5.attrs["keras_version"] = "3.3.3"
        h5.attrs["backend"] = "tensorflow"
        h5.attrs["layer_names"] = np.array([b"conv1"])
        h5.create_group("conv1").attrs["weight_names"] = np.array([b"conv1/kernel:0"])
    return path


def write_keras_v3(path):
    weights = io.BytesIO()
    with h5py.File(weights, "w") as h5:
        h5.create_group("layers").create_group("conv2d").create_group("vars").create_dataset(
            "0", data=np.zeros((3, 3, 3, 8), np.float32))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.3.3"}))
        archive.writestr("config.json", json.dumps(KERAS_CONFIG))
        archive.writestr("model.weights.h5", weights.getvalue())
    return path


def write_plain_hdf5(path):
    with h5py.File(path, "w") as h5:
        h5.create_dataset("x", data=np.arange(4.0))
    return path


def write_tflite(path):
    """A flatbuffer finished with TFLite's file identifier (a root table with a version
    field, as TFLite's Model has), written by the flatbuffers package."""
    import flatbuffers

    builder = flatbuffers.Builder(64)
    builder.StartObject(1)
    builder.PrependUint32Slot(0, 3, 0)  # Model.version = 3
    root = builder.EndObject()
    builder.Finish(root, file_identifier=b"TFL3")
    with open(path, "wb") as stream:
        stream.write(builder.Output())
    return path


def write_onnx(path):
    """A one-node ONNX model saved by onnx itself."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    onnx.save(helper.make_model(graph, producer_name="onnx-example"), str(path))
    return path


def write_graphdef(path):
    """A two-node GraphDef written with tensorboardX's copy of TensorFlow's protobuf class."""
    from tensorboardX.proto.graph_pb2 import GraphDef

    graph = GraphDef()
    node = graph.node.add()
    node.name, node.op = "input", "Placeholder"
    node = graph.node.add()
    node.name, node.op = "MobilenetV1/Conv2d_0/weights", "Const"
    with open(path, "wb") as stream:
        stream.write(graph.SerializeToString())
    return path


def write_safetensors(path):
    from safetensors.torch import save_file

    save_file({"conv_stem.weight": torch.zeros(8, 3, 3, 3)}, str(path))
    return path


def write_torch_zip(path):
    torch.save({"conv_stem.weight": torch.zeros(8, 3, 3, 3)}, path)
    return path


def write_torch_legacy(path):
    torch.save({"conv_stem.weight": torch.zeros(8, 3, 3, 3)}, path,
               _use_new_zipfile_serialization=False)
    return path


def write_pickle(path):
    with open(path, "wb") as stream:
        pickle.dump({"weights": [1.0, 2.0]}, stream, protocol=4)
    return path


def _tensor(*shape):
    return torch.zeros(*shape)


def _bn(prefix, channels):
    return {f"{prefix}.{name}": _tensor(channels)
            for name in ("weight", "bias", "running_mean", "running_var")}


def torchvision_mobilenet_v2():
    """torchvision.models.mobilenet_v2's keys: features.0 (ConvBNReLU), features.1..17
    (InvertedResidual: conv.0 [expand ConvBNReLU], conv.1 [depthwise], conv.2 [project
    conv], conv.3 [its BN]; features.1 has no expansion), features.18, classifier.1."""
    state = {"features.0.0.weight": _tensor(32, 3, 3, 3), **_bn("features.0.1", 32),
             "features.1.conv.0.0.weight": _tensor(32, 1, 3, 3), **_bn("features.1.conv.0.1", 32),
             "features.1.conv.1.weight": _tensor(16, 32, 1, 1), **_bn("features.1.conv.2", 16)}
    for index in range(2, 18):
        prefix = f"features.{index}.conv"
        state.update({f"{prefix}.0.0.weight": _tensor(8, 4, 1, 1), **_bn(f"{prefix}.0.1", 8),
                      f"{prefix}.1.0.weight": _tensor(8, 1, 3, 3), **_bn(f"{prefix}.1.1", 8),
                      f"{prefix}.2.weight": _tensor(4, 8, 1, 1), **_bn(f"{prefix}.3", 4)})
    state.update({"features.18.0.weight": _tensor(1280, 320, 1, 1),
                  **_bn("features.18.1", 1280),
                  "classifier.1.weight": _tensor(1000, 1280), "classifier.1.bias": _tensor(1000)})
    return state


def torchvision_mobilenet_v3(last_feature=16):
    """torchvision mobilenet_v3_large (last_feature 16) / _small (12): features.N.block.M."""
    state = {"features.0.0.weight": _tensor(16, 3, 3, 3), **_bn("features.0.1", 16)}
    for index in range(1, last_feature):
        prefix = f"features.{index}.block"
        state.update({f"{prefix}.0.0.weight": _tensor(8, 1, 3, 3), **_bn(f"{prefix}.0.1", 8),
                      f"{prefix}.1.fc1.weight": _tensor(4, 8, 1, 1),
                      f"{prefix}.1.fc2.weight": _tensor(8, 4, 1, 1),
                      f"{prefix}.2.0.weight": _tensor(8, 8, 1, 1), **_bn(f"{prefix}.2.1", 8)})
    state.update({f"features.{last_feature}.0.weight": _tensor(960, 160, 1, 1),
                  **_bn(f"features.{last_feature}.1", 960),
                  "classifier.0.weight": _tensor(1280, 960), "classifier.0.bias": _tensor(1280),
                  "classifier.3.weight": _tensor(1000, 1280), "classifier.3.bias": _tensor(1000)})
    return state


def torchvision_efficientnet():
    """torchvision efficientnet_b0: features.N.M.block.K (MBConv), classifier.1."""
    state = {"features.0.0.weight": _tensor(32, 3, 3, 3), **_bn("features.0.1", 32),
             "features.1.0.block.0.0.weight": _tensor(32, 1, 3, 3),
             **_bn("features.1.0.block.0.1", 32),
             "features.1.0.block.1.fc1.weight": _tensor(8, 32, 1, 1),
             "features.1.0.block.1.fc2.weight": _tensor(32, 8, 1, 1),
             "features.1.0.block.2.0.weight": _tensor(16, 32, 1, 1),
             **_bn("features.1.0.block.2.1", 16),
             "features.8.0.weight": _tensor(1280, 320, 1, 1), **_bn("features.8.1", 1280),
             "classifier.1.weight": _tensor(1000, 1280), "classifier.1.bias": _tensor(1000)}
    return state


def timm_efficientnet_family(squeeze_excite, head_bn):
    """timm's EfficientNet-family keys: conv_stem/bn1, blocks.0.0 a depthwise-separable
    block (conv_dw, bn1, [se], conv_pw, bn2), blocks.S.B inverted residuals (conv_pw, bn1,
    conv_dw, bn2, [se.conv_reduce/conv_expand], conv_pwl, bn3), conv_head (+ bn2 for
    mobilenetv2 / efficientnet; with a bias and no bn2 for mobilenetv3), classifier."""
    state = {"conv_stem.weight": _tensor(32, 3, 3, 3), **_bn("bn1", 32),
             "blocks.0.0.conv_dw.weight": _tensor(32, 1, 3, 3), **_bn("blocks.0.0.bn1", 32),
             "blocks.0.0.conv_pw.weight": _tensor(16, 32, 1, 1), **_bn("blocks.0.0.bn2", 16)}
    for stage in range(1, 6):
        for block in range(2):
            prefix = f"blocks.{stage}.{block}"
            state.update({f"{prefix}.conv_pw.weight": _tensor(8, 4, 1, 1),
                          **_bn(f"{prefix}.bn1", 8),
                          f"{prefix}.conv_dw.weight": _tensor(8, 1, 3, 3),
                          **_bn(f"{prefix}.bn2", 8),
                          f"{prefix}.conv_pwl.weight": _tensor(4, 8, 1, 1),
                          **_bn(f"{prefix}.bn3", 4)})
            if squeeze_excite:
                state.update({f"{prefix}.se.conv_reduce.weight": _tensor(2, 8, 1, 1),
                              f"{prefix}.se.conv_reduce.bias": _tensor(2),
                              f"{prefix}.se.conv_expand.weight": _tensor(8, 2, 1, 1),
                              f"{prefix}.se.conv_expand.bias": _tensor(8)})
    state["conv_head.weight"] = _tensor(1280, 320, 1, 1)
    if head_bn:
        state.update(_bn("bn2", 1280))
    else:
        state["conv_head.bias"] = _tensor(1280)
    state.update({"classifier.weight": _tensor(1000, 1280), "classifier.bias": _tensor(1000)})
    return state


def resnet18():
    state = {"conv1.weight": _tensor(64, 3, 7, 7), **_bn("bn1", 64)}
    for layer in range(1, 5):
        for block in range(2):
            prefix = f"layer{layer}.{block}"
            state.update({f"{prefix}.conv1.weight": _tensor(4, 4, 3, 3), **_bn(f"{prefix}.bn1", 4),
                          f"{prefix}.conv2.weight": _tensor(4, 4, 3, 3),
                          **_bn(f"{prefix}.bn2", 4)})
    state.update({"fc.weight": _tensor(1000, 512), "fc.bias": _tensor(1000)})
    return state


def vgg11():
    state = {}
    for index in (0, 3, 6, 8):
        state.update({f"features.{index}.weight": _tensor(4, 4, 3, 3),
                      f"features.{index}.bias": _tensor(4)})
    for index in (0, 3, 6):
        state.update({f"classifier.{index}.weight": _tensor(4, 4),
                      f"classifier.{index}.bias": _tensor(4)})
    return state


# name -> (state dict, the words the converter must use)
OTHER_NETS = {
    "torchvision_mobilenet_v2": (torchvision_mobilenet_v2,
                                 "this is a MobileNetV2 checkpoint (torchvision layout)"),
    "torchvision_mobilenet_v3_large": (torchvision_mobilenet_v3,
                                       "this is a MobileNetV3-Large checkpoint (torchvision"),
    "torchvision_mobilenet_v3_small": (lambda: torchvision_mobilenet_v3(12),
                                       "this is a MobileNetV3-Small checkpoint (torchvision"),
    "torchvision_efficientnet_b0": (torchvision_efficientnet,
                                    "this is an EfficientNet checkpoint (torchvision"),
    "timm_mobilenetv2_100": (lambda: timm_efficientnet_family(False, True),
                             "this is a MobileNetV2 checkpoint (timm layout"),
    "timm_mobilenetv3_large_100": (lambda: timm_efficientnet_family(True, False),
                                   "this is a MobileNetV3 checkpoint (timm layout)"),
    "timm_efficientnet_b0": (lambda: timm_efficientnet_family(True, True),
                             "this is an EfficientNet checkpoint (timm layout)"),
    "resnet18": (resnet18, "this is a ResNet checkpoint"),
    "vgg11": (vgg11, "this is a VGG checkpoint"),
}
