"""Checks on a weight file's raw bytes for damage that libhdf5 itself cannot survive.

h5py refuses most corruption with an error, but a few damaged structures send the HDF5
library (2.0.0, as bundled with h5py 3.16) into an endless loop or past the end of a
buffer, where no Python code can step in. Those are recognised here, on the bytes, before
h5py opens the file.

Global heap collections ("GCOL") hold variable-length data: the strings of attributes and
of `labels`. libhdf5 walks a collection's objects, advancing by each object's size; an
object whose size is zero makes that walk loop forever (a single flipped bit in the size of
the object before it lands the walk on zero bytes), and one whose size runs past the
collection sends later reads outside it. A collection is accepted only if the walk, done
here exactly as libhdf5 does it, ends precisely at the collection's end.
"""
import mmap
import struct

from .errors import FormatError

SUPERBLOCK_SIGNATURE = b"\x89HDF\r\n\x1a\n"
HEAP_SIGNATURE = b"GCOL"
HEAP_VERSION = 1
HEAP_MIN_SIZE = 4096  # libhdf5's H5HG_MINSIZE
LENGTH_FORMATS = {2: "<H", 4: "<I", 8: "<Q"}


def check_global_heaps(path):
    """Raise FormatError if a global heap collection in the file would hang libhdf5.

    A "GCOL" that is not a well-formed collection header (wrong version, too small, past
    the end of the file) is left to libhdf5, which refuses to read it; so is a file without
    an HDF5 superblock.
    """
    with open(path, "rb") as stream:
        if not _file_size(stream):
            return
        with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
            check_global_heaps_in(data, path)


def check_global_heaps_in(data, where):
    """check_global_heaps on an HDF5 file's bytes already in memory (`where` names it)."""
    length_size = _length_size(data)
    if length_size is None:
        return
    start = data.find(HEAP_SIGNATURE)
    while start >= 0:
        problem = _walk_problem(data, start, length_size)
        if problem:
            raise FormatError(f"{where}: the global heap at byte {start} (where "
                              f"variable-length strings are kept) is corrupt: {problem}")
        start = data.find(HEAP_SIGNATURE, start + 1)


def _file_size(stream):
    stream.seek(0, 2)
    size = stream.tell()
    stream.seek(0)
    return size


def _length_size(data):
    """The file's "size of lengths" (2, 4 or 8 bytes) from its superblock, or None.

    The superblock sits at byte 0, 512, 1024, 2048, ... (after an optional user block).
    """
    offset = 0
    while offset + 16 <= len(data):
        if data[offset:offset + 8] == SUPERBLOCK_SIGNATURE:
            version = data[offset + 8]
            size = data[offset + 14] if version in (0, 1) else data[offset + 10]
            return size if size in LENGTH_FORMATS else None
        offset = 512 if offset == 0 else offset * 2
    return None


def _walk_problem(data, start, length_size):
    """Why libhdf5's walk over the collection at `start` would fail, or None."""
    length = LENGTH_FORMATS[length_size]
    header_size = 8 + length_size  # signature, version, 3 reserved bytes, collection size
    object_header_size = 8 + length_size  # index, reference count, reserved, object size
    if start + header_size > len(data) or data[start + 4] != HEAP_VERSION:
        return None
    (size,) = struct.unpack_from(length, data, start + 8)
    end = start + size
    if size < HEAP_MIN_SIZE or end > len(data):
        return None
    position = start + header_size
    while position < end:
        if position + object_header_size > end:
            return None  # libhdf5 takes the last few bytes as free space
        index, _ = struct.unpack_from("<HH", data, position)
        (object_size,) = struct.unpack_from(length, data, position + 8)
        if index > 0:
            step = object_header_size + (object_size + 7) // 8 * 8
        else:
            step = object_size  # the free-space object: its size includes its header
        if step == 0:
            return f"object at byte {position} has size 0 (libhdf5 would loop forever)"
        if position + step > end:
            return (f"object {index} at byte {position} has size {object_size}, past the "
                    f"collection's end at byte {end}")
        position += step
    return None
