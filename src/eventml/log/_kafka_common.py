"""What the Kafka backend's modules share: the URL, client configuration and error mapping.

Every ``KafkaException`` leaves eventml as one of its own errors (``raise ... from exc``):
an unreachable or timed-out broker is :class:`~eventml.errors.LogUnavailable` naming the
address, a fenced member or producer is :class:`~eventml.errors.GroupBusy`, a value over
the broker's size limit is :class:`~eventml.errors.InputError`, an unknown topic is
:class:`~eventml.errors.NotFound`, anything else :class:`~eventml.errors.LogError`.
"""

from __future__ import annotations

import logging
import re
from typing import Any, NamedTuple
from urllib.parse import parse_qs

from confluent_kafka import KafkaError, KafkaException, Message

from eventml.errors import (
    ConfigError,
    EventmlError,
    GroupBusy,
    InputError,
    LogError,
    LogUnavailable,
    NotFound,
)

LOGGER = logging.getLogger("eventml.log.kafka")
CLIENT_LOGGER = logging.getLogger("eventml.log.kafka.client")


class _ClientLog:
    """librdkafka's own log lines, at DEBUG: every failure that matters is raised as ours.

    (A restarting broker makes librdkafka log ``Connection refused`` at ERROR many times
    a second; those are expected and already reported by the operation that failed.)
    """

    def log(self, level: int, msg: str, *args: object) -> None:
        CLIENT_LOGGER.debug(msg, *args)


SETTLE_HEADER = "eventml-settle"
"""Header of the empty record that settles a transaction whose markers went missing.

eventml's readers skip such records (see ``_kafka_tx.settle``); other Kafka clients see
one empty value with this header.
"""

DEFAULT_TIMEOUT = 10.0
"""Seconds an operation waits for an unreachable broker before :class:`LogUnavailable`."""

_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")

_UNAVAILABLE = {
    KafkaError._NOENT,  # "No leaders found": the partitions exist but nobody leads them
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TIMED_OUT,
    KafkaError._MSG_TIMED_OUT,
    KafkaError._RESOLVE,
    KafkaError._WAIT_COORD,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION,
    KafkaError.BROKER_NOT_AVAILABLE,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    # A restarted broker answers these until its partitions' leadership is settled again:
    KafkaError.FENCED_LEADER_EPOCH,
    KafkaError.UNKNOWN_LEADER_EPOCH,
    KafkaError.OFFSET_NOT_AVAILABLE,
}
_FENCED = {
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.FENCED_INSTANCE_ID,
    KafkaError.FENCED_MEMBER_EPOCH,
    KafkaError.STALE_MEMBER_EPOCH,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError._FENCED,
}
_TOO_LARGE = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
}


class KafkaUrl(NamedTuple):
    """``kafka://host:port[,host:port][?timeout=SECONDS]``, parsed."""

    servers: str
    timeout: float

    @classmethod
    def parse(cls, url: str) -> KafkaUrl:
        rest = url.partition("://")[2] if "://" in url else url
        hosts, _, query = rest.partition("?")
        hosts = hosts.strip("/")
        parts = [h.strip() for h in hosts.split(",") if h.strip()]
        bad = [h for h in parts if not _HOST_PORT.match(h) or not 0 < int(h.rsplit(":")[1]) < 65536]
        if not parts or bad:
            raise ConfigError(
                f"expected kafka://host:port[,host:port], got {url!r}",
                where="the log URL",
            )
        timeout = DEFAULT_TIMEOUT
        options = parse_qs(query, keep_blank_values=True)
        for name in options:
            if name != "timeout":
                raise ConfigError(f"expected the URL option 'timeout', got {name!r}", where=url)
        if "timeout" in options:
            raw = options["timeout"][-1]
            try:
                timeout = float(raw)
            except ValueError:
                timeout = -1.0
            if not timeout > 0:
                raise ConfigError(f"expected a positive number of seconds, got {raw!r}", where=url)
        return cls(",".join(parts), timeout)


def client_config(servers: str, timeout: float, **extra: Any) -> dict[str, Any]:
    """Settings every client of this backend gets; ``extra`` wins."""
    config: dict[str, Any] = {
        "bootstrap.servers": servers,
        "client.id": "eventml",
        "logger": _ClientLog(),
        "socket.timeout.ms": int(timeout * 1000),
        "socket.connection.setup.timeout.ms": int(timeout * 1000),
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "retry.backoff.max.ms": 500,
    }
    config.update(extra)
    return config


def is_settle(msg: Message) -> bool:
    """A settle record (empty value, :data:`SETTLE_HEADER`): not an entry of the log."""
    if len(msg):  # the value's length: cheap, and eventml never appends an empty value with headers
        return False
    headers = msg.headers()
    return isinstance(headers, list) and any(h[0] == SETTLE_HEADER for h in headers)


def kafka_error(exc: BaseException | KafkaError) -> KafkaError | None:
    """The ``KafkaError`` inside a ``KafkaException`` (or the error itself)."""
    if isinstance(exc, KafkaError):
        return exc
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def is_unavailable(err: KafkaError | None) -> bool:
    return err is not None and err.code() in _UNAVAILABLE


def mapped(exc: BaseException | KafkaError, servers: str, doing: str) -> EventmlError:
    """The eventml error for a Kafka failure while ``doing`` something (use ``from exc``)."""
    err = kafka_error(exc)
    text = err.str() if err is not None else str(exc)
    where = f"kafka://{servers}"
    if err is None:
        return LogError(f"expected to {doing}, got {type(exc).__name__}: {text}", where=where)
    code = err.code()
    if code in _UNAVAILABLE:
        return LogUnavailable(
            f"expected the Kafka broker at {servers} to {doing}, got {err.name()}: {text}",
            where=where,
        )
    if code in _FENCED:
        return GroupBusy(
            f"expected a live member to {doing}, got {err.name()} (another member or "
            f"producer took over): {text}",
            where=where,
        )
    if code in _TOO_LARGE:
        return InputError(
            f"expected values within the broker's size limit, got {text}", where=doing
        )
    if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
        return NotFound(f"expected an existing topic, got {err.name()}: {text}", where=doing)
    return LogError(f"expected to {doing}, got {err.name()}: {text}", where=where)
