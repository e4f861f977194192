"""The log tests use the session's Kafka broker from ``tests/conftest.py``.

The fixture ``kafka_broker`` and its helpers live there so that ``tests/log`` and
``tests/serving`` share one broker per session; they are re-exported here for the
modules that import them from this package.
"""

from tests.conftest import Broker, free_port_pair, require_java_and_maven, stop_broker

__all__ = ["Broker", "free_port_pair", "require_java_and_maven", "stop_broker"]
