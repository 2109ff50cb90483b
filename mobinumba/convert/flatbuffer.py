"""A bounds-checked reader of FlatBuffers tables (the binary layout of `.tflite` files).

The generated `flatbuffers` classes trust every offset in the file; here every offset, length
and field is checked against the buffer before it is used, so a damaged or hostile file can
only raise FlatBufferError (never read outside the buffer, loop long, or allocate more than
the file's own size). Only what TensorFlow Lite's schema uses is supported: tables, scalars,
strings, vectors of scalars and vectors of tables.

Layout (https://flatbuffers.dev/internals/): a table starts with an int32 soffset back to its
vtable; the vtable holds uint16 (vtable size, table size, then one field offset per field id,
0 = absent). Offsets to tables, vectors and strings are uint32, relative to where they are
stored; a vector is a uint32 count followed by its elements.
"""
import struct

import numpy as np

SCALARS = {"u8": "<B", "i8": "<b", "u16": "<H", "i16": "<h", "u32": "<I", "i32": "<i",
           "u64": "<Q", "i64": "<q", "f32": "<f", "bool": "<?"}


class FlatBufferError(ValueError):
    """The buffer is not a well-formed FlatBuffer where a field was read."""


class Table:
    """One table of a FlatBuffer at byte `position` of `data` (bytes)."""

    def __init__(self, data, position, what):
        self.data = data
        self.position = position
        self.what = what  # a name for error messages, e.g. "subgraph 0 tensor 12"
        _need(data, position, 4, what)
        vtable = position - struct.unpack_from("<i", data, position)[0]
        _need(data, vtable, 4, f"{what}'s vtable")
        vtable_size, table_size = struct.unpack_from("<HH", data, vtable)
        if vtable_size < 4 or vtable_size % 2:
            raise FlatBufferError(f"{what}: vtable size {vtable_size} is invalid")
        _need(data, vtable, vtable_size, f"{what}'s vtable")
        _need(data, position, max(table_size, 4), what)
        self.vtable = vtable
        self.vtable_size = vtable_size
        self.table_size = table_size

    def _field(self, index, size):
        """Absolute position of field `index` (`size` bytes inline), or None when absent."""
        slot = 4 + 2 * index
        if slot + 2 > self.vtable_size:
            return None
        offset = struct.unpack_from("<H", self.data, self.vtable + slot)[0]
        if offset == 0:
            return None
        if offset + size > self.table_size:
            raise FlatBufferError(f"{self.what}: field {index} lies outside its table")
        return self.position + offset

    def scalar(self, index, kind, default=0):
        """The scalar field `index` of type `kind` (a SCALARS key), or `default`."""
        fmt = SCALARS[kind]
        position = self._field(index, struct.calcsize(fmt))
        return default if position is None else struct.unpack_from(fmt, self.data, position)[0]

    def _target(self, index, what):
        """Absolute position an offset field points to, or None when absent."""
        position = self._field(index, 4)
        if position is None:
            return None
        target = position + struct.unpack_from("<I", self.data, position)[0]
        _need(self.data, target, 4, what)
        return target

    def table(self, index, what):
        """The sub-table in field `index`, or None."""
        target = self._target(index, what)
        return None if target is None else Table(self.data, target, what)

    def _vector(self, index, item_size, what):
        """(position of the first element, count) of the vector in field `index`, or None."""
        start = self._target(index, what)
        if start is None:
            return None
        count = struct.unpack_from("<I", self.data, start)[0]
        _need(self.data, start + 4, count * item_size, what)
        return start + 4, count

    def vector(self, index, kind, what):
        """The vector of scalars in field `index` as a NumPy array (empty when absent)."""
        dtype = np.dtype(SCALARS[kind])
        found = self._vector(index, dtype.itemsize, what)
        if found is None:
            return np.zeros(0, dtype)
        start, count = found
        return np.frombuffer(self.data, dtype, count, start)

    def bytes(self, index, what):
        """The [ubyte] vector in field `index` as a memoryview (empty when absent)."""
        found = self._vector(index, 1, what)
        if found is None:
            return memoryview(b"")
        start, count = found
        return memoryview(self.data)[start:start + count]

    def string(self, index, what):
        """The string in field `index` (undecodable bytes replaced), or ''."""
        return bytes(self.bytes(index, what)).decode("utf-8", errors="replace")

    def tables(self, index, what, limit):
        """The vector of tables in field `index` as a list of Table (empty when absent);
        FlatBufferError when it holds more than `limit`."""
        found = self._vector(index, 4, what)
        if found is None:
            return []
        start, count = found
        if count > limit:
            raise FlatBufferError(f"{what}: {count} entries, more than {limit}")
        result = []
        for item in range(count):
            at = start + 4 * item
            result.append(Table(self.data, at + struct.unpack_from("<I", self.data, at)[0],
                                f"{what} {item}"))
        return result


def root_table(data, what):
    """The root table of the FlatBuffer `data`."""
    _need(data, 0, 8, what)
    return Table(data, struct.unpack_from("<I", data, 0)[0], what)


def _need(data, position, size, what):
    if position < 0 or size < 0 or position + size > len(data):
        raise FlatBufferError(f"{what} lies outside the file (bytes {position}..{position + size}"
                              f" of {len(data)})")
