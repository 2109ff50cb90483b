"""MobileNetV1's per-layer kernel shapes, one list per layer type (like XNNPACK's per-model
shape lists in its bench/*.h files), derived from mobinumba.architecture so they cannot drift
from the network the runtime executes.

    python bench/shapes.py          # print the lists for width 1.0, 224x224, batch 1
"""
from typing import NamedTuple

from mobinumba.architecture import count, mobilenet_v1_specs


class LayerShape(NamedTuple):
    """One layer's kernel problem: input (n, height, width, c_in) -> c_out with stride."""

    layers: tuple  # names of the layers with this shape
    n: int
    height: int
    width: int
    c_in: int
    c_out: int
    stride: int

    @property
    def id(self):
        """A short test id, e.g. '112x112x32-64-s1'."""
        return f"{self.height}x{self.width}x{self.c_in}-{self.c_out}-s{self.stride}"


def layer_shapes(width_multiplier=1.0, size=224, batch=1, standard_convs=False):
    """{kind: [LayerShape]} of MobileNetV1's weight layers, distinct shapes in network order.

    kind: conv (the stem; with standard_convs=True also each block's standard 3x3 conv),
    dwconv, pwconv, dense.
    """
    specs = mobilenet_v1_specs(width_multiplier, standard_convs=standard_convs)
    shapes = {}
    height = width = size
    for spec, out_h, out_w, _, _ in count(specs, size, size):
        if spec.kind != "pool":
            key = (batch, height, width, spec.in_channels, spec.out_channels, spec.stride)
            by_key = shapes.setdefault(spec.kind, {})
            by_key[key] = by_key.get(key, ()) + (spec.name,)
        height, width = out_h, out_w
    return {kind: [LayerShape(names, *key) for key, names in by_key.items()]
            for kind, by_key in shapes.items()}


if __name__ == "__main__":
    for kind, rows in layer_shapes().items():
        print(f"{kind}:")
        for row in rows:
            print(f"  {row.id:<24} {', '.join(row.layers)}")
