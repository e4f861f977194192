"""Statistics per model version: a view folded from ``predictions``.

For each (model, version): usage (records scored), errors, total / min / max duration in
µs, a latency histogram with p50 and p99, and since (the first use). Durations are per
record: the vectorized call's duration divided by the records it scored, which is what a
record cost. The histogram has four buckets per power of two, so a percentile is exact to
within 19% (it reports the upper bound of its bucket).

>>> s = VersionStats(model="m", version=1, digest="d")
>>> s.min_us is None and s.max_us is None
True
>>> for us in (10, 20, 1000):
...     s.add(us, ok=True, at=parse_time("2026-01-01T00:00:00Z"))
>>> (s.usage, s.total_us, s.min_us, s.max_us, s.percentile(50))
(3, 1030, 10, 1000, 23)
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from typing import cast

import msgspec

from eventml import events as ev
from eventml.events import parse_time
from eventml.log import Log

TOPIC = "predictions"
_STEPS = 4  # histogram buckets per power of two


def _bucket(us: int) -> int:
    return 0 if us < 1 else int(math.log2(us) * _STEPS) + 1


def _upper(bucket: int) -> int:
    return 1 if bucket == 0 else math.ceil(2 ** (bucket / _STEPS))


class VersionStats(msgspec.Struct, kw_only=True):
    """What one model version has done."""

    model: str
    version: int
    digest: str
    usage: int = 0
    errors: int = 0
    total_us: int = 0
    min_us: int | None = None
    max_us: int | None = None
    since: datetime | None = None
    histogram: dict[int, int] = {}

    def add(self, us: int, *, ok: bool, at: datetime) -> None:
        self.usage += 1
        if not ok:
            self.errors += 1
        self.total_us += us
        self.min_us = us if self.min_us is None else min(self.min_us, us)
        self.max_us = us if self.max_us is None else max(self.max_us, us)
        if self.since is None or at < self.since:
            self.since = at
        b = _bucket(us)
        self.histogram[b] = self.histogram.get(b, 0) + 1

    def percentile(self, pct: float) -> int | None:
        """The duration (µs) below which ``pct`` percent of records fall (bucket upper bound)."""
        if not self.usage:
            return None
        rank = math.ceil(self.usage * pct / 100)
        seen = 0
        found = max(self.histogram)
        for bucket in sorted(self.histogram):
            seen += self.histogram[bucket]
            if seen >= rank:
                found = bucket
                break
        # a bucket's upper bound, but never outside what was seen
        return max(cast(int, self.min_us), min(_upper(found), cast(int, self.max_us)))

    def summary(self) -> dict[str, object]:
        """The figures ``eventml stats`` shows."""
        return {
            "model": self.model, "version": self.version, "digest": self.digest,
            "usage": self.usage, "errors": self.errors, "total_us": self.total_us,
            "min_us": self.min_us, "max_us": self.max_us,
            "mean_us": round(self.total_us / self.usage, 3) if self.usage else None,
            "p50_us": self.percentile(50), "p99_us": self.percentile(99),
            "since": self.since.isoformat() if self.since else None,
        }  # fmt: skip


class _SlimScore(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What statistics need of a candidate's score (its output is skipped unread)."""

    model: str
    version: int
    digest: str
    status: str
    latency_ms: float | None = None


class _Slim(msgspec.Struct, frozen=True, kw_only=True, tag="Prediction", gc=False):
    """What statistics need of a prediction event; the rest (features) is skipped unread."""

    endpoint: str
    status: str
    scored_at: ev.UtcTime
    scores: list[_SlimScore] = []


_read_slim = msgspec.msgpack.Decoder(_Slim).decode


class StatsView:
    """Statistics of every model version, folded from prediction events."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, int], VersionStats] = {}
        self.endpoints: dict[str, dict[str, int]] = {}
        self._positions: dict[int, int] = {}  # next offset to fold, per partition

    def add(self, p: ev.Prediction | _Slim) -> None:
        scores: list[ev.Score] | list[_SlimScore] = p.scores
        counts = self.endpoints.setdefault(p.endpoint, {})
        counts[p.status] = counts.get(p.status, 0) + 1
        for score in scores:
            key = (score.model, score.version)
            stats = self.versions.get(key)
            if stats is None:
                stats = self.versions[key] = VersionStats(
                    model=score.model, version=score.version, digest=score.digest
                )
            us = round((score.latency_ms or 0.0) * 1000)
            stats.add(us, ok=score.status == "ok", at=p.scored_at)

    def extend(self, predictions: Iterable[ev.Prediction | _Slim]) -> None:
        for p in predictions:
            self.add(p)

    @classmethod
    def from_log(cls, log: Log, *, hurry: threading.Event | None = None) -> StatsView:
        """Every prediction event folded (see :meth:`catch_up`)."""
        return cls().catch_up(log, hurry=hurry)

    def catch_up(self, log: Log, *, hurry: threading.Event | None = None) -> StatsView:
        """Fold the prediction events appended since the last call (all, the first time).

        With ``hurry`` (a fold on a background thread of a busy process: the engine's
        retirement statistics), the fold reads small chunks and sleeps nine times as long
        as each took, so it takes about a tenth of a core and holds the GIL and the log a
        millisecond or two at a time, until ``hurry`` is set (the engine is closing).
        """
        if TOPIC not in log.topics():
            return self
        limit = 10_000 if hurry is None else 250
        for partition, end in enumerate(log.end_offsets(TOPIC)):
            pos = self._positions.get(partition, 0)
            while pos < end:
                start = time.perf_counter()
                batch = log.read(TOPIC, partition, pos, end, limit=limit)
                if not batch.offsets:
                    break
                self.extend(map(_read_slim, batch.values))
                pos = batch.next_offset
                if hurry is not None and not hurry.is_set():
                    hurry.wait(9 * (time.perf_counter() - start))
            self._positions[partition] = pos
        return self

    def retired(self, model: str, version: int, digest: str) -> ev.ModelRetired:
        """The final statistics of a version as a :class:`~eventml.events.ModelRetired` event."""
        s = self.versions.get((model, version)) or VersionStats(
            model=model, version=version, digest=digest
        )
        return ev.ModelRetired(
            name=model, version=version, digest=digest, usage=s.usage, errors=s.errors,
            total_us=s.total_us, min_us=s.min_us, max_us=s.max_us, since=s.since, ts=ev.now(),
        )  # fmt: skip


__all__ = ["StatsView", "VersionStats", "parse_time"]
