"""Settings: one typed object, read from ``EVENTML_*`` environment variables.

Command-line flags default from it; constructors take it instead of many keyword arguments.

>>> Settings.from_env({"EVENTML_LOG": "memory://", "EVENTML_PARTITIONS": "4"}).partitions
4
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

import msgspec

from eventml.errors import ConfigError

PREFIX = "EVENTML_"

TOPICS = ("records", "models", "predictions", "labels", "deadletter")
"""The standard topics (DESIGN §2)."""


def topic_partitions(topic: str, settings: Settings) -> int:
    """Partitions for a standard topic: ``models`` has one, so its events are totally ordered."""
    return 1 if topic == "models" else settings.partitions


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything configurable, with its default.

    Each field ``name`` is read from ``EVENTML_NAME`` (upper case).
    """

    log: str = "./eventml-data"
    """The log URL: a folder or ``sqlite:///path`` (embedded), ``memory://``, ``kafka://host:port``."""
    partitions: int = 1
    """Partitions of each standard topic when the log creates it."""
    replication: int = 1
    """Replicas of each topic the log creates (Kafka only; the embedded log has one copy)."""
    sqlite_sync: Literal["off", "normal", "full"] = "normal"
    """SQLite ``synchronous``: ``normal`` survives a process crash, ``full`` also power loss."""
    batch_max: int = 1000
    """Most records the engine takes in one micro-batch."""
    batch_ms: float = 50.0
    """Longest the engine waits to fill a micro-batch, in milliseconds."""
    threads: int = 1
    """Intra-op threads per scoring worker (one avoids oversubscribing small batches)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``); ``overrides`` win.

        An override of ``None`` means "not given" and leaves the environment's value.
        """
        env = os.environ if environ is None else environ
        raw: dict[str, object] = {}
        for name in cls.__struct_fields__:
            value = env.get(PREFIX + name.upper())
            if value is not None and value != "":
                raw[name] = value
        raw.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"invalid setting: {exc}", where="EVENTML_* environment") from exc
