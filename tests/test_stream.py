"""Streaming many images: input expansion, predict_files, results files, --resume, the CLI."""
import csv
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numba
import numpy as np
import pytest

import mobinumba
from conftest import SMALL_LABELS, make_photos, run_cli, torch_logits
from mobinumba.inputs import expand_inputs
from mobinumba.results import columns, read_results, result_row
from mobinumba.threads import available_cores
from test_interrupts import default_sigint


@pytest.fixture(scope="module")
def model(small_model):
    return mobinumba.load(small_model[1])


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """23 readable images (sorted paths) and one that is not an image, in one directory."""
    directory = tmp_path_factory.mktemp("photos")
    paths = make_photos(directory, 23)
    bad = directory / "sub" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    return directory, paths, str(bad)


@pytest.fixture(scope="module")
def reference(model, small_model, photos):
    """path -> (top-5 indices, their probabilities) from a PyTorch float64 forward pass."""
    _, paths, _ = photos
    logits = torch_logits(small_model[0], np.stack([model.preprocess(p) for p in paths]))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    return {path: (np.argsort(-row)[:5], np.sort(row)[::-1][:5])
            for path, row in zip(paths, probabilities)}


def all_paths(photos):
    _, paths, bad = photos
    return sorted(paths + [bad])


# ------------------------------------------------------------------------- input expansion

def test_expand_inputs_recurses_sorts_filters_and_keeps_plain_paths(tmp_path):
    (tmp_path / "b" / "deep").mkdir(parents=True)
    for name in ["b/deep/z.PNG", "b/a.jpg", "b/notes.txt", "c.jpeg", "a.webp"]:
        (tmp_path / name).write_bytes(b"x")
    listed = expand_inputs([tmp_path / "b", str(tmp_path / "*.jp*g"), "missing.jpg",
                            tmp_path / "b" / "a.jpg", tmp_path / "b" / "notes.txt"])
    assert listed == [str(tmp_path / "b" / "a.jpg"), str(tmp_path / "b" / "deep" / "z.PNG"),
                      str(tmp_path / "c.jpeg"), "missing.jpg", str(tmp_path / "b" / "notes.txt")]
    assert expand_inputs([str(tmp_path / "**" / "*.PNG")]) == [str(tmp_path / "b/deep/z.PNG")]


def test_arguments_that_name_no_image_are_kept_to_fail_when_read(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no images here")
    (tmp_path / "shot[1].png").write_bytes(b"x")  # glob characters in a real file's name
    (tmp_path / "shot1.png").write_bytes(b"x")
    arguments = [str(tmp_path / "empty"), str(tmp_path / "*.tif"), str(tmp_path / "shot[1].png")]
    assert expand_inputs(arguments) == arguments


# --------------------------------------------------------------------------- predict_files

def test_predict_files_matches_pytorch_and_reports_unreadable_files(model, photos, reference):
    paths = all_paths(photos) + ["no/such/file.png"]
    results = list(mobinumba.predict_files(paths, batch_size=5, topk=5, weights=model))
    assert [r.path for r in results] == paths
    for result in results:
        if result.path in reference:
            indices, probabilities = reference[result.path]
            assert result.error is None
            assert result.predictions[0].index == indices[0]
            np.testing.assert_allclose([p.probability for p in result.predictions],
                                       probabilities, rtol=1e-4, atol=1e-6)
            assert [p.label for p in result.predictions] == \
                [SMALL_LABELS[p.index] for p in result.predictions]
        else:
            assert result.predictions is None and result.path in result.error
    for bad in (photos[2], "no/such/file.png"):  # the message Model.preprocess gives
        with pytest.raises(mobinumba.InputError) as refused:
            model.preprocess(bad)
        assert results[paths.index(bad)].error == str(refused.value)


@pytest.fixture(scope="module")
def one_by_one(model, photos):
    """(path, Model.predict of that image alone, or None if unreadable) for every path."""
    return [(p, None) if p == photos[2] else (p, model.predict([p], topk=3)[0])
            for p in all_paths(photos)]


@pytest.mark.parametrize("batch_size,workers", [(1, 0), (4, 0), (7, 1), (16, 3), (64, 2)])
def test_batching_and_decode_threads_do_not_change_results(model, photos, one_by_one,
                                                           batch_size, workers):
    paths = all_paths(photos)
    results = mobinumba.predict_files(paths, batch_size=batch_size, topk=3, weights=model,
                                      workers=workers)
    assert [(r.path, r.predictions) for r in results] == one_by_one


def test_predict_files_is_lazy_and_reads_a_bounded_window_ahead(model, photos):
    """An endless stream of paths: taking 30 results reads at most 30 + 2 * batch_size."""
    taken = []

    def endless():
        for path in itertools.cycle(photos[1]):
            taken.append(path)
            yield path

    results = mobinumba.predict_files(endless(), batch_size=4, topk=1, weights=model,
                                      workers=2)
    first = list(itertools.islice(results, 30))
    assert [r.path for r in first] == taken[:30]
    assert len(taken) <= 30 + 2 * 4
    results.close()  # stops the decode pool
    assert not [t for t in threading.enumerate() if t.name.startswith("mobinumba-decode")]


def test_predict_files_weights_argument_and_option_checks(model, small_model, photos):
    path = photos[1][0]
    from_path = next(mobinumba.predict_files([path], topk=2, weights=small_model[1]))
    assert from_path == next(mobinumba.predict_files([path], topk=2, weights=model))
    shipped = next(mobinumba.predict_files([path], topk=1))  # the default ImageNet model
    assert shipped.predictions[0].label == mobinumba.load().label(shipped.predictions[0].index)
    for options, words in [({"batch_size": 0}, "batch_size must be an integer in 1..1024"),
                           ({"topk": 11}, "topk must be an integer in 1..10, got 11"),
                           ({"workers": -1}, "workers must be an integer in 0..64"),
                           ({"batch_size": True}, "got True")]:
        with pytest.raises(mobinumba.InputError, match=words):
            mobinumba.predict_files([path], weights=model, **options)


# ---------------------------------------------------------------------- results file (CLI)

@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_cli_out_writes_one_row_per_image_in_every_format(small_model, model, photos, tmp_path,
                                                          suffix, capsys):
    directory, _, bad = photos
    out = tmp_path / f"results{suffix}"
    status = run_cli("predict", directory, "--weights", small_model[1], "--out", out,
                     "--topk", 3, "--batch-size", 5)
    assert status == 1  # one image could not be read
    captured = capsys.readouterr()
    assert f"mobinumba: error: {bad}: " in captured.err
    assert "1 of 24 images could not be read" in captured.err and "Traceback" not in captured.err
    expected = [result_row(r, 3) for r in
                mobinumba.predict_files(all_paths(photos), topk=3, weights=model)]
    rows = read_results(out)
    assert rows == expected  # exact: probabilities round-trip every format
    assert list(rows[0]) == columns(3)
    assert [row["path"] for row in rows if row["error"]] == [bad]


def test_cli_out_exit_status_zero_when_every_image_reads(small_model, photos, tmp_path, capsys):
    out = tmp_path / "ok.csv"
    assert run_cli("predict", *photos[1][:3], "--weights", small_model[1], "--out", out) == 0
    assert f"wrote 3 rows to {out}" in capsys.readouterr().out
    assert len(read_results(out)) == 3


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resume_skips_done_rows_and_drops_a_torn_last_line(small_model, model, photos, tmp_path,
                                                           suffix, capsys):
    paths = all_paths(photos)
    out = tmp_path / f"results{suffix}"
    assert run_cli("predict", *paths[:10], "--weights", small_model[1], "--out", out) == 0
    # Mark a finished row so that a recomputation would show, then tear a last row.
    rewrite_first_probability(out, 0.125)
    text = out.read_text()
    out.write_text(text + (paths[10] + ",ha" if suffix == ".csv" else '{"path": "x'))
    assert run_cli("predict", photos[0], "--weights", small_model[1], "--out", out,
                   "--resume") == 1
    assert "resuming" in capsys.readouterr().err
    rows = read_results(out)
    assert rows[0]["probability_1"] == 0.125
    assert [row["path"] for row in rows] == paths  # each image once, in order
    assert out.read_text().startswith(text)  # earlier rows untouched, not recomputed
    expected = [result_row(r, 5) for r in mobinumba.predict_files(paths[10:], weights=model)]
    assert rows[10:] == expected
    assert run_cli("predict", photos[0], "--weights", small_model[1], "--out", out,
                   "--resume") == 0
    assert "nothing to do: all 24 images are already in" in capsys.readouterr().out


def rewrite_first_probability(path, value):
    """Set probability_1 of the first row of a .csv or .jsonl results file."""
    rows = read_results(path)
    rows[0]["probability_1"] = value
    with open(path, "w", newline="") as file:
        if str(path).endswith(".jsonl"):
            file.writelines(json.dumps(row) + "\n" for row in rows)
        else:
            writer = csv.DictWriter(file, list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)


@pytest.fixture(scope="module")
def slow_photos(tmp_path_factory):
    """(sources, paths): 3 noise JPEGs of 1000x750 (slow to decode: tens of ms each) and 60
    sorted paths, hard links to them in turn, so that a run lasts seconds."""
    from PIL import Image

    directory = tmp_path_factory.mktemp("slow_photos")
    rng = np.random.default_rng(3)
    sources = []
    for index in range(3):
        path = directory / f"source{index}.jpg"
        Image.fromarray((rng.random((750, 1000, 3)) * 255).astype(np.uint8)).save(path)
        sources.append(str(path))
    links = directory / "links"
    links.mkdir()
    paths = []
    for index in range(60):
        path = links / f"img{index:03d}.jpg"
        os.link(sources[index % 3], path)
        paths.append(str(path))
    return sources, paths


def interrupted_predict(paths, weights, out, after):
    """Run `mobinumba predict --out` in a process and send it a real SIGINT once its progress
    bar reports at least `after` images done. Returns (exit status, stderr)."""
    return interrupted_run("predict", paths, weights, out, after)


def interrupted_run(command, paths, weights, out, after):
    """interrupted_predict() for `mobinumba COMMAND` (predict or embed)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mobinumba.cli", command, *paths, "--weights", weights,
         "--out", str(out), "--batch-size", "4"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=default_sigint)
    chunks = []
    reader = threading.Thread(target=lambda: chunks.extend(
        iter(lambda: os.read(process.stderr.fileno(), 4096), b"")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while True:  # tqdm writes "... N/60 ..." to stderr as the rows are written
        done = [int(n) for n in re.findall(rb"(\d+)/%d" % len(paths), b"".join(chunks))]
        if done and max(done) >= after:
            break
        assert process.poll() is None, b"".join(chunks).decode()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    reader.join(timeout=60)
    return process.returncode, b"".join(chunks).decode()


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_ctrl_c_keeps_whole_rows_and_resumes(small_model, model, slow_photos, tmp_path, suffix,
                                            capsys):
    """A real SIGINT to a running `mobinumba predict --out`: exit status 130, "interrupted",
    the rows written so far whole and in order, no temp file; --resume completes the file."""
    sources, paths = slow_photos
    out = tmp_path / f"results{suffix}"
    status, stderr = interrupted_predict(paths, small_model[1], out, after=8)
    assert status == 130, stderr
    assert stderr.endswith("\nmobinumba: interrupted\n"), stderr[-300:]
    partial = read_results(out)
    assert 8 <= len(partial) < len(paths), len(partial)
    assert [row["path"] for row in partial] == paths[:len(partial)]
    if suffix == ".csv":
        assert out.read_text().endswith("\n")  # no torn last line
    assert os.listdir(tmp_path) == [out.name]  # no temp file left
    assert run_cli("predict", *paths, "--weights", small_model[1], "--out", out,
                   "--resume") == 0
    assert f"{len(partial)} of {len(paths)} images are already there" in capsys.readouterr().err
    rows = read_results(out)
    assert rows[:len(partial)] == partial and [row["path"] for row in rows] == paths
    expected = [result_row(r, 5) for r in mobinumba.predict_files(sources, weights=model)]
    for index, row in enumerate(rows):  # image i is a link to source i % 3
        assert row == {**expected[index % 3], "path": paths[index]}, index


def test_cli_out_refusals_are_one_line_errors(small_model, photos, tmp_path, capsys,
                                              monkeypatch):
    image = photos[1][0]
    weights = ("--weights", small_model[1])
    existing = tmp_path / "r.csv"
    assert run_cli("predict", image, *weights, "--out", existing, "--topk", 2) == 0
    before = existing.read_text()
    capsys.readouterr()
    cases = [
        (("--out", existing), "r.csv exists; pass --resume to continue it or --force"),
        (("--out", existing, "--resume"), "cannot resume: it has columns (path, label_1"),
        (("--out", tmp_path / "r.txt"), "unknown results format '.txt'"),
        (("--out", tmp_path / "nowhere" / "r.csv"), "does not exist"),
        (("--resume",), "--resume needs --out FILE"),
        (("--dask-local", 2), "--dask-local needs --out FILE"),
        (("--decode-threads", 1), "--decode-threads needs --out FILE"),
        (("--out", tmp_path / "t.csv", "--partition-size", 9),
         "--partition-size needs --dask-scheduler or --dask-local"),
        (("--out", tmp_path / "t.csv", "--decode-threads", 1, "--dask-local", 1),
         "--decode-threads is for runs on this machine"),
        (("--out", tmp_path / "t.csv", "--topk", 11), "--topk 11 exceeds the model's 10"),
    ]
    for extra, words in cases:
        assert run_cli("predict", image, *weights, *extra) == 1, extra
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, (extra, err)
    assert existing.read_text() == before
    assert not (tmp_path / "t.csv").exists()
    assert run_cli("predict", image, *weights, "--out", existing, "--force") == 0
    assert list(read_results(existing)[0]) == columns(5)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    assert run_cli("predict", image, *weights, "--out", tmp_path / "r.parquet") == 1
    assert "writing Parquet needs pyarrow" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "distributed", None)  # nor Dask
    assert run_cli("predict", image, *weights, "--out", tmp_path / "d.csv", "--dask-local",
                   1) == 1
    assert "need Dask: pip install 'mobinumba[dask]'" in capsys.readouterr().err
    assert not (tmp_path / "d.csv").exists()


@pytest.mark.parametrize("options,decode,kernel", [
    ((), None, None), (("--decode-threads", 0), 0, None), (("--threads", 1), None, 1),
])
def test_decode_threads_and_kernel_threads_share_the_cores(small_model, photos, tmp_path,
                                                           monkeypatch, options, decode, kernel):
    """By default a third of the cores decode and the kernels get the rest, for the run."""
    import mobinumba.batch

    seen = {}

    def recording(*args, workers, **kwargs):
        seen.update(workers=workers, threads=mobinumba.get_threads())
        return predict_files(*args, workers=workers, **kwargs)

    predict_files = mobinumba.batch.predict_files
    monkeypatch.setattr(mobinumba.batch, "predict_files", recording)
    cores = available_cores()
    before = mobinumba.get_threads()
    try:
        assert run_cli("predict", *photos[1][:3], "--weights", small_model[1], "--out",
                       tmp_path / "r.csv", *options) == 0
        after = mobinumba.get_threads()
    finally:
        mobinumba.set_threads(before)  # --threads sets the process's count for good
    decode = max(1, cores // 3) if decode is None else decode
    limit = numba.config.NUMBA_NUM_THREADS
    assert seen == {"workers": decode, "threads": kernel or max(1, min(cores - decode, limit))}
    assert after == (before if kernel is None else kernel)


def test_progress_without_tqdm_prints_plain_lines(small_model, photos, tmp_path, monkeypatch,
                                                  capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    out = tmp_path / "r.jsonl"
    assert run_cli("predict", *photos[1][:4], "--weights", small_model[1], "--out", out) == 0
    assert "mobinumba predict: 4/4 images, " in capsys.readouterr().err
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == photos[1][:4]


def test_stdout_predict_takes_directories_and_batch_size(small_model, photos, capsys):
    directory, paths, bad = photos
    assert run_cli("predict", directory, "--weights", small_model[1], "--json",
                   "--batch-size", 4) == 1
    printed = json.loads(capsys.readouterr().out)
    assert [entry["path"] for entry in printed if "predictions" in entry] == paths
    assert [entry["path"] for entry in printed if "error" in entry] == [bad]
