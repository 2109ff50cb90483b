"""Converter safety: no partial file and no temp file after Ctrl-C or SIGTERM, and never an
overwrite without --force, also when interrupted.

`mobinumba convert` runs as a subprocess on a full-width (17 MB) checkpoint; the test
watches the output directory and signals the process once the temp file appears: at once
(mid-write), a little later, or during the self-check (the temp file complete, not yet
moved into place).
"""
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import save_file

import mobinumba
from conftest import build_reference
from mobinumba.atomic import atomic_output


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
