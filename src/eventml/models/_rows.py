"""Records' feature maps as a float matrix without decoding them one by one.

msgspec encodes every Python float as the 9-byte MessagePack float64 (``0xcb`` and 8
big-endian bytes), so the feature maps of records from one producer (the same keys in the
same order, every value a float) are byte-identical except in the 8 value bytes. One record
parsed gives the layout: its keys and where each value sits. Every record whose bytes equal
the layout's outside the value slots has exactly those keys and only float64 values, and
its values are read where they sit. Any other record (an int, a null, a string, other keys)
is decoded exactly by msgspec, so nothing is ever read differently.

:class:`FloatMaps` keeps the layouts it has seen (producers send the same fields each
time). The reading is compiled (``eventml/_kernels.c``: ``read_maps``, and ``read_dicts``
for lists of plain dicts with the same keys in the same order and only float values): one
pass over each row. The numpy version it replaced (join the maps, one masked comparison,
one gather) made three passes over a batch and cost 16% over onnxruntime's own time on a
batch of 1,000 rows of 20 features; msgspec-encoding a list of dicts first cost 32%.

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

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, overload

import msgspec
import numpy as np

from eventml import _kernels
from eventml import events as ev

_decode = msgspec.msgpack.Decoder(dict[str, ev.Feature]).decode
_MAX_LAYOUTS = 16  # per model; more distinct producers than this take the parse each batch


class _Layout:
    """Keys and value offsets of one feature map whose values are all float64.

    ``signature`` is the map's bytes with the value bytes zeroed and ``mask`` is 0xFF except
    there: a map with the same length and the same bytes where the mask is set has the same
    keys in the same order and only float64 values.
    """

    def __init__(self, keys: list[str], offsets: list[int], row: np.ndarray) -> None:
        self.keys = keys
        self.offsets = offsets
        mask = np.full(len(row), 0xFF, np.uint8)
        for at in offsets:
            mask[at : at + 8] = 0
        self.mask = mask.tobytes()
        self.signature = (row & mask).tobytes()


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
        self._dict_layouts: dict[tuple[Any, ...], np.ndarray] = {}

    def of_raws(self, raws: Sequence[bytes | msgspec.Raw], dtype: Any = np.float64) -> Any:
        """The matrix of one encoded map per item, or None."""
        if not raws or not self.names:
            return None
        raws = raws if isinstance(raws, list) else list(raws)
        out = np.empty((len(raws), len(self.names)), dtype)
        last = self._last
        if last is not None and self._read(last, raws, out):
            return out
        found = self._layout(raws[0])  # the first row's layout, if the last one's was not it
        if found is None or found is last:
            return None
        return out if self._read(found, raws, out) else None

    def of_dicts(self, rows: Sequence[Any], dtype: Any = np.float64) -> Any:
        """The matrix of a list of plain dicts (the same keys, in the same order), or None."""
        if not rows or not self.names or type(rows[0]) is not dict:
            return None
        keys = tuple(rows[0])
        columns = self._dict_layouts.get(keys)
        if columns is None:
            columns = self._dict_columns(keys)
            if len(self._dict_layouts) < _MAX_LAYOUTS:
                self._dict_layouts[keys] = columns
        if columns is _MISSING:
            return None
        out = np.empty((len(rows), len(self.names)), dtype)
        rows = rows if isinstance(rows, list) else list(rows)
        return out if _kernels.read_dicts(rows, keys, columns, len(self.names), out) else None

    @staticmethod
    def _read(found: tuple[_Layout, np.ndarray | None], raws: list[Any], out: Any) -> bool:
        layout, columns = found
        if columns is None:
            return False
        return _kernels.read_maps(raws, layout.signature, layout.mask, columns, out)

    def _layout(self, raw: bytes | msgspec.Raw) -> tuple[_Layout, np.ndarray | None] | None:
        """The map's layout, parsed, with the model's columns in it (kept)."""
        layout = _parse(bytes(raw), 0)
        if layout is None:
            return None
        known = self._layouts.get(layout.signature)
        if known is None:
            known = (layout, self._columns(layout.keys, layout.offsets))
            if len(self._layouts) < _MAX_LAYOUTS:
                self._layouts[layout.signature] = known
        self._last = known
        return known

    def _columns(self, keys: Sequence[str], at: Sequence[int]) -> np.ndarray | None:
        """Where each model column's value sits (``at`` of its key), None if one is missing.

        Several keys naming one column: the last wins, as for a decoded record.
        """
        found: dict[int, int] = {}
        for i, k in enumerate(keys):
            j = self._wanted.get(self._key(k) if self._key else k)
            if j is not None:
                found[j] = i
        if len(found) != len(self.names):
            return None
        return np.array([at[found[j]] for j in range(len(self.names))], np.int64)

    def _dict_columns(self, keys: tuple[Any, ...]) -> np.ndarray:
        """For each key, the model column it fills (-1: none), or _MISSING."""
        if not all(type(k) is str for k in keys):
            return _MISSING
        where = self._columns(keys, range(len(keys)))
        if where is None:
            return _MISSING
        columns = np.full(len(keys), -1, np.int64)
        columns[where] = np.arange(len(self.names))
        return columns


_MISSING = np.empty(0, np.int64)  # a dict layout the fast path cannot read


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
