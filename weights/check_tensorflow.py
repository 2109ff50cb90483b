"""Compare the shipped model with TensorFlow itself running the source graph (optional check).

    python weights/check_tensorflow.py GRAPH.pb --mobinumba-python /path/to/venv/bin/python

Run this with a Python that has tensorflow (any 2.x; it runs the frozen graph through
tf.compat.v1) and numpy. mobinumba's side runs in `--mobinumba-python` (a Python with
mobinumba installed), so the two need not share an environment. Two comparisons:
- preprocessing: mobinumba's transform of each sample photo against TF-slim's
  inception_preprocessing.preprocess_for_eval (tf.image.central_crop(0.875), then
  tf.compat.v1.image.resize_bilinear to 224x224, then (x - 0.5) * 2);
- the network: the same inputs (mobinumba's preprocessing, plus two random images) fed to
  both, from the graph's `input` placeholder (N, 224, 224, 3) in [-1, 1] to its
  `MobilenetV1/Logits/SpatialSqueeze` logits (N, 1001).
"""
import argparse
import glob
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
MOBINUMBA_SIDE = """
import json, sys
import numpy as np
import mobinumba
paths, inputs, outputs = json.loads(sys.argv[1])
model = mobinumba.load()
x = np.stack([model.preprocess(p) for p in paths])
x = np.concatenate([x, np.random.default_rng(0).uniform(-1, 1, (2, 3, 224, 224))]).astype("f4")
np.save(inputs, x)
np.save(outputs, model(x))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graph")
    parser.add_argument("--mobinumba-python", default=sys.executable)
    args = parser.parse_args()
    import tensorflow as tf

    paths = sorted(glob.glob(os.path.join(HERE, "samples", "*")))
    inputs, outputs = "/tmp/mobinumba_tf_inputs.npy", "/tmp/mobinumba_tf_logits.npy"
    subprocess.run([args.mobinumba_python, "-c", MOBINUMBA_SIDE,
                    json.dumps([paths, inputs, outputs])], check=True)
    x, ours = np.load(inputs), np.load(outputs)  # (N, 3, 224, 224), (N, 1001)
    for path, image in zip(paths, x):
        difference = np.abs(image.transpose(1, 2, 0) - _tf_slim_eval_preprocessing(tf, path))
        print(f"{os.path.basename(path)}: max |preprocessing difference| mobinumba vs "
              f"TF-slim: {difference.max():.3g}")
    graph_def = tf.compat.v1.GraphDef()
    with open(args.graph, "rb") as stream:
        graph_def.ParseFromString(stream.read())
    with tf.Graph().as_default() as graph:
        tf.compat.v1.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as session:
            # The graph's input placeholder has a fixed batch of 1.
            theirs = np.stack([session.run("MobilenetV1/Logits/SpatialSqueeze:0",
                                           {"input:0": image[None].transpose(0, 2, 3, 1)})
                               for image in x]).reshape(ours.shape)
    difference = np.abs(ours - theirs).max()
    print(f"max |logit difference| mobinumba vs TensorFlow: {difference:.3g} "
          f"(max |logit| {np.abs(theirs).max():.3g})")
    names = [os.path.basename(p) for p in paths] + ["random 0", "random 1"]
    for name, a, b in zip(names, ours, theirs):
        print(f"{name}: top-5 mobinumba {np.argsort(-a)[:5].tolist()}, "
              f"TensorFlow {np.argsort(-b)[:5].tolist()}")
    return 0


def _tf_slim_eval_preprocessing(tf, path, size=224, central_fraction=0.875):
    """(size, size, 3) float32: inception_preprocessing.preprocess_for_eval of one photo."""
    with open(path, "rb") as stream:
        image = tf.io.decode_image(stream.read(), channels=3, expand_animations=False)
    image = tf.image.convert_image_dtype(image, tf.float32)
    image = tf.image.central_crop(image, central_fraction=central_fraction)
    image = tf.compat.v1.image.resize_bilinear(image[None], [size, size], align_corners=False)
    return ((image[0] - 0.5) * 2.0).numpy()


if __name__ == "__main__":
    sys.exit(main())
