"""Converter safety: no partial file and no temp file after Ctrl-C or SIGTERM, and never an
overwrite without --force, also when interrupted.

`mobinumba convert` runs as a subprocess on a full-width (17 MB) checkpoint; the test
watches the output directory and signals the process once the temp file appears: at once
(mid-write), a little later, or during the self-check (the temp file complete, not yet
moved into place). Then atomic.py's API on its own, and a Parquet `predict --out` run
stopped by SIGTERM.
"""
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from safetensors.torch import save_file

import mobinumba
from conftest import build_reference
from mobinumba.atomic import AtomicFile, atomic_output, write_atomically


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("interrupts")
    model = build_reference("timm", 1.0, "relu6", head=False, seed=6)
    path = directory / "m.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def default_sigint():
    # A shell's background job starts with SIGINT ignored, which Python then keeps ignoring:
    # give the child the default, as an interactive Ctrl-C would find it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupted_convert(checkpoint, output, delay, signum=signal.SIGINT, extra=()):
    """Run convert, send `signum` `delay` s after its temp file appears.

    Returns (process, stderr, early): `early` is True when, just before the signal, the
    output was still absent or unchanged, so the signal came before the move into place.
    """
    directory = output.parent
    before = output.read_bytes() if output.exists() else None
    process = subprocess.Popen(
        [sys.executable, "-m", "mobinumba.cli", "convert", str(checkpoint), "-o", str(output),
         *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=default_sigint)
    deadline = time.monotonic() + 300
    while not any(name.endswith(".tmp") for name in os.listdir(directory)):
        assert process.poll() is None, f"finished before writing: {process.stderr.read()}"
        assert time.monotonic() < deadline
        time.sleep(0.0005)
    time.sleep(delay)
    early = (output.read_bytes() if output.exists() else None) == before
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=300)
    return process, stderr, early


def leftovers(directory, keep):
    return sorted(name for name in os.listdir(directory) if name not in keep)


def no_temp_files(directory):
    return not [name for name in os.listdir(directory) if name.endswith(".tmp")]


@pytest.mark.parametrize("delay,check", [(0.0, False), (0.005, False), (0.02, False),
                                         (0.2, True), (0.6, True)])
def test_ctrl_c_leaves_nothing(checkpoint, tmp_path, delay, check):
    output = tmp_path / "m.h5"
    process, stderr, early = interrupted_convert(checkpoint, output, delay,
                                                 extra=() if check else ("--no-check",))
    assert no_temp_files(tmp_path)
    if early:  # interrupted while writing or checking: nothing may remain
        assert process.returncode == 130, stderr
        assert stderr == "mobinumba: interrupted\n"
        assert leftovers(tmp_path, keep=()) == []
    else:  # the file was already in place (the signal may even land during shutdown)
        assert process.returncode in (0, 130, -signal.SIGINT), stderr
        assert mobinumba.load(output).num_classes == 1000


def test_ctrl_c_with_force_keeps_the_old_file(checkpoint, tmp_path):
    output = tmp_path / "m.h5"
    for delay in (0.0, 0.01):
        output.write_bytes(b"the previous model")
        process, stderr, early = interrupted_convert(checkpoint, output, delay,
                                                     extra=("--force", "--no-check"))
        assert no_temp_files(tmp_path) and leftovers(tmp_path, keep=("m.h5",)) == []
        if early:
            assert process.returncode == 130, stderr
            assert output.read_bytes() == b"the previous model"
        else:
            assert mobinumba.load(output).num_classes == 1000


def test_sigterm_leaves_nothing(checkpoint, tmp_path):
    output = tmp_path / "m.h5"
    process, stderr, early = interrupted_convert(checkpoint, output, 0.0, signal.SIGTERM,
                                                 extra=("--no-check",))
    assert early and process.returncode == 128 + signal.SIGTERM, stderr
    assert leftovers(tmp_path, keep=()) == []


def test_uninterrupted_convert_writes_a_complete_file(checkpoint, tmp_path):
    result = subprocess.run([sys.executable, "-m", "mobinumba.cli", "convert", str(checkpoint),
                             "-o", str(tmp_path / "m.h5"), "--no-check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert leftovers(tmp_path, keep=("m.h5",)) == []
    assert mobinumba.load(tmp_path / "m.h5").num_classes == 1000


# ------------------------------------------------------------------------- atomic_output

def test_signal_inside_the_block_removes_the_temp_file(tmp_path):
    path = tmp_path / "out.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(path) as temp:
            with open(temp, "wb") as stream:
                stream.write(b"half")
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler raises before this ends
    assert os.listdir(tmp_path) == []


def test_file_that_appears_meanwhile_is_not_replaced(tmp_path):
    path = tmp_path / "out.bin"
    with pytest.raises(mobinumba.MobinumbaError, match="file exists"):
        with atomic_output(path) as temp:
            with open(temp, "wb") as stream:
                stream.write(b"new")
            path.write_bytes(b"someone else's")  # between the first check and the move
    assert path.read_bytes() == b"someone else's"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_overwrite_replaces_and_handlers_are_restored(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with atomic_output(path, overwrite=True) as temp:
        with open(temp, "wb") as stream:
            stream.write(b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.bin"]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def handlers():
    return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)


def test_an_interruption_swallowed_in_the_block_still_cancels_the_move(tmp_path):
    path = tmp_path / "out.bin"
    before = handlers()
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(path) as temp:
            with open(temp, "wb") as stream:
                stream.write(b"half")
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            except KeyboardInterrupt:
                pass  # code that swallows it must not get its file moved into place
    assert os.listdir(tmp_path) == [] and handlers() == before


def test_commit_after_interruption_keeps_what_was_written(tmp_path):
    """The Parquet results writer's way: rows written before Ctrl-C replace the output."""
    path = tmp_path / "rows.bin"
    path.write_bytes(b"previous rows")
    before = handlers()
    output = AtomicFile(path, overwrite=True)
    with pytest.raises(KeyboardInterrupt):
        with open(output.temp_path, "wb") as stream:
            stream.write(b"previous rows, new rows")
            stream.flush()
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    output.commit(after_interruption=True)
    assert path.read_bytes() == b"previous rows, new rows"
    assert os.listdir(tmp_path) == ["rows.bin"] and handlers() == before


def test_discard_keeps_the_previous_file_and_restores_the_handlers(tmp_path):
    path = tmp_path / "report.png"
    path.write_bytes(b"old chart")
    before = handlers()
    with AtomicFile(path, overwrite=True) as output:
        with open(output.temp_path, "wb") as stream:
            stream.write(b"new")
        output.discard()  # e.g. nothing to draw
    assert path.read_bytes() == b"old chart" and os.listdir(tmp_path) == ["report.png"]
    assert handlers() == before


def test_write_atomically_text_bytes_and_refusals(tmp_path):
    path = tmp_path / "report.md"
    write_atomically(path, "caf\u00e9\n")
    assert path.read_bytes() == "caf\u00e9\n".encode("utf-8")
    with pytest.raises(mobinumba.MobinumbaError, match="file exists \\(use --force"):
        write_atomically(path, "again")
    write_atomically(path, b"\x00bytes", overwrite=True)
    assert path.read_bytes() == b"\x00bytes"
    with pytest.raises(mobinumba.MobinumbaError, match="does not exist"):
        write_atomically(tmp_path / "missing" / "x.md", "text")
    assert os.listdir(tmp_path) == ["report.md"]
    assert (os.stat(path).st_mode & 0o777) == 0o666 & ~current_umask()  # not mkstemp's 0600


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------- Parquet results, SIGTERM

def test_sigterm_during_a_parquet_run_keeps_whole_rows_and_no_temp_file(small_model, tmp_path):
    """The Parquet file is rewritten through a temp file for the whole run: SIGTERM, like
    Ctrl-C, moves the rows done so far into place and leaves no temp file. The signal is sent
    once the progress bar (or plain line) shows 20 images done."""
    from PIL import Image

    from mobinumba.results import read_results

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (48, 40), (200, 30, 90)).save(images / "0000.png")
    for index in range(1, 3000):
        os.symlink(images / "0000.png", images / f"{index:04d}.png")
    out = tmp_path / "results.parquet"
    process = subprocess.Popen(
        [sys.executable, "-m", "mobinumba.cli", "predict", str(images), "--weights",
         small_model[1], "--out", str(out), "--batch-size", "1", "--decode-threads", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=default_sigint)
    stderr = bytearray()

    def read_stderr():
        while chunk := os.read(process.stderr.fileno(), 4096):
            stderr.extend(chunk)

    reader = threading.Thread(target=read_stderr)
    reader.start()
    deadline = time.monotonic() + 300
    while max(map(int, re.findall(rb"(\d+)/3000", bytes(stderr))), default=0) < 20:
        assert process.poll() is None, f"finished before the signal: {bytes(stderr)[-500:]}"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert any(name.endswith(".tmp") for name in os.listdir(tmp_path))  # rows go there
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=300)
    reader.join()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert sorted(os.listdir(tmp_path)) == ["images", "results.parquet"]
    paths = [row["path"] for row in read_results(out)]
    assert 0 < len(paths) < 3000, len(paths)
    assert paths == [str(images / f"{index:04d}.png") for index in range(len(paths))]
