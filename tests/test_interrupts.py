"""Converter safety: no partial file and no temp file after Ctrl-C or SIGTERM, and never an
overwrite without --force, also when interrupted.

`mobinumba convert` runs as a subprocess on a full-width (17 MB) checkpoint, with the
converter's test hook (MOBINUMBA_TEST_PAUSE_BEFORE_CHECK, mobinumba/convert/__init__.py) set:
once the temp file is complete, the converter creates HOOK.paused and waits for HOOK. The test
signals it in a window it knows: mid-write (as soon as the temp file appears; the pause is then
never reached), paused with the temp file complete, in the self-check (released, the marker
gone, the output not yet there) or after the move into place; and checks afterwards, from the
marker, that the signal landed where it meant. Then atomic.py's API on its own, and a
Parquet `predict --out` run stopped by SIGTERM.
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
from mobinumba.convert import PAUSE_BEFORE_CHECK


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


class Conversion:
    """`mobinumba convert` in a subprocess, writing into `directory` (which holds nothing
    else), paused by the test hook once its temp file is complete."""

    def __init__(self, checkpoint, directory, extra=()):
        self.directory = directory
        self.output = directory / "m.h5"
        self.hook = directory.parent / f"{directory.name}-release"
        self.paused = directory.parent / f"{directory.name}-release.paused"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mobinumba.cli", "convert", str(checkpoint), "-o",
             str(self.output), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, preexec_fn=default_sigint,
            env={**os.environ, PAUSE_BEFORE_CHECK: str(self.hook)})

    def wait_for(self, condition, what):
        deadline = time.monotonic() + 300
        while not condition():
            assert self.process.poll() is None, \
                f"finished before {what}: {self.process.stderr.read()}"
            assert time.monotonic() < deadline, f"no {what} within 300 s"
            time.sleep(0.0005)

    def temp_files(self):
        return [name for name in os.listdir(self.directory) if name.endswith(".tmp")]

    def signal_in(self, window, signum=signal.SIGINT, complete_size=None):
        """Send `signum` in `window`; returns (returncode, stderr). Mid-write, the temp file
        must then be smaller than `complete_size`, the size of a complete output."""
        self.wait_for(self.temp_files, "temp file")
        if window == "mid-write":
            size = os.path.getsize(self.directory / self.temp_files()[0])
            assert size < complete_size  # the write is not finished
        else:
            self.wait_for(self.paused.exists, "pause with the temp file complete")
            temps = self.temp_files()
            assert temps, "paused without a temp file: it was moved before the check"
            assert mobinumba.load(self.directory / temps[0]).num_classes == 1000  # complete
        if window in ("self-check", "after the move"):
            self.hook.touch()  # release: the converter removes the marker, then checks
            self.wait_for(lambda: not self.paused.exists(), "release")
        if window == "after the move":
            self.wait_for(self.output.exists, "the output")
        self.process.send_signal(signum)
        if window == "mid-write":
            # A signal that lands in one of h5py's weakref callbacks (it closes objects
            # through them) cannot raise there: atomic.py keeps it pending and raises it
            # before the move. The write then finishes and reaches the pause: release it.
            self.wait_for(lambda: self.paused.exists() or self.process.poll() is not None,
                          "exit or pause")
            if self.paused.exists():
                self.hook.touch()
        _, stderr = self.process.communicate(timeout=300)
        # Where the signal landed: paused, the marker is still there; released (in the
        # self-check or after the move), the converter removed it.
        if window != "mid-write":
            assert self.paused.exists() == (window == "paused"), window
        return self.process.returncode, stderr


@pytest.mark.slow  # each case converts a full-width model in a subprocess
@pytest.mark.parametrize("window,check", [("mid-write", False), ("paused", False),
                                          ("self-check", True), ("after the move", False)])
def test_ctrl_c_leaves_nothing(checkpoint, complete_size, tmp_path, window, check):
    directory = tmp_path / "out"
    directory.mkdir()
    conversion = Conversion(checkpoint, directory, extra=() if check else ("--no-check",))
    returncode, stderr = conversion.signal_in(window, complete_size=complete_size)
    assert not conversion.temp_files()
    if window != "after the move":  # interrupted before the move: nothing may remain
        assert returncode == 130, stderr
        assert stderr == "mobinumba: interrupted\n"
        assert os.listdir(directory) == []
    else:  # the file was already in place (the signal may even land during shutdown)
        assert returncode in (0, 130, -signal.SIGINT), stderr
        assert os.listdir(directory) == ["m.h5"]
        assert mobinumba.load(conversion.output).num_classes == 1000


@pytest.mark.slow
@pytest.mark.parametrize("window", ["mid-write", "paused"])
def test_ctrl_c_with_force_keeps_the_old_file(checkpoint, complete_size, tmp_path, window):
    directory = tmp_path / "out"
    directory.mkdir()
    (directory / "m.h5").write_bytes(b"the previous model")
    conversion = Conversion(checkpoint, directory, extra=("--force", "--no-check"))
    returncode, stderr = conversion.signal_in(window, complete_size=complete_size)
    assert returncode == 130, stderr
    assert os.listdir(directory) == ["m.h5"]
    assert conversion.output.read_bytes() == b"the previous model"


@pytest.mark.slow
def test_sigterm_leaves_nothing(checkpoint, complete_size, tmp_path):
    directory = tmp_path / "out"
    directory.mkdir()
    conversion = Conversion(checkpoint, directory, extra=("--no-check",))
    returncode, stderr = conversion.signal_in("mid-write", signal.SIGTERM, complete_size)
    assert returncode == 128 + signal.SIGTERM, stderr
    assert os.listdir(directory) == []


@pytest.fixture(scope="module")
def complete_size(checkpoint, tmp_path_factory):
    """The size of the checkpoint's converted file, written without interruption."""
    directory = tmp_path_factory.mktemp("uninterrupted")
    result = subprocess.run([sys.executable, "-m", "mobinumba.cli", "convert", str(checkpoint),
                             "-o", str(directory / "m.h5"), "--no-check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert os.listdir(directory) == ["m.h5"]
    assert mobinumba.load(directory / "m.h5").num_classes == 1000
    return os.path.getsize(directory / "m.h5")


@pytest.mark.slow
def test_uninterrupted_convert_writes_a_complete_file(complete_size):
    assert complete_size > 16 * 2 ** 20  # 4.2 M float32 weights


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
