"""End to end against PyTorch: reference modules -> checkpoint -> `mobinumba convert` -> run.

For every layout x width x activation x head variant x file format: max |logit difference|
<= 1e-4 * max(1, max |logit|) and identical top-1, on inputs 224, 160, 128 and 225, batch 1
and 4. The reference is the nn.Module itself (float64 forward), not the converter's own
functional check.
"""
import numpy as np
import pytest

import mobinumba
from conftest import build_reference, random_batch, run_cli, save_checkpoint, torch_logits

WIDTHS = (1.0, 0.75, 0.5, 0.25)
SIZES = (224, 160, 128, 225)
BATCHES = (1, 4)
TOLERANCE = 1e-4

CONFIGS = (
    [("timm", w, act, head) for w in WIDTHS for act in ("relu6", "relu") for head in (False, True)]
    + [("classic", w, act, False) for w in WIDTHS for act in ("relu", "relu6")]
)


def config_id(config):
    layout, width, activation, head = config
    return f"{layout}-w{width}-{activation}{'-head' if head else ''}"


# The fast tier's subset (`pytest -m "not slow"`): both layouts, activations and formats, the
# head conv, the smallest and the full width; the other 43 cases are marked slow.
FAST = {"timm-w0.25-relu6-pth", "timm-w0.5-relu-head-safetensors", "timm-w1.0-relu6-safetensors",
        "classic-w0.25-relu-safetensors", "classic-w0.75-relu6-pth"}
CASES = [pytest.param(config, fmt, id=f"{config_id(config)}-{fmt}",
                      marks=() if f"{config_id(config)}-{fmt}" in FAST else pytest.mark.slow)
         for config in CONFIGS for fmt in ("pth", "safetensors")]


class References:
    """The float64 PyTorch logits per (config, size, batch), computed once per config and
    shared by its two file formats: both convert the same module (same seed), so the
    reference is the same; only the checkpoint written and converted differs.

    Why: the float64 forward passes were ~85% of this file's time (cProfile of two cases:
    75 of 87 s in torch.conv2d), and each config ran them twice, once per format.
    """

    def __init__(self):
        self.config = None
        self.module = None
        self.logits = {}

    def module_for(self, config):
        """The randomized reference nn.Module of `config` (built once while it is current)."""
        if config != self.config:
            layout, width, activation, head = config
            self.config = config
            self.module = build_reference(layout, width, activation, head,
                                          seed=CONFIGS.index(config))
            self.logits = {}
        return self.module

    def expected(self, config, size, batch):
        """(batch, 1000) float64 logits of `config`'s module on random_batch(batch, size)."""
        module = self.module_for(config)
        if (size, batch) not in self.logits:
            # Every batch of this size in one forward pass (half the torch calls): the
            # images are independent in eval mode, each row is its own image's logits.
            inputs = [input_batch(size, n) for n in BATCHES]
            logits = torch_logits(module, np.concatenate(inputs))
            starts = np.cumsum([0] + [len(x) for x in inputs])
            for n, start, stop in zip(BATCHES, starts[:-1], starts[1:]):
                self.logits[size, n] = logits[start:stop]
        return self.logits[size, batch]


def input_batch(size, batch):
    return random_batch(batch, size, seed=size + batch)


@pytest.fixture(scope="module")
def references():
    # Parametrize order puts a config's two formats next to each other, so only the current
    # config's logits are kept (a few KB), never the whole matrix's modules.
    return References()


@pytest.mark.parametrize("config,fmt", CASES)
def test_logits_match_pytorch(config, fmt, workdir, references):
    layout, width, activation, head = config
    reference = references.module_for(config)
    name = f"{config_id(config)}.{fmt}"
    checkpoint = save_checkpoint(reference, str(workdir / name), fmt)
    output = workdir / f"{name}.h5"
    assert run_cli("convert", checkpoint, "-o", output, "--activation", activation) == 0
    model = mobinumba.load(output)
    assert model.info.activation == activation
    assert model.info.source_layout == layout
    assert len(model.layers) == 28 + head
    worst = 0.0
    for size in SIZES:
        for batch in BATCHES:
            x = input_batch(size, batch)
            expected = references.expected(config, size, batch)
            actual = model(x)
            assert actual.shape == expected.shape == (batch, 1000)
            difference = float(np.abs(actual - expected).max())
            allowed = TOLERANCE * max(1.0, float(np.abs(expected).max()))
            assert difference <= allowed, f"size {size} batch {batch}: {difference} > {allowed}"
            np.testing.assert_array_equal(actual.argmax(axis=1), expected.argmax(axis=1),
                                          err_msg=f"top-1 differs at size {size} batch {batch}")
            worst = max(worst, difference)
    print(f"{name}: max |logit difference| {worst:.3g}")
