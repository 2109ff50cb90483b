"""What a forward pass and predict() really allocate, against what the model says it needs.

tracemalloc sees every NumPy array (NumPy reports its allocations to it); the kernels allocate
nothing themselves (their scratch lives on the stack), so the peak traced during a call is
the memory the call took.
"""
import tracemalloc

import pytest

import mobinumba
import mobinumba.model
from conftest import make_photos, random_batch
from mobinumba.graph import workspace_bytes

SIZE = 64
INPUT_BYTES = 4 * 3 * SIZE * SIZE  # one preprocessed image, float32
PYTHON_OBJECTS = 64 * 2 ** 10  # the Workspace object, its kernel argument tuples, ...


def peak_allocated(function):
    """Bytes allocated by function() at its peak, beyond what was allocated before."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        function()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def weights(small_model):
    mobinumba.load(small_model[1])(random_batch(1, SIZE))  # kernels compiled or loaded
    return small_model[1]


@pytest.mark.parametrize("n", [1, 5, 16])
def test_a_forward_pass_allocates_what_workspace_bytes_says(weights, n):
    model = mobinumba.load(weights)
    x = random_batch(n, SIZE)
    needed = workspace_bytes(model._ops, n, SIZE, SIZE)
    first = peak_allocated(lambda: model(x))
    # On top of the buffers: the input's finiteness mask (1 byte a value) and the logits copy.
    checks = x.size + 4 * n * model.num_classes
    assert needed <= first <= needed + checks + PYTHON_OBJECTS, (first, needed)
    again = peak_allocated(lambda: model(x))  # the same shape: the buffers are reused
    assert again <= checks + PYTHON_OBJECTS // 4, again


def test_predict_holds_one_batch_of_images_per_images_per_batch(weights, tmp_path,
                                                                monkeypatch):
    """With the memory limit at 3 images' buffers, predict() on 10 photos runs batches of 3:
    its peak is the limit plus the images of one batch held while preprocessing and stacking
    (twice each, and a 1-byte mask), however many photos it is given."""
    model = mobinumba.load(weights)
    one_image = workspace_bytes(model._ops, 1, SIZE, SIZE) + INPUT_BYTES
    limit = 3 * one_image
    monkeypatch.setattr(mobinumba.model, "MAX_WORKSPACE_BYTES", limit)
    assert model.images_per_batch() == 3
    photos = make_photos(tmp_path, 10, seed=6)
    peak = peak_allocated(lambda: model.predict(photos))
    held = 3 * (2 * INPUT_BYTES + INPUT_BYTES // 4)
    assert peak <= limit + held + PYTHON_OBJECTS, (peak, limit)
    assert peak >= workspace_bytes(model._ops, 3, SIZE, SIZE)
