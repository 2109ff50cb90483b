"""PyTorch MobileNetV1 modules in the two source layouts, written independently of mobinumba.

TimmMobileNetV1 reproduces timm's key names (conv_stem, bn1, blocks.S.B.{conv_dw, bn1,
conv_pw, bn2}, optional conv_head + bn2, classifier); ClassicMobileNet the `pytorch-mobilenet`
sequential layout (model.N.M, fc). Both take the activation as a module class so either
layout can be built with ReLU or ReLU6. `randomize_` gives every BN non-trivial statistics.
"""
import torch
from torch import nn

STAGES = ((64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 6, 2), (1024, 2, 2))  # (out, n, stride)


def width(channels, multiplier):
    return max(int(channels * multiplier), 8)


class DepthwiseSeparable(nn.Module):
    """timm's DepthwiseSeparableConv as used by 'dsa' blocks: act after both BNs, no skip."""

    def __init__(self, cin, cout, stride, act):
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.act1 = act()
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = act()

    def forward(self, x):
        x = self.act1(self.bn1(self.conv_dw(x)))
        return self.act2(self.bn2(self.conv_pw(x)))


class TimmMobileNetV1(nn.Module):
    def __init__(self, multiplier=1.0, num_classes=1000, head_channels=0, act=nn.ReLU6):
        super().__init__()
        stem = width(32, multiplier)
        self.conv_stem = nn.Conv2d(3, stem, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.act1 = act()
        stages, cin = [], stem
        for base, repeats, stride in STAGES:
            cout = width(base, multiplier)
            blocks = []
            for index in range(repeats):
                blocks.append(DepthwiseSeparable(cin, cout, stride if index == 0 else 1, act))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        if head_channels:
            self.conv_head = nn.Conv2d(cin, head_channels, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(head_channels)
            self.act2 = act()
            cin = head_channels
        self.head_channels = head_channels
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        if self.head_channels:
            x = self.act2(self.bn2(self.conv_head(x)))
        return self.classifier(x.mean(dim=(2, 3)))


class ClassicMobileNet(nn.Module):
    def __init__(self, multiplier=1.0, num_classes=1000, act=nn.ReLU):
        super().__init__()

        def conv_bn(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                                 nn.BatchNorm2d(cout), act())

        def conv_dw(cin, cout, stride):
            return nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                nn.BatchNorm2d(cin), act(),
                nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout), act())

        layers, cin = [conv_bn(3, width(32, multiplier), 2)], width(32, multiplier)
        for base, repeats, stride in STAGES:
            for index in range(repeats):
                cout = width(base, multiplier)
                layers.append(conv_dw(cin, cout, stride if index == 0 else 1))
                cin = cout
        self.model = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.model(x).mean(dim=(2, 3)))


def randomize_(model, seed):
    """Random conv weights (He-like scale) and BN stats away from identity, in place."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator)
                                    * (2.0 / fan_in) ** 0.5)
            elif isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(0.5 + torch.rand(c, generator=generator))
                module.bias.copy_(0.2 * torch.randn(c, generator=generator) + 0.1)
                module.running_mean.copy_(0.3 * torch.randn(c, generator=generator) + 0.2)
                module.running_var.copy_(0.5 + torch.rand(c, generator=generator) * 1.5)
            elif isinstance(module, nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator)
                                    * module.in_features ** -0.5)
                module.bias.copy_(0.1 * torch.randn(module.out_features, generator=generator))
    return model.eval()
