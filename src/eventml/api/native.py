"""The native JSON API: records, labels, audit look-ups, models, routes, statistics, metrics.

- ``POST /api/endpoints/{endpoint}/predict``: one record or a list, each
  ``{"id"?, "key"?, "ts"?, "features": {...}}``; the answer (or a list of answers) names
  the record, status, model, version, digest, output, latency, policy and route version.
- ``POST /api/labels``: a label object or a list (``record_id, value[, ts]`` or
  ``endpoint, key, ts, value``), checked against the predictions and appended to ``labels``.
- ``GET /api/predictions/{record_id}``: the prediction event of a record (what scored it,
  which version, when, every candidate) and its position on ``predictions``.
- ``GET /api/models``, ``POST /api/models?name=N[&format=F&endpoint=E&filename=F]`` (the
  model file as the raw body or as the ``file`` part of a multipart form).
- ``GET|PUT /api/endpoints/{endpoint}/route``: the current route and its history; a new
  route from a route spec (see :mod:`eventml.serving.spec`).
- ``GET /api/stats``: usage, errors and latency per model version, answers per endpoint.
- ``GET /metrics``: Prometheus text.
"""

from __future__ import annotations

import email.parser
import email.policy
import tempfile
from pathlib import Path
from typing import Any

import anyio.to_thread
import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventml import events as ev
from eventml.api._http import decode_json, json, needs, read_body, service
from eventml.api._service import Service, new_record, spec_from_body
from eventml.api.metrics import CONTENT_TYPE
from eventml.errors import InputError, NotFound
from eventml.ingest import check_endpoint


def _answer(a: Any) -> dict[str, Any]:
    return {
        "id": a.record_id, "endpoint": a.endpoint, "status": a.status, "model": a.model,
        "version": a.version, "digest": a.digest, "output": a.output,
        "latency_ms": a.latency_ms, "policy": a.policy, "route_version": a.route_version,
    }  # fmt: skip


@needs("predict")
async def predict(request: Request) -> Response:
    svc = service(request)
    endpoint: str = request.path_params["endpoint"]
    check_endpoint(endpoint)
    body = decode_json(await read_body(request, svc.options.max_body))
    many = isinstance(body, list)
    items = body if many else [body]
    if not items:
        raise InputError("expected at least one record, got an empty list")
    if len(items) > 10_000:
        raise InputError(f"expected at most 10000 records per request, got {len(items)}")
    records = [new_record(endpoint, item, f"record {i}") for i, item in enumerate(items)]
    answers = await svc.predict(records)
    shown = [_answer(a) for a in answers]
    for a, entry in zip(answers, shown, strict=True):
        if a.status == "error":
            entry["error"] = svc.failure(a.record_id) or "every model failed"
    if not many and answers[0].status == "error":
        raise InputError(f"expected a record the model can score, got: {shown[0]['error']}")
    return json(shown if many else shown[0])


def _append_labels(svc: Service, body: Any) -> dict[str, Any]:
    from eventml.learning.labels import append_labels, labels_from_json

    items = body if isinstance(body, list) else [body]
    if svc.writer is not None:
        svc.writer.flush(timeout=5.0)  # labels name predictions this server may still hold
    summary = append_labels(svc.log, labels_from_json(items, source="http"))
    result: dict[str, Any] = msgspec.to_builtins(summary)
    return result


@needs("predict")
async def labels(request: Request) -> Response:
    svc = service(request)
    body = decode_json(await read_body(request, svc.options.max_body))
    return json(await anyio.to_thread.run_sync(_append_labels, svc, body), 201)


@needs("read")
async def audit(request: Request) -> Response:
    svc = service(request)
    record_id: str = request.path_params["record_id"]
    prediction, p, offset = await anyio.to_thread.run_sync(svc.audit, record_id)
    data: dict[str, Any] = ev.to_builtins(prediction)
    data.pop("type", None)
    data["position"] = {"topic": "predictions", "partition": p, "offset": offset}
    return json(data)


def descriptor_json(d: ev.ModelDescriptor) -> dict[str, Any]:
    data: dict[str, Any] = ev.to_builtins(d)
    data.pop("payload", None)
    data.pop("type", None)
    return data


@needs("read")
async def list_models(request: Request) -> Response:
    rdv = service(request).rendezvous
    rdv.sync()
    return json([descriptor_json(d) for d in rdv.registry.all()])


def _multipart_file(body: bytes, content_type: str) -> tuple[bytes, str | None]:
    """The ``file`` part (or the only part) of a multipart form: its bytes and file name."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise InputError("expected a multipart/form-data body with a file part, got none")
    parts = [p for p in message.iter_parts() if p.get_param("name", header="content-disposition")]
    chosen = [p for p in parts if p.get_param("name", header="content-disposition") == "file"]
    chosen = chosen or parts
    if len(chosen) != 1:
        raise InputError(f"expected one form part named 'file', got {len(parts)} parts")
    part = chosen[0]
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raise InputError("expected file content in the 'file' part, got none")
    return payload, part.get_filename()


_SAFE_SUFFIX = {".onnx", ".pmml", ".xml", ".skops", ".json", ".pb", ".tar"}


def _push(
    svc: Service, payload: bytes, name: str, filename: str | None, query: Any
) -> tuple[bool, dict[str, Any]]:
    from eventml.models.registry import push_model

    suffix = Path(filename or "").suffix.lower()
    if filename and filename.endswith(".river.skops"):
        suffix = ".river.skops"
    elif suffix not in _SAFE_SUFFIX:
        suffix = ".bin"
    with tempfile.TemporaryDirectory(prefix="eventml-upload-") as tmp:
        path = Path(tmp) / f"model{suffix}"
        path.write_bytes(payload)
        features = tuple(f for f in (query.get("features") or "").split(",") if f)
        pushed = push_model(
            svc.log, path, name, format=query.get("format") or None,
            endpoint=query.get("endpoint") or None, description=query.get("description") or "",
            features=features,
        )  # fmt: skip
    svc.rendezvous.sync()
    return pushed.created, descriptor_json(pushed.descriptor)


@needs("admin")
async def upload_model(request: Request) -> Response:
    svc = service(request)
    name = request.query_params.get("name", "")
    if not name or len(name) > 200 or ":" in name or "/" in name:
        raise InputError(f"expected a query parameter name=NAME (no ':' or '/'), got {name!r}")
    body = await read_body(request, svc.options.max_upload)
    if not body:
        raise InputError("expected the model file as the body, got an empty body")
    content_type = request.headers.get("content-type", "")
    filename = request.query_params.get("filename")
    if content_type.startswith("multipart/form-data"):
        body, filename = _multipart_file(body, content_type)
    created, data = await anyio.to_thread.run_sync(
        _push, svc, body, name, filename, request.query_params
    )
    return json({"created": created, **data}, 201 if created else 200)


def _route_json(svc: Service, endpoint: str) -> dict[str, Any]:
    from eventml.serving.spec import spec_of, to_dict

    svc.rendezvous.sync()
    history = svc.rendezvous.registry.routes.get(endpoint, [])
    if not history:
        raise NotFound(f"expected a deployed endpoint, got {endpoint!r} with no route")
    serving = svc.rendezvous.route(endpoint)
    rows = [
        {"version": r.version, "spec": to_dict(spec_of(r)), "at_token": r.at_token,
         "reason": r.reason, "ts": r.ts.isoformat()}
        for r in history
    ]  # fmt: skip
    return {
        "endpoint": endpoint, "current": rows[-1], "history": rows,
        "serving_version": serving.version if serving else None,
    }  # fmt: skip


@needs("read")
async def get_route(request: Request) -> Response:
    endpoint: str = request.path_params["endpoint"]
    check_endpoint(endpoint)
    return json(await anyio.to_thread.run_sync(_route_json, service(request), endpoint))


def _deploy(svc: Service, endpoint: str, body: bytes, reason: str) -> dict[str, Any]:
    from eventml.serving.routes import deploy

    event = deploy(svc.log, endpoint, spec=spec_from_body(body), reason=reason)
    svc.rendezvous.sync()
    data: dict[str, Any] = ev.to_builtins(event)
    data.pop("type", None)
    return data


@needs("admin")
async def put_route(request: Request) -> Response:
    svc = service(request)
    endpoint: str = request.path_params["endpoint"]
    check_endpoint(endpoint)
    body = await read_body(request, svc.options.max_body)
    reason = request.query_params.get("reason", "")
    return json(await anyio.to_thread.run_sync(_deploy, svc, endpoint, body, reason))


def _stats_json(svc: Service) -> dict[str, Any]:
    view = svc.stats()
    return {
        "versions": [view.versions[k].summary() for k in sorted(view.versions)],
        "endpoints": view.endpoints,
    }


@needs("read")
async def stats(request: Request) -> Response:
    return json(await anyio.to_thread.run_sync(_stats_json, service(request)))


@needs("read")
async def metrics(request: Request) -> Response:
    svc = service(request)
    if svc.writer is not None:
        svc.metrics.pending.set(svc.writer.pending)
    return Response(svc.metrics.exposition(), media_type=CONTENT_TYPE)


def routes() -> list[Route]:
    return [
        Route("/api/endpoints/{endpoint}/predict", predict, methods=["POST"]),
        Route("/api/labels", labels, methods=["POST"]),
        Route("/api/predictions/{record_id}", audit, methods=["GET"]),
        Route("/api/models", list_models, methods=["GET"]),
        Route("/api/models", upload_model, methods=["POST"]),
        Route("/api/endpoints/{endpoint}/route", get_route, methods=["GET"]),
        Route("/api/endpoints/{endpoint}/route", put_route, methods=["PUT"]),
        Route("/api/stats", stats, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
