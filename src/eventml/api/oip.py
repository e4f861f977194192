"""The Open Inference Protocol v2 over REST, so real v2 clients (tritonclient) work unchanged.

``{model}`` in a path is an endpoint or a model name. Without ``/versions/{v}``, an
endpoint with a route wins: every row is answered by :meth:`Rendezvous.predict` (the
route applies, candidates and all). Otherwise ``{model}`` is a model name: its latest
version, or the one ``/versions/{v}`` pins, scores the rows directly (policy ``pinned``).
Either way every row is a record (``answered``) and a prediction event on the log; the
record ids are in the response parameter ``record_ids`` (comma separated), for the audit
look-up ``GET /api/predictions/{record_id}``.

Extensions: binary tensor data, the model repository (index, load, unload) and
statistics. Tensors, datatypes and outputs: :mod:`eventml.api._tensors`.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventml import events as ev
from eventml.api._http import NotReady, json, needs, read_body, service
from eventml.api._http import int_param as _version
from eventml.api._service import Service, new_id
from eventml.api._tensors import (
    datatype_of,
    encode_response,
    output_tensors,
    parse_request,
    rows_from_inputs,
)
from eventml.errors import InputError
from eventml.models.base import LoadedModel

EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics"]


@needs(None)
async def live(request: Request) -> Response:
    return json({"live": True})


@needs(None)
async def ready(request: Request) -> Response:
    if not service(request).ready:
        raise NotReady("expected a server ready to answer, got one starting or stopping")
    return json({"ready": True})


@needs("read")
async def server_metadata(request: Request) -> Response:
    from eventml import __version__

    return json({"name": "eventml", "version": __version__, "extensions": EXTENSIONS})


def _tensor_specs(model: LoadedModel) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    inputs = []
    dtypes = {s.name: s.dtype for s in model.inputs}
    for name in model.feature_names:
        dtype = dtypes.get(name) or (model.inputs[0].dtype if len(model.inputs) == 1 else "double")
        inputs.append({"name": name, "datatype": datatype_of(dtype), "shape": [-1]})
    if model.kind == "regression":
        outputs = [{"name": "value", "datatype": "FP64", "shape": [-1]}]
    elif model.kind == "classification":
        width = len(model.classes) or next(
            (s.shape[1] for s in model.outputs if len(s.shape) == 2 and s.shape[1] > 0), -1
        )
        outputs = [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, width]},
        ]
    else:
        outputs = [
            {"name": s.name, "datatype": datatype_of(s.dtype), "shape": list(s.shape) or [-1]}
            for s in model.outputs
        ]
    return inputs, outputs


def _metadata(svc: Service, name: str, version: int | None) -> dict[str, Any]:
    """Metadata of an endpoint (its lead model's tensors) or of a model version."""
    if version is None and svc.is_endpoint(name):
        d, model = svc.model(svc.lead_ref(name))
        versions = sorted(svc.rendezvous.registry.versions.get(name, {}))
        platform = f"eventml_{d.format}"
    else:
        ref = f"{name}:{version}" if version else name
        d, model = svc.model(ref)
        versions = sorted(svc.rendezvous.registry.versions.get(d.name, {}))
        platform = f"eventml_{d.format}"
    inputs, outputs = _tensor_specs(model)
    return {
        "name": name, "versions": [str(v) for v in versions], "platform": platform,
        "inputs": inputs, "outputs": outputs,
    }  # fmt: skip


def _path(request: Request) -> tuple[str, int | None]:
    name: str = request.path_params["model"]
    return name, _version(request, "version") if "version" in request.path_params else None


@needs("read")
async def model_metadata(request: Request) -> Response:
    name, version = _path(request)
    svc = service(request)
    return json(await anyio.to_thread.run_sync(_metadata, svc, name, version))


def _check_ready(svc: Service, name: str, version: int | None) -> None:
    if version is None and svc.is_endpoint(name):
        if svc.rendezvous.route(name) is None:
            raise InputError(f"expected endpoint {name!r} ready, got its models still loading")
        return
    svc.model(f"{name}:{version}" if version else name)


@needs("read")
async def model_ready(request: Request) -> Response:
    name, version = _path(request)
    svc = service(request)
    await anyio.to_thread.run_sync(_check_ready, svc, name, version)
    return json({"name": name, "ready": True})


def _header_length(request: Request) -> int | None:
    text = request.headers.get("inference-header-content-length")
    if text is None:
        return None
    if not text.strip().isdigit():
        raise InputError(
            f"expected Inference-Header-Content-Length to be a byte count, got {text!r}"
        )
    return int(text)


@needs("predict")
async def infer(request: Request) -> Response:
    name, version = _path(request)
    svc = service(request)
    body = await read_body(request, svc.options.max_body)
    req = parse_request(body, _header_length(request))
    params: dict[str, Any] = {}
    shown_version: str | None = None
    if version is None and svc.is_endpoint(name):
        serving = svc.serving(name)
        if serving is None:
            raise NotReady(f"expected endpoint {name!r} ready, got its models still loading")
        route, lead = serving
        rows = rows_from_inputs(req.inputs, lead.feature_names)
        now = ev.now()
        records = [ev.Record(id=new_id(), endpoint=name, ts=now, features=r) for r in rows]
        answers = await svc.predict(records, route)
        failed = [(i, a.record_id) for i, a in enumerate(answers) if a.status == "error"]
        if failed:
            why = {i: svc.failure(rid) for i, rid in failed}
            i = failed[0][0]
            raise InputError(f"expected rows the model can score, got for row {i}: {why[i]}")
        unanswered = [(i, a.status) for i, a in enumerate(answers) if a.output is None]
        if unanswered:
            i, status = unanswered[0]
            raise NotReady(f"expected an answer for every row, got status {status!r} for row {i}")
        outputs: list[ev.Output] = [a.output for a in answers if a.output is not None]
        chosen = {(a.model, a.version) for a in answers}
        if len(chosen) == 1:
            model, v = chosen.pop()
            params["model"] = model or ""
            shown_version = None if v is None else str(v)
        params["route_version"] = answers[0].route_version if answers else 0
    else:
        ref = f"{name}:{version}" if version else name
        d, model_ = await anyio.to_thread.run_sync(svc.model, ref)
        rows = rows_from_inputs(req.inputs, model_.feature_names)
        d, outputs, records = await svc.pinned(ref, rows)
        shown_version = str(d.version)
    params["record_ids"] = ",".join(r.id for r in records)
    data, header = encode_response(name, shown_version, req, output_tensors(outputs), params)
    if header is None:
        return Response(data, media_type="application/json")
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(header)},
    )


def _model_stats(svc: Service, name: str | None, version: int | None) -> dict[str, Any]:
    view = svc.stats()
    wanted: set[str] | None = None
    if name is not None:
        if version is None and svc.is_endpoint(name):
            wanted = {ref.partition(":")[0] for ref in _route_models(svc, name)}
        else:
            d = svc.descriptor(f"{name}:{version}" if version else name)
            wanted = {d.name}
    rows = []
    for (model, v), s in sorted(view.versions.items()):
        if wanted is not None and model not in wanted:
            continue
        if version is not None and v != version:
            continue
        ok = s.usage - s.errors
        mean_ns = (s.total_us * 1000 // s.usage) if s.usage else 0
        rows.append({
            "name": model, "version": str(v),
            "last_inference": 0, "inference_count": s.usage, "execution_count": s.usage,
            "inference_stats": {
                "success": {"count": ok, "ns": mean_ns * ok},
                "fail": {"count": s.errors, "ns": mean_ns * s.errors},
                "queue": {"count": 0, "ns": 0},
                "compute_input": {"count": 0, "ns": 0},
                "compute_infer": {"count": s.usage, "ns": s.total_us * 1000},
                "compute_output": {"count": 0, "ns": 0},
            },
            "p50_us": s.percentile(50), "p99_us": s.percentile(99),
        })  # fmt: skip
    return {"model_stats": rows}


def _route_models(svc: Service, endpoint: str) -> list[str]:
    from eventml.serving.spec import spec_of

    route = svc.route_of(endpoint)
    return spec_of(route).models() if route else []


@needs("read")
async def model_stats(request: Request) -> Response:
    svc = service(request)
    name = request.path_params.get("model")
    version = _version(request, "version") if "version" in request.path_params else None
    if name is not None and not svc.is_endpoint(name):
        svc.descriptor(f"{name}:{version}" if version else name)  # 404 for an unknown model
    return json(await anyio.to_thread.run_sync(_model_stats, svc, name, version))


@needs("read")
async def repository_index(request: Request) -> Response:
    svc = service(request)
    rdv = svc.rendezvous
    rows = []
    for d in rdv.registry.all():
        ref = f"{d.name}:{d.version}"
        entry: dict[str, Any] = {"name": d.name, "version": str(d.version)}
        if ref in svc.unloaded or d.name in svc.unloaded:
            entry["state"], entry["reason"] = "UNAVAILABLE", "unloaded"
        elif ref in rdv.failed:
            entry["state"], entry["reason"] = "UNAVAILABLE", rdv.failed[ref]
        elif ref in rdv.models:
            entry["state"] = "READY"
        else:
            entry["state"], entry["reason"] = "UNAVAILABLE", "not loaded yet"
        rows.append(entry)
    return json(rows)


@needs("admin")
async def repository_load(request: Request) -> Response:
    svc = service(request)
    name: str = request.path_params["model"]
    d = svc.descriptor(name)
    svc.unloaded.discard(name)
    svc.unloaded.discard(f"{d.name}:{d.version}")
    await anyio.to_thread.run_sync(svc.model, name)
    return json({"name": name, "version": str(d.version), "state": "READY"})


@needs("admin")
async def repository_unload(request: Request) -> Response:
    svc = service(request)
    name: str = request.path_params["model"]
    d = svc.descriptor(name)  # 404 for an unknown model
    if any(
        name == ref.partition(":")[0]
        for e in svc.rendezvous.registry.routes
        for ref in _route_models(svc, e)
    ):
        raise InputError(f"expected a model no route serves, got {name!r}; change the route first")
    svc.unloaded.add(d.name)
    return json({"name": name, "state": "UNAVAILABLE"})


def routes() -> list[Route]:
    m = "/v2/models/{model}"
    v = m + "/versions/{version}"
    return [
        Route(m + "/infer", infer, methods=["POST"]),
        Route(v + "/infer", infer, methods=["POST"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/models/stats", model_stats, methods=["GET"]),
        Route(m, model_metadata, methods=["GET"]),
        Route(v, model_metadata, methods=["GET"]),
        Route(m + "/ready", model_ready, methods=["GET"]),
        Route(v + "/ready", model_ready, methods=["GET"]),
        Route(m + "/stats", model_stats, methods=["GET"]),
        Route(v + "/stats", model_stats, methods=["GET"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v2/repository/models/{model}/load", repository_load, methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", repository_unload, methods=["POST"]),
    ]
