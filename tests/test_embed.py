"""Pooled features (Model.features, Model.embed, embed_files) and `mobinumba embed --out`."""
import copy
import json
import os
import sys

import numpy as np
import pytest
import torch

import mobinumba
from conftest import build_reference, make_photos, random_batch, run_cli, save_checkpoint
from mobinumba.results import read_embeddings, read_results
from mobinumba.results_npy import sidecar_path
from test_stream import interrupted_run, slow_photos  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def model(small_model):
    return mobinumba.load(small_model[1])


@pytest.fixture(scope="module")
def head_model(workdir):
    """(reference module, converted .h5 path): timm width 0.25 with a head conv (features
    are its pooled 1024 channels), 7 classes, 48x48 input."""
    module = build_reference("timm", 0.25, "relu6", head=True, num_classes=7, seed=8)
    checkpoint = save_checkpoint(module, str(workdir / "head.pth"), "pth")
    output = workdir / "head.h5"
    assert run_cli("convert", checkpoint, "-o", output, "--input-size", 48) == 0
    return module, str(output)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """(directory, 13 readable image paths, one broken image's path); the broken one sorts
    in the middle, so its row is between others."""
    directory = tmp_path_factory.mktemp("embed_photos")
    paths = make_photos(directory, 13, seed=4)
    bad = directory / "photo005_broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    return directory, paths, str(bad)


def all_paths(photos):
    _, paths, bad = photos
    return sorted(paths + [bad])


def torch_pooled_features(module, x):
    """The classifier's input of a reference nn.Module (tests/reference_models.py) for a
    numpy batch, computed by PyTorch in float64: captured with a hook on the classifier."""
    module = copy.deepcopy(module).double().eval()
    classifier = module.classifier if hasattr(module, "classifier") else module.fc
    captured = []
    handle = classifier.register_forward_hook(lambda _, inputs, __: captured.append(inputs[0]))
    with torch.no_grad():
        module(torch.from_numpy(x).double())
    handle.remove()
    return captured[0].numpy()  # (N, C)


# ---------------------------------------------------------------------------- Model.features

@pytest.mark.parametrize("which,size", [("small", 64), ("small", 37), ("head", 48)])
def test_features_equal_pytorchs_pooled_classifier_input(small_model, head_model, which, size):
    module, path = small_model if which == "small" else head_model
    m = mobinumba.load(path)
    x = random_batch(3, size, seed=size)
    expected = torch_pooled_features(module, x)
    features = m.features(x)
    assert features.dtype == np.float32 and features.shape == (3, m.feature_channels)
    assert m.feature_channels == (256 if which == "small" else 1024)
    scale = max(1.0, np.abs(expected).max())
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4 * scale)
    assert np.abs(features).max() > 0.1  # not a vacuous all-zero comparison
    # The logits of the same workspace are untouched by a features pass, and vice versa.
    logits = m(x)
    np.testing.assert_array_equal(m.features(x), features)
    np.testing.assert_array_equal(m(x), logits)


def test_features_reuse_the_logits_workspace_and_allocate_only_the_result(model):
    from test_memory import PYTHON_OBJECTS, peak_allocated

    x = random_batch(5, 64, seed=3)
    model(x)  # the workspace for (5, 64, 64) exists now
    # The input's finiteness mask (1 byte a value) and the (N, C) result copy, nothing more.
    allowed = x.size + 4 * 5 * model.feature_channels + PYTHON_OBJECTS // 4
    assert peak_allocated(lambda: model.features(x)) <= allowed


def test_features_check_inputs_like_the_logits(model):
    for bad, words in [(np.zeros((3, 64, 64), np.float32), "batch axis"),
                       (np.zeros((1, 3, 8, 8), np.int32), "dtype is int32"),
                       (np.full((1, 3, 8, 8), np.nan, np.float32), "NaN or Inf")]:
        with pytest.raises(mobinumba.InputError, match=words):
            model.features(bad)


def test_embed_and_embed_files_are_features_of_the_preprocessed_images(model, photos):
    directory, paths, bad = photos
    expected = model.features(np.stack([model.preprocess(p) for p in paths]))
    np.testing.assert_allclose(model.embed(paths), expected, rtol=1e-6, atol=1e-6)
    normalized = model.embed(paths[:4], l2_normalize=True)
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(normalized * np.linalg.norm(expected[:4], axis=1)[:, None],
                               expected[:4], rtol=1e-5, atol=1e-6)
    with pytest.raises(mobinumba.InputError, match="cannot decode image"):
        model.embed([paths[0], bad])
    results = list(mobinumba.embed_files(all_paths(photos), batch_size=4, weights=model,
                                         workers=2))
    assert [r.path for r in results] == all_paths(photos)
    broken = results[all_paths(photos).index(bad)]
    assert [r.path for r in results if r.error] == [bad] and bad in broken.error
    assert broken.embedding is None
    np.testing.assert_allclose(np.stack([r.embedding for r in results if r.error is None]),
                               expected, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------- embed CLI

@pytest.fixture(scope="module")
def expected(model, photos):
    """path -> Model.features of the preprocessed image, for the readable photos."""
    _, paths, _ = photos
    features = model.features(np.stack([model.preprocess(p) for p in paths]))
    return dict(zip(paths, features))


def check_file(out, photos, expected, paths=None):
    """The embeddings file has one row per path, in order, each equal to Model.features of
    the image, and an error row (NaN embedding) for the broken image."""
    paths = all_paths(photos) if paths is None else paths
    found_paths, embeddings, errors = read_embeddings(out)
    assert found_paths == paths
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(paths), 256)
    for path, row, error in zip(found_paths, embeddings, errors):
        if path == photos[2]:
            assert error.startswith(f"{path}: cannot decode image") and "\n" not in error
            assert np.isnan(row).all()
        else:
            assert error is None
            np.testing.assert_allclose(row, expected[path], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("suffix", [".parquet", ".npy"])
def test_cli_embeds_every_image_in_input_order(small_model, photos, expected, tmp_path,
                                               suffix, capsys):
    directory, _, bad = photos
    out = tmp_path / f"feats{suffix}"
    assert run_cli("embed", directory, "--weights", small_model[1], "--out", out,
                   "--batch-size", 4) == 1  # one image could not be read
    captured = capsys.readouterr()
    assert f"mobinumba: error: {bad}: " in captured.err and "Traceback" not in captured.err
    where = f"{tmp_path / 'feats.paths.jsonl'}" if suffix == ".npy" else f"column of {out}"
    assert f"1 of 14 images could not be read; see the error{'s in' if suffix == '.npy' else ''}" \
        in captured.err and where in captured.err
    assert f"wrote 14 rows to {out}" in captured.out
    check_file(out, photos, expected)
    if suffix == ".parquet":
        import pyarrow.parquet as pq
        schema = pq.read_schema(out)
        assert schema.names == ["path", "embedding", "error"]
        import pyarrow as pa
        embedding = schema.field("embedding").type
        assert pa.types.is_fixed_size_list(embedding) and embedding.list_size == 256
        assert embedding.value_type == pa.float32()
        assert read_results(out)[all_paths(photos).index(bad)]["embedding"] is None
    else:
        array = np.load(out)  # a plain .npy any reader takes
        assert array.shape == (14, 256) and array.dtype == np.float32
        with open(sidecar_path(out), encoding="utf-8") as file:
            lines = [json.loads(line) for line in file]
        assert [line["path"] for line in lines] == all_paths(photos)
    assert sorted(os.listdir(tmp_path)) == sorted(
        [out.name] + (["feats.paths.jsonl"] if suffix == ".npy" else []))  # no temp files


def test_cli_l2_normalize(small_model, photos, expected, tmp_path):
    _, paths, _ = photos
    out = tmp_path / "unit.npy"
    assert run_cli("embed", *paths[:5], "--weights", small_model[1], "--out", out,
                   "--l2-normalize") == 0
    found_paths, embeddings, _ = read_embeddings(out)
    reference = np.stack([expected[path] for path in found_paths])
    np.testing.assert_allclose(embeddings, reference / np.linalg.norm(reference, axis=1,
                                                                      keepdims=True),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("suffix", [".parquet", ".npy"])
def test_resume_continues_a_partial_file(small_model, photos, expected, tmp_path, suffix,
                                         capsys):
    paths = all_paths(photos)
    out = tmp_path / f"feats{suffix}"
    assert run_cli("embed", *paths[:4], "--weights", small_model[1], "--out", out) == 0
    # Mark the first row so that recomputing it instead of keeping it would show.
    first_paths, first, first_errors = read_embeddings(out)
    first[0] = 7.0
    write_embeddings(out, first_paths, first, first_errors)
    capsys.readouterr()
    assert run_cli("embed", *paths, "--weights", small_model[1], "--out", out,
                   "--resume") == 1
    assert "resuming" in capsys.readouterr().err
    found_paths, embeddings, _ = read_embeddings(out)
    assert found_paths == paths
    assert (embeddings[0] == 7.0).all()
    embeddings[0] = expected[paths[0]]
    write_embeddings(out, found_paths, embeddings, read_embeddings(out)[2])
    check_file(out, photos, expected)
    assert run_cli("embed", *paths, "--weights", small_model[1], "--out", out,
                   "--resume") == 0
    assert "nothing to do: all 14 images are already in" in capsys.readouterr().out


def write_embeddings(out, paths, embeddings, errors):
    """Rewrite an embeddings file (test helper; the CLI never rewrites rows)."""
    out = str(out)
    if out.endswith(".npy"):
        np.save(out, embeddings)
        with open(sidecar_path(out), "w", encoding="utf-8") as file:
            file.writelines(json.dumps({"path": p, "error": e}) + "\n"
                            for p, e in zip(paths, errors))
        return
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = [None if e is not None else row for row, e in zip(embeddings, errors)]
    table = pa.table({"path": pa.array(paths, pa.string()),
                      "embedding": pa.array(rows, pa.list_(pa.float32(), embeddings.shape[1])),
                      "error": pa.array(errors, pa.string())})
    pq.write_table(table, out)


def test_refusals_are_one_line_errors(small_model, head_model, photos, tmp_path, capsys,
                                      monkeypatch):
    image = photos[1][0]
    weights = ("--weights", small_model[1])
    existing = tmp_path / "e.npy"
    assert run_cli("embed", image, *weights, "--out", existing) == 0
    predicted = tmp_path / "p.parquet"
    assert run_cli("predict", image, *weights, "--out", predicted) == 0
    orphan = tmp_path / "orphan.paths.jsonl"  # a sidecar whose array is gone
    orphan.write_text('{"path": "x", "error": null}\n')
    torn = tmp_path / "torn.npy"  # an array and a sidecar that are not one pair
    np.save(torn, np.zeros((2, 256), np.float32))
    (tmp_path / "torn.paths.jsonl").write_text('{"path": "x", "error": null}\n')
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    capsys.readouterr()
    cases = [
        ((image, *weights, "--out", tmp_path / "e.csv"),
         "unknown results format '.csv'; use .parquet, .npy"),
        ((image, *weights, "--out", existing), "e.npy exists; pass --resume to continue it"),
        ((image, *weights, "--out", tmp_path / "orphan.npy"),
         "orphan.paths.jsonl exists; pass --resume"),
        ((image, *weights, "--out", tmp_path / "orphan.npy", "--resume"),
         "orphan.npy: not found; an .npy embeddings file comes with its sidecar"),
        ((image, *weights, "--out", torn, "--resume"), "has 2 rows but"),
        ((image, *weights, "--out", predicted, "--resume"),
         "cannot resume: it has columns (path, label_1"),
        ((image, "--weights", head_model[1], "--out", existing, "--resume"),
         "its embeddings have 256 values, this model gives 1024"),
        ((image, *weights, "--out", tmp_path / "nowhere" / "e.npy"), "does not exist"),
        ((image, *weights, "--out", tmp_path / "n.npy", "--partition-size", 3),
         "--partition-size needs --dask-scheduler or --dask-local"),
        ((image, *weights, "--out", tmp_path / "n.npy", "--decode-threads", 1, "--dask-local",
          1), "--decode-threads is for runs on this machine"),
        ((image, "--weights", image, "--out", tmp_path / "n.npy"), "not"),
    ]
    for argv, words in cases:
        assert run_cli("embed", *argv) == 1, argv
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, (argv, err)
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before
    with pytest.raises(SystemExit) as exit_info:  # argparse: --out is required
        run_cli("embed", image)
    assert exit_info.value.code == 2
    assert "the following arguments are required: --out" in capsys.readouterr().err
    assert run_cli("embed", image, *weights, "--out", existing, "--force") == 0
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    assert run_cli("embed", image, *weights, "--out", tmp_path / "n.parquet") == 1
    err = capsys.readouterr().err
    assert "pip install 'mobinumba[stream]'); or use .npy" in err and err.count("\n") == 1
    assert not (tmp_path / "n.parquet").exists()


# --------------------------------------------------------------- interrupted and Dask runs

@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_ctrl_c_keeps_whole_rows_and_resumes(small_model, model, slow_photos, tmp_path,
                                             suffix):
    """A real SIGINT to a running `mobinumba embed`: exit status 130, the rows so far kept
    in order (both files of an .npy pair agree), no temp file; --resume completes it."""
    sources, paths = slow_photos
    out = tmp_path / f"feats{suffix}"
    status, stderr = interrupted_run("embed", paths, small_model[1], out, after=8)
    assert status == 130, stderr
    assert stderr.endswith("\nmobinumba: interrupted\n"), stderr[-300:]
    partial_paths, partial, _ = read_embeddings(out)  # checks the pair agrees for .npy
    assert 8 <= len(partial_paths) < len(paths)
    assert partial_paths == paths[:len(partial_paths)]
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    assert run_cli("embed", *paths, "--weights", small_model[1], "--out", out,
                   "--resume") == 0
    found_paths, embeddings, errors = read_embeddings(out)
    assert found_paths == paths and errors == [None] * len(paths)
    np.testing.assert_array_equal(embeddings[:len(partial)], partial)
    reference = model.embed(sources)
    for index, row in enumerate(embeddings):  # image i is a link to source i % 3
        np.testing.assert_allclose(row, reference[index % 3], rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_dask_local_run_equals_the_plain_run(small_model, photos, slow_photos, tmp_path):
    """Partitions of 3 images on 2 local workers: the same rows, in the same (input) order,
    also though the first partition (3 large JPEGs) finishes after the next ones."""
    images = slow_photos[0] + all_paths(photos)
    plain, on_dask = tmp_path / "plain.npy", tmp_path / "dask.npy"
    assert run_cli("embed", *images, "--weights", small_model[1], "--out", plain) == 1
    assert run_cli("embed", *images, "--weights", small_model[1], "--out", on_dask,
                   "--dask-local", 2, "--partition-size", 3) == 1
    plain_rows, on_dask_rows = read_embeddings(plain), read_embeddings(on_dask)
    assert on_dask_rows[0] == plain_rows[0] and on_dask_rows[2] == plain_rows[2]
    np.testing.assert_allclose(on_dask_rows[1], plain_rows[1], rtol=1e-6, atol=1e-6)
    parquet = tmp_path / "dask.parquet"
    assert run_cli("embed", *images, "--weights", small_model[1], "--out", parquet,
                   "--dask-local", 2, "--partition-size", 4) == 1
    assert read_embeddings(parquet)[0] == plain_rows[0]


@pytest.mark.slow
def test_npy_needs_no_extra_and_parquet_dask_name_theirs(small_model, photos, tmp_path):
    """In a process where pyarrow, pandas, Dask, tqdm and torch cannot be imported, .npy
    embeds as here, and .parquet / --dask-local are one-line errors naming the extra."""
    from test_without_extras import run_without

    _, paths, _ = photos
    weights = ("--weights", small_model[1])
    npy, parquet = tmp_path / "plain.npy", tmp_path / "e.parquet"
    written, refused, no_dask = run_without(
        ["pyarrow", "pandas", "distributed", "dask", "tqdm", "torch"],
        ["embed", *paths[:4], *weights, "--out", npy],
        ["embed", *paths[:4], *weights, "--out", parquet],
        ["embed", *paths[:4], *weights, "--out", tmp_path / "d.npy", "--dask-local", 1])
    assert written["rc"] == 0 and "mobinumba embed: 4/4 images" in written["err"], written
    assert run_cli("embed", *paths[:4], *weights, "--out", tmp_path / "here.npy") == 0
    there, here = read_embeddings(npy), read_embeddings(tmp_path / "here.npy")
    assert there[0] == here[0] == paths[:4] and there[2] == here[2] == [None] * 4
    np.testing.assert_array_equal(there[1], here[1])
    assert refused == {"rc": 1, "out": "", "err": (
        f"mobinumba: error: {parquet}: writing Parquet needs pyarrow (pip install "
        f"'mobinumba[stream]'); or use .npy\n")}
    assert no_dask["rc"] == 1 and no_dask["err"].startswith(
        "mobinumba: error: --dask-scheduler / --dask-local need Dask: pip install "
        "'mobinumba[dask]'") and no_dask["err"].count("\n") == 1
    assert not parquet.exists() and not (tmp_path / "d.npy").exists()
