"""Records' feature maps as a float matrix without decoding them one by one.

Written by hand because no library does this. msgspec encodes every Python float as the
9-byte MessagePack float64 (``0xcb`` and 8 big-endian bytes), so the feature maps of
records from one producer (the same keys in the same order, every value a float) are
byte-identical except in the 8 value bytes. One record parsed gives the template: its
keys and where each value sits. Every record of the same length whose bytes equal the
template's outside the value slots has exactly those keys and only float64 values; all
their values are read at once with numpy. Any other record (an int, a null, a string,
other keys) is decoded exactly by msgspec, so nothing is ever read differently.

>>> import msgspec
>>> raws = [msgspec.msgpack.encode({"a": 1.5, "b": -2.0}), msgspec.msgpack.encode({"a": 3.0, "b": 4.25})]
>>> rows = EncodedRows(raws)
>>> rows.matrix(["b", "a"]).tolist()
[[-2.0, 1.5], [4.25, 3.0]]
>>> rows[1]
{'a': 3.0, 'b': 4.25}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

import msgspec
import numpy as np

from eventml import events as ev

_decode = msgspec.msgpack.Decoder(dict[str, ev.Feature]).decode


class _Template:
    """Keys and value offsets of one record's feature map, all values float64."""

    def __init__(self, raw: bytes) -> None:
        self.ok = False
        data = raw
        pos, count = _map_header(data)
        if count is None:
            return
        keys: list[str] = []
        offsets: list[int] = []
        for _ in range(count):
            start, length = _str_header(data, pos)
            if start is None or start + length > len(data):
                return
            keys.append(data[start : start + length].decode("utf-8", errors="replace"))
            pos = start + length
            if pos + 9 > len(data) or data[pos] != 0xCB:
                return  # not a float64: the exact decoder handles this layout
            offsets.append(pos + 1)
            pos += 9
        if pos != len(data):
            return
        self.keys = keys
        self.index = {k: i for i, k in enumerate(keys)}
        self.length = len(data)
        bytes_ = np.frombuffer(data, dtype=np.uint8)
        self.slots = (np.array(offsets)[:, None] + np.arange(8)[None, :]).reshape(-1)
        mask = np.ones(len(data), dtype=bool)
        mask[self.slots] = False
        self.fixed = np.flatnonzero(mask)
        self.expected = bytes_[self.fixed]
        self.ok = True


def _map_header(data: bytes) -> tuple[int, int | None]:
    if not data:
        return 0, None
    b = data[0]
    if 0x80 <= b <= 0x8F:
        return 1, b & 0x0F
    if b == 0xDE and len(data) >= 3:
        return 3, int.from_bytes(data[1:3], "big")
    return 0, None


def _str_header(data: bytes, pos: int) -> tuple[int | None, int]:
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

    def matrix(self, names: Sequence[str], key: Any = None) -> np.ndarray | None:
        """``[len, len(names)]`` float64 values when every row matches one all-float layout.

        ``key`` maps a record field to the model's name (e.g. normalization). None when
        any row does not match: the caller then takes the exact path.
        """
        if not self.raws:
            return None
        template = _Template(bytes(self.raws[0]))  # msgspec.Raw is not indexable
        if not template.ok:
            return None
        column = []
        wanted = {key(n) if key else n: j for j, n in enumerate(names)}
        found: dict[int, int] = {}
        for i, k in enumerate(template.keys):
            j = wanted.get(key(k) if key else k)
            if j is not None:
                found[j] = i
        if len(found) != len(names):
            return None
        column = [found[j] for j in range(len(names))]
        if set(map(len, self.raws)) != {template.length}:
            return None
        data = np.frombuffer(b"".join(self.raws), dtype=np.uint8).reshape(
            len(self.raws), template.length
        )
        if not np.array_equal(
            data[:, template.fixed],
            np.broadcast_to(template.expected, (len(self.raws), len(template.fixed))),
        ):
            return None
        values = (
            data[:, template.slots].copy().view(">f8").reshape(len(self.raws), len(template.keys))
        )
        return values[:, column].astype(np.float64)
