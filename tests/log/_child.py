"""A child process for the crash and concurrency tests (run as a script, killed at will).

_child.py append DB TOPIC WRITER COUNT   append COUNT values "WRITER:i", print offsets
_child.py crash DB                       forever: append to "plain" and print what append
                                         returned; consume "in" exactly-once into "out"
"""

from __future__ import annotations

import hashlib
import sys

from eventml.config import Settings
from eventml.log import open_log


def append(db: str, topic: str, writer: str, count: int) -> None:
    with open_log(db, Settings()) as log:
        for i in range(count):
            landed = log.append(topic, [f"{writer}:{i}".encode()])
            print(landed.partitions[0], landed.offsets[0], flush=True)


def crash(db: str) -> None:
    with open_log(db, Settings()) as log, log.consumer("copier", ["in"]) as consumer:
        n = 0
        while True:
            n += 1
            values = [hashlib.sha256(f"{n}:{j}".encode()).digest() * 4 for j in range(n % 7 + 1)]
            landed = log.append("plain", values)
            for off, value in zip(landed.offsets, values, strict=True):
                print(off, value.hex(), flush=True)
            for batch in consumer.poll(max_records=n % 5 + 1):
                with log.transaction() as tx:
                    tx.append("out", [b"copy of " + v for v in batch.values])
                    tx.commit_offsets(consumer, {(batch.topic, batch.partition): batch.next_offset})


if __name__ == "__main__":
    if sys.argv[1] == "append":
        append(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        crash(sys.argv[2])
