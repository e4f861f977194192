"""Open Inference Protocol v2 tensors: requests in, outputs out, JSON and the binary extension.

Request bodies: the JSON inference header, optionally followed by the binary tensor data
of inputs whose ``parameters.binary_data_size`` is set (in input order); the header's
length is the ``Inference-Header-Content-Length`` HTTP header. Responses put an output
in binary when its ``parameters.binary_data`` says so, else when the request's
``parameters.binary_data_output`` does (tritonclient sets it when it names no outputs);
the JSON header then comes first and its length is in the same HTTP header.

BYTES elements in binary are a 4-byte little-endian length and the bytes; every other
datatype is its elements in row-major order, little-endian.

Model outputs become tensors (DESIGN §2 outputs): a regression is one FP64 tensor
``value`` [N]; a classification is ``label`` (BYTES [N]) and ``probabilities`` (FP64
[N, C]) whose parameter ``classes`` is the JSON list of class names in column order;
other named outputs keep their names, stacked over rows.
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from eventml import events as ev
from eventml.errors import InputError, SchemaMismatch
from eventml.models.base import normalize

DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
"""OIP datatype → numpy dtype."""

_DTYPE_NAMES = {
    "bool": "BOOL", "boolean": "BOOL", "int8": "INT8", "int16": "INT16", "int32": "INT32",
    "int64": "INT64", "integer": "INT64", "uint8": "UINT8", "uint16": "UINT16",
    "uint32": "UINT32", "uint64": "UINT64", "float16": "FP16", "half": "FP16",
    "float32": "FP32", "float": "FP32", "float64": "FP64", "double": "FP64",
    "string": "BYTES", "str": "BYTES", "object": "BYTES", "bytes": "BYTES",
}  # fmt: skip

_FLOATS = frozenset({"FP16", "FP32", "FP64"})

MAX_ELEMENTS = 10_000_000
"""Most elements one tensor may declare (the body size limit bounds real data first)."""


def datatype_of(dtype: str) -> str:
    """The OIP datatype of a model's dtype name (``tensor(float)``, ``double``, ``string``...)."""
    name = dtype.lower().removeprefix("tensor(").removesuffix(")")
    return _DTYPE_NAMES.get(name, "FP64")


class _InTensor(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = {}
    data: Any = None


class _OutRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    parameters: dict[str, Any] = {}


class _InferRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: str | None = None
    parameters: dict[str, Any] = {}
    inputs: list[_InTensor]
    outputs: list[_OutRequest] | None = None


_decode_request = msgspec.json.Decoder(_InferRequest).decode


@dataclass(slots=True)
class Tensor:
    """One tensor: name, OIP datatype, shape and a numpy array of that shape."""

    name: str
    datatype: str
    shape: list[int]
    array: Any
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    """A decoded inference request."""

    id: str | None
    inputs: list[Tensor]
    outputs: dict[str, bool | None] | None
    """Requested output → binary or not (None: the request default); None: every output."""
    binary_default: bool


def _flag(params: dict[str, Any], name: str, where: str) -> bool | None:
    value = params.get(name)
    if value is None or isinstance(value, bool):
        return value
    raise InputError(f"expected parameter {name!r} to be true or false, got {value!r}", where=where)


def parse_request(body: bytes, header_length: int | None) -> InferRequest:
    """Decode an inference request body (JSON header plus binary data when ``header_length``)."""
    if header_length is not None and not 0 <= header_length <= len(body):
        raise InputError(
            f"expected Inference-Header-Content-Length within the body's {len(body)} bytes, "
            f"got {header_length}"
        )
    head = body if header_length is None else body[:header_length]
    try:
        req = _decode_request(head)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise InputError(f"expected an inference request, got {exc}") from None
    rest = memoryview(body)[len(head) :]
    inputs: list[Tensor] = []
    for t in req.inputs:
        where = f"input {t.name!r}"
        dtype = DATATYPES.get(t.datatype)
        if dtype is None:
            raise InputError(
                f"expected a datatype among {sorted(DATATYPES)}, got {t.datatype!r}", where=where
            )
        count = _count(t.shape, where)
        size = t.parameters.get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0 or size > len(rest):
                raise InputError(
                    f"expected binary_data_size within the {len(rest)} bytes left, got {size!r}",
                    where=where,
                )
            if t.data is not None:
                raise InputError("expected either binary data or JSON data, got both", where=where)
            array = _from_binary(bytes(rest[:size]), t.datatype, dtype, count, where)
            rest = rest[size:]
        else:
            if t.data is None:
                raise InputError("expected 'data' or a binary_data_size parameter", where=where)
            array = _from_json(t.data, t.datatype, dtype, count, where)
        inputs.append(Tensor(t.name, t.datatype, list(t.shape), array.reshape(t.shape)))
    if len(rest):
        raise InputError(f"expected no bytes after the binary inputs, got {len(rest)}")
    if len({t.name for t in inputs}) != len(inputs):
        raise InputError(f"expected distinct input names, got {[t.name for t in inputs]}")
    default = bool(_flag(req.parameters, "binary_data_output", "request parameters"))
    outputs = None
    if req.outputs is not None:
        outputs = {
            o.name: _flag(o.parameters, "binary_data", f"output {o.name!r}") for o in req.outputs
        }
    return InferRequest(req.id, inputs, outputs, default)


def _count(shape: list[int], where: str) -> int:
    if any(d < 0 for d in shape):
        raise InputError(f"expected a shape of non-negative sizes, got {shape}", where=where)
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise InputError(f"expected at most {MAX_ELEMENTS} elements, got {count}", where=where)
    return count


def _from_binary(raw: bytes, datatype: str, dtype: Any, count: int, where: str) -> Any:
    if datatype != "BYTES":
        expected = count * np.dtype(dtype).itemsize
        if len(raw) != expected:
            raise InputError(
                f"expected {expected} bytes of {datatype} data, got {len(raw)}", where=where
            )
        return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
    items: list[str] = []
    pos = 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise InputError("expected a 4-byte length before each BYTES element", where=where)
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise InputError(f"expected {n} bytes of a BYTES element, got fewer", where=where)
        items.append(_text(raw[pos : pos + n], where))
        pos += n
    if len(items) != count:
        raise InputError(f"expected {count} BYTES elements, got {len(items)}", where=where)
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def _text(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"expected UTF-8 text in a BYTES element, got {exc.reason}", where=where
        ) from None


def _flatten(data: Any, out: list[Any], depth: int = 0) -> None:
    if isinstance(data, list):
        if depth > 32:
            raise InputError("expected tensor data nested at most 32 deep")
        for item in data:
            _flatten(item, out, depth + 1)
    else:
        out.append(data)


def _from_json(data: Any, datatype: str, dtype: Any, count: int, where: str) -> Any:
    if datatype in _FLOATS and type(data) is list and len(data) == count:
        # the usual body, a flat list of numbers: checked in one call (no bools, strings,
        # nulls or lists, which the general path below takes with its own messages)
        try:
            numbers = msgspec.convert(data, list[float])
        except msgspec.ValidationError:
            pass
        else:
            return np.array(numbers, dtype=np.float64).astype(dtype)
    flat: list[Any] = []
    _flatten(data, flat)
    if len(flat) != count:
        raise InputError(f"expected {count} elements for the shape, got {len(flat)}", where=where)
    if datatype == "BYTES":
        bad = next((v for v in flat if not isinstance(v, str)), None)
        if bad is not None:
            raise InputError(f"expected strings for BYTES data, got {bad!r}", where=where)
        array = np.empty(count, dtype=object)
        array[:] = flat
        return array
    if datatype == "BOOL":
        bad = next((v for v in flat if not isinstance(v, bool)), None)
        if bad is not None:
            raise InputError(f"expected true or false for BOOL data, got {bad!r}", where=where)
        return np.array(flat, dtype=np.bool_)
    if datatype.startswith(("INT", "UINT")):
        bad = next((v for v in flat if type(v) is not int), None)
        if bad is not None:
            raise InputError(f"expected integers for {datatype} data, got {bad!r}", where=where)
        info = np.iinfo(dtype)
        if flat and (min(flat) < info.min or max(flat) > info.max):
            raise InputError(
                f"expected {datatype} values in [{info.min}, {info.max}], "
                f"got {min(flat)}..{max(flat)}",
                where=where,
            )
        return np.array(flat, dtype=dtype)
    bad = next((v for v in flat if type(v) not in (int, float) and v is not None), None)
    if bad is not None:
        raise InputError(f"expected numbers for {datatype} data, got {bad!r}", where=where)
    return np.array([math.nan if v is None else v for v in flat], dtype=np.float64).astype(dtype)


def _python(array: Any, datatype: str) -> list[Any]:
    if datatype in ("FP16", "FP32", "FP64"):
        values: list[Any] = array.astype(np.float64).tolist()
        return [None if v != v else v for v in values]  # NaN is a missing value
    return list(array.tolist())


@functools.lru_cache(maxsize=256)
def _normalized(feature_names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(normalize(f) for f in feature_names)


def rows_from_inputs(
    inputs: list[Tensor], feature_names: tuple[str, ...]
) -> list[dict[str, ev.Feature]]:
    """Records' features from input tensors: one 2-D numeric tensor ``[N, k]`` mapped to the
    model's features in order, or one tensor per feature (shape ``[N]`` or ``[N, 1]``)."""
    if not inputs:
        raise InputError("expected at least one input tensor, got none")
    t = inputs[0]
    wanted = _normalized(feature_names)
    if (
        len(inputs) == 1
        and len(t.shape) == 2
        and (t.shape[1] != 1 or normalize(t.name) not in wanted)
    ):
        if t.datatype in ("BYTES", "BOOL"):
            raise InputError(
                f"expected a numeric [N, k] tensor, got {t.datatype}", where=f"input {t.name!r}"
            )
        n, k = t.shape
        if k != len(feature_names):
            raise SchemaMismatch(
                f"expected [N, {len(feature_names)}] for features {list(feature_names)}, got {t.shape}",
                where=f"input {t.name!r}",
            )
        matrix = _python(t.array.reshape(n * k), t.datatype)
        return [
            dict(zip(feature_names, matrix[r * k : (r + 1) * k], strict=True)) for r in range(n)
        ]
    rows_n: int | None = None
    columns: dict[str, list[Any]] = {}
    for t in inputs:
        if not (len(t.shape) == 1 or (len(t.shape) == 2 and t.shape[1] == 1)):
            raise InputError(
                f"expected shape [N] or [N, 1] for a feature tensor, got {t.shape}",
                where=f"input {t.name!r}",
            )
        if rows_n is not None and t.shape[0] != rows_n:
            raise InputError(
                f"expected {rows_n} rows like the other inputs, got {t.shape[0]}",
                where=f"input {t.name!r}",
            )
        rows_n = t.shape[0]
        columns[t.name] = _python(t.array.reshape(rows_n), t.datatype)
    names = list(columns)
    return [{name: columns[name][r] for name in names} for r in range(rows_n or 0)]


def output_tensors(outputs: list[ev.Output]) -> list[Tensor]:
    """Model outputs of N rows as tensors (see the module docstring)."""
    if not outputs:
        return []
    first = outputs[0]
    n = len(outputs)
    if set(first) == {"value"}:
        values = np.array([_number(o.get("value")) for o in outputs], dtype=np.float64)
        return [Tensor("value", "FP64", [n], values)]
    if "label" in first and "probabilities" in first:
        classes = [str(c) for c in first["probabilities"]]
        labels = np.empty(n, dtype=object)
        labels[:] = [str(o.get("label")) for o in outputs]
        probs = np.array(
            [[_number(o["probabilities"].get(c)) for c in first["probabilities"]] for o in outputs],
            dtype=np.float64,
        ).reshape(n, len(classes))
        return [
            Tensor("label", "BYTES", [n], labels),
            Tensor(
                "probabilities", "FP64", [n, len(classes)], probs,
                {"classes": msgspec.json.encode(classes).decode()},
            ),
        ]  # fmt: skip
    tensors = []
    for name in first:
        array = np.asarray([o.get(name) for o in outputs])
        if array.dtype.kind == "b":
            datatype = "BOOL"
        elif array.dtype.kind in "iu":
            datatype, array = "INT64", array.astype(np.int64)
        elif array.dtype.kind == "f":
            datatype = "FP64"
            array = array.astype(np.float64)
        else:
            datatype = "BYTES"
            flat = np.empty(array.size, dtype=object)
            flat[:] = [str(v) for v in array.reshape(-1).tolist()]
            array = flat.reshape(array.shape)
        tensors.append(Tensor(name, datatype, list(array.shape), array))
    return tensors


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _binary(t: Tensor) -> bytes:
    if t.datatype == "BYTES":
        parts = []
        for v in t.array.reshape(-1).tolist():
            b = v if isinstance(v, bytes) else str(v).encode()
            parts.append(struct.pack("<I", len(b)))
            parts.append(b)
        return b"".join(parts)
    dtype = np.dtype(DATATYPES[t.datatype]).newbyteorder("<")
    return bytes(np.ascontiguousarray(t.array, dtype=dtype).tobytes())


def _json_data(t: Tensor) -> list[Any]:
    flat: list[Any] = t.array.reshape(-1).tolist()
    if t.datatype in ("FP16", "FP32", "FP64"):
        return [None if v != v or v in (math.inf, -math.inf) else v for v in flat]
    return flat


def encode_response(
    name: str,
    version: str | None,
    request: InferRequest,
    tensors: list[Tensor],
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """The response body and, when it carries binary data, the JSON header's length."""
    known = {t.name: t for t in tensors}
    if request.outputs is not None:
        missing = [o for o in request.outputs if o not in known]
        if missing:
            raise InputError(f"expected outputs among {sorted(known)}, got {missing}")
        chosen = [(known[o], request.outputs[o]) for o in request.outputs]
    else:
        chosen = [(t, None) for t in tensors]
    out: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for t, binary in chosen:
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        params = dict(t.parameters)
        if request.binary_default if binary is None else binary:
            blob = _binary(t)
            blobs.append(blob)
            params["binary_data_size"] = len(blob)
        else:
            entry["data"] = _json_data(t)
        if params:
            entry["parameters"] = params
        out.append(entry)
    doc: dict[str, Any] = {"model_name": name}
    if version is not None:
        doc["model_version"] = version
    if request.id is not None:
        doc["id"] = request.id
    if parameters:
        doc["parameters"] = parameters
    doc["outputs"] = out
    head = msgspec.json.encode(doc)
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
