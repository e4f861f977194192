"""Canonical outputs as MessagePack, a batch at a time, for events that embed them.

The engine writes every output into a prediction event (the answer and each candidate's
score). Building a ``{"label": l, "probabilities": {...}}`` dict per row only for msgspec to
encode it again cost more than scoring on small models, so :func:`encode_outputs` writes the
bytes for a whole batch in numpy: every row of a classifier (or regressor) has the same
layout except the label, so one template is filled with the big-endian float64 values and
sliced per row. The bytes are exactly what ``msgspec.msgpack.encode`` gives for the row's
dict (the tests compare them), and they are embedded as :class:`msgspec.Raw`. Written by
hand because no MessagePack library encodes a numpy matrix into per-row messages.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import numpy as np

from eventml import events as ev
from eventml.models.base import ClassOutputs, ValueOutputs

_encode = msgspec.msgpack.Encoder().encode
_FLOAT64 = b"\xcb"


def _map_header(n: int) -> bytes:
    """MessagePack's map header for ``n`` entries (fixmap, map 16, map 32)."""
    if n < 16:
        return bytes([0x80 | n])
    return b"\xde" + n.to_bytes(2, "big") if n < 1 << 16 else b"\xdf" + n.to_bytes(4, "big")


def encode_outputs(outputs: Sequence[ev.Output]) -> list[msgspec.Raw]:
    """Each output's MessagePack bytes, equal to ``msgspec.msgpack.encode(output)``.

    >>> from eventml.models.base import label_outputs
    >>> out = label_outputs(["no", "yes"], np.array([[0.25, 0.75]]))
    >>> bytes(encode_outputs(out)[0]) == msgspec.msgpack.encode(out[0])
    True
    """
    if isinstance(outputs, ClassOutputs):
        return _classes(outputs)
    if isinstance(outputs, ValueOutputs):
        return _values(outputs)
    return [msgspec.Raw(_encode(o)) for o in outputs]


def _rows(template: bytes, slots: list[int], columns: np.ndarray) -> np.ndarray:
    """A ``[n, len(template)]`` byte matrix: the template with column ``j`` at ``slots[j]``."""
    n = len(columns)
    out = np.empty((n, len(template)), np.uint8)
    out[:] = np.frombuffer(template, np.uint8)
    big = np.ascontiguousarray(columns, dtype=">f8").view(np.uint8).reshape(n, -1, 8)
    for j, at in enumerate(slots):
        out[:, at : at + 8] = big[:, j]
    return out


def _slices(matrix: np.ndarray) -> list[msgspec.Raw]:
    """One Raw per row (a void view keeps trailing zero bytes, unlike ``S``)."""
    rows = np.ascontiguousarray(matrix).view(f"V{matrix.shape[1]}").reshape(-1).tolist()
    return list(map(msgspec.Raw, rows))


def _classes(outputs: ClassOutputs) -> list[msgspec.Raw]:
    n = len(outputs)
    if n == 0:
        return []
    probabilities = np.asarray(outputs.probabilities, dtype=np.float64).reshape(n, -1)
    names = list(outputs.names)
    if probabilities.shape[1] != len(names):  # not the canonical shape: let msgspec say so
        return [msgspec.Raw(_encode(o)) for o in outputs]
    tail = bytearray(_encode("probabilities") + _map_header(len(names)))
    slots = []
    for name in names:
        tail += _encode(name) + _FLOAT64
        slots.append(len(tail))
        tail += bytes(8)
    distinct, codes = outputs.label_codes()
    heads = [b"\x82" + _encode("label") + _encode(label) for label in distinct]
    if len({len(h) for h in heads}) == 1:  # the usual case: one layout for the whole batch
        head = np.frombuffer(b"".join(heads), np.uint8).reshape(len(heads), -1)
        return _slices(np.hstack([head[codes], _rows(bytes(tail), slots, probabilities)]))
    body = _rows(bytes(tail), slots, probabilities)
    width = body.shape[1]
    flat = body.tobytes()
    return [
        msgspec.Raw(heads[k] + flat[i * width : (i + 1) * width])
        for i, k in enumerate(codes.tolist())
    ]


def _values(outputs: ValueOutputs) -> list[msgspec.Raw]:
    if len(outputs) == 0:
        return []
    template = b"\x81" + _encode("value") + _FLOAT64 + bytes(8)
    values = np.asarray(outputs.values, dtype=np.float64).reshape(-1, 1)
    return _slices(_rows(template, [len(template) - 8], values))
