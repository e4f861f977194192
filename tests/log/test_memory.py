from __future__ import annotations

from collections.abc import Iterator

import pytest

from eventml.config import Settings
from eventml.log import Log, open_log
from tests.log.conformance import LogConformance


class TestMemoryLog(LogConformance):
    @pytest.fixture
    def log(self) -> Iterator[Log]:
        with open_log("memory://", Settings(partitions=1)) as log:
            yield log


def test_named_memory_logs_are_shared_within_a_process() -> None:
    a = open_log("memory://shared-test", Settings())
    b = open_log("memory://shared-test", Settings())
    a.append("t", [b"x"])
    assert list(b.read("t", 0).values) == [b"x"]
    assert open_log("memory://", Settings()).topics() == {}
