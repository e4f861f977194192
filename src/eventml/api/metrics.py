"""Prometheus metrics of the HTTP API, in a registry of their own (one per app).

- ``eventml_http_requests_total{method, route, status}`` and
  ``eventml_http_request_duration_seconds{method, route}`` (histogram); ``route`` is the
  route template (``/v2/models/{model}/infer``), so label values stay few;
- ``eventml_http_errors_total{route, status}``: answers with status >= 400;
- ``eventml_http_overload_total``: requests refused by the concurrency limit (429);
- ``eventml_http_in_flight``: requests being served;
- ``eventml_predictions_total{endpoint, model, version, status}``: which model version
  answered each record (``model``/``version`` empty when none did);
- ``eventml_log_batches_total``, ``eventml_log_written_total``, ``eventml_log_pending``:
  the group-commit writer.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "eventml_http_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "eventml_http_request_duration_seconds", "Time to answer an HTTP request.",
            ["method", "route"], buckets=_BUCKETS, registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "eventml_http_errors",
            "HTTP answers with status >= 400.",
            ["route", "status"],
            registry=r,
        )
        self.overload = Counter(
            "eventml_http_overload", "Requests refused by the concurrency limit.", registry=r
        )
        self.in_flight = Gauge("eventml_http_in_flight", "Requests being served.", registry=r)
        self.predictions = Counter(
            "eventml_predictions", "Records answered, by the model version that answered.",
            ["endpoint", "model", "version", "status"], registry=r,
        )  # fmt: skip
        self.batches = Counter("eventml_log_batches", "Group-commit transactions.", registry=r)
        self.written = Counter(
            "eventml_log_written", "Answered requests written to the log.", registry=r
        )
        self.pending = Gauge(
            "eventml_log_pending", "Answered requests queued for the log.", registry=r
        )
        self._children: dict[tuple[str, str, str, str], Counter] = {}
        self._http: dict[tuple[str, str, int], tuple[Counter, Histogram, Counter | None]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        found = self._http.get(key)
        if found is None:  # label look-ups cost more than the counting: once per label set
            code = str(status)
            found = self._http[key] = (
                self.requests.labels(method, route, code),
                self.latency.labels(method, route),
                self.errors.labels(route, code) if status >= 400 else None,
            )
        requests, latency, errors = found
        requests.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()

    def predicted(
        self, endpoint: str, model: str | None, version: int | None, status: str, n: int = 1
    ) -> None:
        key = (endpoint, model or "", "" if version is None else str(version), status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.predictions.labels(*key)
        child.inc(n)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
