"""The OpenAPI 3.1 document of the HTTP API, written by hand and checked against the server.

``tests/api/test_openapi.py`` runs schemathesis against it (every operation, every
documented status and response schema) and checks that every route of the app is in the
document and every path of the document is a route: change a handler, change this file.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from eventml import __version__


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "bad input", 401: "no token or an unknown one", 403: "the token's role does not allow it",
        404: "not found", 405: "method not allowed", 409: "conflict", 413: "body too large",
        429: "too many requests in flight", 503: "not ready, overloaded, or the log is unavailable",
    }  # fmt: skip
    return {str(c): _json(_ref("Error"), text[c]) for c in codes}


_COMMON = (400, 401, 403, 404, 413, 429, 503)
_STR = {"type": "string"}
_NAME = {"type": "string", "minLength": 1, "maxLength": 200}
_INT = {"type": "integer"}
_NUM = {"type": "number"}
_ANY: dict[str, Any] = {}


def _param(
    name: str, where: str = "path", schema: dict[str, Any] | None = None, required: bool = True
) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema or _NAME}


_MODEL = _param("model")
_VERSION = _param("version", schema={"type": "string", "pattern": "^[1-9][0-9]{0,8}$"})
_ENDPOINT = _param(
    "endpoint", schema={"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"}
)


def _op(summary: str, responses: dict[str, Any], *, role: str | None, params: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None, errors: tuple[int, ...] = _COMMON) -> dict[str, Any]:  # fmt: skip
    op: dict[str, Any] = {"summary": summary, "responses": {**responses, **_errors(*errors)}}
    if role is None:
        op["security"] = []
    else:
        op["description"] = f"Needs a token with role `{role}` (or a higher one)."
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = body
    return op


def _schemas() -> dict[str, Any]:
    tensor_meta = {
        "type": "object", "required": ["name", "datatype", "shape"],
        "properties": {"name": _STR, "datatype": _STR, "shape": {"type": "array", "items": _INT}},
    }  # fmt: skip
    score = {
        "type": "object",
        "required": ["model", "version", "digest", "role", "status"],
        "properties": {
            "model": _STR, "version": _INT, "digest": _STR,
            "role": {"enum": ["champion", "challenger", "shadow", "canary", "decoy"]},
            "status": {"enum": ["ok", "late", "error", "timeout"]},
            "output": {"type": ["object", "null"]}, "latency_ms": {"type": ["number", "null"]},
            "error": {"type": ["string", "null"]},
        },
    }  # fmt: skip
    status = {"enum": ["ok", "no_model", "not_processed", "no_consensus", "error"]}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": _STR}},
        "ServerMetadata": {
            "type": "object", "required": ["name", "version", "extensions"],
            "properties": {"name": _STR, "version": _STR, "extensions": {"type": "array", "items": _STR}},
        },
        "ModelMetadata": {
            "type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
            "properties": {
                "name": _STR, "versions": {"type": "array", "items": _STR}, "platform": _STR,
                "inputs": {"type": "array", "items": tensor_meta},
                "outputs": {"type": "array", "items": tensor_meta},
            },
        },
        "InferRequest": {
            "type": "object", "required": ["inputs"],
            "properties": {
                "id": _STR, "parameters": {"type": "object"},
                "inputs": {"type": "array", "items": {
                    "type": "object", "required": ["name", "shape", "datatype"],
                    "properties": {
                        "name": _STR, "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                        "datatype": {"enum": ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16",
                                              "UINT32", "UINT64", "FP16", "FP32", "FP64", "BYTES"]},
                        "parameters": {"type": "object"}, "data": {"type": "array"},
                    },
                }},
                "outputs": {"type": "array", "items": {
                    "type": "object", "required": ["name"],
                    "properties": {"name": _STR, "parameters": {"type": "object"}},
                }},
            },
        },
        "InferResponse": {
            "type": "object", "required": ["model_name", "outputs"],
            "properties": {
                "model_name": _STR, "model_version": _STR, "id": _STR, "parameters": {"type": "object"},
                "outputs": {"type": "array", "items": {
                    "type": "object", "required": ["name", "datatype", "shape"],
                    "properties": {"name": _STR, "datatype": _STR, "shape": {"type": "array", "items": _INT},
                                   "parameters": {"type": "object"}, "data": {"type": "array"}},
                }},
            },
        },
        "ModelStats": {
            "type": "object", "required": ["model_stats"],
            "properties": {"model_stats": {"type": "array", "items": {
                "type": "object", "required": ["name", "version", "inference_count"],
                "properties": {"name": _STR, "version": _STR, "inference_count": _INT,
                               "execution_count": _INT, "inference_stats": {"type": "object"}},
            }}},
        },
        "RepositoryEntry": {
            "type": "object", "required": ["name", "state"],
            "properties": {"name": _STR, "version": _STR, "state": {"enum": ["READY", "UNAVAILABLE"]},
                           "reason": _STR},
        },
        "Record": {
            "type": "object", "required": ["features"], "additionalProperties": False,
            "properties": {
                "id": _STR, "key": {"type": ["string", "null"]},
                "ts": {"type": "string", "format": "date-time"},
                "features": {"type": "object", "additionalProperties": {
                    "type": ["number", "string", "boolean", "null"]}},
            },
        },
        "Answer": {
            "type": "object",
            "required": ["id", "endpoint", "status", "model", "version", "digest", "output",
                         "latency_ms", "policy", "route_version"],
            "properties": {
                "id": _STR, "endpoint": _STR, "status": status, "model": {"type": ["string", "null"]},
                "version": {"type": ["integer", "null"]}, "digest": {"type": ["string", "null"]},
                "output": {"type": ["object", "null"]}, "latency_ms": _NUM, "policy": _STR,
                "route_version": _INT,
            },
        },
        "Label": {
            "type": "object", "required": ["value"],
            "properties": {
                "record_id": _STR, "endpoint": _STR, "key": _STR,
                "ts": {"type": "string", "format": "date-time"},
                "value": {"type": ["number", "string", "boolean"]},
            },
        },
        "LabelSummary": {
            "type": "object", "required": ["appended", "by_record", "by_entity"],
            "properties": {"appended": _INT, "by_record": _INT, "by_entity": _INT,
                           "first_offset": {"type": ["integer", "null"]},
                           "last_offset": {"type": ["integer", "null"]}},
        },
        "Prediction": {
            "type": "object",
            "required": ["record_id", "endpoint", "ts", "scored_at", "status", "features", "scores", "position"],
            "properties": {
                "record_id": _STR, "endpoint": _STR, "key": {"type": ["string", "null"]},
                "ts": _STR, "scored_at": _STR, "status": status,
                "source": {"type": ["object", "null"]},
                "model": {"type": ["string", "null"]}, "version": {"type": ["integer", "null"]},
                "digest": {"type": ["string", "null"]}, "output": {"type": ["object", "null"]},
                "latency_ms": {"type": ["number", "null"]}, "policy": {"type": ["string", "null"]},
                "route_version": {"type": ["integer", "null"]}, "features": {"type": "object"},
                "scores": {"type": "array", "items": score},
                "position": {"type": "object", "required": ["topic", "partition", "offset"],
                             "properties": {"topic": _STR, "partition": _INT, "offset": _INT}},
            },
        },
        "Model": {
            "type": "object", "required": ["name", "version", "digest", "format", "size", "created_at"],
            "properties": {"name": _STR, "version": _INT, "digest": _STR, "format": _STR,
                           "endpoint": {"type": ["string", "null"]}, "inputs": {"type": "array"},
                           "outputs": {"type": "array"}, "size": _INT, "created_at": _STR},
        },
        "Route": {
            "type": "object", "required": ["endpoint", "current", "history"],
            "properties": {"endpoint": _STR, "current": {"type": "object"},
                           "history": {"type": "array", "items": {"type": "object"}},
                           "serving_version": {"type": ["integer", "null"]}},
        },
        "RouteSpec": {
            "type": "object",
            "description": "See eventml.serving.spec: champion, challengers, shadow, canary, decoy, "
                           "split, schedule, sla_ms, default, decider, tie_break, quality_metric, bandit.",
            "properties": {"champion": _STR, "challengers": {"type": "array", "items": _STR},
                           "shadow": {"type": "array", "items": _STR}, "decider": _STR},
        },
        "RouteChanged": {
            "type": "object", "required": ["endpoint", "version", "ts"],
            "properties": {"endpoint": _STR, "version": _INT, "champion": {"type": ["string", "null"]},
                           "spec": {"type": "object"}, "reason": _STR, "at_token": {"type": "boolean"},
                           "token_offsets": {"type": "object"}, "ts": _STR},
        },
        "Stats": {
            "type": "object", "required": ["versions", "endpoints"],
            "properties": {"versions": {"type": "array", "items": {"type": "object"}},
                           "endpoints": {"type": "object"}},
        },
    }  # fmt: skip


def _infer_op() -> dict[str, Any]:
    return {
        "summary": "Score rows (an endpoint's route, or a model version directly)",
        "description": "Needs role `predict`. With `Inference-Header-Content-Length` the body is the JSON "
        "header then the binary tensor data; the response is binary the same way when outputs ask for it.",
        "parameters": [_param("Inference-Header-Content-Length", "header", {"type": "string", "pattern": "^[0-9]{1,9}$"}, False)],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": _ref("InferRequest")},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        }},
        "responses": {
            "200": {"description": "the outputs", "content": {
                "application/json": {"schema": _ref("InferResponse")},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            }},
            **_errors(*_COMMON),
        },
    }  # fmt: skip


@cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh dict is never needed: callers only read it)."""
    m, v = "/v2/models/{model}", "/v2/models/{model}/versions/{version}"
    health = (503,)
    paths: dict[str, Any] = {
        "/v2/health/live": {"get": _op("Liveness", {"200": _json({"type": "object"}, "live")}, role=None, errors=())},
        "/v2/health/ready": {"get": _op("Readiness", {"200": _json({"type": "object"}, "ready")}, role=None, errors=health)},
        "/v2": {"get": _op("Server metadata", {"200": _json(_ref("ServerMetadata"), "metadata")}, role="read")},
        "/v2/models/stats": {"get": _op("Statistics of every model version", {"200": _json(_ref("ModelStats"), "statistics")}, role="read")},
        m: {"get": _op("Endpoint or model metadata", {"200": _json(_ref("ModelMetadata"), "metadata")}, role="read", params=[_MODEL])},
        v: {"get": _op("Model version metadata", {"200": _json(_ref("ModelMetadata"), "metadata")}, role="read", params=[_MODEL, _VERSION])},
        m + "/ready": {"get": _op("Endpoint or model readiness", {"200": _json({"type": "object"}, "ready")}, role="read", params=[_MODEL])},
        v + "/ready": {"get": _op("Model version readiness", {"200": _json({"type": "object"}, "ready")}, role="read", params=[_MODEL, _VERSION])},
        m + "/infer": {"post": {**_infer_op(), "parameters": [_MODEL, *_infer_op()["parameters"]]}},
        v + "/infer": {"post": {**_infer_op(), "parameters": [_MODEL, _VERSION, *_infer_op()["parameters"]]}},
        m + "/stats": {"get": _op("Statistics of an endpoint's or a model's versions", {"200": _json(_ref("ModelStats"), "statistics")}, role="read", params=[_MODEL])},
        v + "/stats": {"get": _op("Statistics of a model version", {"200": _json(_ref("ModelStats"), "statistics")}, role="read", params=[_MODEL, _VERSION])},
        "/v2/repository/index": {"post": _op("Every model version and its state", {"200": _json({"type": "array", "items": _ref("RepositoryEntry")}, "index")}, role="read")},
        "/v2/repository/models/{model}/load": {"post": _op("Load a model", {"200": _json(_ref("RepositoryEntry"), "loaded")}, role="admin", params=[_MODEL])},
        "/v2/repository/models/{model}/unload": {"post": _op("Unload a model no route serves", {"200": _json(_ref("RepositoryEntry"), "unloaded")}, role="admin", params=[_MODEL])},
        "/api/endpoints/{endpoint}/predict": {"post": _op(
            "Answer one record or a list with the endpoint's route",
            {"200": _json({"oneOf": [_ref("Answer"), {"type": "array", "items": _ref("Answer")}]}, "the answer(s)")},
            role="predict", params=[_ENDPOINT],
            body={"required": True, "content": {"application/json": {"schema": {
                "oneOf": [_ref("Record"), {"type": "array", "items": _ref("Record"), "minItems": 1}]}}}},
        )},
        "/api/labels": {"post": _op(
            "Append labels (by record id, or by entity and time)",
            {"201": _json(_ref("LabelSummary"), "appended")}, role="predict",
            body={"required": True, "content": {"application/json": {"schema": {
                "oneOf": [_ref("Label"), {"type": "array", "items": _ref("Label")}]}}}},
        )},
        "/api/predictions/{record_id}": {"get": _op(
            "The prediction event of a record (the audit answer)", {"200": _json(_ref("Prediction"), "the prediction")},
            role="read", params=[_param("record_id")],
        )},
        "/api/models": {
            "get": _op("Every model version", {"200": _json({"type": "array", "items": _ref("Model")}, "models")}, role="read"),
            "post": _op(
                "Upload a model (raw body or multipart part `file`)",
                {"201": _json(_ref("Model"), "a new version"), "200": _json(_ref("Model"), "the same bytes: an existing version")},
                role="admin",
                params=[_param("name", "query"), _param("format", "query", required=False),
                        _param("endpoint", "query", required=False), _param("filename", "query", required=False),
                        _param("features", "query", _STR, required=False),
                        _param("description", "query", _STR, required=False)],
                body={"required": True, "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                        "file": {"type": "string", "format": "binary"}}}},
                }},
            ),
        },
        "/api/endpoints/{endpoint}/route": {
            "get": _op("The current route and its history", {"200": _json(_ref("Route"), "the route")}, role="read", params=[_ENDPOINT]),
            "put": _op(
                "Deploy a new route from a route spec", {"200": _json(_ref("RouteChanged"), "the route event")},
                role="admin", params=[_ENDPOINT, _param("reason", "query", _STR, required=False)],
                body={"required": True, "content": {"application/json": {"schema": _ref("RouteSpec")}}},
            ),
        },
        "/api/stats": {"get": _op("Statistics per model version and per endpoint", {"200": _json(_ref("Stats"), "statistics")}, role="read")},
        "/metrics": {"get": _op("Prometheus metrics", {"200": {"description": "metrics", "content": {"text/plain": {"schema": _STR}}}}, role="read")},
        "/openapi.json": {"get": _op("This document", {"200": _json({"type": "object"}, "the document")}, role=None, errors=())},
    }  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {"title": "eventml", "version": __version__,
                 "description": "Log-driven ML serving: the Open Inference Protocol v2 and the native API."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }  # fmt: skip
