"""Public test doubles: a latency-injecting model, to test and demonstrate routes with real models.

Enabled only when ``EVENTML_TESTING=1``, so a production log can never serve one::

    echo '{"wraps": "m1:1", "latency_ms": 80, "jitter_ms": 0}' > m3.json
    EVENTML_TESTING=1 eventml models push m3.json --format test-latency --name m3

The wrapper scores like the model it wraps, after sleeping ``latency_ms`` (plus a uniform
``jitter_ms``) per call; ``fail_after: N`` makes every call after the first N raise, to
test how a route handles a model that errors (N = 1 passes the smoke test of each load).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import msgspec

from eventml import events as ev
from eventml.errors import ModelRejected, PluginError
from eventml.models.base import LoadedModel, ModelFormat


class LatencySpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    wraps: str
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    fail_after: int | None = None


def enabled() -> bool:
    return os.environ.get("EVENTML_TESTING") == "1"


class LatencyModel(LoadedModel):
    """Sleeps, then scores with the wrapped model."""

    def __init__(self, spec: LatencySpec, inner: LoadedModel) -> None:
        self.spec = spec
        self.inner = inner
        self.kind = inner.kind
        self.inputs = inner.inputs
        self.outputs = inner.outputs
        self.feature_names = inner.feature_names
        self.classes = inner.classes
        self._rng = random.Random()  # noqa: S311  (test latency jitter, not cryptography)
        self._calls = 0

    def predict_batch(self, rows: Sequence[Mapping[str, ev.Feature]]) -> Sequence[ev.Output]:
        delay = self.spec.latency_ms + self._rng.uniform(0, self.spec.jitter_ms)
        time.sleep(delay / 1000)
        self._calls += 1
        if self.spec.fail_after is not None and self._calls > self.spec.fail_after:
            raise RuntimeError(f"injected failure after {delay:.0f} ms")
        return self.inner.predict_batch(rows)


class LatencyFormat(ModelFormat):
    """``test-latency``: a JSON spec naming the model it wraps."""

    name = "test-latency"
    needs_resolver = True

    def detect(self, path: Path, head: bytes) -> bool:
        return enabled() and path.is_file() and path.suffix == ".json" and b'"wraps"' in head

    def load(self, payload: bytes, descriptor: ev.ModelDescriptor) -> LoadedModel:
        raise ModelRejected("a test-latency model needs the registry to find the model it wraps")

    def load_with(
        self, payload: bytes, descriptor: ev.ModelDescriptor, resolve: Callable[[str], LoadedModel]
    ) -> LoadedModel:
        if not enabled():
            raise PluginError("the test-latency format needs EVENTML_TESTING=1")
        try:
            spec = msgspec.json.decode(payload, type=LatencySpec)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ModelRejected(
                f'expected {{"wraps": "NAME:VERSION", "latency_ms": ..., "jitter_ms": ...}}, got {exc}',
                where=f"model {descriptor.name}",
            ) from exc
        return LatencyModel(spec, resolve(spec.wraps))
