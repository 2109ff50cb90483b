"""Section 3: depthwise-separable vs standard 3x3 convolution, per block and whole network.

For each depthwise-separable block of the model, on its real input shape: (a) the naive direct
standard 3x3 conv, (b) the standard conv as im2col + our pointwise GEMM, (c) our depthwise +
pointwise pair, timed one call of each in turn. The paper's theoretical cost ratio of (c) to a
standard conv is 1/N + 1/Dk^2 (N output channels, Dk = 3). The whole-network row runs the
"Conv MobileNet" (every block a standard conv) in both ways against MobileNet.
"""
import numpy as np

from ..architecture import count
from ..graph import Workspace, build_ops
from ..ops.depthwise import DepthwiseConv
from ..ops.pointwise import PointwiseConv
from ..ops.stem import KIND as STEM
from ..threads import kernel_section
from .convnet import StandardConv, conv_mobilenet_workspace
from .synthetic import conv_mobilenet_specs, random_record, separable_blocks
from .timing import median, time_interleaved

KERNEL_SIZE = 3


def theoretical_ratio(out_channels):
    """The paper's cost of a depthwise-separable conv relative to a standard one: 1/N + 1/Dk^2."""
    return 1.0 / out_channels + 1.0 / KERNEL_SIZE ** 2


def compare_separable(model_file, size, batch, block_runs, network_runs, seed=0, progress=None):
    """The section's dict: `blocks` (one row per block), `network` (Conv MobileNet vs
    MobileNet) and the largest difference between the direct and im2col results.

    The standard convs get random weights (timing does not depend on their values); the
    depthwise and pointwise layers are the model's own. `progress("block i/n")` is called
    after each block.
    """
    info = model_file.info
    rng = np.random.default_rng(seed)
    specs = [record.spec for record in model_file.layers]
    records = {record.name: record for record in model_file.layers}
    # The Conv MobileNet: the model's layers with one random standard conv per block.
    conv_records = [random_record(spec, rng) if index > 0 and spec.op is STEM
                    else records[spec.name]
                    for index, spec in enumerate(conv_mobilenet_specs(specs))]
    block_convs = [record for record in conv_records[1:] if record.spec.op is STEM]
    # Input (height, width) of every layer: the previous layer's output.
    rows = count(specs, size, size, info.padding)
    inputs = {spec.name: (size, size) if index == 0 else rows[index - 1][1:3]
              for index, spec in enumerate(specs)}

    blocks, largest_difference = [], 0.0
    for (dw_spec, pw_spec), conv_record in zip(separable_blocks(specs), block_convs):
        row, difference = _compare_block(
            conv_record, records[dw_spec.name], records[pw_spec.name],
            (batch, *inputs[dw_spec.name]), info.activation_function, info.padding, block_runs,
            rng)
        row["block"] = len(blocks) + 1
        blocks.append(row)
        largest_difference = max(largest_difference, difference)
        if progress is not None:
            progress(f"block {len(blocks)}/{len(block_convs)}")
    network = _compare_network(model_file, conv_records, size, batch, network_runs, rng)
    return {"batch": batch, "size": size, "block_runs": block_runs,
            "network_runs": network_runs, "blocks": blocks, "network": network,
            "direct_vs_im2col_max_diff": largest_difference,
            "timing": "median of each method's runs, one call of each method in turn per "
                      "round after one warm-up round"}


def _compare_block(conv_record, dw_record, pw_record, input_shape, activation, padding, runs,
                   rng):
    """One block's row and the max |direct - im2col| relative to the output's scale."""
    batch, height, width = input_shape
    c_in, c_out, stride = (conv_record.spec.in_channels, conv_record.spec.out_channels,
                           conv_record.spec.stride)
    direct = StandardConv(conv_record, activation, padding, "direct")
    im2col = StandardConv(conv_record, activation, padding, "im2col")
    depthwise = DepthwiseConv(dw_record, activation, padding)
    pointwise = PointwiseConv(pw_record, activation, padding)

    x = rng.random((batch, height, width, c_in), dtype=np.float32)  # (N, H, W, Cin), >= 0
    out_shape = direct.output_shape(x.shape)  # (N, Ho, Wo, Cout)
    out_direct = np.empty(out_shape, dtype=np.float32)
    out_im2col = np.empty(out_shape, dtype=np.float32)
    middle = np.empty(depthwise.output_shape(x.shape), dtype=np.float32)  # (N, Ho, Wo, Cin)
    out_separable = np.empty(out_shape, dtype=np.float32)
    calls = {"direct": _call(*direct.bind(x, out_direct)),
             "im2col": _call(*im2col.bind(x, out_im2col)),
             "separable": _pair(_call(*depthwise.bind(x, middle)),
                                _call(*pointwise.bind(middle, out_separable)))}
    with kernel_section():
        seconds = time_interleaved(calls, runs)
    scale = max(1.0, float(np.abs(out_direct).max()))
    difference = float(np.abs(out_direct - out_im2col).max()) / scale

    _, out_h, out_w, _ = out_shape
    standard_macs = out_h * out_w * c_out * c_in * 9
    separable_macs = out_h * out_w * c_in * 9 + out_h * out_w * c_in * c_out
    ms = {name: median(values) * 1e3 for name, values in seconds.items()}
    ratio = theoretical_ratio(c_out)
    return {"input": f"{height}x{width}x{c_in}", "in_channels": c_in, "out_channels": c_out,
            "stride": stride, "standard_macs": standard_macs * batch,
            "separable_macs": separable_macs * batch,
            "theoretical_ratio": ratio, "theoretical_speedup": 1.0 / ratio,
            "direct_ms": ms["direct"], "im2col_ms": ms["im2col"],
            "separable_ms": ms["separable"],
            "direct_speedup": ms["direct"] / ms["separable"],
            "im2col_speedup": ms["im2col"] / ms["separable"]}, difference


def _compare_network(model_file, conv_records, size, batch, runs, rng):
    """Conv MobileNet (direct and im2col) against MobileNet, whole forward passes."""
    info = model_file.info
    specs = [record.spec for record in model_file.layers]
    conv_specs = [record.spec for record in conv_records]
    activation = info.activation_function
    workspaces = {
        "direct": conv_mobilenet_workspace(conv_records, activation, info.padding, "direct",
                                           batch, size, size),
        "im2col": conv_mobilenet_workspace(conv_records, activation, info.padding, "im2col",
                                           batch, size, size),
        "separable": Workspace(build_ops(model_file.layers, activation, info.padding),
                               batch, size, size),
    }
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    for workspace in workspaces.values():
        np.copyto(workspace.input, x)
    with kernel_section():
        seconds = time_interleaved({name: ws.run for name, ws in workspaces.items()}, runs)
    ms = {name: median(values) * 1e3 for name, values in seconds.items()}
    mobilenet_macs = sum(row[4] for row in count(specs, size, size, info.padding))
    conv_macs = sum(row[4] for row in count(conv_specs, size, size, info.padding))
    ratio = mobilenet_macs / conv_macs
    return {"mobilenet_macs": mobilenet_macs * batch, "conv_mobilenet_macs": conv_macs * batch,
            "mobilenet_params": sum(spec.params for spec in specs),
            "conv_mobilenet_params": sum(spec.params for spec in conv_specs),
            "theoretical_ratio": ratio, "theoretical_speedup": 1.0 / ratio,
            "direct_ms": ms["direct"], "im2col_ms": ms["im2col"],
            "separable_ms": ms["separable"],
            "direct_speedup": ms["direct"] / ms["separable"],
            "im2col_speedup": ms["im2col"] / ms["separable"]}


def _call(kernel, args):
    return lambda: kernel(*args)


def _pair(first, second):
    def both():
        first()
        second()
    return both
