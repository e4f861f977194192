"""Session fixtures shared by every test folder: one real Kafka broker (``scripts/kafka/broker.sh``).

The broker runs on its own ``EVENTML_KAFKA_DIR`` under pytest's tmp dir and on a free
port, so it never meets a developer's broker or another session's; ``tests/log`` and
``tests/serving`` share it (one start per session). Missing Java or Maven fails the Kafka
tests with the reason (CI has both); it never skips them.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BROKER_SH = Path(__file__).resolve().parents[1] / "scripts" / "kafka" / "broker.sh"


@dataclass(frozen=True)
class Broker:
    """A broker started by ``broker.sh``: where it listens and how to drive it."""

    port: int
    dir: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "EVENTML_KAFKA_DIR": str(self.dir),
            "EVENTML_KAFKA_PORT": str(self.port),
        }

    def run(self, *args: str) -> str:
        """Run ``broker.sh ARGS`` for this broker; a failure fails the test with its output."""
        done = subprocess.run(
            [str(BROKER_SH), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(
                f"expected `broker.sh {' '.join(args)}` to succeed, got exit {done.returncode}:\n"
                f"{done.stdout}{done.stderr}"
            )
        return done.stdout

    def pid(self) -> int | None:
        try:
            return int((self.dir / "broker.pid").read_text().strip())
        except (OSError, ValueError):
            return None


def free_port_pair() -> int:
    """A free port whose successor (the controller port) is free too.

    Picked below the kernel's ephemeral range, so that no client's outgoing connection
    takes it between this check and the broker binding it.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(10_000, max(low - 2, 10_002))
        if all(_free(p) for p in (port, port + 1)):
            return port
    raise RuntimeError("expected a free pair of ports on 127.0.0.1, found none in 100 tries")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def require_java_and_maven() -> None:
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"expected {' and '.join(missing)} on PATH for the Kafka tests (Java 17+ runs the "
            "broker, Maven 3 fetches its jars; see docs/kafka-broker.md), got none; install "
            "them (Debian: apt-get install default-jre-headless maven) or deselect with "
            "-m 'not kafka'"
        )


def stop_broker(broker: Broker) -> None:
    """``broker.sh stop`` (it checks the pid is our broker), then make sure the pid is gone."""
    pid = broker.pid()
    subprocess.run(
        [str(BROKER_SH), "stop"], env=broker.env, capture_output=True, timeout=120, check=False
    )
    if pid is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for the session; tests share it (the log fixture resets its contents)."""
    require_java_and_maven()
    broker = Broker(free_port_pair(), tmp_path_factory.mktemp("kafka") / "broker")
    broker.run("start")
    try:
        yield broker
    finally:
        stop_broker(broker)


def reset_cluster(bootstrap: str) -> None:
    """Delete every consumer group and non-internal topic; wait until they are gone.

    For tests whose code uses fixed topic names (the engine's ``records``,
    ``predictions``, ...): each starts from an empty cluster namespace.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient  # the Kafka extra; only Kafka tests call this

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    groups = [g.group_id for g in admin.list_consumer_groups(request_timeout=10).result().valid]
    deadline = time.monotonic() + 30  # a killed member stays in its group for its session
    while groups:
        busy = []
        for group, future in admin.delete_consumer_groups(groups, request_timeout=10).items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.NON_EMPTY_GROUP or time.monotonic() > deadline:
                    raise
                busy.append(group)
        groups = busy
        time.sleep(0.2 if groups else 0)
    topics = [t for t in admin.list_topics(timeout=10).topics if not t.startswith("__")]
    if topics:
        for future in admin.delete_topics(topics, request_timeout=10).values():
            future.result()
    deadline = time.monotonic() + 30
    while any(not t.startswith("__") for t in admin.list_topics(timeout=10).topics):
        if time.monotonic() > deadline:
            raise RuntimeError(f"expected no topics 30 s after deleting {topics}, got some left")
        time.sleep(0.02)
