"""The log conformance suite: every backend subclasses :class:`LogConformance`.

A backend's test module provides one fixture, ``log``, that yields a fresh, empty log
whose default partition count is 1, and inherits every test below::

    class TestMemoryLog(LogConformance):
        @pytest.fixture
        def log(self) -> Iterator[Log]: ...

Capability flags (class attributes) say where a backend's semantics legitimately differ;
their defaults are the embedded backends' stricter guarantees, so a backend that sets
none of them is held to every check. A flag switches the affected assertions to the
weaker guarantee and turns on the tests that pin what the backend does instead.
"""

from __future__ import annotations

import threading
import time

import pytest

from eventml.errors import GroupBusy, InputError, NotFound
from eventml.log import Log, partition_for


class LogConformance:
    """Behaviour every log backend must show."""

    gapless_offsets: bool = True
    """Offsets are exactly 0, 1, 2, ... in each partition, and an aborted transaction leaves
    the end offsets where they were. False (Kafka): transaction markers and aborted records
    take offsets that readers never see, so offsets only strictly increase."""

    exclusive_groups: bool = True
    """A consumer group has one live member; a second one gets :class:`GroupBusy`. False
    (Kafka): a second member joins and the group's partitions are shared between them."""

    def test_append_returns_gapless_offsets_from_zero(self, log: Log) -> None:
        first = log.append("t", [b"a", b"b", b"c"])
        second = log.append("t", [b"d"])
        assert list(first.offsets) == [0, 1, 2]
        assert list(first.partitions) == [0, 0, 0]
        assert list(second.offsets) == [3]
        assert log.end_offsets("t") == [4]

    def test_read_returns_exact_bytes_in_order(self, log: Log) -> None:
        values = [b"", b"\x00\xff" * 10, bytes(range(256)), b"x" * 1_000_000]
        log.append("t", values, keys=[None, b"k", None, b""])
        batch = log.read("t", 0)
        assert list(batch.offsets) == [0, 1, 2, 3]
        assert list(batch.values) == values
        assert list(batch.keys) == [None, b"k", None, b""]
        assert batch.next_offset == 4

    def test_read_range_stop_and_limit(self, log: Log) -> None:
        log.append("t", [str(i).encode() for i in range(10)])
        assert list(log.read("t", 0, 3, 6).values) == [b"3", b"4", b"5"]
        assert list(log.read("t", 0, 3, limit=2).values) == [b"3", b"4"]
        assert list(log.read("t", 0, 8).offsets) == [8, 9]
        empty = log.read("t", 0, 10)
        assert list(empty.values) == []
        assert list(empty.offsets) == []

    def test_keys_pick_partitions_by_murmur2(self, log: Log) -> None:
        log.create_topic("k", 6)
        named = [b"alice", b"bob", b"carol", b"alice"]
        landed = log.append("k", [b"1", b"2", b"3", b"4", b"5"], keys=[*named, None])
        assert list(landed.partitions)[:4] == [3, 0, 2, 3]
        assert [partition_for(k, 6) for k in named] == [3, 0, 2, 3]
        assert list(log.read("k", 3).values) == [b"1", b"4"]
        assert list(log.read("k", 3).offsets) == [0, 1]
        assert log.topics()["k"] == 6

    def test_keyless_batches_rotate_over_partitions(self, log: Log) -> None:
        log.create_topic("r", 3)
        used = [log.append("r", [b"a", b"b"]).partitions for _ in range(3)]
        assert all(len(set(p)) == 1 for p in used)
        assert sorted(p[0] for p in used) == [0, 1, 2]
        assert sorted(log.end_offsets("r")) == [2, 2, 2]

    def test_explicit_partition(self, log: Log) -> None:
        log.create_topic("p", 4)
        landed = log.append("p", [b"a", b"b"], keys=[b"x", b"y"], partition=2)
        assert list(landed.partitions) == [2, 2]
        assert log.end_offsets("p") == [0, 0, 2, 0]
        with pytest.raises(InputError) as err:
            log.append("p", [b"a"], partition=4)
        assert str(err.value) == "expected a partition in 0..3, got 4 (append to topic 'p')"

    def test_unknown_topic_and_partition(self, log: Log) -> None:
        with pytest.raises(NotFound, match="expected an existing topic, got 'nope'"):
            log.read("nope", 0)
        with pytest.raises(NotFound, match="expected an existing topic, got 'nope'"):
            log.end_offsets("nope")
        log.create_topic("one", 1)
        with pytest.raises(NotFound, match=r"expected a partition in 0\.\.0, got 1"):
            log.read("one", 1)

    def test_create_topic_is_idempotent(self, log: Log) -> None:
        log.create_topic("c", 2)
        log.create_topic("c", 5)
        assert log.topics()["c"] == 2
        log.append("d", [b"x"])
        assert log.topics()["d"] == 1

    def test_read_by_time(self, log: Log) -> None:
        log.append("t", [b"old1", b"old2"])
        time.sleep(0.01)
        middle = time.time_ns() // 1_000_000
        time.sleep(0.01)
        log.append("t", [b"new"])
        batch = log.read("t", 0)
        assert list(batch.timestamps) == sorted(batch.timestamps)
        assert log.offset_for_time("t", 0, middle) == 2
        assert list(log.read_time("t", 0, middle).values) == [b"new"]
        assert list(log.read_time("t", 0, 0, middle).values) == [b"old1", b"old2"]
        assert log.offset_for_time("t", 0, middle + 10_000_000) == 3

    def test_consumer_reads_everything_and_commits(self, log: Log) -> None:
        log.create_topic("t", 2)
        log.append("t", [b"a0", b"a1"], partition=0)
        log.append("t", [b"b0"], partition=1)
        with log.consumer("g", ["t"]) as c:
            got = {(b.partition, v) for b in c.poll(100) for v in b.values}
            assert got == {(0, b"a0"), (0, b"a1"), (1, b"b0")}
            assert c.positions() == {("t", 0): 2, ("t", 1): 1}
            c.commit()
        assert log.committed("g", "t") == {0: 2, 1: 1}
        lags = {(g.partition, g.committed, g.end, g.lag) for g in log.groups() if g.group == "g"}
        assert lags == {(0, 2, 2, 0), (1, 1, 1, 0)}

    def test_consumer_resumes_after_last_commit_only(self, log: Log) -> None:
        log.append("t", [str(i).encode() for i in range(10)])
        with log.consumer("g", ["t"]) as c:
            assert [v for b in c.poll(4) for v in b.values] == [b"0", b"1", b"2", b"3"]
            c.commit()
            assert [v for b in c.poll(3) for v in b.values] == [b"4", b"5", b"6"]
        with log.consumer("g", ["t"]) as c:
            assert [v for b in c.poll(100) for v in b.values] == [
                str(i).encode() for i in range(4, 10)
            ]
        assert [(g.committed, g.lag) for g in log.groups() if g.group == "g"] == [(4, 6)]

    def test_poll_respects_max_records_across_partitions(self, log: Log) -> None:
        log.create_topic("t", 3)
        for p in range(3):
            log.append("t", [b"x"] * 5, partition=p)
        with log.consumer("g", ["t"]) as c:
            sizes = [sum(len(b.values) for b in c.poll(4)) for _ in range(5)]
        assert sizes == [4, 4, 4, 3, 0]

    def test_tail_waits_for_new_entries(self, log: Log) -> None:
        log.create_topic("t", 1)
        with log.consumer("g", ["t"]) as c:
            assert c.poll(10, timeout=0.05) == []
            writer = threading.Timer(0.05, lambda: log.append("t", [b"late"]))
            writer.start()
            try:
                got = c.poll(10, timeout=10.0)
            finally:
                writer.join()
            assert [v for b in got for v in b.values] == [b"late"]

    def test_consumer_sees_topics_created_later(self, log: Log) -> None:
        with log.consumer("g", ["later"]) as c:
            assert c.poll(10) == []
            log.append("later", [b"x"])
            assert [v for b in c.poll(10) for v in b.values] == [b"x"]

    def test_seek_moves_the_position(self, log: Log) -> None:
        log.append("t", [b"a", b"b", b"c"])
        with log.consumer("g", ["t"]) as c:
            c.seek("t", 0, 2)
            assert [v for b in c.poll(10) for v in b.values] == [b"c"]

    def test_one_live_member_per_group(self, log: Log) -> None:
        if not self.exclusive_groups:
            pytest.skip("members share a group (test_members_share_a_groups_partitions)")
        c = log.consumer("g", ["t"])
        with pytest.raises(GroupBusy, match="expected consumer group 'g' to be free"):
            log.consumer("g", ["t"])
        log.consumer("other", ["t"]).close()
        c.close()
        log.consumer("g", ["t"]).close()

    def test_transaction_appends_and_commits_together(self, log: Log) -> None:
        log.append("in", [b"1", b"2"])
        with log.consumer("g", ["in"]) as c:
            batch = c.poll(10)[0]
            with log.transaction() as tx:
                landed = tx.append("out", [v + b"!" for v in batch.values])
                tx.commit_offsets(c, {("in", 0): batch.next_offset})
        assert list(landed.offsets) == [0, 1]
        assert list(log.read("out", 0).values) == [b"1!", b"2!"]
        assert log.committed("g", "in") == {0: 2}

    def test_failed_transaction_leaves_nothing(self, log: Log) -> None:
        log.append("in", [b"1", b"2"])
        log.append("out", [b"kept"])
        with log.consumer("g", ["in"]) as c:
            c.poll(10)
            with pytest.raises(RuntimeError), log.transaction() as tx:
                tx.append("out", [b"lost1", b"lost2"])
                tx.append("fresh", [b"lost3"])
                tx.commit_offsets(c, {("in", 0): 2})
                raise RuntimeError("scoring failed")
        assert list(log.read("out", 0).values) == [b"kept"]
        if self.gapless_offsets:
            assert log.end_offsets("out") == [1]
            assert "fresh" not in log.topics() or log.end_offsets("fresh") == [0]
        else:
            assert "fresh" not in log.topics() or list(log.read("fresh", 0).values) == []
        assert log.committed("g", "in") == {}
        log.append("out", [b"next"])
        if self.gapless_offsets:
            assert list(log.read("out", 0).offsets) == [0, 1]
        else:
            assert list(log.read("out", 0).values) == [b"kept", b"next"]
            first, second = log.read("out", 0).offsets
            assert first == 0 < second

    def test_a_member_that_lost_its_group_cannot_commit(self, log: Log) -> None:
        log.append("in", [b"1"])
        zombie = log.consumer("g", ["in"])
        zombie.poll(10)
        zombie.close()
        with log.consumer("g", ["in"]) as live:
            with pytest.raises(GroupBusy), log.transaction() as tx:
                tx.append("out", [b"from a zombie"])
                tx.commit_offsets(zombie, {("in", 0): 1})
            live.commit({("in", 0): 0})
        if self.gapless_offsets:
            assert "out" not in log.topics() or log.end_offsets("out") == [0]
        else:
            assert "out" not in log.topics() or list(log.read("out", 0).values) == []
        assert log.committed("g", "in") == {0: 0}

    def test_caught_up_consumer_has_no_lag(self, log: Log) -> None:
        log.append("in", [b"1", b"2"])
        with log.transaction() as tx:
            tx.append("in", [b"3"])
        with pytest.raises(RuntimeError), log.transaction() as tx:
            tx.append("in", [b"aborted"])
            raise RuntimeError("scoring failed")
        with log.transaction() as tx:
            tx.append("in", [b"4"])
        with log.consumer("g", ["in"]) as c:
            got = [v for b in c.poll(100) for v in b.values]
            assert got == [b"1", b"2", b"3", b"4"]
            assert c.positions() == {("in", 0): log.end_offsets("in")[0]}
            c.commit()
        assert [(g.topic, g.lag) for g in log.groups() if g.group == "g"] == [("in", 0)]

    # -- only where gapless_offsets is False ---------------------------------------------

    def test_aborted_records_take_offsets(self, log: Log) -> None:
        if self.gapless_offsets:
            pytest.skip("offsets are gapless (test_failed_transaction_leaves_nothing)")
        log.append("out", [b"kept"])
        with pytest.raises(RuntimeError), log.transaction() as tx:
            aborted = tx.append("out", [b"lost1", b"lost2"])
            raise RuntimeError("scoring failed")
        assert list(aborted.offsets) == [1, 2]
        end = log.end_offsets("out")[0]
        assert end > 3  # the aborted records and the abort marker
        landed = log.append("out", [b"next"])
        assert list(landed.offsets) == [end]
        batch = log.read("out", 0)
        assert list(batch.offsets) == [0, end]
        assert list(batch.values) == [b"kept", b"next"]
        assert list(log.read("out", 0, 1).offsets) == [end]
        assert [v for b in log.read_all("out") for v in b.values] == [b"kept", b"next"]

    # -- only where exclusive_groups is False --------------------------------------------

    def test_members_share_a_groups_partitions(self, log: Log) -> None:
        if self.exclusive_groups:
            pytest.skip("one live member per group (test_one_live_member_per_group)")
        log.create_topic("t", 2)
        first = {(p, f"{p}-{i}".encode()) for p in range(2) for i in range(5)}
        second = {(p, f"{p}-{i}".encode()) for p in range(2) for i in range(5, 10)}
        for p in range(2):
            log.append("t", [v for q, v in sorted(first) if q == p], partition=p)
        seen: dict[str, list[tuple[int, bytes]]] = {"a": [], "b": []}
        owned: dict[str, set[int]] = {"a": set(), "b": set()}
        stop = threading.Event()
        failures: list[BaseException] = []

        def member(name: str) -> None:
            try:
                with log.consumer("g", ["t"]) as c:
                    while not stop.is_set():
                        for batch in c.poll(100, timeout=0.05):
                            seen[name] += [(batch.partition, v) for v in batch.values]
                        c.commit()  # before the next poll, which may hand partitions over
                        owned[name] = {p for _, p in c.positions()}
            except BaseException as exc:
                failures.append(exc)

        a = threading.Thread(target=member, args=("a",))
        a.start()
        b = threading.Thread(target=member, args=("b",))
        try:
            deadline = time.monotonic() + 60
            while set(seen["a"]) != first and not failures and time.monotonic() < deadline:
                time.sleep(0.05)
            b.start()
            while (
                not failures
                and time.monotonic() < deadline
                and not (len(owned["a"]) == 1 and len(owned["b"]) == 1)
            ):
                time.sleep(0.05)
            assert owned == {"a": owned["a"], "b": {0, 1} - owned["a"]}
            for p in range(2):
                log.append("t", [v for q, v in sorted(second) if q == p], partition=p)
            while (
                not failures
                and time.monotonic() < deadline
                and (len(seen["a"]) + len(seen["b"]) < len(first | second))
            ):
                time.sleep(0.05)
        finally:
            stop.set()
            a.join()
            if b.ident is not None:
                b.join()
        assert not failures, repr(failures)
        everything = seen["a"] + seen["b"]
        assert sorted(everything) == sorted(first | second)  # nothing read twice or missed
        (b_part,) = owned["b"]
        assert {x for x in seen["b"]} == {x for x in second if x[0] == b_part}
