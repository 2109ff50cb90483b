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


@pytest.mark.parametrize("config,fmt", CASES)
def test_logits_match_pytorch(config, fmt, workdir):
    layout, width, activation, head = config
    reference = build_reference(layout, width, activation, head, seed=CONFIGS.index(config))
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
            x = random_batch(batch, size, seed=size + batch)
            expected = torch_logits(reference, x)
            actual = model(x)
            assert actual.shape == expected.shape == (batch, 1000)
            difference = float(np.abs(actual - expected).max())
            allowed = TOLERANCE * max(1.0, float(np.abs(expected).max()))
            assert difference <= allowed, f"size {size} batch {batch}: {difference} > {allowed}"
            np.testing.assert_array_equal(actual.argmax(axis=1), expected.argmax(axis=1),
                                          err_msg=f"top-1 differs at size {size} batch {batch}")
            worst = max(worst, difference)
    print(f"{name}: max |logit difference| {worst:.3g}")
