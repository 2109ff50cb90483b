"""Exception types raised by mobinumba for problems with user-supplied input.

Every message is one line that names the offending file, key, shape or value. The CLI prints
the message and exits non-zero; anything that is not one of these is a bug in mobinumba.
"""
import os


class MobinumbaError(Exception):
    """Base class of every error caused by user input (files, arrays, images, options)."""


class FormatError(MobinumbaError, ValueError):
    """A mobinumba HDF5 weight file is unreadable, incomplete or inconsistent."""


class CheckpointError(MobinumbaError, ValueError):
    """A source checkpoint cannot be read or is not a MobileNetV1 the converter knows."""


class InputError(MobinumbaError, ValueError):
    """An input array or image cannot be fed to the model."""


class NumericError(MobinumbaError, ArithmeticError):
    """A forward pass overflowed float32: the logits hold NaN or Inf.

    The weights and the input are finite (both are checked), but large enough that some
    activation exceeded float32's range; the result would be meaningless, so none is given.
    """


def check_regular_file(path, error, what):
    """Raise `error` naming `path` unless it is an existing regular file: a directory, a FIFO
    or a device (which would block or never end when read) is refused. `what` names the
    file's kind in the message ("an image", "a checkpoint", ...)."""
    if not os.path.exists(path):
        raise error(f"{path}: no such file")
    if os.path.isdir(path):
        raise error(f"{path}: is a directory, not {what}")
    if not os.path.isfile(path):
        raise error(f"{path}: not a regular file")


def in_range(value, low, high, low_open=False):
    """Whether low <= value <= high (low < value <= high with low_open): the one range test
    behind check_integer() and the command line's bounded options."""
    return (low < value if low_open else low <= value) and value <= high


def check_integer(name, value, low, high, error=InputError, high_name=None):
    """Return `value` if it is an int (a bool is not) in low..high; else raise `error` with
    "NAME must be an integer in LOW..HIGH (HIGH_NAME), got VALUE" (no parenthesis without
    high_name, which says where the upper bound comes from)."""
    if isinstance(value, bool) or not isinstance(value, int) or not in_range(value, low, high):
        bound = f"{high} ({high_name})" if high_name else f"{high}"
        raise error(f"{name} must be an integer in {low}..{bound}, got {value!r}")
    return value
