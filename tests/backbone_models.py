"""The detector backbones as their projects write them, for tests: key names and modules
follow the real sources, weights are random (reference_models.randomize_).

RetinaFaceMobileNetV1: biubug6/Pytorch_Retinaface models/net.py `MobileNetV1` (width 0.25,
LeakyReLU 0.1 everywhere: conv_dw's default, the stem's passed explicitly), stages 1-3 are
the detector's stride 8/16/32 outputs. retinaface_detector_state adds the keys of the
detector's other layers (models/retinaface.py: fpn, ssh1-3, Class/Bbox/LandmarkHead) under
which the backbone is `body.`.

SSDMobileNetV1: qfgaohao/pytorch-ssd vision/nn/mobilenet.py `MobileNetV1(1001).model` as the
SSD's `base_net` (ReLU), with `extras` and the two header lists of mobilenetv1_ssd.py.
"""
import torch
from torch import nn

from reference_models import randomize_


# ---------------------------------------------------------------- RetinaFace (models/net.py)

def conv_bn(inp, oup, stride=1, leaky=0):
    return nn.Sequential(
        nn.Conv2d(inp, oup, 3, stride, 1, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True))


def conv_dw(inp, oup, stride, leaky=0.1):
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True))


class RetinaFaceMobileNetV1(nn.Module):
    def __init__(self):
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn(3, 8, 2, leaky=0.1),
            conv_dw(8, 16, 1),
            conv_dw(16, 32, 2),
            conv_dw(32, 32, 1),
            conv_dw(32, 64, 2),
            conv_dw(64, 64, 1))
        self.stage2 = nn.Sequential(
            conv_dw(64, 128, 2),
            *[conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(
            conv_dw(128, 256, 2),
            conv_dw(256, 256, 1))
        self.avg = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(256, 1000)

    def stages(self, x):
        """The stride 8, 16 and 32 maps (what IntermediateLayerGetter gives the FPN)."""
        s8 = self.stage1(x)
        s16 = self.stage2(s8)
        return s8, s16, self.stage3(s16)

    def forward(self, x):
        return self.fc(self.avg(self.stages(x)[2]).view(-1, 256))


def retinaface_backbone(seed):
    return randomize_(RetinaFaceMobileNetV1(), seed)


def retinaface_pretrain_state(model):
    """The pretrain file's content: {'state_dict': DataParallel keys}, fc included."""
    return {"epoch": 240, "state_dict": {f"module.{key}": value
                                         for key, value in model.state_dict().items()}}


def retinaface_detector_state(model):
    """The detector checkpoint's keys: the backbone under `body.` (no fc: the detector's
    IntermediateLayerGetter drops it), beside the FPN, SSH and head layers."""
    state = {f"body.{key}": value for key, value in model.state_dict().items()
             if not key.startswith("fc.")}
    for name, shape in (("fpn.output1.0.weight", (64, 64, 1, 1)),
                        ("fpn.output1.1.running_var", (64,)),
                        ("fpn.merge1.0.weight", (64, 64, 3, 3)),
                        ("ssh1.conv3X3.0.weight", (32, 64, 3, 3)),
                        ("ssh2.conv7x7_3.1.weight", (16,)),
                        ("ClassHead.0.conv1x1.weight", (4, 64, 1, 1)),
                        ("ClassHead.0.conv1x1.bias", (4,)),
                        ("BboxHead.2.conv1x1.weight", (8, 64, 1, 1)),
                        ("LandmarkHead.1.conv1x1.weight", (20, 64, 1, 1))):
        state[name] = torch.randn(shape)
    return state


# ------------------------------------------------------- pytorch-ssd (vision/nn/mobilenet.py)

class SSDMobileNetV1(nn.Module):
    def __init__(self, num_classes=1024):
        super().__init__()

        def conv_bn(inp, oup, stride):
            return nn.Sequential(
                nn.Conv2d(inp, oup, 3, stride, 1, bias=False),
                nn.BatchNorm2d(oup),
                nn.ReLU(inplace=True))

        def conv_dw(inp, oup, stride):
            return nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
                nn.BatchNorm2d(inp),
                nn.ReLU(inplace=True),
                nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
                nn.BatchNorm2d(oup),
                nn.ReLU(inplace=True))

        self.model = nn.Sequential(
            conv_bn(3, 32, 2),
            conv_dw(32, 64, 1),
            conv_dw(64, 128, 2),
            conv_dw(128, 128, 1),
            conv_dw(128, 256, 2),
            conv_dw(256, 256, 1),
            conv_dw(256, 512, 2),
            conv_dw(512, 512, 1),
            conv_dw(512, 512, 1),
            conv_dw(512, 512, 1),
            conv_dw(512, 512, 1),
            conv_dw(512, 512, 1),
            conv_dw(512, 1024, 2),
            conv_dw(1024, 1024, 1))
        self.fc = nn.Linear(1024, num_classes)


class SSD(nn.Module):
    """mobilenetv1_ssd.create_mobilenetv1_ssd's modules (their key names), not its forward:
    the SSD taps base_net after entry 11 (stride 16, 512 channels) and at its end."""

    def __init__(self, num_classes=21):
        super().__init__()
        self.base_net = SSDMobileNetV1(1001).model
        self.extras = nn.ModuleList([
            nn.Sequential(nn.Conv2d(1024, 256, 1), nn.ReLU(),
                          nn.Conv2d(256, 512, 3, 2, 1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(512, 128, 1), nn.ReLU(),
                          nn.Conv2d(128, 256, 3, 2, 1), nn.ReLU())])
        self.regression_headers = nn.ModuleList([
            nn.Conv2d(512, 6 * 4, 3, padding=1), nn.Conv2d(1024, 6 * 4, 3, padding=1)])
        self.classification_headers = nn.ModuleList([
            nn.Conv2d(512, 6 * num_classes, 3, padding=1),
            nn.Conv2d(1024, 6 * num_classes, 3, padding=1)])


def ssd_model(seed):
    return randomize_(SSD(), seed)
