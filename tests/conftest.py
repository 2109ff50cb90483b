"""Shared fixtures: reference checkpoints made on the fly, converted once per session.

Numba compiles each kernel once per process (and caches machine code on disk), so tests
share converted files and models through session-scoped fixtures instead of rebuilding them.
"""
import copy
import json
import os
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))

from reference_models import ClassicMobileNet, TimmMobileNetV1, randomize_  # noqa: E402

from mobinumba.cli import main  # noqa: E402

# Under `pytest -n 2` two workers share the 2 cores: one torch thread each. Two threads each
# oversubscribed the cores when both workers ran PyTorch references at once (test_parity):
# torch's OpenMP threads waited for descheduled ones and the run stalled for minutes.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


def build_reference(layout, multiplier, activation, head, num_classes=1000, seed=0):
    """A randomized reference nn.Module in `layout` with the given options."""
    act = torch.nn.ReLU6 if activation == "relu6" else torch.nn.ReLU
    if layout == "timm":
        head_channels = max(1024, int(1024 * multiplier)) if head else 0
        model = TimmMobileNetV1(multiplier, num_classes, head_channels, act)
    else:
        assert not head, "the classic layout has no head conv"
        model = ClassicMobileNet(multiplier, num_classes, act)
    return randomize_(model, seed)


def save_checkpoint(model, path, fmt):
    """Save a state dict as torch.save (.pth) or safetensors; returns the path."""
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    else:
        torch.save(model.state_dict(), path)
    return path


def run_cli(*argv):
    """Run the CLI in-process; returns its exit status."""
    return main([str(a) for a in argv])


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("mobinumba")


@pytest.fixture(scope="session")
def timm_model(workdir):
    """(reference module, converted .h5 path) for timm width 1.0, relu6, 1000 classes."""
    model = build_reference("timm", 1.0, "relu6", head=False)
    checkpoint = save_checkpoint(model, str(workdir / "timm_100.pth"), "pth")
    output = workdir / "timm_100.h5"
    assert run_cli("convert", checkpoint, "-o", output) == 0
    return model, str(output)


@pytest.fixture(scope="session")
def target_children(tmp_path_factory):
    """The children built for other compile targets, one per target (tests/target_children.py)."""
    from target_children import TargetChildren

    return TargetChildren(str(tmp_path_factory.mktemp("targets")))


def torch_logits(model, x):
    """Reference logits of a torch module for a numpy batch, by a float64 forward pass."""
    with torch.no_grad():
        return copy.deepcopy(model).double()(torch.from_numpy(x).double()).numpy()


def random_batch(n, size, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def pytest_terminal_summary(terminalreporter):
    """Print the fuzz statistics (cases, outcomes, distinct error classes, time); with
    MOBINUMBA_FUZZ_REPORT=FILE also write them, every class listed, as JSON."""
    from fuzzing import STATS

    if not STATS.cases:
        return
    terminalreporter.section("fuzzing")
    for line in STATS.summary_lines():
        terminalreporter.write_line(line)
    report = os.environ.get("MOBINUMBA_FUZZ_REPORT")
    if report:
        with open(report, "w", encoding="utf-8") as stream:
            json.dump(STATS.as_json(), stream, indent=2, ensure_ascii=False)


# Class names of the small model's labels file (10 classes).
SMALL_LABELS = ["apple", "bee", "cat", "dog", "eel", "fox", "gnu", "hen", "ibis", "jay"]


@pytest.fixture(scope="session")
def small_model(workdir):
    """(reference module, converted .h5 path): timm width 0.25, 10 labelled classes, 64x64
    input, quick enough for running many images through in-process and on Dask workers."""
    model = build_reference("timm", 0.25, "relu6", head=False, num_classes=10, seed=5)
    checkpoint = save_checkpoint(model, str(workdir / "small.safetensors"), "safetensors")
    labels = workdir / "small_labels.txt"
    labels.write_text("\n".join(SMALL_LABELS) + "\n")
    output = workdir / "small.h5"
    assert run_cli("convert", checkpoint, "-o", output, "--input-size", 64,
                   "--labels", labels) == 0
    return model, str(output)


def make_photos(directory, count, seed=0):
    """`count` small noisy-gradient images of varied sizes, modes and formats under
    `directory` (some in a subfolder); returns their paths in sorted order."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    formats = [("RGB", "jpg"), ("L", "png"), ("RGBA", "png"), ("RGB", "bmp"), ("P", "gif")]
    paths = []
    for index in range(count):
        width, height = (int(v) for v in rng.integers(40, 120, 2))
        ramp = np.linspace(0, 255, width)[None, :, None] * rng.random(3)
        pixels = np.clip(ramp + rng.normal(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)
        mode, suffix = formats[index % len(formats)]
        folder = directory / "sub" if index % 3 == 2 else directory
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"photo{index:03d}.{suffix}"
        Image.fromarray(pixels).convert(mode).save(path)
        paths.append(str(path))
    return sorted(paths)
