"""The stream engine on a real Kafka broker: exactly-once, scale-out, hot swap, broker outages.

Every worker is a real ``python -m eventml.cli run`` process with ``EVENTML_LOG=kafka://...``;
records are wine rows (ids ``r0``, ``r1``, ..., entity keys ``k0`` .. ``k996``), scored by the
shared wine PMML models. What is checked is what a user depends on: a ``read_committed``
reader sees exactly one prediction per record id, with the outputs of the embedded (SQLite)
engine on the same input, and the model version each record must get.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from confluent_kafka import Consumer as RawConsumer
from confluent_kafka import IsolationLevel, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from eventml import events as ev
from eventml.config import Settings
from eventml.ingest import SendOptions, send_file
from eventml.log import Log, open_log
from eventml.models.registry import push_model
from eventml.serving.engine import Engine
from eventml.serving.routes import deploy
from tests.conftest import Broker, free_port_pair, stop_broker

pytestmark = pytest.mark.kafka

WINE = Path(__file__).parents[3] / "shared" / "data" / "wine"
LR = WINE / "models" / "winequalityLinearRegression.pmml"
TREE = WINE / "models" / "winequalityDesisionTreeRegression.pmml"
FEATURES = (
    "fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides",
    "free sulfur dioxide", "total sulfur dioxide", "density", "pH", "sulphates", "alcohol",
)  # fmt: skip
OPTS = SendOptions(endpoint="wine", sep=";", id_column="id", key_column="key")
GROUP = "engine"
PARTITIONS = 6
SCALE_OUT_RECORDS = 100_000


def wine_csv(path: Path, count: int, start: int = 0) -> Path:
    """Records ``r{start}`` .. ``r{start+count-1}``: the red wine rows in turn, keyed by entity."""
    rows = [
        line.split(";")[:11]
        for line in (WINE / "winequality_red.csv").read_text().splitlines()
        if line
    ]
    with path.open("w") as f:
        f.write(";".join(["id", "key", *FEATURES]) + "\n")
        for i in range(start, start + count):
            f.write(";".join([f"r{i}", f"k{i % 997}", *rows[i % len(rows)]]) + "\n")
    return path


def cli(url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventml.cli", *args],
        env={**os.environ, "EVENTML_LOG": url},
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def init_log(url: str, partitions: int = PARTITIONS) -> None:
    """``eventml log init --partitions N`` on Kafka, checked by what it prints."""
    done = cli(url, "log", "init", "--partitions", str(partitions))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "deadletter: " + f"{partitions} partition(s), created",
        "labels: " + f"{partitions} partition(s), created",
        "models: 1 partition(s), created",
        "predictions: " + f"{partitions} partition(s), created",
        "records: " + f"{partitions} partition(s), created",
    ]


def predictions(log: Log) -> list[ev.Prediction]:
    """Every prediction a ``read_committed`` reader sees."""
    out: list[ev.Prediction] = []
    for batch in log.read_all("predictions"):
        out.extend(ev.decode_many(batch.values, ev.Prediction))
    return out


def one_per_record(preds: list[ev.Prediction], count: int, start: int = 0) -> None:
    """Exactly one prediction for each of the records ``r{start}`` .. ``r{start+count-1}``."""
    ids = Counter(p.record_id for p in preds)
    twice = sorted(i for i, n in ids.items() if n > 1)
    assert not twice, f"{len(twice)} records scored more than once, e.g. {twice[:5]}"
    assert set(ids) == {f"r{i}" for i in range(start, start + count)}


def embedded_outputs(root: Path, csv: Path) -> dict[str, ev.Output | None]:
    """The same records scored by the engine on the embedded SQLite log: id → output."""
    with open_log(str(root), Settings()) as log:
        push_model(log, LR, "wine-lr")
        deploy(log, "wine", "wine-lr")
        send_file(log, csv, OPTS)
        engine = Engine(log, log.settings)
        try:
            engine.run(until_idle=True)
        finally:
            engine.close()
        return {p.record_id: p.output for p in predictions(log)}


class Workers:
    """``eventml run --group engine`` processes on one log; each one's stderr kept in a file."""

    def __init__(self, url: str, folder: Path, **env: str) -> None:
        self.url = url
        self.folder = folder
        self.env = {**os.environ, "EVENTML_LOG": url, **env}
        self.procs: list[subprocess.Popen[bytes]] = []
        self._errs: list[IO[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        err = (self.folder / f"worker{len(self.procs)}.err").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "eventml.cli", "run", "--group", GROUP, *args],
            env=self.env, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
        self.procs.append(proc)
        self._errs.append(err)
        return proc

    def stderr(self, i: int) -> str:
        self._errs[i].flush()
        return (self.folder / f"worker{i}.err").read_text()

    def check_alive(self, *skip: int) -> None:
        for i, proc in enumerate(self.procs):
            if i not in skip and proc.poll() is not None:
                pytest.fail(f"worker {i} exited with {proc.returncode}:\n{self.stderr(i)}")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for err in self._errs:
            err.close()


@pytest.fixture
def workers(kafka_url: str, tmp_path: Path) -> Iterator[Workers]:
    group = Workers(kafka_url, tmp_path)
    try:
        yield group
    finally:
        group.close()


def scored_everything(log: Log) -> bool:
    """The group committed every partition of ``records`` up to its end."""
    committed = log.committed(GROUP, "records")
    ends = log.end_offsets("records")
    return all(committed.get(p, 0) >= end for p, end in enumerate(ends))


def wait_until_scored(log: Log, workers: Workers, timeout: float, *dead: int) -> float:
    """Wait until the group caught up with ``records``; returns the seconds it took.

    Then until no transaction is open on ``predictions``: the group's offsets become
    visible with the marker on ``__consumer_offsets``, which the broker may write a moment
    before the markers on ``predictions``, so a read right then could stop short.
    """
    started = time.monotonic()
    while not scored_everything(log):
        workers.check_alive(*dead)
        if time.monotonic() - started > timeout:
            committed = log.committed(GROUP, "records")
            pytest.fail(
                f"expected the group to reach {log.end_offsets('records')} within {timeout} s, "
                f"got {committed}"
            )
        time.sleep(0.5)
    took = time.monotonic() - started
    bootstrap = bootstrap_of(workers.url).partition("?")[0]
    deadline = time.monotonic() + 60
    while (ends := predictions_ends(bootstrap))[0] != ends[1]:
        assert time.monotonic() < deadline, f"predictions: stable {ends[0]}, high {ends[1]}"
        time.sleep(0.1)
    return took


def predictions_ends(bootstrap: str) -> tuple[list[int], list[int]]:
    """The last stable offsets and the high watermarks of ``predictions``."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    parts = [TopicPartition("predictions", p) for p in range(PARTITIONS)]
    latest: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    out: list[list[int]] = []
    for isolation in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED):
        done = admin.list_offsets(
            dict.fromkeys(parts, latest), isolation_level=isolation, request_timeout=10
        )
        out.append([done[tp].result().offset for tp in parts])
    return out[0], out[1]


def members(bootstrap: str) -> list[list[int]]:
    """The ``records`` partitions of each live member of the group, sorted."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    [future] = admin.describe_consumer_groups([GROUP], request_timeout=10).values()
    desc = future.result()
    return sorted(
        sorted(tp.partition for tp in m.assignment.topic_partitions if tp.topic == "records")
        for m in desc.members
    )


def wait_for_members(bootstrap: str, count: int, workers: Workers, *dead: int) -> None:
    """Wait until ``count`` members share the six partitions evenly (the group is stable)."""
    deadline = time.monotonic() + 60
    while True:
        got = members(bootstrap)
        if len(got) == count and all(len(m) == PARTITIONS // count for m in got):
            assert sorted(p for m in got for p in m) == list(range(PARTITIONS))
            return
        workers.check_alive(*dead)
        if time.monotonic() > deadline:
            pytest.fail(
                f"expected {count} members with {PARTITIONS // count} partitions each, got {got}"
            )
        time.sleep(0.2)


def bootstrap_of(url: str) -> str:
    return url.removeprefix("kafka://")


# -- 1. exactly-once ---------------------------------------------------------------------


def raw_predictions(bootstrap: str, isolation: str) -> int:
    """How many prediction entries a plain consumer with ``isolation.level`` reads."""
    c = RawConsumer({
        "bootstrap.servers": bootstrap, "group.id": f"count-{isolation}",
        "isolation.level": isolation, "enable.partition.eof": True, "enable.auto.commit": False,
    })  # fmt: skip
    try:
        c.assign([TopicPartition("predictions", p, 0) for p in range(PARTITIONS)])
        seen, at_end = 0, set[int]()
        deadline = time.monotonic() + 60
        while len(at_end) < PARTITIONS and time.monotonic() < deadline:
            for msg in c.consume(10_000, 0.5):
                err = msg.error()
                if err is None:
                    seen += 1
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition() or 0)
        assert len(at_end) == PARTITIONS
        return seen
    finally:
        c.close()


def kill_inside_a_transaction(proc: subprocess.Popen[bytes], bootstrap: str) -> None:
    """SIGKILL ``proc`` while one of its transactions has appended predictions.

    A partition's last stable offset below a high watermark read just before it means
    a transaction is open at that moment (it holds the stable offset back).
    """
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    parts = [TopicPartition("predictions", p) for p in range(PARTITIONS)]
    latest: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]

    def ends(isolation: IsolationLevel) -> list[int]:
        done = admin.list_offsets(
            dict.fromkeys(parts, latest), isolation_level=isolation,
            request_timeout=10,
        )  # fmt: skip
        return [done[tp].result().offset for tp in parts]

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        high = ends(IsolationLevel.READ_UNCOMMITTED)
        stable = ends(IsolationLevel.READ_COMMITTED)
        if any(s < h for s, h in zip(stable, high, strict=True)):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_engine_scores_each_record_exactly_once_across_kill_9_mid_transaction(
    kafka_url: str, workers: Workers, tmp_path: Path
) -> None:
    count = 30_000
    bootstrap = bootstrap_of(kafka_url)
    init_log(kafka_url)
    csv = wine_csv(tmp_path / "wine.csv", count)
    with open_log(kafka_url, Settings(partitions=PARTITIONS)) as log:
        push_model(log, LR, "wine-lr")
        deploy(log, "wine", "wine-lr")
        send_file(log, csv, OPTS)
        workers.env["EVENTML_BATCH_MAX"] = "200"
        # killed eight times mid-stream, each when a transaction is seen open: a kill can
        # still land after its commit was sent (about two in five here), and at least one
        # must abort a transaction (asserted below)
        for kill in range(8):
            proc = workers.start()
            deadline = time.monotonic() + 90
            while sum(log.committed(GROUP, "records").values()) <= 2000 * kill:
                workers.check_alive(*range(kill))
                assert time.monotonic() < deadline, "the engine committed nothing in 90 s"
                time.sleep(0.05)
            kill_inside_a_transaction(proc, bootstrap)
        last = workers.start("--until-idle")
        assert last.wait(180) == 0, workers.stderr(8)
        assert scored_everything(log)
        preds = predictions(log)
    one_per_record(preds, count)
    want = embedded_outputs(tmp_path / "embedded", csv)
    assert {p.record_id: p.output for p in preds} == want
    assert {(p.status, p.model, p.version) for p in preds} == {("ok", "wine-lr", 1)}
    # What the killed engines appended in transactions that never committed is on the
    # log too: a read_uncommitted reader sees those duplicates, read_committed never does.
    committed = raw_predictions(bootstrap, "read_committed")
    uncommitted = raw_predictions(bootstrap, "read_uncommitted")
    print(f"exactly-once: {uncommitted - committed} predictions of aborted transactions")
    assert committed == count
    assert uncommitted > count


# -- 2. scale-out ------------------------------------------------------------------------


@pytest.mark.slow
def test_three_workers_one_killed_one_added_score_each_record_once(
    kafka_url: str, workers: Workers, tmp_path: Path
) -> None:
    count = SCALE_OUT_RECORDS
    bootstrap = bootstrap_of(kafka_url)
    init_log(kafka_url)
    csv = wine_csv(tmp_path / "wine.csv", count)
    with open_log(kafka_url, Settings(partitions=PARTITIONS)) as log:
        push_model(log, LR, "wine-lr")
        deploy(log, "wine", "wine-lr")
        for _ in range(3):
            workers.start()
        wait_for_members(bootstrap, 3, workers)
        send_file(log, csv, OPTS)
        assert sum(1 for e in log.end_offsets("records") if e > 0) == PARTITIONS
        deadline = time.monotonic() + 120
        while sum(log.committed(GROUP, "records").values()) < count // 4:
            workers.check_alive()
            assert time.monotonic() < deadline, "the workers committed little in 120 s"
            time.sleep(0.1)
        workers.procs[0].send_signal(signal.SIGKILL)
        workers.procs[0].wait()
        workers.start()
        took = wait_until_scored(log, workers, 300, 0)
        wait_for_members(bootstrap, 3, workers, 0)
        preds = predictions(log)
    print(f"scale-out: the rest of {count} records scored {took:.1f} s after the kill")
    one_per_record(preds, count)
    assert {p.record_id: p.output for p in preds} == embedded_outputs(tmp_path / "embedded", csv)
    assert {p.source.partition for p in preds if p.source} == set(range(PARTITIONS))


# -- 3. hot swap -------------------------------------------------------------------------


@pytest.mark.slow
def test_hot_swap_at_token_reaches_every_worker_and_partition(
    kafka_url: str, workers: Workers, tmp_path: Path
) -> None:
    before, after = 12_000, 12_000
    bootstrap = bootstrap_of(kafka_url)
    init_log(kafka_url)
    with open_log(kafka_url, Settings(partitions=PARTITIONS)) as log:
        push_model(log, LR, "a")
        push_model(log, TREE, "b")
        deploy(log, "wine", "a")
        for _ in range(3):
            workers.start()
        wait_for_members(bootstrap, 3, workers)
        send_file(log, wine_csv(tmp_path / "before.csv", before), OPTS)
        route = deploy(log, "wine", "b", at_token=True)  # while the workers score
        send_file(log, wine_csv(tmp_path / "after.csv", after, start=before), OPTS)
        wait_until_scored(log, workers, 180)
        assert len(members(bootstrap)) == 3  # the three workers served it together
        preds = predictions(log)
    one_per_record(preds, before + after)
    tokens = route.token_offsets
    assert sorted(tokens) == list(range(PARTITIONS))
    wrong = [
        (p.record_id, p.source.partition, p.source.offset, p.model)
        for p in preds
        if p.source and p.model != ("a" if p.source.offset < tokens[p.source.partition] else "b")
    ]
    assert not wrong, f"{len(wrong)} records scored by the wrong version, e.g. {wrong[:5]}"
    per_partition = {
        (part, model): n
        for (part, model), n in Counter(
            (p.source.partition, p.model) for p in preds if p.source
        ).items()
    }
    for part in range(PARTITIONS):  # both versions served in every partition
        assert per_partition.get((part, "a"), 0) > 0, part
        assert per_partition.get((part, "b"), 0) > 0, part
    # records sent after the deploy are all behind the tokens, so all scored by b
    assert {p.model for p in preds if int(p.record_id[1:]) >= before} == {"b"}
    assert {(p.model, p.route_version) for p in preds} == {("a", 1), ("b", 2)}


# -- 4. broker down ----------------------------------------------------------------------


def test_run_against_a_closed_port_exits_2_naming_the_address() -> None:
    port = free_port_pair()  # nothing listens there
    started = time.monotonic()
    done = cli(f"kafka://127.0.0.1:{port}", "run", timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        f"error: expected a Kafka broker at 127.0.0.1:{port}, got no answer within 5 s"
    )
    assert lines[0].endswith(f"(kafka://127.0.0.1:{port})")
    assert elapsed < 10  # a bounded failure, not a hang


@pytest.mark.slow
def test_broker_restart_mid_stream_loses_nothing(tmp_path: Path) -> None:
    broker = Broker(free_port_pair(), tmp_path / "restart-broker")
    broker.run("start")
    url = f"kafka://{broker.bootstrap}?timeout=5"
    count = 30_000
    workers = Workers(url, tmp_path, EVENTML_BATCH_MAX="200")
    try:
        init_log(url, 3)
        csv = wine_csv(tmp_path / "wine.csv", count)
        with open_log(url, Settings(partitions=3)) as log:
            push_model(log, LR, "wine-lr")
            deploy(log, "wine", "wine-lr")
            send_file(log, csv, OPTS)
            engine = workers.start()
            deadline = time.monotonic() + 60
            while sum(log.committed(GROUP, "records").values()) < 2000:
                workers.check_alive()
                assert time.monotonic() < deadline, "the engine committed nothing in 60 s"
                time.sleep(0.05)
        broker.run("stop")
        try:
            code: int | None = engine.wait(30)
        except subprocess.TimeoutExpired:
            code = None  # still running after 30 s without a broker
        # A stream processor rides an outage out: it warns, retries, and goes on.
        assert code is None, (
            f"the engine exited ({code}) with the broker down:\n{workers.stderr(0)}"
        )
        broker.run("start", "--keep")
        with open_log(url, Settings()) as log:
            deadline = time.monotonic() + 240
            while not scored_everything(log):
                workers.check_alive()  # no restart: the same process recovers
                assert time.monotonic() < deadline, (
                    f"committed {log.committed(GROUP, 'records')}; engine stderr:\n{workers.stderr(0)}"
                )
                time.sleep(0.5)
            preds = predictions(log)
        stderr = workers.stderr(0)
        assert "warning: log unavailable, retrying every 1 s: " in stderr, stderr
        assert "warning: log available again after " in stderr, stderr
        assert "Traceback" not in stderr, stderr
        one_per_record(preds, count)
        assert {p.record_id: p.output for p in preds} == embedded_outputs(
            tmp_path / "embedded", csv
        )
    finally:
        workers.close()
        stop_broker(broker)
