"""Write a file all at once or not at all, also when interrupted by SIGINT or SIGTERM.

The content goes to a temp file beside the target, which is renamed (or hard-linked, when
overwriting is not allowed, so a file that appeared meanwhile is not replaced either) into
place only when complete. Any failure removes the temp file. While the temp file is being
created, renamed or removed, SIGINT and SIGTERM are held back and delivered right after, so
no interruption can leave it behind.

Every file mobinumba writes whole goes through here: weight files (atomic_output), the bench
report (AtomicFile, write_atomically), a model shipped to a Dask worker (write_atomically),
Parquet results files (AtomicFile kept also after an interruption, see results.py) and .npy
embeddings with their sidecar (one AtomicFile with a companion, see results_npy.py).
"""
import contextlib
import os
import secrets
import signal
import threading
import weakref

from .errors import MobinumbaError

GUARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def atomic_output(path, overwrite=False):
    """Yield a temp path beside `path`; when the block completes, move it to `path`.

    Raises MobinumbaError when `path` exists and not `overwrite`, or its directory does not
    exist. If the block raises, or SIGINT (KeyboardInterrupt) or SIGTERM (SystemExit 143)
    arrives, the temp file is removed and `path` is left as it was.
    """
    with AtomicFile(path, overwrite) as output:
        yield output.temp_path


def write_atomically(path, data, overwrite=False):
    """Write `data` (str: UTF-8 text, or bytes) to `path` through atomic_output()."""
    with atomic_output(path, overwrite) as temp_path:
        if isinstance(data, str):
            with open(temp_path, "w", encoding="utf-8") as file:
                file.write(data)
        else:
            with open(temp_path, "wb") as file:
                file.write(data)


class AtomicFile:
    """A new, empty temp file beside `path` (at `temp_path`) that replaces `path` on commit()
    or is removed on discard(); SIGINT and SIGTERM are guarded from its creation until then.

    As a context manager it commits when the block completes (unless discard() was called in
    it) and discards when the block raises. Use the methods directly for a file that is
    written over a whole run and kept also when the run is interrupted (a Parquet results
    file: commit(after_interruption=True) once it is closed). Raises MobinumbaError when
    `path` exists and not `overwrite`, or its directory does not exist.

    companions: more paths in the same directory written with it (an .npy file's sidecar):
    each gets its own temp file (companion_temp_paths, in order), and they move into place
    together under one signal guard, companions first, `path` last.
    """

    def __init__(self, path, overwrite=False, companions=()):
        path = os.fspath(path)
        companions = [os.fspath(companion) for companion in companions]
        for target in [path] + companions:
            if os.path.exists(target) and not overwrite:
                raise MobinumbaError(f"{target}: file exists (use --force to overwrite)")
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise MobinumbaError(f"{path}: directory {directory} does not exist")
        self.path = path
        self.overwrite = overwrite
        self.temp_path = None
        self.companions = companions
        self.companion_temp_paths = []
        self._finished = False
        self._guard = _SignalGuard()
        self._guard.install()
        try:
            with self._guard.held():
                for companion in companions:
                    self.companion_temp_paths.append(
                        _create_temp_file(directory, os.path.basename(companion)))
                self.temp_path = _create_temp_file(directory, os.path.basename(path))
        except BaseException:  # a signal held back while creating it: remove it again
            self.discard()
            raise

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is not None:
            self.discard()
        elif not self._finished:
            self.commit()

    def commit(self, after_interruption=False):
        """Move the temp file to `path` (atomically; see the module doc).

        A signal that came since the temp file was created cancels the move (the temp file is
        removed and the signal raised), unless after_interruption: then the file is moved into
        place anyway, and a signal still pending is raised once it is there.
        """
        try:
            with self._guard.held(raise_pending_first=not after_interruption):
                if not after_interruption and self._guard.received is not None:
                    self._guard.reraise()  # the block swallowed the interruption: no move
                for temp_path, companion in zip(self.companion_temp_paths, self.companions):
                    _move_into_place(temp_path, companion, self.overwrite)
                _move_into_place(self.temp_path, self.path, self.overwrite)
                self._finished = True
        except BaseException:
            self.discard()
            raise
        finally:
            self._guard.restore()

    def discard(self):
        """Remove the temp file, leaving `path` as it was."""
        self._guard.interruptible = False  # this cleanup runs to the end
        try:
            if not self._finished:
                for temp_path in self.companion_temp_paths + [self.temp_path]:
                    if temp_path is not None and os.path.exists(temp_path):
                        os.unlink(temp_path)
        finally:
            self._finished = True
            self._guard.restore()


def _create_temp_file(directory, name):
    """Create a new, empty `.name.XXXXXXXXXXXX.tmp` in directory; returns its path.

    Unlike tempfile.mkstemp (always mode 0600), the file gets the usual 0666 & ~umask, so
    the output is readable like any other file the user writes.
    """
    while True:
        temp_path = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(temp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return temp_path
        except FileExistsError:
            continue


def _move_into_place(temp_path, path, overwrite):
    if overwrite:
        os.replace(temp_path, path)
        return
    try:
        os.link(temp_path, path)  # atomic, and fails if `path` appeared since the check
    except FileExistsError:
        raise MobinumbaError(f"{path}: file exists (use --force to overwrite)") from None
    except OSError:  # a filesystem without hard links
        if os.path.exists(path):
            raise MobinumbaError(f"{path}: file exists (use --force to overwrite)") from None
        os.replace(temp_path, path)
        return
    os.unlink(temp_path)


def _in_finalizer(frame):
    """True when `frame` runs a weakref callback or a __del__ (h5py closes objects through
    weakref callbacks): an exception raised there is printed and dropped, so the signal is
    left pending and raised at the next held() instead."""
    return frame is not None and (frame.f_code.co_filename == weakref.__file__
                                  or frame.f_code.co_name == "__del__")


class _SignalGuard:
    """SIGINT / SIGTERM handlers for the lifetime of one AtomicFile.

    Every signal is recorded (`received`). While `interruptible`, it also raises at once
    (KeyboardInterrupt for SIGINT, SystemExit(128 + signum) for SIGTERM) and marks the guard
    not interruptible, so that the cleanup it triggers cannot itself be interrupted. Inside
    held(), a signal is only recorded as pending; a pending one raises when held() begins or
    ends, so the temp file is never created or moved into place unnoticed by an interruption.
    Handlers can only be set from the main thread; elsewhere the guard does nothing.
    """

    def __init__(self):
        self.interruptible = True
        self.received = None  # the last signal number, raised or not
        self.pending = None   # a signal not yet raised as an exception
        self._previous = {}

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in GUARDED_SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:  # respect nohup and friends
                self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self):
        """Put the previous handlers back (once; later calls do nothing)."""
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    @contextlib.contextmanager
    def held(self, raise_pending_first=True):
        # A signal whose exception got lost (raised inside a weakref callback or a __del__,
        # where Python only prints it) is still pending: honour it before going on.
        if raise_pending_first and self.pending is not None:
            self._raise(self.pending)
        self.interruptible = False
        yield  # if the block raises, the guard stays held for the cleanup that follows
        self.interruptible = True
        if self.pending is not None:
            self._raise(self.pending)

    def reraise(self):
        """Raise the exception of the last signal received."""
        self._raise(self.received)

    def _handle(self, signum, frame):
        self.received = self.pending = signum
        if self.interruptible and not _in_finalizer(frame):
            self._raise(signum)

    def _raise(self, signum):
        self.interruptible = False
        self.pending = None
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)
