"""Records' feature maps as a float matrix without decoding them one by one.

Written by hand because no library does this. msgspec encodes every Python float as the
9-byte MessagePack float64 (``0xcb`` and 8 big-endian bytes), so the feature maps of
records from one producer (the same keys in the same order, every value a float) are
byte-identical except in the 8 value bytes. One record parsed gives the layout: its keys
and where each value sits. Every record of the same length whose bytes equal the layout's
outside the value slots has exactly those keys and only float64 values; all their values
are read at once with numpy. Any other record (an int, a null, a string, other keys) is
decoded exactly by msgspec, so nothing is ever read differently.

:class:`FloatMaps` keeps the layouts it has seen (producers send the same fields each
time), so a batch of a known layout costs one join, one masked byte comparison and one
structured-dtype cast, not a parse. Plain dicts take the same road: msgspec encodes a
list of them into one buffer of consecutive maps in C, faster than reading 20 floats a
row from Python, and the same check tells whether every row had the layout.

>>> import msgspec
>>> raws = [msgspec.msgpack.encode({"a": 1.5, "b": -2.0}), msgspec.msgpack.encode({"a": 3.0, "b": 4.25})]
>>> FloatMaps(["b", "a"]).of_raws(raws).tolist()
[[-2.0, 1.5], [4.25, 3.0]]
>>> rows = EncodedRows(raws)
>>> rows[1]
{'a': 3.0, 'b': 4.25}
>>> FloatMaps(["b"]).of_dicts([{"a": 1.5, "b": -2.0}, {"a": 3.0, "b": 4.25}]).tolist()
[[-2.0], [4.25]]
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, overload

import msgspec
import numpy as np

from eventml import events as ev

_decode = msgspec.msgpack.Decoder(dict[str, ev.Feature]).decode
_encode_into = msgspec.msgpack.Encoder().encode_into
_MAX_LAYOUTS = 16  # per model; more distinct producers than this take the parse each batch


class _Layout:
    """Keys and value offsets of one feature map whose values are all float64.

    ``signature`` is the map's bytes with the value bytes zeroed: two maps with the same
    signature have the same keys in the same order and only float64 values.
    """

    def __init__(self, keys: list[str], offsets: list[int], row: np.ndarray) -> None:
        self.keys = keys
        self.offsets = offsets
        self.length = len(row)
        self.mask = np.full(self.length, 0xFF, np.uint8)
        for at in offsets:
            self.mask[at : at + 8] = 0
        self.signature = (row & self.mask).tobytes()
        # the bytes between the values (map header, keys, float markers), to test one map
        # in one C call: cheaper than numpy's, whose code and data the model evicts
        bounds = zip([0, *(at + 8 for at in offsets)], [*offsets, self.length], strict=True)
        self._fixed = [(a, b) for a, b in bounds if a < b] + [(0, 0)]  # 2+: itemgetter tuples
        self._expected = tuple(self.signature[a:b] for a, b in self._fixed)
        self._getters: dict[int, Callable[[bytearray], Any]] = {}

    def fits(self, buf: bytearray, start: int) -> bool:
        """Whether the map at ``buf[start:]`` has this layout."""
        getter = self._getters.get(start)
        if getter is None:
            parts = [slice(start + a, start + b) for a, b in self._fixed]
            getter = self._getters[start] = operator.itemgetter(*parts)
        return bool(getter(buf) == self._expected)

    def check(self, buf: bytearray, start: int, n: int) -> bool:
        """Whether the ``n`` maps from ``start`` all have this layout. Zeroes their values.

        With the values zeroed every map must equal the signature: the first one does and
        each equals the next, two ``memcmp`` calls (``startswith``) and no array the size
        of the batch besides the batch itself.
        """
        size = n * self.length
        rows = np.frombuffer(buf, np.uint8, size, start).reshape(n, self.length)
        np.bitwise_and(rows, self.mask, out=rows)
        shifted = memoryview(buf)[start + self.length : start + size]
        return buf.startswith(self.signature, start) and buf.startswith(shifted, start)


def _parse(data: bytes | bytearray, start: int) -> _Layout | None:
    """The layout of the map at ``data[start:]``, or None unless every value is a float64."""
    pos, count = _map_header(data, start)
    if count is None:
        return None
    keys: list[str] = []
    offsets: list[int] = []
    for _ in range(count):
        at, length = _str_header(data, pos)
        if at is None or at + length > len(data):
            return None
        keys.append(bytes(data[at : at + length]).decode("utf-8", errors="replace"))
        pos = at + length
        if pos + 9 > len(data) or data[pos] != 0xCB:
            return None  # not a float64: the exact decoder handles this layout
        offsets.append(pos + 1 - start)
        pos += 9
    row = np.frombuffer(data, np.uint8, pos - start, start)
    return _Layout(keys, offsets, row)


def _map_header(data: bytes | bytearray, pos: int) -> tuple[int, int | None]:
    if pos >= len(data):
        return pos, None
    b = data[pos]
    if 0x80 <= b <= 0x8F:
        return pos + 1, b & 0x0F
    if b == 0xDE and pos + 3 <= len(data):
        return pos + 3, int.from_bytes(data[pos + 1 : pos + 3], "big")
    return pos, None


def _str_header(data: bytes | bytearray, pos: int) -> tuple[int | None, int]:
    if pos >= len(data):
        return None, 0
    b = data[pos]
    if 0xA0 <= b <= 0xBF:
        return pos + 1, b & 0x1F
    if b == 0xD9 and pos + 2 <= len(data):
        return pos + 2, data[pos + 1]
    if b == 0xDA and pos + 3 <= len(data):
        return pos + 3, int.from_bytes(data[pos + 1 : pos + 3], "big")
    return None, 0


def _array_header(n: int) -> int:
    """The length of MessagePack's array header for ``n`` items (fixarray, array 16, 32)."""
    return 1 if n < 16 else 3 if n < 1 << 16 else 5


class FloatMaps:
    """Batches of all-float feature maps as a ``[n, len(names)]`` matrix, layouts kept.

    ``key`` maps a record field to the model's name (e.g. normalization); when several
    fields map to one name the last wins, as for a decoded record. Every method returns
    None when a row does not fit (another layout, a value that is not a float, a missing
    feature): the caller then takes the exact path, which also words the errors.
    """

    def __init__(self, names: Sequence[str], key: Callable[[str], str] | None = None) -> None:
        self.names = tuple(names)
        self._key = key
        self._wanted = {key(n) if key else n: j for j, n in enumerate(self.names)}
        self._layouts: dict[bytes, tuple[_Layout, np.ndarray | None]] = {}
        self._last: tuple[_Layout, np.ndarray | None] | None = None

    def of_raws(self, raws: Sequence[bytes | msgspec.Raw], dtype: Any = np.float64) -> Any:
        """The matrix of one encoded map per item, or None.

        The items are read as one buffer of consecutive maps. Each item is one complete map
        (a record's ``msgspec.Raw`` always is), so if every ``length`` bytes of the buffer
        are a map of the layout, every item is: an item's end is fixed by its own bytes.
        """
        if not raws:
            return None
        return self._read(bytearray().join(raws), 0, len(raws), dtype)

    def of_dicts(self, rows: Sequence[Any], dtype: Any = np.float64) -> Any:
        """The matrix of a list of plain dicts, or None."""
        n = len(rows)
        # exactly dicts: msgspec reads a dict's items directly, a subclass may differ
        if not n or set(map(type, rows)) != {dict}:
            return None
        buf = bytearray()
        try:
            _encode_into(rows, buf)
        except (TypeError, ValueError, OverflowError):  # numpy scalars, odd keys: exact path
            return None
        return self._read(buf, _array_header(n), n, dtype)

    def _read(self, buf: bytearray, start: int, n: int, dtype: Any) -> Any:
        """The ``n`` maps from ``buf[start:]`` (up to its end) as a matrix, or None."""
        if not self.names:
            return None
        found = self._last
        if found is None or not found[0].fits(buf, start):
            found = self._layout(buf, start)
            if found is None:
                return None
        layout, columns = found
        if columns is None or len(buf) - start != layout.length * n:
            return None
        # every byte position as the start of a big-endian float64, the columns picked out
        # in one fancy index (a row's values are read together), then cast to the model's
        # type; done before the check zeroes the values, thrown away if a row does not fit
        starts = np.ndarray((n, layout.length - 7), ">f8", buf, start, (layout.length, 1))
        out = starts[:, columns].astype(dtype, order="C")  # the index leaves it column-major
        return out if layout.check(buf, start, n) else None

    def _layout(self, buf: bytearray, start: int) -> tuple[_Layout, np.ndarray | None] | None:
        """The first map's layout, parsed, with the model's columns in it (kept)."""
        layout = _parse(buf, start)
        if layout is None:
            return None
        known = self._layouts.get(layout.signature)
        if known is None:
            known = (layout, self._columns(layout))
            if len(self._layouts) < _MAX_LAYOUTS:
                self._layouts[layout.signature] = known
        self._last = known
        return known

    def _columns(self, layout: _Layout) -> np.ndarray | None:
        """Where each model column's value sits in a map, None if one is missing."""
        found: dict[int, int] = {}
        for i, k in enumerate(layout.keys):
            j = self._wanted.get(self._key(k) if self._key else k)
            if j is not None:
                found[j] = i
        if len(found) != len(self.names):
            return None
        return np.array([layout.offsets[found[j]] for j in range(len(self.names))], np.intp)


class EncodedRows(Sequence[Mapping[str, ev.Feature]]):
    """Feature maps kept as their MessagePack bytes; decoded only where a row is read."""

    def __init__(self, raws: Sequence[bytes | msgspec.Raw]) -> None:
        self.raws = list(raws)
        self._decoded: dict[int, dict[str, ev.Feature]] = {}

    def __len__(self) -> int:
        return len(self.raws)

    @overload
    def __getitem__(self, i: int) -> Mapping[str, ev.Feature]: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Mapping[str, ev.Feature]]: ...
    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        row = self._decoded.get(i)
        if row is None:
            row = self._decoded[i] = _decode(self.raws[i])
        return row

    def __iter__(self) -> Iterator[Mapping[str, ev.Feature]]:
        return (self[i] for i in range(len(self)))

    def pop(self, i: int) -> Mapping[str, ev.Feature]:
        row = self[i]
        del self.raws[i]
        self._decoded = {(j if j < i else j - 1): r for j, r in self._decoded.items() if j != i}
        return row
