"""Fixtures for the engine on Kafka: the session's broker (``tests/conftest.py``), emptied per test.

The engine uses the standard topic names (``records``, ``models``, ``predictions``, ...)
and the group ``engine``, so every Kafka engine test starts from an empty cluster: every
non-internal topic and every consumer group is deleted before it.
"""

from __future__ import annotations

import pytest

from tests.conftest import Broker, reset_cluster


@pytest.fixture
def kafka_url(kafka_broker: Broker) -> str:
    """``kafka://127.0.0.1:PORT`` of the session's broker, with no topics and no groups."""
    reset_cluster(kafka_broker.bootstrap)
    return f"kafka://{kafka_broker.bootstrap}"
