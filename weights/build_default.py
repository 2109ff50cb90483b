"""Build the shipped model, weights/mobilenet_v1_1.0_224_imagenet.h5, from its source graph.

    pip download --no-deps nudity==0.2.3 -d /tmp/nudity
    tar -xzf /tmp/nudity/nudity-0.2.3.tar.gz -C /tmp/nudity
    python weights/build_default.py /tmp/nudity/nudity-0.2.3/nudity/files/retrained_graph.pb

The graph is checked against its known SHA-256, converted by `mobinumba convert`'s code with
the tf-slim layout (SAME padding, batch-norm epsilon and ReLU6 from the graph; the ImageNet
logits, not the package's retrained 2-class head: --head imagenet; 1001 labels: "background" +
ImageNet-1k; TF-slim's preprocessing), and compared with a PyTorch forward pass
over the graph's own constants with TensorFlow's padding before the file is written (needs
torch). weights/README.md records where the graph comes from and its licences.
"""
import argparse
import os
import sys

from mobinumba.convert import convert_checkpoint
from mobinumba.convert.checkpoint import sha256_of

SOURCE_SHA256 = "3b90af536f810f5f75e9f6d431bc2e8a3c4fc2ff4f693aa0dd4ae429816f8735"
OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "mobilenet_v1_1.0_224_imagenet.h5")


def main(argv=None):
    """Check, convert and self-check the graph; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graph", help="path of nudity-0.2.3's nudity/files/retrained_graph.pb")
    parser.add_argument("-o", "--output", default=OUTPUT, help=f"default: {OUTPUT}")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.graph):
        parser.error(f"{args.graph}: no such file")
    digest = sha256_of(args.graph)
    if digest != SOURCE_SHA256:
        parser.error(f"{args.graph}: sha256 {digest}, expected {SOURCE_SHA256}")
    report = convert_checkpoint(args.graph, args.output, layout="tf-slim", head="imagenet",
                                check=True, tolerance=1e-4, force=True)
    print(f"wrote {report.output} ({os.path.getsize(report.output):,} bytes): "
          f"width {report.width_multiplier:g}, {report.num_classes} classes, "
          f"{report.num_layers} weight layers, {report.activation}, padding {report.padding}, "
          f"bn eps {report.bn_eps:g}")
    print(f"ignored constants outside MobilenetV1/: {', '.join(report.ignored)}")
    print(f"self-check against PyTorch with TF padding: max |logit difference| "
          f"{report.check_difference:.3g} (allowed {report.check_allowed:.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
