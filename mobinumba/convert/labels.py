"""Class names stored with converted weights."""
import importlib.resources
import os

from ..errors import CheckpointError
from ..weights import text_problem


# TF-slim's ImageNet classifiers have 1001 outputs: index 0 is this, then the 1000 classes.
BACKGROUND = "background"


def imagenet_labels(num_classes=1000):
    """The ImageNet-1k class names in index order (shipped as package data).

    num_classes=1001 gives TF-slim's order: "background", then the 1000 classes.
    """
    text = (importlib.resources.files("mobinumba") / "data" / "imagenet_classes.txt").read_text(
        encoding="utf-8")
    labels = text.splitlines()
    return [BACKGROUND] + labels if num_classes == 1001 else labels


def resolve_labels(option, num_classes):
    """Labels for --labels: 'auto' (ImageNet for 1000 or 1001 classes, else none),
    'imagenet', 'none', or a file with one label per line. The count must equal num_classes."""
    if option == "none" or (option == "auto" and num_classes not in (1000, 1001)):
        return None
    if num_classes == 0:
        raise CheckpointError(f"--labels {option}: the checkpoint has no classifier (a "
                              f"backbone), so it has no classes to name")
    if option in ("auto", "imagenet"):
        labels, origin = imagenet_labels(num_classes), "imagenet"
    else:
        if not os.path.isfile(option):
            raise CheckpointError(f"--labels {option}: no such file")
        try:
            with open(option, encoding="utf-8") as stream:
                labels = stream.read().splitlines()
        except UnicodeDecodeError:
            raise CheckpointError(f"--labels {option}: not a UTF-8 text file") from None
        origin = option
    for number, label in enumerate(labels, start=1):
        problem = text_problem(label)
        if problem:
            raise CheckpointError(f"--labels {origin}: line {number} {problem}")
    if len(labels) != num_classes:
        raise CheckpointError(f"--labels {origin}: {len(labels)} labels, but the checkpoint "
                              f"has {num_classes} classes")
    return labels
