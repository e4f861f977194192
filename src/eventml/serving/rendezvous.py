"""The rendezvous: every model of a route scores the same input; a decider picks the answer.

One implementation serves both the stream engine (per micro-batch: candidates score the
batch concurrently) and online requests (per request, answers taken by deadline). The
deciders are pure functions of the candidates' results:

- ``champion``: the champion's output.
- ``first``: by the schedule. Step ``i`` (model ``m``, opening ``after_ms`` after arrival) can
  answer at ``max(after_ms, finished_ms(m))``; the answer is taken at the earliest such time,
  from the earliest-listed step that can answer then, and never later than ``sla_ms`` (then
  the ``default`` with status ``not_processed``). A model that failed never answers.
- ``consensus``: the label more than half of the answering models agree on (the first listed
  of them answers), or for values the low median (a real model's output); otherwise status
  ``no_consensus`` with no answer, or with ``tie_break: first`` the first listed.
- ``quality``: the highest confidence (probability of the predicted label), or the highest
  registered metric ``quality_metric``; ties go to the first listed.
- ``split``: sticky weighted arms by a seeded hash of the entity key (the record id if none).
- ``bandit``: Thompson sampling: one draw from each arm's Beta posterior, the largest wins.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from eventml import events as ev
from eventml.serving.spec import BanditSpec, RouteSpec, Step


@dataclass(slots=True)
class Result:
    """One candidate's part: its outputs per row (None if it failed) and when it finished."""

    ref: str
    role: ev.Role
    outputs: Sequence[ev.Output] | None
    latency_ms: float
    finished_ms: float | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.outputs is not None


@dataclass(slots=True)
class Decision:
    """The answer for one row: which model (if any), its output and the status."""

    status: ev.PredictionStatus
    ref: str | None
    output: ev.Output | None
    decided_ms: float | None = None


def first_choice(
    schedule: Sequence[Step], sla_ms: float, finished: Mapping[str, float | None]
) -> tuple[str | None, float]:
    """(model, time) the ``first`` decider answers with; (None, sla_ms) if none in time.

    >>> steps = [Step(model="m3"), Step(model="m2", after_ms=50), Step(model="m1", after_ms=100)]
    >>> first_choice(steps, 120, {"m3": 80, "m2": 30, "m1": 5})
    ('m2', 50)
    >>> first_choice(steps, 120, {"m3": 20, "m2": 30, "m1": 5})
    ('m3', 20)
    >>> first_choice(steps, 120, {"m3": 200, "m2": 200, "m1": 5})
    ('m1', 100)
    >>> first_choice(steps, 120, {"m3": 300, "m2": 300, "m1": 300})
    (None, 120)
    """
    times = []
    for step in schedule:
        done = finished.get(step.model)
        if done is not None:
            times.append(max(step.after_ms, done))
    if not times or min(times) > sla_ms:
        return None, sla_ms
    when = min(times)
    for step in schedule:
        done = finished.get(step.model)
        if done is not None and max(step.after_ms, done) <= when:
            return step.model, when
    raise AssertionError("unreachable: some step answers at the minimum time")


def split_arm(weights: Mapping[str, float], seed: int, key: str) -> str:
    """The arm of ``key``: a seeded hash placed on the cumulative weights (stable everywhere).

    >>> split_arm({"a": 90, "b": 10}, 7, "customer-42") == split_arm({"a": 90, "b": 10}, 7, "customer-42")
    True
    """
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") / 2**64 * sum(weights.values())
    total = 0.0
    arms = list(weights.items())
    for arm, weight in arms:
        total += weight
        if point < total:
            return arm
    return arms[-1][0]


class BanditState:
    """Beta posteriors per arm, updated from rewards in [0, 1]."""

    def __init__(self, spec: BanditSpec) -> None:
        a, b = spec.prior
        self.alpha = dict.fromkeys(spec.arms, float(a))
        self.beta = dict.fromkeys(spec.arms, float(b))
        self.rng = np.random.default_rng(spec.seed)
        self.spec = spec

    def choose(self) -> str:
        draws = {arm: self.rng.beta(self.alpha[arm], self.beta[arm]) for arm in self.alpha}
        return max(draws, key=draws.__getitem__)

    def reward(self, arm: str, value: float) -> None:
        if arm in self.alpha:
            r = min(max(float(value), 0.0), 1.0)
            self.alpha[arm] += r
            self.beta[arm] += 1.0 - r

    def reward_for(self, label: ev.Label, output: ev.Output | None) -> float:
        """The reward a label gives the answer it labels, by the spec's definition."""
        if self.spec.reward == "label":
            return float(label.value)
        if output is None:
            return 0.0
        answer = output.get("label", output.get("value"))
        return 1.0 if str(answer) == str(label.value) else 0.0


@dataclass
class Context:
    """What a decider may need besides the results."""

    keys: Sequence[str]
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    bandit: BanditState | None = None


def _confidence(output: ev.Output) -> float:
    probs = output.get("probabilities")
    if isinstance(probs, dict) and probs:
        return float(probs.get(str(output.get("label")), max(probs.values())))
    return float("-inf")


def decide(
    spec: RouteSpec, results: Mapping[str, Result], rows: int, ctx: Context
) -> list[Decision]:
    """One decision per row."""
    answerers = [r for r in spec.answerers() if r in results]
    if spec.decider == "first":
        finished = {r: results[r].finished_ms for r in answerers if results[r].ok}
        ref, when = first_choice(spec.schedule, float(spec.sla_ms or 0), finished)
        if ref is None:
            return [Decision("not_processed", None, spec.default, when) for _ in range(rows)]
        outs = results[ref].outputs
        assert outs is not None
        return [Decision("ok", ref, outs[i], when) for i in range(rows)]
    if spec.decider == "split":
        return [
            _pick(results, split_arm(spec.split, spec.split_seed, k), i)
            for i, k in enumerate(ctx.keys)
        ]
    if spec.decider == "bandit":
        assert ctx.bandit is not None
        return [_pick(results, ctx.bandit.choose(), i) for i in range(rows)]
    ok = [r for r in answerers if results[r].ok]
    if spec.decider == "consensus":
        return [_consensus(spec, results, ok, i) for i in range(rows)]
    if spec.decider == "quality":
        if spec.quality_metric:
            ranked = sorted(
                ok,
                key=lambda r: -ctx.metrics.get(r, {}).get(spec.quality_metric or "", float("-inf")),
            )
            return [
                _pick(results, ranked[0], i) if ranked else Decision("error", None, None)
                for i in range(rows)
            ]
        out = []
        for i in range(rows):
            best = max(ok, key=lambda r: _confidence(results[r].outputs[i]), default=None)  # type: ignore[index]
            out.append(_pick(results, best, i) if best else Decision("error", None, None))
        return out
    return [_pick(results, spec.champion, i) for i in range(rows)]


def _pick(results: Mapping[str, Result], ref: str | None, i: int) -> Decision:
    result = results.get(ref) if ref else None
    if result is None or result.outputs is None:
        return Decision("error", ref, None)
    return Decision("ok", ref, result.outputs[i], result.finished_ms)


def _consensus(spec: RouteSpec, results: Mapping[str, Result], ok: list[str], i: int) -> Decision:
    outputs = {r: results[r].outputs[i] for r in ok}  # type: ignore[index]
    if not outputs:
        return Decision("error", None, None)
    if all("value" in o for o in outputs.values()):
        chosen_value = statistics.median_low([o["value"] for o in outputs.values()])
        ref = next(r for r, o in outputs.items() if o["value"] == chosen_value)
        return Decision("ok", ref, outputs[ref])
    labels = [str(o.get("label")) for o in outputs.values()]
    for ref, o in outputs.items():
        if labels.count(str(o.get("label"))) * 2 > len(labels):
            return Decision("ok", ref, o)
    if spec.tie_break == "first":
        ref = ok[0]
        return Decision("ok", ref, outputs[ref])
    return Decision("no_consensus", None, None)
