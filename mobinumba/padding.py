"""Padding rules: how many zeros a convolution adds before and after each spatial axis.

One function per rule gives (before, after) along one axis; everything else (output sizes,
the runner's padded input buffer, the PyTorch reference's explicit F.pad) derives from it:

- `torch`: PyTorch's symmetric `padding=(kernel - 1) // 2` on both sides.
- `tf_same`: TensorFlow's "SAME": output ceil(size / stride), total padding
  max((out - 1) * stride + kernel - size, 0), the smaller half before. A stride-2 3x3 conv on
  an even side pads (0, 1) where PyTorch pads (1, 1).

A new rule (Keras's explicit ZeroPadding2D before a `valid` conv, say) is one more function in
RULES; the file format's `padding` attribute takes the rule's name.
"""


def torch_pads(size, kernel, stride):
    """(before, after) of PyTorch's symmetric padding along one axis of `size`."""
    pad = (kernel - 1) // 2
    return pad, pad


def tf_same_pads(size, kernel, stride):
    """(before, after) of TensorFlow's SAME padding along one axis of `size`."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


RULES = {"torch": torch_pads, "tf_same": tf_same_pads}
PADDINGS = tuple(RULES)


def pads(size, kernel, stride, rule):
    """(before, after) zeros along one axis of `size` for a `kernel`-wide conv of `stride`."""
    try:
        return RULES[rule](size, kernel, stride)
    except KeyError:
        raise ValueError(f"unknown padding {rule!r}; expected one of {PADDINGS}") from None


def symmetric_pad(kernel, rule):
    """The zeros on every side when `rule` pads both sides alike whatever the input size
    (PyTorch's rule: what nn.Conv2d's `padding` can express), else None."""
    return (kernel - 1) // 2 if RULES.get(rule) is torch_pads else None


def conv_output_size(size, kernel, stride, rule):
    """(output size, padding before) along one axis."""
    before, after = pads(size, kernel, stride, rule)
    return (size + before + after - kernel) // stride + 1, before
