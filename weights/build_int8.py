"""Build the shipped int8 model, mobilenet_v1_1.0_224_imagenet_int8.h5, from the float32 one.

No calibration set can be downloaded here, so the calibration images are the three sample
photos of weights/samples/ and variants of them (mirrored, and the four corners and centre
cropped to 70%: 21 images), written to a temporary directory and passed to
`mobinumba quantize --calibrate`. Then the int8 model's top-1 is compared with the float32
one's on the three photos themselves. Usage: python weights/build_int8.py [--percentile P]
"""
import argparse
import os
import sys
import tempfile

from PIL import Image, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "mobilenet_v1_1.0_224_imagenet.h5")
TARGET = os.path.join(HERE, "mobilenet_v1_1.0_224_imagenet_int8.h5")
SAMPLES = os.path.join(HERE, "samples")
CROP = 0.7


def calibration_images(directory):
    """Write each sample photo, its mirror image and five 70% crops into `directory`."""
    for name in sorted(os.listdir(SAMPLES)):
        image = Image.open(os.path.join(SAMPLES, name)).convert("RGB")
        stem = os.path.splitext(name)[0]
        width, height = image.size
        w, h = int(width * CROP), int(height * CROP)
        variants = {"full": image, "mirror": ImageOps.mirror(image)}
        for label, (left, top) in {"tl": (0, 0), "tr": (width - w, 0), "bl": (0, height - h),
                                   "br": (width - w, height - h),
                                   "centre": ((width - w) // 2, (height - h) // 2)}.items():
            variants[label] = image.crop((left, top, left + w, top + h))
        for label, variant in variants.items():
            variant.save(os.path.join(directory, f"{stem}_{label}.png"))


def main():
    from mobinumba.cli import main as cli
    from mobinumba.model import load

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--percentile", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        calibration_images(directory)
        extra = ["--percentile", args.percentile] if args.percentile else []
        status = cli(["quantize", SOURCE, "-o", TARGET, "--force", "--calibrate", directory,
                      *extra])
    if status:
        return status
    photos = [os.path.join(SAMPLES, name) for name in sorted(os.listdir(SAMPLES))]
    float_top = [p[0] for p in load(SOURCE).predict(photos, topk=1)]
    int8_top = [p[0] for p in load(TARGET).predict(photos, topk=1)]
    for photo, a, b in zip(photos, float_top, int8_top):
        print(f"{os.path.basename(photo)}: float32 {a.label} ({a.index}, {a.probability:.4f}), "
              f"int8 {b.label} ({b.index}, {b.probability:.4f})")
    agree = sum(a.index == b.index for a, b in zip(float_top, int8_top))
    print(f"top-1 agreement on the sample photos: {agree} of {len(photos)}; "
          f"{TARGET}: {os.path.getsize(TARGET):,} bytes")
    return 0 if agree == len(photos) else 1


if __name__ == "__main__":
    sys.exit(main())
