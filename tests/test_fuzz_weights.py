"""Fuzzing the weight-file reader: corrupted .h5 files must be refused by name or run right.

A valid converted file (width 0.25, 10 classes, with labels) is corrupted two ways:
- bytes: truncation, flipped bytes, overwritten, deleted and inserted runs, mostly aimed at
  the HDF5 metadata (superblock, object headers, B-trees, heaps, attributes), the rest
  anywhere (weight values);
- structure, through h5py: deleted, renamed, retyped and reshaped datasets and attributes,
  NaN / Inf / huge values, mismatched channels, swapped layers, a huge num_classes, a
  format_version from the future, links, external and unwritten storage, bad labels.
Each case runs in the isolated worker (tests/fuzz_worker.py). It must end in FormatError
with a one-line message that starts with the file and names the dataset, attribute or layer
(or says the file is not HDF5 at all), or load and agree with a float64 reference computed
from the same file by h5py (or report float32 overflow with NumericError when the weights
are that large). A crash, hang, foreign exception or wrong result fails the test.
"""
import math
import os
import random
import shutil
import warnings
from collections import Counter

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import build_reference, run_cli
from fuzzing import (STATS, FuzzWorker, Timer, apply_byte_edits, assert_few_uncompared,
                     at_least, check_answer, examples, examples_count)

pytestmark = pytest.mark.slow  # a fuzzer: ~1,300 cases in a worker process

NAMING = (r"attribute '|layers?\b|labels|classifier|format_version|"
          r"not a readable HDF5 file|global heap")
LABELS = ["tench", "goldfish", "café", "naïve", "日本", "zebra", "a b", "x", "y", "z"]


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    """The valid file every case starts from, with the layout facts mutations draw from."""
    directory = tmp_path_factory.mktemp("fuzz_weights")
    model = build_reference("classic", 0.25, "relu", head=False, num_classes=10, seed=11)
    import torch
    torch.save(model.state_dict(), directory / "seed.pth")
    (directory / "labels.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    path = directory / "seed.h5"
    assert run_cli("convert", directory / "seed.pth", "-o", path, "--labels",
                   directory / "labels.txt", "--input-size", "32") == 0
    return SeedFile(str(path), directory)


class SeedFile:
    """The seed's bytes and where its metadata lies; its datasets, groups and attributes."""

    def __init__(self, path, directory):
        self.path = path
        self.directory = directory
        self.data = open(path, "rb").read()
        self.datasets, self.groups, self.attributes = [], ["/"], []
        is_data = np.zeros(len(self.data), bool)
        with h5py.File(path, "r") as h5:
            self.attributes += [("/", name) for name in h5.attrs]

            def visit(name, obj):
                self.attributes.extend((name, attr) for attr in obj.attrs)
                if isinstance(obj, h5py.Dataset):
                    self.datasets.append(name)
                    offset = obj.id.get_offset()
                    if offset is not None:
                        is_data[offset:offset + obj.id.get_storage_size()] = True
                else:
                    self.groups.append(name)
            h5.visititems(visit)
            self.layers = sorted(h5["layers"])
        # Bytes outside every dataset's raw data: superblock, headers, trees, heaps.
        self.metadata_offsets = np.flatnonzero(~is_data)


@pytest.fixture(scope="module")
def worker(seed):
    process = FuzzWorker({"target": "weights", "path": seed.path})
    yield process
    process.close()


def run_weights_case(worker, seed, path):
    with Timer("weights"):
        answer = worker.run({"target": "weights", "path": path})
    check_answer("weights", answer, path, ("FormatError",), NAMING,
                 os.path.join(seed.directory, "failures"))
    return answer


# ------------------------------------------------------------------------ byte mutations

@st.composite
def byte_edits(draw, seed):
    """1-4 edits of the file's bytes: (kind, offset, argument) tuples, printed on failure.

    Offsets and edit kinds come from a Random that Hypothesis seeds: uniform over the file
    (Hypothesis's own integers favour small values, which would mostly hit the superblock).
    """
    size = len(seed.data)
    meta = seed.metadata_offsets
    rnd = random.Random(draw(st.integers(0, 2 ** 64 - 1)))
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        if rnd.random() < 0.8:  # most edits aim at the metadata
            offset = int(meta[rnd.randrange(len(meta))])
        else:
            offset = rnd.randrange(size)
        # Mostly in-place edits: one truncation, deletion or insertion moves the end of
        # the file or every address after it, which libhdf5 refuses at open (the
        # truncation test below covers those separately).
        kind = rnd.choices(["flip", "overwrite", "truncate", "delete", "insert"],
                           weights=[76, 15, 3, 3, 3])[0]
        if kind == "flip":
            edits.append((kind, offset, 1 << rnd.randrange(8) if rnd.random() < 0.5
                          else rnd.randrange(1, 256)))
        elif kind == "overwrite":
            edits.append((kind, offset, draw(st.sampled_from(
                [b"\x00" * 8, b"\xff" * 8, b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00\x00\x00\x00",
                 b"\xff\xff\xff\xff\xff\xff\xff\x7f"]) | st.binary(min_size=1, max_size=16))))
        elif kind == "truncate":
            edits.append((kind, offset, None))
        elif kind == "delete":
            edits.append((kind, offset, rnd.randrange(1, 65)))
        else:
            edits.append((kind, offset, draw(st.binary(min_size=1, max_size=64))))
    return edits


def test_byte_mutations(seed, worker):
    path = os.path.join(seed.directory, "bytes.h5")

    @examples(700)
    @given(edits=byte_edits(seed))
    def case(edits):
        with open(path, "wb") as stream:
            stream.write(apply_byte_edits(seed.data, edits))
        run_weights_case(worker, seed, path)

    with STATS.watching() as seen:
        case()
    # The mutator must reach past the superblock: many distinct refusals, and flips in
    # weight values or unused bytes that still load and must then compute correctly.
    classes, cases = seen.classes["weights"], seen.cases["weights"]
    assert len(classes) >= at_least(12) and len(seen.details["weights"]) >= at_least(30), \
        sorted(classes)
    assert seen.outcomes["weights"]["ok"] >= cases // 10
    assert cases == examples_count(700)
    assert_few_uncompared(seen, cases)
    for needle in ["unreadable", "not a readable HDF", "layers/<layer>"]:
        assert any(needle in template for template in classes), (needle, sorted(classes))


def test_truncation_at_every_metadata_region(seed, worker):
    """Truncate at the start of each run of metadata bytes and at 64 evenly spaced offsets:
    every structure (superblock, each object header, each heap) cut off in turn."""
    meta = seed.metadata_offsets
    breaks = np.flatnonzero(np.diff(meta) > 1)
    starts, ends = meta[np.r_[0, breaks + 1]], meta[np.r_[breaks, len(meta) - 1]] + 1
    offsets = sorted((set(starts.tolist()) | set(ends.tolist()) | set(
        np.linspace(0, len(seed.data) - 1, 64, dtype=int).tolist())) - {len(seed.data)})
    path = os.path.join(seed.directory, "truncated.h5")
    loaded = 0
    for offset in offsets:
        with open(path, "wb") as stream:
            stream.write(seed.data[:offset])
        loaded += run_weights_case(worker, seed, path)["outcome"] == "ok"
    assert len(offsets) > 120 and loaded == 0  # a truncated file never loads


# ------------------------------------------------------------------ structural mutations

def value_strategy():
    """Attribute values of every wrong kind, and a few right ones."""
    return st.one_of(
        st.integers(-2 ** 63, 2 ** 63 - 1),
        st.sampled_from([0, -1, 1, 2, 3, 10, 11, 1000, 10 ** 6, 10 ** 9, 2 ** 62, 2]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(["relu", "relu6", "torch", "tf_same", "bicubic", "mobinumba",
                         "mobilenet_v1", "conv", "dwconv", "pwconv", "dense", "", "gelu",
                         "relu\x1b[31m", "line\nbreak", "\ud800"]),
        st.text(max_size=20),
        st.sampled_from([b"\xff\xfe", b"relu", b"\x00"]),
        st.sampled_from([np.zeros(0), np.ones(3), np.ones(2), np.ones((2, 2)),
                         np.arange(1000), np.array([0.5, -1.0, 0.5]), np.array([1, 2, 3]),
                         np.array(["a", "b", "c"], dtype=object), np.bool_(True),
                         np.float16(0.5), np.uint64(2 ** 64 - 1), h5py.Empty("f4"),
                         h5py.Empty("i8")]),
    )


# Root attributes set to the values the issue lists: a huge num_classes, a format_version
# from the future, zero and negative sizes, and valid alternatives that must still load.
METADATA = [("format_version", v) for v in (3, 7, 10 ** 6, 0, -1)] + [
    ("num_classes", v) for v in (10 ** 6, 10 ** 9, 2 ** 63 - 1, 0, -5, 11, 9)] + [
    ("input_size", v) for v in (0, -1, 10 ** 5, 1, 8192)] + [
    ("width_multiplier", v) for v in (0.0, -1.0, float("nan"), float("inf"), 2.0)] + [
    ("crop_pct", v) for v in (0.0, 1.5, float("nan"), 1.0)] + [
    ("mean", np.array([np.nan, 0, 0])), ("std", np.zeros(3)), ("std", np.array([1, 2])),
    ("activation", "relu6"), ("activation", "gelu"), ("padding", "tf_same"),
    ("padding", "valid"), ("interpolation", "nearest"), ("interpolation", "sinc"),
    ("arch", "resnet50"), ("format", "keras")]
DTYPES = ["int8", "int32", "int64", "uint16", "float16", "float64", "bool", "complex64",
          "bytes", "vlen-str", "compound", "vlen-float", ">f4", "<f8"]
POISON = [np.nan, np.inf, -np.inf, 3e38, -3e38, 1e30, 0.0, -1.0, 1e-45, 65504.0]


@st.composite
def structural_edits(draw, seed):
    """1-3 edits of the file's objects, as tuples naming what they change."""
    datasets, groups, attributes = seed.datasets, seed.groups, seed.attributes
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(
            ["delete", "delete_attr", "rename", "rename_attr", "retype", "reshape", "set_attr",
             "set_attr", "set_attr", "poison", "poison", "channels", "link", "external",
             "chunked", "unwritten", "swap_layers", "extra", "labels", "metadata"]))
        dataset = draw(st.sampled_from(datasets))
        if kind == "delete":
            edits.append((kind, draw(st.sampled_from(datasets + groups[1:]))))
        elif kind == "delete_attr":
            edits.append((kind, *draw(st.sampled_from(attributes))))
        elif kind == "rename":
            target = draw(st.sampled_from(datasets + groups[1:]))
            siblings = [p.rsplit("/", 1)[-1] for p in datasets + groups
                        if p.rsplit("/", 1)[0] == target.rsplit("/", 1)[0]]
            new = draw(st.sampled_from(siblings + ["x", "99_extra", "3_block", "00_conv_stem",
                                                   "Weight", "1_", "_1", "07"])
                       | st.text(st.characters(codec="utf-8", exclude_characters="/."),
                                 min_size=1, max_size=12))
            edits.append((kind, target, new))
        elif kind == "rename_attr":
            obj, attr = draw(st.sampled_from(attributes))
            edits.append((kind, obj, attr, draw(st.sampled_from(
                [a for _, a in attributes] + ["x", "Kind", "stride "]))))
        elif kind == "retype":
            edits.append((kind, dataset, draw(st.sampled_from(DTYPES))))
        elif kind == "reshape":
            # Written with real data: at most 70^3 values (huge shapes are the "unwritten"
            # edit's, which costs no memory; 70^5 float32 would be 6.7 GB here).
            shape = draw(st.lists(st.integers(0, 70), max_size=5).map(tuple)
                         .filter(lambda dims: math.prod(dims) <= 70 ** 3)
                         | st.sampled_from([(), (1,), (8, 3, 3, 3), (8, 1, 3, 3), (10, 256),
                                            (256, 10), (9,), (8, 8, 1, 1), (16, 8, 1, 1)]))
            edits.append((kind, dataset, shape))
        elif kind == "set_attr":  # half of them on the root, the model's metadata
            obj, attr = draw(st.sampled_from(attributes)
                             | st.sampled_from([a for a in attributes if a[0] == "/"]))
            edits.append((kind, obj, attr, draw(value_strategy())))
        elif kind == "poison":
            edits.append((kind, dataset, draw(st.integers(0, 10 ** 6)),
                          draw(st.sampled_from(POISON))))
        elif kind == "channels":
            edits.append((kind, draw(st.sampled_from(seed.layers)),
                          draw(st.sampled_from([1, 7, 9, 15, 17, 33, 300]))))
        elif kind == "link":
            edits.append((kind, dataset, draw(st.sampled_from(["soft", "dangling",
                                                              "external"])),
                          draw(st.sampled_from(datasets))))
        elif kind == "external":
            edits.append((kind, dataset, draw(st.sampled_from(["/dev/zero", "sidecar"]))))
        elif kind == "chunked":
            edits.append((kind, dataset, draw(st.sampled_from(["gzip", "lzf", None]))))
        elif kind == "unwritten":
            edits.append((kind, dataset, draw(st.sampled_from(
                ["same", (2 ** 27,), (2 ** 20, 2 ** 20), (65536, 65536, 1, 1),
                 (2 ** 26 + 1,)]))))
        elif kind == "swap_layers":
            edits.append((kind, draw(st.sampled_from(seed.layers)),
                          draw(st.sampled_from(seed.layers))))
        elif kind == "extra":
            edits.append((kind, draw(st.sampled_from(groups)), draw(st.sampled_from(
                ["attr", "dataset", "group", "external-link"]))))
        elif kind == "labels":
            edits.append((kind, draw(st.sampled_from(
                ["count", "numbers", "invalid-utf8", "control", "vlen-float", "2d"]))))
        else:
            edits.append(("set_attr", "/", *draw(st.sampled_from(METADATA))))
    return edits


class EditNotMade(Exception):
    """A drawn edit that cannot be made on this file: it acts on a dataset that is not
    floating point, is a scalar or is too large, or swaps a layer with itself."""


def apply_structural_edits(path, edits, directory, strict=False):
    """Apply the edits with h5py; returns how many could not be made.

    A random draw may ask for what h5py refuses (a name clash) or what an earlier edit made
    impossible (its target deleted): that edit is counted and skipped. With `strict` (the
    listed corruptions, written by hand) any edit that cannot be made raises instead.
    """
    not_made = 0
    with h5py.File(path, "r+") as h5, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lossy casts are the point
        for edit in edits:
            try:
                EDITS[edit[0]](h5, *edit[1:], directory=directory)
            except (EditNotMade, KeyError, ValueError, TypeError, OSError, RuntimeError):
                if strict:
                    raise
                not_made += 1
    return not_made


def _replace(h5, path, **kwargs):
    parent, name = path.rsplit("/", 1) if "/" in path else ("/", path)
    del h5[parent][name]
    return h5[parent].create_dataset(name, **kwargs)


def _values(h5, path):
    """A dataset's values; ValueError (the edit is skipped) if an earlier edit made it huge."""
    dataset = h5[path]
    if dataset.size is None or dataset.size > 10 ** 6:
        raise ValueError("too large to edit")
    return dataset[()]


def edit_delete(h5, path, directory):
    del h5[path]


def edit_delete_attr(h5, obj, attr, directory):
    del h5[obj].attrs[attr]


def edit_rename(h5, path, new, directory):
    parent = path.rsplit("/", 1)[0] if "/" in path else "/"
    if isinstance(new, bytes):  # a name that is not UTF-8: h5py takes it as bytes
        h5[parent].move(path.rsplit("/", 1)[-1], new)
    else:
        h5.move(path, f"{parent.rstrip('/')}/{new}")


def edit_rename_attr(h5, obj, attr, new, directory):
    attrs = h5[obj].attrs
    value = attrs[attr]
    del attrs[attr]
    attrs[new] = value


def edit_retype(h5, path, dtype, directory):
    data = _values(h5, path)
    if dtype == "bytes":
        _replace(h5, path, data=np.full(np.shape(data), b"1.5"))
    elif dtype == "vlen-str":
        _replace(h5, path, data=np.full(np.shape(data), "1.5", dtype=object),
                 dtype=h5py.string_dtype())
    elif dtype == "compound":
        compound = np.zeros(np.shape(data), dtype=[("re", "f4"), ("im", "f4")])
        _replace(h5, path, data=compound)
    elif dtype == "vlen-float":
        values = np.empty(np.shape(data), dtype=object)
        for index in np.ndindex(values.shape):
            values[index] = np.ones(2, np.float32)
        _replace(h5, path, data=values, dtype=h5py.vlen_dtype(np.float32))
    else:
        with np.errstate(all="ignore"):
            _replace(h5, path, data=np.asarray(data).astype(dtype))


def edit_reshape(h5, path, shape, directory):
    rng = np.random.default_rng(len(shape))
    _replace(h5, path, data=rng.standard_normal(shape).astype(np.float32) * 0.1 + 1.0)


def edit_set_attr(h5, obj, attr, value, directory):
    h5[obj].attrs[attr] = value


def edit_vlen_attr(h5, obj, attr, directory):
    """The attribute as a variable-length sequence of integers, not a string (the datatype a
    flipped bit in a vlen string's datatype message gives; h5py crashed reading such one)."""
    data = np.empty(1, dtype=object)
    data[0] = np.arange(3, dtype=np.int32)
    h5[obj].attrs.create(attr, data, dtype=h5py.vlen_dtype(np.int32))


def edit_poison(h5, path, index, value, directory):
    dataset = h5[path]
    if not 0 < dataset.size <= 10 ** 6 or dataset.dtype.kind != "f":
        raise EditNotMade(f"{path}: not a float dataset of 1..10**6 values")
    data = np.array(dataset[()])
    data.reshape(-1)[index % data.size] = value
    dataset[()] = data


def edit_channels(h5, layer, channels, directory):
    """Give one layer `channels` outputs, consistently inside the layer (weight, BN, bias)."""
    group = h5["layers"][layer]
    for name in list(group):
        data = group[name][()]
        if data.ndim == 0:
            continue
        resized = np.resize(data, (channels, *data.shape[1:]))
        if name == "var":
            resized = np.abs(resized) + 0.5
        del group[name]
        group[name] = resized


def edit_link(h5, path, kind, target, directory):
    parent, name = path.rsplit("/", 1) if "/" in path else ("/", path)
    del h5[parent][name]
    if kind == "soft":
        h5[parent][name] = h5py.SoftLink("/" + target if target != path else "/labels")
    elif kind == "dangling":
        h5[parent][name] = h5py.SoftLink("/nowhere")
    else:
        h5[parent][name] = h5py.ExternalLink(h5.filename, "/" + target)


def edit_external(h5, path, where, directory):
    data = np.asarray(_values(h5, path))
    if where == "sidecar":
        where = os.path.join(str(directory), "sidecar.bin")
        with open(where, "wb") as stream:
            stream.write(data.astype(np.float32).tobytes())
    _replace(h5, path, shape=data.shape, dtype=np.float32,
             external=[(where, 0, max(data.astype(np.float32).nbytes, 1))])


def edit_chunked(h5, path, compression, directory):
    data = np.asarray(_values(h5, path))
    if data.ndim == 0:
        raise EditNotMade(f"{path}: a scalar cannot be chunked")
    _replace(h5, path, data=data, chunks=True, compression=compression)


def edit_unwritten(h5, path, shape, directory):
    """A dataset whose data was never written: it reads as its fill value, at any size."""
    shape = h5[path].shape if shape == "same" else shape
    _replace(h5, path, shape=shape, dtype=np.float32, chunks=True if shape else None,
             fillvalue=0.25)


def edit_swap_layers(h5, first, second, directory):
    if first == second:
        raise EditNotMade(f"layer {first} swapped with itself")
    h5.move(f"layers/{first}", "layers/__swap")
    h5.move(f"layers/{second}", f"layers/{first}")
    h5.move("layers/__swap", f"layers/{second}")


def edit_extra(h5, path, kind, directory):
    group = h5[path]
    if kind == "attr":
        group.attrs["extra_note"] = "ignored"
    elif kind == "dataset":
        group["extra_values"] = np.ones(4, np.float32)
    elif kind == "group":
        group.create_group("extra_group")
    else:
        group["extra_link"] = h5py.ExternalLink("/dev/zero", "/x")


def edit_labels(h5, variant, directory):
    if "labels" in h5:
        del h5["labels"]
    if variant == "count":
        h5.create_dataset("labels", data=LABELS[:7], dtype=h5py.string_dtype())
    elif variant == "numbers":
        h5["labels"] = np.arange(10, dtype=np.float32)
    elif variant == "invalid-utf8":
        h5["labels"] = np.array([b"\xff\xfe"] * 10)
    elif variant == "control":
        h5.create_dataset("labels", data=["ok"] * 9 + ["\x1b]0;pwned\x07"],
                          dtype=h5py.string_dtype())
    elif variant == "vlen-float":
        values = np.empty(10, dtype=object)
        for index in range(10):
            values[index] = np.ones(2, np.float32)
        h5.create_dataset("labels", data=values, dtype=h5py.vlen_dtype(np.float32))
    else:
        h5.create_dataset("labels", data=np.array([["a", "b"]] * 5, dtype=object),
                          dtype=h5py.string_dtype())


EDITS = {name[len("edit_"):]: function for name, function in globals().items()
         if name.startswith("edit_")}


def test_structural_mutations(seed, worker):
    path = os.path.join(seed.directory, "structure.h5")

    @examples(450)
    @given(edits=structural_edits(seed))
    def case(edits):
        shutil.copy(seed.path, path)
        not_made = apply_structural_edits(path, edits, seed.directory)
        STATS.skip("weights", not_made)
        drawn["edits"] += len(edits)
        drawn["unchanged"] += not_made == len(edits)
        run_weights_case(worker, seed, path)

    drawn = Counter()
    with STATS.watching() as seen:
        case()
    # Random edits reach many distinct refusals; edits that keep the file valid (chunked
    # storage, extra members, swapped twin layers, float64 data) must load and run right.
    classes, cases = seen.classes["weights"], seen.cases["weights"]
    assert cases == examples_count(450)
    assert len(classes) >= at_least(60), sorted(classes)
    assert seen.outcomes["weights"]["ok"] >= cases // 25
    # Most drawn edits are made, and few cases are left as the seed (they test nothing new).
    # About 10% of the drawn edits cannot apply (poison on a non-float dataset, ...): 100 to
    # 106 of 1050 measured, depending on the seed file's bytes, so the cap is 15%, not 10%
    # (which failed at 106); the unchanged-case cap is the one that guards the fuzz's reach.
    assert seen.skipped["weights"] <= drawn["edits"] * 15 // 100, (seen.skipped, drawn)
    assert drawn["unchanged"] <= cases // 20, (drawn, cases)
    assert_few_uncompared(seen, cases)


# ---------------------------------------------------------------- every listed corruption

def global_heap_hang(data):
    """The seed's bytes with one global-heap object made 16 bytes longer, so that libhdf5's
    walk over the collection lands on the zeroed free space: a zero-size object, on which
    libhdf5 2.0.0 loops forever (found by test_byte_mutations as one flipped bit)."""
    data = bytearray(data)
    start = data.find(b"GCOL")
    end = start + int.from_bytes(data[start + 8:start + 16], "little")
    position, last = start + 16, None
    while position + 16 <= end:
        index = int.from_bytes(data[position:position + 2], "little")
        size = int.from_bytes(data[position + 8:position + 16], "little")
        if index == 0:
            break
        last, position = position, position + 16 + (size + 7) // 8 * 8
    size = int.from_bytes(data[last + 8:last + 16], "little")
    data[last + 8:last + 16] = ((size + 7) // 8 * 8 + 16).to_bytes(8, "little")
    return bytes(data)


# What a listed case must end in instead of a refusal: NumericError naming the overflow.
OVERFLOW = "overflow reported"
# (structural edits, what the refusal must say; None: the file must load and run right;
# OVERFLOW: it loads and running it reports the float32 overflow)
LISTED = {
    "deleted dataset": ([("delete", "layers/05_block03_dw/var")],
                        "layers/05_block03_dw: missing dataset 'var'"),
    "deleted group": ([("delete", "layers")], "missing group 'layers'"),
    "deleted root attribute": ([("delete_attr", "/", "activation")],
                               "missing attribute 'activation'"),
    "deleted layer attribute": ([("delete_attr", "layers/04_block02_pw", "stride")],
                                "layers/04_block02_pw: missing attribute 'stride'"),
    "renamed dataset": ([("rename", "layers/02_block01_pw/weight", "Weight")],
                        "layers/02_block01_pw: missing dataset 'weight'"),
    "renamed attribute": ([("rename_attr", "layers/01_block01_dw", "kind", "Kind")],
                          "missing attribute 'kind'"),
    "renamed layer group": ([("rename", "layers/03_block02_dw", "x_block02_dw")],
                            "'x_block02_dw' is not named 'NN_name'"),
    "reordered layers": ([("rename", "layers/03_block02_dw", "30_block02_dw")],
                         "layer indices"),
    "layer name not UTF-8": ([("rename", "layers/03_block02_dw", b"03_block02_d\xff")],
                             "layers: a layer group's name b'03_block02_d\\xff' is not valid "
                             "UTF-8"),
    "int weights": ([("retype", "layers/00_conv_stem/weight", "int32")],
                    "layers/00_conv_stem/weight: dtype int32, expected floating point"),
    "string weights": ([("retype", "layers/02_block01_pw/weight", "vlen-str")],
                       "layers/02_block01_pw/weight: dtype object"),
    "compound weights": ([("retype", "layers/02_block01_pw/gamma", "compound")],
                         "layers/02_block01_pw/gamma: dtype"),
    "float64 weights load": ([("retype", "layers/02_block01_pw/weight", "float64")], None),
    "big-endian weights load": ([("retype", "layers/00_conv_stem/weight", ">f4")], None),
    "wrong shape": ([("reshape", "layers/05_block03_dw/gamma", (7,))],
                    "layers/05_block03_dw/gamma: shape (7,), expected (32,)"),
    "wrong rank": ([("reshape", "layers/02_block01_pw/weight", (16, 8))],
                   "layers/02_block01_pw/weight: rank 2"),
    "zero dimension": ([("reshape", "layers/02_block01_pw/weight", (16, 0, 1, 1))],
                       "layers/02_block01_pw/weight: invalid shape (16, 0, 1, 1)"),
    "wrong kernel": ([("reshape", "layers/01_block01_dw/weight", (8, 1, 5, 5))],
                     "expected a 3x3 kernel"),
    "scalar where a vector belongs": ([("reshape", "layers/01_block01_dw/beta", ())],
                                      "layers/01_block01_dw/beta: shape (), expected (8,)"),
    "negative stride": ([("set_attr", "layers/01_block01_dw", "stride", -1)],
                        "attribute 'stride' is -1, expected 1..2"),
    "zero input_size": ([("set_attr", "/", "input_size", 0)],
                        "attribute 'input_size' is 0, expected 1..8192"),
    "negative num_classes": ([("set_attr", "/", "num_classes", -5)],
                             "attribute 'num_classes' is -5"),
    "huge num_classes": ([("set_attr", "/", "num_classes", 10 ** 9)],
                         "attribute 'num_classes' is 1000000000, expected 1..1000000"),
    "num_classes not the classifier's": ([("set_attr", "/", "num_classes", 10 ** 6)],
                                         "has 10 outputs but num_classes is 1000000"),
    "format_version from the future": ([("set_attr", "/", "format_version", 3)],
                                       "format_version 3 is newer than this mobinumba "
                                       "supports (2)"),
    "string format_version": ([("set_attr", "/", "format_version", "1")],
                              "attribute 'format_version' is str"),
    "mismatched channels": ([("channels", "02_block01_pw", 17)],
                            "layer 'block02_dw' expects 16 input channels but 'block01_pw' "
                            "produces 17"),
    "NaN weight": ([("poison", "layers/02_block01_pw/weight", 5, np.nan)],
                   "layers/02_block01_pw/weight: contains NaN or Inf"),
    "Inf variance": ([("poison", "layers/03_block02_dw/var", 0, np.inf)],
                     "layers/03_block02_dw/var: contains NaN or Inf"),
    "negative variance": ([("poison", "layers/03_block02_dw/var", 0, -1.0)],
                          "layers/03_block02_dw/var: negative variance"),
    "batch norm that overflows when folded": (
        [("poison", "layers/03_block02_dw/gamma", 0, 3e38),
         ("poison", "layers/03_block02_dw/var", 0, 0.0)],
        "layers/03_block02_dw: folding batch norm overflows float32"),
    "huge finite weight: overflow is reported": (
        [("poison", "layers/02_block01_pw/weight", 0, 3e38)], OVERFLOW),
    "soft link": ([("link", "layers/02_block01_pw/weight", "soft",
                    "layers/04_block02_pw/weight")], "is a SoftLink"),
    "external link": ([("link", "layers/02_block01_pw/gamma", "external",
                        "layers/02_block01_pw/gamma")], "is a ExternalLink"),
    "external storage": ([("external", "layers/02_block01_pw/beta", "/dev/zero")],
                         "layers/02_block01_pw/beta: data is stored in an external file "
                         "('/dev/zero')"),
    "unwritten huge dataset": ([("unwritten", "layers/02_block01_pw/weight",
                                 (2 ** 14, 2 ** 13, 1, 1))],
                               "layers/02_block01_pw/weight: 134217728 elements exceeds the "
                               "limit of 67108864"),
    "unwritten dataset reads as fill value": ([("unwritten", "layers/04_block02_pw/beta",
                                                "same")], None),
    "chunked gzip storage loads": ([("chunked", "layers/26_block13_pw/weight", "gzip")], None),
    "extra members are ignored": ([("extra", "layers/05_block03_dw", "dataset"),
                                   ("extra", "/", "attr")], None),
    "tf_same padding is honoured": ([("set_attr", "/", "padding", "tf_same")], None),
    "relu6 is honoured": ([("set_attr", "/", "activation", "relu6")], None),
    "label count": ([("labels", "count")], "labels: shape (7,), expected (10,)"),
    "numeric labels": ([("labels", "numbers")], "labels: dtype float32, expected strings"),
    "labels not UTF-8": ([("labels", "invalid-utf8")], "labels: label 0 is not valid UTF-8"),
    "terminal escapes in labels": ([("labels", "control")],
                                   "labels: label 9 contains control characters"),
    "control characters in an attribute": ([("set_attr", "/", "source_file", "a\x1b[2J")],
                                           "attribute 'source_file' contains control "
                                           "characters"),
    "attribute not UTF-8": ([("set_attr", "/", "activation", b"\xff\xfe")],
                            "attribute 'activation' is not valid UTF-8"),
    "array attribute": ([("set_attr", "/", "crop_pct", np.arange(1000))],
                        "attribute 'crop_pct' has shape (1000,)"),
    "vlen sequence attribute": ([("vlen_attr", "layers/10_block05_pw", "kind")],
                                "layers/10_block05_pw: attribute 'kind' has an HDF5 datatype "
                                "of class 9 (TypeVlenID), expected a string or numbers"),
}


@pytest.mark.parametrize("name", LISTED)
def test_listed_corruptions(seed, worker, name):
    """Each corruption the issue lists, and each valid variation, with its exact outcome."""
    edits, expected = LISTED[name]
    path = os.path.join(seed.directory, "listed.h5")
    shutil.copy(seed.path, path)
    apply_structural_edits(path, edits, seed.directory, strict=True)
    with open(path, "rb") as stream:
        assert stream.read() != seed.data, "the edits left the seed file unchanged"
    answer = run_weights_case(worker, seed, path)
    if expected is None:  # a valid variation: it runs and matches the reference
        assert answer["outcome"] == "ok" and answer["comparison"] == "compared", answer
    elif expected is OVERFLOW:
        assert answer["outcome"] == "ok" and answer["comparison"] == "overflow reported", \
            answer
        assert "overflowed float32" in answer["detail"], answer
    else:
        assert answer["outcome"] == "refused" and expected in answer["message"], answer


def test_global_heap_that_hangs_libhdf5_is_refused(seed, worker):
    path = os.path.join(seed.directory, "heap.h5")
    with open(path, "wb") as stream:
        stream.write(global_heap_hang(seed.data))
    answer = run_weights_case(worker, seed, path)
    assert answer["outcome"] == "refused", answer
    assert "global heap at byte" in answer["message"] and "loop forever" in answer["message"]
