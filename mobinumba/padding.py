"""Padding rules: how many zeros a convolution adds before and after each spatial axis.

One function per rule gives (before, after) along one axis; everything else (output sizes,
the runner's padded input buffer, the PyTorch reference's explicit F.pad) derives from it:

- `torch`: PyTorch's symmetric `padding=(kernel - 1) // 2` on both sides.
- `tf_same`: TensorFlow's "SAME": output ceil(size / stride), total padding
  max((out - 1) * stride + kernel - size, 0), the smaller half before. A stride-2 3x3 conv on
  an even side pads (0, 1) where PyTorch pads (1, 1).
- `keras`: keras.applications.MobileNet (keras/src/applications/mobilenet.py): the stem is
  Conv2D(strides=2, padding="same"), i.e. tf_same; a stride-2 depthwise conv is
  ZeroPadding2D(((0, 1), (0, 1))) then a "valid" conv, (0, 1) whatever the size; stride-1
  convs are "same". Equal to tf_same on even sides; on an odd side tf_same pads a stride-2
  depthwise conv (1, 1) and gives one more output row.

A rule is a function (size, kernel, stride, stem) -> (before, after), `stem` saying whether
the conv is the one on the network's RGB input (only `keras` tells them apart); the file
format's `padding` attribute takes the rule's name.
"""


def torch_pads(size, kernel, stride, stem=False):
    """(before, after) of PyTorch's symmetric padding along one axis of `size`."""
    pad = (kernel - 1) // 2
    return pad, pad


def tf_same_pads(size, kernel, stride, stem=False):
    """(before, after) of TensorFlow's SAME padding along one axis of `size`."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def keras_pads(size, kernel, stride, stem=False):
    """(before, after) of keras.applications.MobileNet along one axis of `size`: SAME for the
    stem and for stride 1, ZeroPadding2D(((0, 1), (0, 1))) before a stride-2 depthwise conv."""
    if stem or stride == 1:
        return tf_same_pads(size, kernel, stride)
    return 0, 1


RULES = {"torch": torch_pads, "tf_same": tf_same_pads, "keras": keras_pads}
PADDINGS = tuple(RULES)


def pads(size, kernel, stride, rule, stem=False):
    """(before, after) zeros along one axis of `size` for a `kernel`-wide conv of `stride`;
    `stem`: the conv reads the network's RGB input."""
    try:
        return RULES[rule](size, kernel, stride, stem)
    except KeyError:
        raise ValueError(f"unknown padding {rule!r}; expected one of {PADDINGS}") from None


def symmetric_pad(kernel, rule):
    """The zeros on every side when `rule` pads both sides alike whatever the input size
    (PyTorch's rule: what nn.Conv2d's `padding` can express), else None."""
    return (kernel - 1) // 2 if RULES.get(rule) is torch_pads else None


def conv_output_size(size, kernel, stride, rule, stem=False):
    """(output size, padding before) along one axis."""
    before, after = pads(size, kernel, stride, rule, stem)
    return (size + before + after - kernel) // stride + 1, before
