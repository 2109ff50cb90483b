"""Write a file all at once or not at all, also when interrupted by SIGINT or SIGTERM.

The content goes to a temp file beside the target, which is renamed (or hard-linked, when
overwriting is not allowed, so a file that appeared meanwhile is not replaced either) into
place only when complete. Any failure removes the temp file. While the temp file is being
created, renamed or removed, SIGINT and SIGTERM are held back and delivered right after, so
no interruption can leave it behind.
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
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise MobinumbaError(f"{path}: file exists (use --force to overwrite)")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise MobinumbaError(f"{path}: directory {directory} does not exist")
    guard = _SignalGuard()
    with guard.installed():
        temp_path = None
        try:
            with guard.held():
                temp_path = _create_temp_file(directory, os.path.basename(path))
            yield temp_path
            with guard.held():
                _move_into_place(temp_path, path, overwrite)
        except BaseException:
            guard.interruptible = False
            if temp_path is not None and os.path.exists(temp_path):
                os.unlink(temp_path)
            raise


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
    """SIGINT / SIGTERM handlers for the duration of one atomic write.

    Every signal is recorded as pending. While `interruptible`, it also raises at once
    (KeyboardInterrupt for SIGINT, SystemExit(128 + signum) for SIGTERM) and marks the guard
    not interruptible, so that the cleanup it triggers cannot itself be interrupted. Inside
    held(), a signal is only recorded; a pending one raises when held() begins or ends, so
    the temp file is never moved into place after an interruption. Handlers can only be set
    from the main thread; elsewhere the guard does nothing.
    """

    def __init__(self):
        self.interruptible = True
        self.pending = None

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {}
        for signum in GUARDED_SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:  # respect nohup and friends
                previous[signum] = signal.signal(signum, self._handle)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @contextlib.contextmanager
    def held(self):
        # A signal whose exception got lost (raised inside a weakref callback or a __del__,
        # where Python only prints it) is still pending: honour it before going on.
        if self.pending is not None:
            self._raise(self.pending)
        self.interruptible = False
        yield  # if the block raises, the guard stays held for the cleanup that follows
        self.interruptible = True
        if self.pending is not None:
            self._raise(self.pending)

    def _handle(self, signum, frame):
        self.pending = signum
        if self.interruptible and not _in_finalizer(frame):
            self._raise(signum)

    def _raise(self, signum):
        self.interruptible = False
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)
