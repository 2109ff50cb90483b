"""End-to-end benchmarks: a random-weight MobileNetV1 per width (224x224) and per input
resolution (width 1.0), batch 1, through the public Model call. The paper's Tables 6 and 7 as
timings. Each model runs once untimed before it is measured."""
import numpy as np
import pytest

from mobinumba.bench.synthetic import random_model_file
from mobinumba.model import Model

WIDTHS = (1.0, 0.75, 0.5, 0.25)
RESOLUTIONS = (224, 192, 160, 128)


def run(benchmark, group, width, size):
    model = Model(random_model_file(width))
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    benchmark.group = group
    model(x)
    benchmark(model, x)


@pytest.mark.parametrize("width", WIDTHS, ids=lambda w: f"width{w:g}")
def test_network_width(benchmark, width):
    run(benchmark, "network by width, 224x224", width, 224)


@pytest.mark.parametrize("size", RESOLUTIONS, ids=lambda s: f"{s}x{s}")
def test_network_resolution(benchmark, size):
    run(benchmark, "network by resolution, width 1.0", 1.0, size)
