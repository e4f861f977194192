"""Route specs: who serves an endpoint and how the answer is chosen (the rendezvous).

A spec is YAML-free JSON (or a Python object) with these fields; models are
``NAME[:VERSION]`` and are pinned to a version when the route is deployed::

    {
      "champion": "churn:3",                 # the default answer
      "challengers": ["churn:4"],            # answer candidates for consensus / quality / first
      "shadow": ["churn:5"],                 # scored and recorded, never returned
      "canary": {"model": "churn:1", "window": 500, "threshold": 0.05, "output": "value"},
      "decoy": true,                         # a decoy entry records that the inputs were archived
      "split": {"churn:3": 90, "churn:4": 10}, "split_seed": 7,   # sticky weighted A/B by key
      "schedule": [{"model": "m3"}, {"after_ms": 50, "model": "m2"}, {"after_ms": 100, "model": "m1"}],
      "sla_ms": 120, "default": {"value": 0.0},
      "decider": "first",                    # champion | first | consensus | quality | split | bandit
      "tie_break": "no_consensus",           # consensus without a majority: status, or "first"
      "quality_metric": null,                # quality by a registered metric instead of confidence
      "bandit": {"arms": ["a", "b"], "reward": "label", "prior": [1, 1], "seed": 0}
    }

``after_ms`` counts from the request's arrival. The decider ``first`` answers with the
earliest-listed schedule model that has finished among the steps already open, and always by
``sla_ms`` (the ``default`` answer and status ``not_processed`` when none has). Bandit rewards:
``label`` (the label's value is the reward, 0..1) or ``match`` (1 when the label equals the
answer's label or value, else 0).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from eventml import events as ev
from eventml.errors import InputError

Decider = Literal["champion", "first", "consensus", "quality", "split", "bandit"]


class Step(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One step of a deadline schedule."""

    model: str
    after_ms: float = 0.0


class CanarySpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A reference model always scored; the window mean of its output is compared with the answer's."""

    model: str
    window: int = 500
    threshold: float = 0.05
    output: str = "value"
    """``value``, or ``probabilities.CLASS`` for a classifier."""


class BanditSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Thompson sampling over arms with Beta posteriors updated from label rewards."""

    arms: list[str]
    reward: Literal["label", "match"] = "label"
    prior: tuple[float, float] = (1.0, 1.0)
    seed: int | None = None


class RouteSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything a route says (see the module docstring)."""

    champion: str | None = None
    challengers: list[str] = []
    shadow: list[str] = []
    canary: CanarySpec | None = None
    decoy: bool = False
    split: dict[str, float] = {}
    split_seed: int = 0
    schedule: list[Step] = []
    sla_ms: float | None = None
    default: ev.Output | None = None
    decider: Decider = "champion"
    tie_break: Literal["no_consensus", "first"] = "no_consensus"
    quality_metric: str | None = None
    bandit: BanditSpec | None = None

    def answerers(self) -> list[str]:
        """Models whose output may be the answer, in priority order, each once."""
        if self.decider == "first":
            refs = [s.model for s in self.schedule]
        elif self.decider == "split":
            refs = list(self.split)
        elif self.decider == "bandit":
            refs = list(self.bandit.arms) if self.bandit else []
        else:
            refs = [r for r in (self.champion, *self.challengers) if r]
        return list(dict.fromkeys(refs))

    def roles(self) -> dict[str, ev.Role]:
        """Every model the route scores, with its role (answerers first)."""
        roles: dict[str, ev.Role] = {}
        for ref in self.answerers():
            roles[ref] = "champion" if ref == self.champion else "challenger"
        if self.champion and self.champion not in roles:
            roles[self.champion] = "champion"
        for ref in self.challengers:
            roles.setdefault(ref, "challenger")
        for ref in self.shadow:
            roles.setdefault(ref, "shadow")
        if self.canary:
            roles.setdefault(self.canary.model, "canary")
        return roles

    def models(self) -> list[str]:
        return list(self.roles())

    def with_models(self, resolve: Any) -> RouteSpec:
        """The spec with every model reference passed through ``resolve`` (pinning versions)."""
        r = resolve
        return msgspec.structs.replace(
            self,
            champion=r(self.champion) if self.champion else None,
            challengers=[r(m) for m in self.challengers],
            shadow=[r(m) for m in self.shadow],
            canary=msgspec.structs.replace(self.canary, model=r(self.canary.model)) if self.canary else None,
            split={r(m): w for m, w in self.split.items()},
            schedule=[msgspec.structs.replace(s, model=r(s.model)) for s in self.schedule],
            bandit=msgspec.structs.replace(self.bandit, arms=[r(m) for m in self.bandit.arms]) if self.bandit else None,
        )  # fmt: skip

    def validate(self) -> RouteSpec:
        """Refuse a spec whose decider lacks what it needs; returns the spec."""
        problems = {
            "first": not self.schedule or self.sla_ms is None,
            "split": not self.split
            or any(w < 0 for w in self.split.values())
            or sum(self.split.values()) <= 0,
            "bandit": self.bandit is None or len(self.bandit.arms) < 2,
            "consensus": len([r for r in (self.champion, *self.challengers) if r]) < 2,
            "quality": len([r for r in (self.champion, *self.challengers) if r]) < 1,
            "champion": self.champion is None,
        }
        needs = {
            "first": "a schedule and sla_ms",
            "split": "split weights (non-negative, not all zero)",
            "bandit": "a bandit with at least two arms",
            "consensus": "a champion and at least one challenger",
            "quality": "a champion or challengers",
            "champion": "a champion",
        }
        if problems[self.decider]:
            raise InputError(
                f"expected {needs[self.decider]} for decider {self.decider!r}, got {to_dict(self)}"
            )
        if self.sla_ms is not None and self.sla_ms <= 0:
            raise InputError(f"expected sla_ms > 0, got {self.sla_ms}")
        return self


def to_dict(spec: RouteSpec) -> dict[str, Any]:
    """The spec as plain JSON values, leaving out fields at their defaults."""
    full: dict[str, Any] = msgspec.to_builtins(spec)
    empty = msgspec.to_builtins(RouteSpec())
    return {k: v for k, v in full.items() if v != empty.get(k)}


def parse_spec(data: bytes | str | dict[str, Any], where: str = "route spec") -> RouteSpec:
    """A spec from JSON text or a dict; unknown fields and wrong types are refused."""
    try:
        if isinstance(data, dict):
            spec = msgspec.convert(data, RouteSpec)
        else:
            spec = msgspec.json.decode(data, type=RouteSpec)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InputError(f"expected a route spec, got {exc}", where=where) from exc
    return spec.validate()


def spec_of(route: ev.RouteChanged) -> RouteSpec:
    """The spec a route event carries (a champion-only route for events without one)."""
    if route.spec:
        return msgspec.convert(route.spec, RouteSpec)
    return RouteSpec(champion=route.champion)
