"""The embedded log under real processes: SIGKILL at random moments, concurrent appenders."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventml.config import Settings
from eventml.log import open_log

CHILD = str(Path(__file__).with_name("_child.py"))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    db = str(tmp_path / "log")
    inputs = [f"input {i}".encode() for i in range(5_000)]
    with open_log(db, Settings()) as log:
        log.append("in", inputs)
    returned: dict[int, str] = {}
    rng = random.Random(20261121)
    kills = 0
    while kills < 20:
        child = subprocess.Popen(
            [sys.executable, CHILD, "crash", db], stdout=subprocess.PIPE, env=ENV, text=True
        )
        assert child.stdout is not None
        first = child.stdout.readline()  # the child is running: now pick a random moment
        time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        assert child.returncode == -signal.SIGKILL
        kills += 1
        for line in (first + out).splitlines():
            number, _, value = line.partition(" ")
            if len(value) == 256:  # 128 bytes in hex; a line cut by the kill is shorter
                returned[int(number)] = value
        with open_log(db, Settings()) as log:
            end = log.end_offsets("plain")[0]
            stored = log.read("plain", 0)
            assert list(stored.offsets) == list(range(end))  # no gaps
            for offset, value in returned.items():
                assert stored.values[offset].hex() == value  # every returned offset, exact bytes
            committed = log.committed("copier", "in").get(0, 0)
            out_entries = list(log.read("out", 0).values) if "out" in log.topics() else []
            # Exactly-once: the output holds one copy of each input up to the commit.
            assert out_entries == [b"copy of " + v for v in inputs[:committed]]
    assert len(returned) > 20
    with open_log(db, Settings()) as log, log.consumer("copier", ["in"]) as consumer:
        resumed = consumer.poll(1)
        committed = log.committed("copier", "in").get(0, 0)
        assert list(resumed[0].offsets) == [committed]
        assert 0 < committed < len(inputs)


@pytest.mark.slow
def test_two_processes_append_to_one_topic(tmp_path: Path) -> None:
    db = str(tmp_path / "log")
    with open_log(db, Settings()) as log:
        log.create_topic("shared", 2)
    writers = [
        subprocess.Popen(
            [sys.executable, CHILD, "append", db, "shared", name, "2000"],
            stdout=subprocess.PIPE,
            env=ENV,
            text=True,
        )
        for name in ("A", "B")
    ]
    outputs = [w.communicate()[0] for w in writers]
    assert [w.returncode for w in writers] == [0, 0]
    with open_log(db, Settings()) as log:
        seen: dict[str, list[int]] = {"A": [], "B": []}
        total = 0
        for p, end in enumerate(log.end_offsets("shared")):
            batch = log.read("shared", p)
            assert list(batch.offsets) == list(range(end))  # unique and gapless
            total += end
            for value in batch.values:
                writer, i = value.decode().split(":")
                seen[writer].append(int(i))
        assert total == 4000
        # each writer's values appear once each, in its own order within a partition
        assert sorted(seen["A"]) == list(range(2000))
        assert sorted(seen["B"]) == list(range(2000))
    reported = [tuple(map(int, line.split())) for out in outputs for line in out.splitlines()]
    assert len(reported) == 4000
    assert len(set(reported)) == 4000
