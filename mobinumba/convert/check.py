"""The converter's self-check: the written file against PyTorch on the source tensors.

The reference is mobinumba.reference's PyTorch network in float64 over the records taken from
the source (its own tensors, batch norm unfolded, PyTorch's grouped convolution for the
depthwise layers), then a graph's retrain.py head applied to its logits as the graph does
(retrained.apply_head): none of the runtime's folding, packing or kernels is involved, nor
the converter's folding of the head into the classifier. Its activation and padding are the
source's own where the source states them (a Keras model), so a file written with others
fails instead of agreeing with itself.
"""
import numpy as np

from ..errors import CheckpointError, NumericError
from .retrained import apply_head


def torch_available():
    """True when torch can be imported (the self-check needs it)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def check_conversion(model_path, records, info, tolerance, activation=None, padding=None,
                     batch=2, seed=0, head=None):
    """Max |logit difference| between the runtime on `model_path` and the torch reference
    (the pooled features for a model without classifier).

    The reference runs `activation` and `padding`, what the source states (default: the
    file's own), so a file that would run anything else fails. records: the source's layers,
    unfolded; head: a retrained.RetrainedHead to apply to their logits, or None.

    Raises CheckpointError when it exceeds tolerance * max(1, max |reference logit|).
    Returns (max difference, allowed difference).
    """
    from ..model import load
    from ..reference import reference_logits

    rng = np.random.default_rng(seed)
    size = info.input_size
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    activation = info.activation_function if activation is None else activation
    padding = info.padding if padding is None else padding
    expected = reference_logits(records, activation, padding, x)
    if head is not None:
        expected = apply_head(expected, head)
    try:
        actual = load(model_path)(x)
    except NumericError as error:
        raise CheckpointError(f"self-check failed: {error}; the output was not "
                              f"written") from None
    difference = float(np.abs(actual - expected).max())
    allowed = tolerance * max(1.0, float(np.abs(expected).max()))
    if not difference <= allowed:
        differs = [f"{what} {ours} where the source runs {theirs}"
                   for what, ours, theirs in (("activation", info.activation_function,
                                               activation), ("padding", info.padding, padding))
                   if str(ours) != str(theirs)]
        because = f" (the file would run {'; '.join(differs)})" if differs else ""
        raise CheckpointError(f"self-check failed: max |logit difference| {difference:.3g} "
                              f"exceeds {allowed:.3g}{because}; the output was not written")
    return difference, allowed
