"""The append-only log: one contract (:mod:`eventml.log.base`), backends picked by URL.

>>> from eventml.log import open_log
>>> with open_log("memory://") as log:
...     list(log.append("records", [b"a", b"b"]).offsets)
[0, 1]
"""

from eventml.log._registry import open_log, register, split_scheme
from eventml.log.base import (
    Appended,
    Batch,
    Consumer,
    Entry,
    GroupLag,
    Log,
    Transaction,
    partition_for,
)

__all__ = [
    "Appended",
    "Batch",
    "Consumer",
    "Entry",
    "GroupLag",
    "Log",
    "Transaction",
    "open_log",
    "partition_for",
    "register",
    "split_scheme",
]
