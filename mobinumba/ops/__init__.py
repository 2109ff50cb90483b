"""The layer-kind registry: one module per kind, each owning every fact about its layers.

    kind      module        layers
    conv      stem.py       the 3x3 stem conv (first layer)
    dwconv    depthwise.py  the depthwise 3x3 half of each depthwise-separable block
    pwconv    pointwise.py  the 1x1 half, and timm's optional head conv
    pool      pool.py       global average pooling (no weights, never stored)
    dense     dense.py      the classifier (last layer)

A weight file's `kind` attribute, a LayerSpec's and a LayerRecord's `kind` name a key of
KINDS; `kind_of(name)` gives the object that answers shapes, counts, validation, the runtime
op and the PyTorch reference for it (base.LayerKind says what each provides). Adding a kind is
one module here plus its entry below (docs/architecture.md walks through it).
"""
from . import dense, depthwise, pointwise, pool, stem

KINDS = {module.KIND.name: module.KIND for module in (stem, depthwise, pointwise, pool, dense)}
POOL = pool.KIND
# The kinds a weight file may store (pooling is implied before the classifier).
STORED_KINDS = tuple(name for name, kind in KINDS.items() if kind.has_weights)


def kind_of(name):
    """The LayerKind registered as `name`; ValueError names the known kinds."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown layer kind {name!r}; known: {', '.join(KINDS)}") from None


def kinds_where(attribute):
    """Names of the stored kinds whose `attribute` (first, body, last) is true, for messages."""
    return tuple(name for name in STORED_KINDS if getattr(KINDS[name], attribute))
