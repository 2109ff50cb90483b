"""Exception types raised by mobinumba for problems with user-supplied input.

Every message is one line that names the offending file, key, shape or value. The CLI prints
the message and exits non-zero; anything that is not one of these is a bug in mobinumba.
"""


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
