"""The canary monitor: a reference model's outputs next to the answers, compared over a window.

Per route, the last ``window`` pairs (answer, canary) of the configured output (``value``,
or ``probabilities.CLASS``) are kept. Once the window is full, the state is ``alarm`` when
``|mean(answers) - mean(canary)| > threshold`` and ``ok`` otherwise; a change of state is a
:class:`~eventml.events.CanaryAlarm` event, so alarms are on the log and can be replayed.

>>> m = CanaryMonitor("e", 1, CanarySpec(model="ref:1", window=3, threshold=0.5))
>>> [m.add({"value": 1.0}, {"value": 1.1}) for _ in range(3)][-1] is None
True
>>> events = [m.add({"value": 3.0}, {"value": 1.0}) for _ in range(3)]
>>> [e.state if e else None for e in events]  # means 1.67 vs 1.07 after the first: alarm
['alarm', None, None]
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from eventml import events as ev
from eventml.serving.spec import CanarySpec


def _read(output: ev.Output | None, path: str) -> float | None:
    if output is None:
        return None
    if path == "value":
        value = output.get("value")
    elif path.startswith("probabilities."):
        probs = output.get("probabilities") or {}
        value = probs.get(path.removeprefix("probabilities."))
    else:
        value = output.get(path)
    return float(value) if isinstance(value, int | float) else None


class CanaryMonitor:
    """Window means of the answers and of the canary for one route."""

    def __init__(self, endpoint: str, route_version: int, spec: CanarySpec) -> None:
        self.endpoint = endpoint
        self.route_version = route_version
        self.spec = spec
        self.pairs: deque[tuple[float, float]] = deque(maxlen=spec.window)
        self.sums = [0.0, 0.0]
        self.state: Literal["alarm", "ok"] = "ok"

    def add(self, answer: ev.Output | None, canary: ev.Output | None) -> ev.CanaryAlarm | None:
        """Add one pair; returns an event when the state changes."""
        a, c = _read(answer, self.spec.output), _read(canary, self.spec.output)
        if a is None or c is None:
            return None
        if len(self.pairs) == self.pairs.maxlen:
            old_a, old_c = self.pairs[0]
            self.sums[0] -= old_a
            self.sums[1] -= old_c
        self.pairs.append((a, c))
        self.sums[0] += a
        self.sums[1] += c
        if len(self.pairs) < self.spec.window:
            return None
        n = len(self.pairs)
        mean_a, mean_c = self.sums[0] / n, self.sums[1] / n
        delta = abs(mean_a - mean_c)
        state: Literal["alarm", "ok"] = "alarm" if delta > self.spec.threshold else "ok"
        if state == self.state:
            return None
        self.state = state
        return ev.CanaryAlarm(
            endpoint=self.endpoint, route_version=self.route_version, canary=self.spec.model,
            state=state, window=n, answer_mean=mean_a, canary_mean=mean_c, delta=delta,
            threshold=self.spec.threshold, ts=ev.now(),
        )  # fmt: skip
