"""Fuzzing the reader of `embed --resume` for .npy files: damaged (.npy, sidecar) pairs.

Seed: a valid pair of 3 rows of 4 values, one an error row. Cases edit the bytes of the .npy
(its magic, header dict, data) or of the JSON Lines sidecar; each must be read consistently
(shape (len(paths), 4) float32, one path and error per row) or refused with one InputError
line naming the file. In-process: the reader is numpy's header parser on a memory map and
json, no Numba and no native code of mobinumba's own.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mobinumba
from fuzzing import apply_byte_edits, examples
from mobinumba.results_npy import read_npy_embeddings


@pytest.fixture(scope="module")
def npy_pair(tmp_path_factory):
    """The bytes of a small valid (.npy, sidecar) pair: 3 rows of 4 values, one an error."""
    directory = tmp_path_factory.mktemp("pair")
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    array[1] = np.nan
    np.save(directory / "e.npy", array)
    (directory / "e.paths.jsonl").write_text(
        '{"path": "a.jpg", "error": null}\n{"path": "b.jpg", "error": "b.jpg: broken"}\n'
        '{"path": "c.jpg", "error": null}\n', encoding="utf-8")
    return (directory / "e.npy").read_bytes(), (directory / "e.paths.jsonl").read_bytes()


EDITS = st.lists(st.tuples(st.sampled_from(["flip", "overwrite", "truncate", "delete",
                                            "insert"]),
                           st.integers(0, 200),
                           st.one_of(st.integers(1, 255), st.binary(min_size=1, max_size=8))),
                 min_size=1, max_size=3)


def _usable(edits):
    """Edits with arguments of the right type for each kind (flip: an int; delete: an int;
    the others bytes)."""
    fixed = []
    for kind, offset, argument in edits:
        wants_int = kind in ("flip", "delete")
        if wants_int != isinstance(argument, int):
            argument = 1 if wants_int else b"\x00"
        fixed.append((kind, offset, argument))
    return fixed


@examples(300)
@given(which=st.sampled_from(["npy", "sidecar"]), edits=EDITS)
def test_fuzz_the_npy_resume_reader(npy_pair, tmp_path_factory, which, edits):
    """A damaged pair is read consistently or refused with one line naming the file."""
    directory = tmp_path_factory.mktemp("fuzzed", numbered=True)
    array, sidecar = npy_pair
    if which == "npy":
        array = apply_byte_edits(array, _usable(edits))
    else:
        sidecar = apply_byte_edits(sidecar, _usable(edits))
    (directory / "e.npy").write_bytes(array)
    (directory / "e.paths.jsonl").write_bytes(sidecar)
    try:
        paths, embeddings, errors = read_npy_embeddings(directory / "e.npy", channels=4)
    except mobinumba.InputError as error:
        message = str(error)
        assert "\n" not in message and str(directory / "e.") in message, message
        return
    assert embeddings.shape == (len(paths), 4) and embeddings.dtype == np.float32
    assert len(errors) == len(paths)
    assert all(isinstance(p, str) for p in paths)
    assert all(e is None or isinstance(e, str) for e in errors)
