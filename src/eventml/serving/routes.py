"""Routes: which model versions serve an endpoint, deployed as events on ``models``.

Deploying is a data operation: :func:`deploy` resolves ``NAME`` to its latest version and
appends a :class:`~eventml.events.RouteChanged` numbered per endpoint. With ``at_token``,
the same transaction writes a :class:`~eventml.events.SwapToken` into every ``records``
partition and stores where each landed in the route event, so every engine (and every
rerun or replay) switches at exactly the same record, and an engine restarted past a
token knows it already switched.

:class:`RouteTable` is the engine's view of routes: which route version is active for an
endpoint on a ``records`` partition. Versions only grow; a route without a token applies
to every partition once the engine has its models loaded; a token route applies to a
partition from its token on. The active route is the highest applicable version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from eventml import events as ev
from eventml.config import Settings
from eventml.errors import InputError
from eventml.ingest import check_endpoint
from eventml.log import Log
from eventml.models.registry import TOPIC as MODELS
from eventml.models.registry import Registry
from eventml.serving.spec import RouteSpec, spec_of, to_dict

RECORDS = "records"


def deploy(
    log: Log,
    endpoint: str,
    champion: str | None = None,
    *,
    spec: RouteSpec | None = None,
    at_token: bool = False,
    reason: str = "",
    settings: Settings | None = None,
) -> ev.RouteChanged:
    """Append a route for ``endpoint``: a full ``spec``, or just a ``champion`` (``NAME[:VERSION]``).

    Every model is pinned to a version (the latest when none is given) and must exist.
    """
    check_endpoint(endpoint)
    if (spec is None) == (champion is None):
        raise InputError(
            "expected either a champion or a route spec, got " + ("both" if spec else "neither")
        )
    spec = (spec or RouteSpec(champion=champion)).validate()
    registry = Registry.from_log(log)

    def pin(ref: str) -> str:
        model = registry.resolve(ref)
        if model.endpoint not in (None, endpoint):
            raise InputError(
                f"expected a model for endpoint {endpoint!r}, got {model.name}:{model.version} "
                f"pushed for endpoint {model.endpoint!r}"
            )
        return f"{model.name}:{model.version}"

    pinned = spec.with_models(pin)
    return _append_route(log, endpoint, pinned, at_token=at_token, reason=reason, settings=settings)


def rollback(
    log: Log, endpoint: str, *, at_token: bool = False, reason: str = ""
) -> ev.RouteChanged:
    """Append a copy of the route before the latest one (twice in a row toggles back)."""
    history = Registry.from_log(log).routes.get(endpoint, [])
    if len(history) < 2:
        raise InputError(
            f"expected at least two routes of endpoint {endpoint!r} to roll back, got {len(history)}"
        )
    previous = history[-2]
    why = reason or f"rollback to route {previous.version}"
    return _append_route(log, endpoint, spec_of(previous), at_token=at_token, reason=why)


def _append_route(
    log: Log,
    endpoint: str,
    spec: RouteSpec,
    *,
    at_token: bool,
    reason: str,
    settings: Settings | None = None,
) -> ev.RouteChanged:
    log.create_topic(MODELS, 1)
    if at_token:
        log.create_topic(RECORDS, (settings or log.settings).partitions)
    registry = Registry()
    with log.transaction() as tx:
        registry.catch_up(log)
        version = len(registry.routes.get(endpoint, [])) + 1
        offsets: dict[int, int] = {}
        if at_token:
            token = ev.SwapToken(
                id=ev.new_id(), endpoint=endpoint, route_version=version, ts=ev.now()
            )
            for p in range(log.topics()[RECORDS]):
                offsets[p] = tx.append(RECORDS, [ev.encode(token)], partition=p).offsets[0]
        simple = spec.decider == "champion" and spec == RouteSpec(champion=spec.champion)
        route = ev.RouteChanged(
            endpoint=endpoint, version=version, champion=spec.champion,
            spec={} if simple else to_dict(spec), reason=reason, at_token=at_token,
            token_offsets=offsets, ts=ev.now(),
        )  # fmt: skip
        tx.append(MODELS, [ev.encode(route)], partition=0)
    return route


class RouteTable:
    """The routes an engine knows, and which of them apply on each ``records`` partition."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, int], ev.RouteChanged] = {}
        self._applied: dict[str, set[int]] = {}
        self._passed: dict[tuple[str, int], int] = {}

    def add(self, route: ev.RouteChanged) -> None:
        """Know a route (it applies only once :meth:`apply` or :meth:`pass_token` says so)."""
        self.routes[(route.endpoint, route.version)] = route

    def apply(self, route: ev.RouteChanged) -> None:
        """A route without a token now serves every partition."""
        self._applied.setdefault(route.endpoint, set()).add(route.version)

    def pass_token(self, endpoint: str, partition: int, version: int) -> None:
        """Partition ``partition`` has reached the token of route ``version`` (and all before)."""
        key = (endpoint, partition)
        self._passed[key] = max(self._passed.get(key, 0), version)

    def candidates(self, endpoint: str, partition: int) -> Iterator[ev.RouteChanged]:
        """Routes that apply on a partition, newest first (the engine serves the first usable)."""
        passed = self._passed.get((endpoint, partition), 0)
        applied = self._applied.get(endpoint, set())
        versions = sorted((v for e, v in self.routes if e == endpoint), reverse=True)
        for v in versions:
            route = self.routes[(endpoint, v)]
            if (v <= passed) if route.at_token else (v in applied):
                yield route

    def active(self, endpoint: str, partition: int) -> ev.RouteChanged | None:
        return next(self.candidates(endpoint, partition), None)

    def needed(self, partitions: int, usable: Callable[[str], bool]) -> set[str]:
        """Models (``NAME:VERSION``) a partition serves now or will once a route applies."""
        refs: set[str] = set()
        endpoints = {e for e, _ in self.routes}
        for endpoint in endpoints:
            for p in range(partitions):
                current = 0
                for route in self.candidates(endpoint, p):
                    models = spec_of(route).models()
                    if all(usable(m) for m in models):
                        refs.update(models)
                        current = route.version
                        break
                for (e, v), route in self.routes.items():
                    if e == endpoint and v > current:
                        refs.update(spec_of(route).models())  # a token or a load still to come
        return refs
