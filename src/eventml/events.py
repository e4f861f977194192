"""The events on the log: one tagged union of frozen msgspec Structs, one encoder, one decoder.

Every change of state in eventml is one of these events appended to a topic (DESIGN §2):
``records`` holds :class:`Record` and :class:`SwapToken`; ``models`` holds
:class:`ModelDescriptor`, :class:`ModelRejected`, :class:`RouteChanged`,
:class:`ModelRetired` and :class:`CanaryAlarm`; ``predictions`` holds :class:`Prediction`; ``labels`` holds
:class:`Label`; ``deadletter`` holds :class:`DeadLetter`.

Encoding: MessagePack on the log (:func:`encode` / :func:`decode`), JSON at the edges
(:func:`to_json` / :func:`from_json`). Each event carries its class name in the field
``type``, so one decoder reads any topic. Times are timezone-aware UTC; a naive time is
refused when decoding.

Schema evolution, the rules every change to this module follows:

1. A new field always gets a default, so events written before it still decode.
2. A field is never retyped, renamed or reused for another meaning; retire it by leaving
   it in place (documented as unused) and adding a new one.
3. Unknown fields are ignored when decoding, so an older reader can read newer events.
4. A new event type is a new Struct added to :data:`Event`; type names are never reused.

>>> rec = Record(id="r1", endpoint="wine", ts=parse_time("2026-01-01T00:00:00Z"),
...              features={"alcohol": 9.4})
>>> decode(encode(rec)) == rec
True
>>> to_json(rec)
b'{"type":"Record","id":"r1","endpoint":"wine","key":null,"ts":"2026-01-01T00:00:00Z","features":{"alcohol":9.4},"answered":false}'
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any, Literal

import msgspec

from eventml.errors import DecodeError, InputError

UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]
"""A timezone-aware time; eventml writes UTC."""

Feature = float | int | str | bool | None
"""One feature value as a producer sent it; ``None`` is a missing value."""

Output = dict[str, Any]
"""A model's answer: ``{"value": v}``, ``{"label": l, "probabilities": {...}}`` or named outputs."""

PredictionStatus = Literal["ok", "no_model", "not_processed", "no_consensus", "error"]
ScoreStatus = Literal["ok", "late", "error", "timeout"]
Role = Literal["champion", "challenger", "shadow", "canary", "decoy"]


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag=True, gc=False):
    """Base of every event: frozen, keyword-only, tagged with its class name.

    ``gc=False``: events hold only values, dicts and lists of values, never a reference
    back to themselves, so they cannot form cycles; leaving them out of the cycle
    collector saves it from walking millions of them in a busy engine.
    """


class Record(_Event, frozen=True, kw_only=True):
    """One instance to score, addressed to an endpoint.

    ``answered``: an online request already answered (its prediction is on the log too), kept
    for the record; the stream engine does not score it again.
    """

    id: str
    endpoint: str
    key: str | None = None
    ts: UtcTime
    features: dict[str, Feature]
    answered: bool = False


class SwapToken(_Event, frozen=True, kw_only=True):
    """A marker in ``records``: from here on, ``endpoint`` is served by route ``route_version``."""

    id: str
    endpoint: str
    route_version: int
    ts: UtcTime


class Source(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Where an event came from on the log."""

    topic: str
    partition: int
    offset: int


class Score(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One candidate model's part in a prediction."""

    model: str
    version: int
    digest: str
    role: Role
    status: ScoreStatus
    output: Output | None = None
    latency_ms: float | None = None
    error: str | None = None


class Prediction(_Event, frozen=True, kw_only=True):
    """What happened to one record: inputs as the models saw them, every candidate, the answer."""

    record_id: str
    endpoint: str
    key: str | None = None
    ts: UtcTime
    scored_at: UtcTime
    source: Source | None = None
    status: PredictionStatus
    model: str | None = None
    version: int | None = None
    digest: str | None = None
    output: Output | None = None
    latency_ms: float | None = None
    policy: str | None = None
    route_version: int | None = None
    features: dict[str, Feature]
    scores: list[Score] = []


class Label(_Event, frozen=True, kw_only=True):
    """Ground truth for a record, or an outcome for an entity within a time window."""

    record_id: str | None = None
    endpoint: str | None = None
    key: str | None = None
    window_start: UtcTime | None = None
    window_end: UtcTime | None = None
    value: float | int | str | bool
    ts: UtcTime
    source: str | None = None


class TensorSpec(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One named input or output of a model: element type and shape (-1 for any)."""

    name: str
    dtype: str
    shape: list[int] = []


class Lineage(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Where a model came from."""

    view: str | None = None
    parent_version: int | None = None
    code_version: str | None = None
    source_path: str | None = None


class ModelDescriptor(_Event, frozen=True, kw_only=True):
    """A model shipped as data: metadata plus the payload bytes or where to find them."""

    name: str
    version: int
    digest: str
    format: str
    endpoint: str | None = None
    description: str = ""
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    payload: bytes | None = None
    location: str | None = None
    size: int
    metrics: dict[str, float] = {}
    lineage: Lineage = Lineage()
    created_at: UtcTime


class ModelRejected(_Event, frozen=True, kw_only=True):
    """A descriptor that could not be loaded; nothing that serves changed."""

    name: str
    version: int | None = None
    digest: str
    reason: str
    ts: UtcTime


class ModelRetired(_Event, frozen=True, kw_only=True):
    """A model version left every route; its final usage statistics."""

    name: str
    version: int
    digest: str
    usage: int
    errors: int
    total_us: int
    min_us: int | None = None
    max_us: int | None = None
    since: UtcTime | None = None
    ts: UtcTime


class RouteChanged(_Event, frozen=True, kw_only=True):
    """Which model versions serve an endpoint and how; ``version`` counts per endpoint from 1.

    Models are named ``NAME:VERSION`` (resolved when the route is deployed). A route with
    ``at_token`` takes over exactly at the :class:`SwapToken` written with it into each
    ``records`` partition (``token_offsets``: partition → offset); otherwise at the engine's
    next batch boundary.
    """

    endpoint: str
    version: int
    champion: str | None = None
    spec: dict[str, Any] = {}
    reason: str = ""
    at_token: bool = False
    token_offsets: dict[int, int] = {}
    ts: UtcTime


class CanaryAlarm(_Event, frozen=True, kw_only=True):
    """The window mean of the answers moved away from the canary's (``state`` alarm), or back (ok)."""

    endpoint: str
    route_version: int
    canary: str
    state: Literal["alarm", "ok"]
    window: int
    answer_mean: float
    canary_mean: float
    delta: float
    threshold: float
    ts: UtcTime


class DeadLetter(_Event, frozen=True, kw_only=True):
    """Input that could not be accepted, with the reason; the stream went on without it."""

    reason: str
    raw: bytes
    endpoint: str | None = None
    file: str | None = None
    line: int | None = None
    source: Source | None = None
    ts: UtcTime

    @property
    def text(self) -> str:
        """The raw bytes as text; undecodable bytes shown as ``\\xNN``."""
        return self.raw.decode("utf-8", errors="backslashreplace")


Event = (
    Record
    | SwapToken
    | Prediction
    | Label
    | ModelDescriptor
    | ModelRejected
    | ModelRetired
    | RouteChanged
    | CanaryAlarm
    | DeadLetter
)
"""Every event eventml writes; decoded by its ``type`` tag."""

EVENT_TYPES: tuple[type[_Event], ...] = (
    Record,
    SwapToken,
    Prediction,
    Label,
    ModelDescriptor,
    ModelRejected,
    ModelRetired,
    RouteChanged,
    CanaryAlarm,
    DeadLetter,
)

_msgpack_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()


@cache
def _msgpack_decoder(kind: Any) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(kind)


@cache
def _json_decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(kind)


def encode(event: Event) -> bytes:
    """Encode an event as MessagePack, the form it takes on the log."""
    try:
        return _msgpack_encoder.encode(event)
    except OverflowError as exc:
        raise InputError(
            f"expected integers within 64 bits, got {exc}",
            where=f"encoding a {type(event).__name__}",
        ) from exc


def decode(data: bytes, kind: Any = Event, *, where: str | None = None) -> Any:
    """Decode MessagePack bytes from the log into ``kind`` (any event by default).

    Raises :class:`~eventml.errors.DecodeError` naming ``where`` when the bytes are not
    a valid event of that kind.
    """
    try:
        return _msgpack_decoder(kind).decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"expected {_kind_name(kind)} event, got {exc}", where=where) from exc


def decode_many(values: Sequence[bytes], kind: Any = Event) -> list[Any]:
    """Decode a batch of MessagePack values (the hot path of every consumer)."""
    dec = _msgpack_decoder(kind).decode
    try:
        return [dec(v) for v in values]
    except msgspec.DecodeError:
        out: list[Any] = []
        for i, v in enumerate(values):
            out.append(decode(v, kind, where=f"item {i} of the batch"))
        return out


def to_json(event: Event | msgspec.Struct) -> bytes:
    """Encode an event as JSON, the form it takes at the edges (files, HTTP, CLI)."""
    return _json_encoder.encode(event)


def to_builtins(event: Event | msgspec.Struct) -> Any:
    """The event as plain dicts, lists and strings, as :func:`to_json` would write it."""
    return msgspec.to_builtins(event)


def from_json(data: bytes | str, kind: Any = Event, *, where: str | None = None) -> Any:
    """Decode JSON into ``kind`` (any event by default)."""
    try:
        return _json_decoder(kind).decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"expected {_kind_name(kind)} event, got {exc}", where=where) from exc


def _kind_name(kind: object) -> str:
    name = getattr(kind, "__name__", None)
    return f"a {name}" if name else "an eventml"


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def parse_time(text: str, *, where: str | None = None) -> datetime:
    """Parse an RFC 3339 time; a time without a zone is refused, not guessed.

    >>> parse_time("2026-03-01T12:00:00+01:00").isoformat()
    '2026-03-01T11:00:00+00:00'
    """
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise DecodeError(f"expected an RFC 3339 time, got {text!r}", where=where) from exc
    if value.tzinfo is None:
        raise DecodeError(
            f"expected an RFC 3339 time with a zone (Z or +HH:MM), got {text!r}", where=where
        )
    return value.astimezone(UTC)


def new_id() -> str:
    """A new random record id: 32 hex digits (128 random bits)."""
    return os.urandom(16).hex()
