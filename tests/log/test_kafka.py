"""The Kafka backend against a real broker: the conformance suite, plus what only Kafka has.

Every test gets an empty cluster namespace: the ``log`` fixture deletes every non-internal
topic and every consumer group before the test, so the suite's fixed names (``t``,
``g``, ...) mean the same thing they mean on SQLite.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer as RawConsumer
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from eventml.config import Settings
from eventml.errors import ConfigError, InputError, LogUnavailable
from eventml.log import Log, open_log
from eventml.log._kafka import KafkaLog
from eventml.log._kafka_tx import Unsettled
from eventml.log.base import Consumer
from tests.conftest import reset_cluster
from tests.log.conformance import LogConformance
from tests.log.conftest import Broker, free_port_pair, require_java_and_maven, stop_broker

pytestmark = pytest.mark.kafka


@pytest.fixture
def bootstrap(kafka_broker: Broker) -> str:
    reset_cluster(kafka_broker.bootstrap)
    return kafka_broker.bootstrap


class TestKafkaLog(LogConformance):
    gapless_offsets = False
    exclusive_groups = False

    @pytest.fixture
    def log(self, bootstrap: str) -> Iterator[Log]:
        with open_log(f"kafka://{bootstrap}", Settings(partitions=1)) as log:
            yield log


def test_missing_java_or_maven_fails_the_broker_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.fail.Exception) as failed:
        require_java_and_maven()
    assert str(failed.value).startswith(
        "expected java and mvn on PATH for the Kafka tests (Java 17+ runs the broker, "
        "Maven 3 fetches its jars; see docs/kafka-broker.md), got none"
    )


def test_url_is_parsed_and_checked() -> None:
    with pytest.raises(ConfigError, match=r"expected kafka://host:port\[,host:port\], got"):
        open_log("kafka://nohostport", Settings())
    with pytest.raises(ConfigError, match="expected the URL option 'timeout', got 'acks'"):
        open_log("kafka://127.0.0.1:9092?acks=1", Settings())


def test_unreachable_broker_is_reported_quickly_with_its_address() -> None:
    port = free_port_pair()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(LogUnavailable) as err:
        open_log(f"kafka://127.0.0.1:{port}?timeout=3", Settings())
    elapsed = time.monotonic() - started
    assert str(err.value).startswith(
        f"expected a Kafka broker at 127.0.0.1:{port}, got no answer within 3 s"
    )
    assert err.value.where == f"kafka://127.0.0.1:{port}"
    assert err.value.status_code == 503
    assert elapsed < 10  # a bounded failure, not a hang (the URL asks for 3 s)


def test_default_timeout_reports_a_closed_port_within_ten_seconds() -> None:
    port = free_port_pair()
    started = time.monotonic()
    with pytest.raises(LogUnavailable, match=f"127.0.0.1:{port}"):
        open_log(f"kafka://127.0.0.1:{port}", Settings())
    assert time.monotonic() - started < 10  # opening waits at most 5 s for a first answer


def test_topics_are_created_with_log_append_time(bootstrap: str) -> None:
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        ConfigResource,
        ResourceType,
    )

    with open_log(f"kafka://{bootstrap}", Settings(partitions=3)) as log:
        log.create_topic("models", 1)
        log.append("records", [b"x"])
        assert log.topics() == {"models": 1, "records": 3}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resources = [ConfigResource(ResourceType.TOPIC, t) for t in ("models", "records")]
    configs = {r.name: f.result() for r, f in admin.describe_configs(resources).items()}
    assert configs["models"]["message.timestamp.type"].value == "LogAppendTime"
    assert configs["records"]["message.timestamp.type"].value == "LogAppendTime"
    assert configs["models"]["retention.ms"].value == "-1"


def test_a_value_over_the_broker_limit_is_an_input_error(bootstrap: str) -> None:
    with open_log(f"kafka://{bootstrap}", Settings()) as log:
        assert isinstance(log, KafkaLog)
        limit = log.max_message_bytes
        log.append("models", [b"small"])
        with pytest.raises(InputError) as err:
            log.append("models", [b"ok", b"x" * (limit + 1)])
        assert str(err.value) == (
            f"expected a value (with its key) of at most {limit - 100} bytes, the broker's "
            f"message limit of {limit} bytes less record overhead, got {limit + 1} bytes; "
            "push large model payloads with --location (file:// or s3://) "
            "(value 1 of an append to topic 'models')"
        )
        assert list(log.read("models", 0).values) == [b"small"]  # nothing of the batch landed


def test_keyed_partitions_match_kafka_and_survive_reopening(bootstrap: str) -> None:
    keys = [f"customer-{i}".encode() for i in range(50)]
    with open_log(f"kafka://{bootstrap}", Settings(partitions=6)) as log:
        landed = log.append("records", [b"v"] * 50, keys=keys)
    with open_log(f"kafka://{bootstrap}", Settings()) as log:
        for key, p, off in zip(keys, landed.partitions, landed.offsets, strict=True):
            batch = log.read("records", p, off, off + 1)
            assert list(batch.keys) == [key]


def test_a_commit_during_a_rebalance_hands_over_what_it_read(bootstrap: str) -> None:
    # The member commits while a second member joins: the coordinator refuses commits
    # until the rebalance completes, and the partition that moves is revoked meanwhile.
    # What the first member read is committed as it hands the partition over, so the
    # second member starts after it: nothing is read twice.
    with open_log(f"kafka://{bootstrap}", Settings()) as log:
        log.create_topic("t", 2)
        for p in range(2):
            log.append("t", [f"{p}-{i}".encode() for i in range(5)], partition=p)
        a = log.consumer("g", ["t"])
        got = [v for b in a.poll(100, timeout=5) for v in b.values]
        assert sorted(got) == sorted(f"{p}-{i}".encode() for p in range(2) for i in range(5))
        joined: list[Consumer] = []
        joining = threading.Thread(target=lambda: joined.append(log.consumer("g", ["t"])))
        joining.start()
        deadline = time.monotonic() + 60
        while joining.is_alive() and time.monotonic() < deadline:
            a.commit()  # serves the rebalance only when the coordinator refuses the commit
        joining.join(1)
        (b,) = joined
        try:
            reread = []
            while time.monotonic() < deadline and not (
                len(a.positions()) == 1 and len(b.positions()) == 1
            ):
                assert a.poll(100, timeout=0.05) == []
                reread += [v for batch in b.poll(100, timeout=0.05) for v in batch.values]
            reread += [v for batch in b.poll(100, timeout=1) for v in batch.values]
            assert (len(a.positions()), len(b.positions()), reread) == (1, 1, [])
            assert log.committed("g", "t") == {0: 5, 1: 5}
        finally:
            b.close()
            a.close()


def test_broker_restart_mid_stream_loses_nothing_acknowledged(tmp_path: Path) -> None:
    broker = Broker(free_port_pair(), tmp_path / "restart-broker")
    broker.run("start")
    try:
        url = f"kafka://{broker.bootstrap}?timeout=5"
        with open_log(url, Settings()) as log:
            acked = log.append("records", [f"before {i}".encode() for i in range(100)])
            with log.consumer("g", ["records"]) as c:
                assert sum(len(b) for b in c.poll(40)) == 40
                c.commit()
            broker.run("stop")
            started = time.monotonic()
            with pytest.raises(LogUnavailable) as err:
                log.append("records", [b"while down"])
            assert time.monotonic() - started < 15
            assert f"expected the Kafka broker at {broker.bootstrap} to" in str(err.value)
            with pytest.raises(LogUnavailable, match=broker.bootstrap):
                log.end_offsets("records")
            out = broker.run("start", "--keep")
            assert "kafka ready" in out
            after = log.append("records", [b"after"])
        with open_log(url, Settings()) as log:
            batch = log.read("records", 0)
            values = list(batch.values)
            assert values[:100] == [f"before {i}".encode() for i in range(100)]
            assert list(batch.offsets)[:100] == list(acked.offsets)
            assert values[-1] == b"after"
            assert list(batch.offsets)[-1] == after.offsets[0]
            # The value appended while down may or may not have landed (never acknowledged).
            assert set(values[100:-1]) <= {b"while down"}
            assert log.committed("g", "records") == {0: 40}
    finally:
        stop_broker(broker)


@pytest.mark.parametrize("commit", [True, False])
def test_settling_a_transaction_leaves_nothing_readers_see(bootstrap: str, commit: bool) -> None:
    """A settle record ends a lost transaction's partitions; no eventml reader sees it.

    The lost transaction is stood in for by one whose recorded last offset lies beyond
    the partition's end (its markers look missing); settling writes the empty record with
    its header in a transaction of the same outcome, and the end offset moves past it.
    """
    with open_log(f"kafka://{bootstrap}", Settings(partitions=1)) as log:
        assert isinstance(log, KafkaLog)
        with log.transaction() as tx:
            tx.append("out", [b"a", b"b"])
        end = log.end_offsets("out")[0]
        log.unsettled = Unsettled(
            commit=commit, parts={("out", 0): end}, offsets={}, group="", member=None
        )
        with log.consumer("g", ["out"]) as c:
            assert [list(b.values) for b in c.poll(10)] == [[b"a", b"b"]]
            with log.transaction() as tx:  # settles first
                tx.append("out", [b"c"])
            assert log.unsettled is None
            # the settle record and its marker, then "c" and its marker
            assert log.end_offsets("out") == [end + 4]
            assert [list(b.values) for b in c.poll(10)] == [[b"c"]]
        assert list(log.read("out", 0).values) == [b"a", b"b", b"c"]
        raw = RawConsumer({
            "bootstrap.servers": bootstrap, "group.id": "raw", "enable.auto.commit": False,
            "isolation.level": "read_committed" if commit else "read_uncommitted",
        })  # fmt: skip
        try:
            raw.assign([TopicPartition("out", 0, end)])
            msg = raw.poll(10)
            assert msg is not None
            assert msg.error() is None
            assert (msg.offset(), msg.value(), msg.headers()) == (
                end,
                b"",
                [("eventml-settle", b"")],
            )
        finally:
            raw.close()
