"""Prediction events as MessagePack bytes, assembled from parts encoded once per group.

The engine writes one :class:`~eventml.events.Prediction` per record, and most of each
event is the same for every record of a scored group: the endpoint, the scoring time, the
route, each candidate's name, version, digest, role and latency. Building the structs per
record (a ``Prediction``, a ``Source`` and a ``Score`` per candidate) only for msgspec to
encode them again cost several times the encoding itself, so :class:`PredictionWriter`
encodes the shared parts once and joins them with the few per-record values (id, key, time,
source offset, outputs, the features' exact bytes). The bytes are exactly what
``events.encode`` gives for the same event: msgspec writes a struct as a map of every field
(defaults included) in definition order, tag first, which is the layout below; the tests
compare the two for every status, role and decider. Written by hand because msgspec has
no way to encode a batch of structs that share fields faster than one at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from eventml import events as ev

_enc = msgspec.msgpack.Encoder().encode
_NIL = b"\xc0"

MARKS = [msgspec.Raw(b"\xc1" + os.urandom(15)) for _ in range(10)]
"""Stand-ins for a row's values (0xc1 is no MessagePack type; 15 random bytes, no accident)."""


def _kv(key: str, value: Any) -> bytes:
    return _enc(key) + _enc(value)


def _header(n: int, fix: int, m16: int) -> bytes:
    """A MessagePack map or array header for ``n`` entries (fix form up to 15)."""
    return bytes([fix | n]) if n < 16 else bytes([m16]) + n.to_bytes(2, "big")


_PREDICTION_FIELDS = len(ev.Prediction.__struct_fields__) + 1  # + the "type" tag
_SCORE_FIELDS = len(ev.Score.__struct_fields__)
_SOURCE_FIELDS = len(ev.Source.__struct_fields__)


class Candidate:
    """One candidate's constant parts in a group: everything of its score but the output
    and the status (a row's status: ``ok``, ``late``, ``error``)."""

    def __init__(
        self,
        model: str,
        version: int,
        digest: str,
        role: str,
        latency_ms: float | None,
        error: str | None = None,
    ) -> None:
        self._head = (
            _header(_SCORE_FIELDS, 0x80, 0xDE)
            + _kv("model", model)
            + _kv("version", version)
            + _kv("digest", digest)
            + _kv("role", role)
            + _enc("status")
        )
        self._tail = _kv("latency_ms", latency_ms) + _kv("error", error)
        self._status: dict[str, bytes] = {}

    def parts(self, status: str, output: Any) -> tuple[bytes, Any, bytes]:
        """The score's bytes in three parts (joined by the writer)."""
        head = self._status.get(status)
        if head is None:
            head = self._status[status] = self._head + _enc(status) + _enc("output")
        return head, _NIL if output is None else _output(output), self._tail


DECOY = Candidate("decoy", 0, "", "decoy", None)
"""The score a route with a decoy adds to each event (a decoy only archives inputs)."""


def _output(output: Any) -> Any:
    """Encoded bytes (``msgspec.Raw``) as they are; anything else encoded."""
    return output if isinstance(output, msgspec.Raw) else _enc(output)


class PredictionWriter:
    """Prediction events of one group (one endpoint, one route, one scoring time)."""

    def __init__(
        self,
        endpoint: str,
        scored_at: datetime,
        policy: str | None,
        route_version: int | None,
        topic: str,
    ) -> None:
        self._head = (
            _header(_PREDICTION_FIELDS, 0x80, 0xDE) + _kv("type", "Prediction") + _enc("record_id")
        )
        self._endpoint = _kv("endpoint", endpoint) + _enc("key")
        self._ts = _enc("ts")
        self._source = (
            _kv("scored_at", scored_at)
            + _enc("source")
            + _header(_SOURCE_FIELDS, 0x80, 0xDE)
            + _kv("topic", topic)
            + _enc("partition")
        )
        self._offset = _enc("offset")
        self._route = _kv("policy", policy) + _kv("route_version", route_version) + _enc("features")
        self._answers: dict[tuple[str, str | None, int | None, str | None], bytes] = {}
        self._latencies: dict[float | None, bytes] = {}
        self._scores = _enc("scores")

    def encode(
        self,
        record_id: str,
        key: str | None,
        ts: datetime,
        partition: int,
        offset: int,
        status: str,
        chosen: tuple[str, int, str] | None,
        output: Any,
        latency_ms: float | None,
        features: Any,
        scores: Sequence[tuple[Candidate, str, Any]],
    ) -> bytes:
        """One event; ``chosen`` is the answering model's (name, version, digest), ``scores``
        each candidate with its status and output for this record."""
        name, version, digest = chosen if chosen is not None else (None, None, None)
        answer = self._answers.get((status, name, version, digest))
        if answer is None:
            answer = self._answers[(status, name, version, digest)] = (
                _kv("status", status)
                + _kv("model", name)
                + _kv("version", version)
                + _kv("digest", digest)
                + _enc("output")
            )
        latency = self._latencies.get(latency_ms)
        if latency is None:
            latency = self._latencies[latency_ms] = _kv("latency_ms", latency_ms) + self._route
        parts: list[Any] = [
            self._head, _enc(record_id), self._endpoint, _enc(key), self._ts, _enc(ts),
            self._source, _enc(partition), self._offset, _enc(offset), answer,
            _NIL if output is None else _output(output), latency, _output(features),
            self._scores, _header(len(scores), 0x90, 0xDC),
        ]  # fmt: skip
        for candidate, score_status, score_output in scores:
            parts.extend(candidate.parts(score_status, score_output))
        return b"".join(parts)


def cut(data: bytes, marks: Sequence[bytes]) -> list[bytes]:
    """``data`` cut at each mark; each must appear once, in this order."""
    parts = []
    at = 0
    for mark in marks:
        found = data.find(mark, at)
        if found < 0 or data.find(mark, found + 1) >= 0:
            raise AssertionError(f"expected one stand-in {bytes(mark)!r} in an event, got {data!r}")
        parts.append(data[at:found])
        at = found + len(mark)
    parts.append(data[at:])
    return parts


class SoloWriter:
    """Events of a group that one candidate answered ``ok`` for every record.

    The group's events differ only in the record's id, key, time and position, the output
    and the features, so :class:`PredictionWriter` runs once with stand-ins (:data:`MARKS`)
    for those, and each row joins the parts between them with its own values: the bytes
    the writer gives, at a third of its cost per row.
    """

    def __init__(
        self,
        writer: PredictionWriter,
        chosen: tuple[str, int, str],
        candidate: Candidate,
        latency_ms: float | None,
        others: Sequence[tuple[Candidate, str, Any]] = (),
    ) -> None:
        m: list[Any] = MARKS
        sample = writer.encode(
            m[0], m[1], m[2], m[3], m[4], "ok", chosen, m[5], latency_ms, m[6],
            [(candidate, "ok", m[7]), *others],
        )  # fmt: skip
        self._parts = cut(sample, m[:8])

    def encode(
        self, rows: Iterable[tuple[str, str | None, datetime, int, int, msgspec.Raw, Any]]
    ) -> list[bytes]:
        """One event per ``(record_id, key, ts, partition, offset, output, features)``."""
        p0, p1, p2, p3, p4, p5, p6, p7, p8 = self._parts
        enc, raw = _enc, msgspec.Raw
        return [
            b"".join((
                p0, enc(record_id), p1, enc(key), p2, enc(ts), p3, enc(partition), p4,
                enc(offset), p5, output, p6, features if type(features) is raw else enc(features),
                p7, output, p8,
            ))
            for record_id, key, ts, partition, offset, output, features in rows
        ]  # fmt: skip
