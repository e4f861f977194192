"""The model registry: a view folded from the ``models`` topic, and pushing a model onto it.

The registry never changes state by itself: :meth:`Registry.apply` folds one event, and
:meth:`Registry.catch_up` folds whatever the log holds past its position. Rebuilding from
offset 0 gives the same state as folding incrementally. Descriptors are kept without their
payload (it stays on the log at the descriptor's offset and is read when a model loads).

Versions count from 1 per model name; the same bytes under the same name are the same
version, so pushing them again appends nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import msgspec

from eventml import events as ev
from eventml.errors import InputError, ModelRejected, NotFound, PluginError, expected_got
from eventml.log import Log
from eventml.models import formats
from eventml.models.base import LoadedModel

TOPIC = "models"


class Registry:
    """Model versions, rejections and route changes, as the ``models`` topic says."""

    def __init__(self) -> None:
        self.versions: dict[str, dict[int, ev.ModelDescriptor]] = {}
        self.offsets: dict[tuple[str, int], int] = {}
        self.digests: dict[tuple[str, str], int] = {}
        self.rejected: list[ev.ModelRejected] = []
        self.routes: dict[str, list[ev.RouteChanged]] = {}
        self.retired: list[ev.ModelRetired] = []
        self.position = 0
        self._exists = False

    @classmethod
    def from_log(cls, log: Log) -> Registry:
        """The registry rebuilt from offset 0."""
        registry = cls()
        registry.catch_up(log)
        return registry

    def catch_up(self, log: Log) -> list[ev.Event]:
        """Fold every event past :attr:`position`; returns them in log order."""
        if not self._exists:
            if TOPIC not in log.topics():
                return []
            self._exists = True  # topics are never deleted: no need to ask again
        folded: list[ev.Event] = []
        while True:
            batch = log.read(TOPIC, 0, self.position, limit=1000)
            if not batch.values:
                return folded
            for offset, value in zip(batch.offsets, batch.values, strict=True):
                event = ev.decode(value, where=f"{TOPIC}[0]@{offset}")
                self.apply(event, offset)
                folded.append(event)
            self.position = batch.next_offset

    def apply(self, event: ev.Event, offset: int) -> None:
        """Fold one event from the ``models`` topic at ``offset``."""
        if isinstance(event, ev.ModelDescriptor):
            if (event.name, event.digest) in self.digests:
                return  # a concurrent push of the same bytes: the first one is the version
            stored = msgspec.structs.replace(event, payload=None)
            self.versions.setdefault(event.name, {})[event.version] = stored
            self.offsets[(event.name, event.version)] = offset
            self.digests[(event.name, event.digest)] = event.version
        elif isinstance(event, ev.ModelRejected):
            self.rejected.append(event)
        elif isinstance(event, ev.RouteChanged):
            self.routes.setdefault(event.endpoint, []).append(event)
        elif isinstance(event, ev.ModelRetired):
            self.retired.append(event)

    def state(self) -> tuple[object, ...]:
        """Everything the registry knows, for comparing two folds."""
        return (self.versions, self.offsets, self.digests, self.rejected, self.routes,
                self.retired, self.position)  # fmt: skip

    def next_version(self, name: str) -> int:
        return max(self.versions.get(name, {0: None}), default=0) + 1

    def resolve(self, ref: str) -> ev.ModelDescriptor:
        """``NAME`` (latest version) or ``NAME:VERSION``."""
        name, version = parse_ref(ref)
        known = self.versions.get(name)
        if not known:
            raise NotFound(f"expected a pushed model, got {name!r}; known: {sorted(self.versions)}")
        if version is None:
            return known[max(known)]
        if version not in known:
            raise NotFound(f"expected a version of {name!r} among {sorted(known)}, got {version}")
        return known[version]

    def descriptor_with_payload(self, log: Log, name: str, version: int) -> ev.ModelDescriptor:
        """The descriptor as appended, payload included (read back from the log)."""
        offset = self.offsets[(name, version)]
        batch = log.read(TOPIC, 0, offset, offset + 1)
        event = ev.decode(batch.values[0], ev.ModelDescriptor, where=f"{TOPIC}[0]@{offset}")
        return event  # type: ignore[no-any-return]

    def all(self) -> Iterable[ev.ModelDescriptor]:
        for name in sorted(self.versions):
            for version in sorted(self.versions[name]):
                yield self.versions[name][version]


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``"churn:3"`` → ``("churn", 3)``; ``"churn"`` → ``("churn", None)``."""
    name, sep, version = ref.partition(":")
    if not name:
        raise InputError(expected_got("a model NAME or NAME:VERSION", ref))
    if not sep:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise InputError(
            expected_got("a model version that is a positive integer", version), where=ref
        )
    return name, int(version)


def digest_of(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def read_payload(descriptor: ev.ModelDescriptor) -> bytes:
    """The model bytes, inline or from its location, checked against the digest."""
    where = f"model {descriptor.name}:{descriptor.version}"
    if descriptor.payload is not None:
        payload = descriptor.payload
    elif descriptor.location is None:
        raise ModelRejected("expected a payload or a location, got neither", where=where)
    else:
        payload = _fetch(descriptor.location, where)
    actual = digest_of(payload)
    if actual != descriptor.digest:
        raise ModelRejected(f"expected digest {descriptor.digest}, got {actual}", where=where)
    return payload


def _fetch(location: str, where: str) -> bytes:
    url = urlparse(location)
    if url.scheme == "file":
        try:
            return Path(url2pathname(url.path)).read_bytes()
        except OSError as exc:
            raise ModelRejected(
                f"expected a readable model file at {location}, got {exc}", where=where
            ) from exc
    try:
        import fsspec  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise PluginError(
            f"model location {location} needs fsspec (pip install fsspec s3fs)", where=where
        ) from exc
    try:
        with fsspec.open(location, "rb") as f:
            data: bytes = f.read()
            return data
    except Exception as exc:  # fsspec backends raise their own error types
        raise ModelRejected(
            f"expected a readable model at {location}, got {exc}", where=where
        ) from exc


Resolver = Callable[[str], LoadedModel]
"""Loads another model by ``NAME[:VERSION]`` (for formats that wrap a model)."""


def load_model(descriptor: ev.ModelDescriptor, resolve: Resolver | None = None) -> LoadedModel:
    """A scoring model for a descriptor (payload included), or :class:`ModelRejected`.

    ``resolve`` loads models that this one wraps (the ``test-latency`` format).
    """
    plugin = formats.get(descriptor.format)
    payload = read_payload(descriptor)
    if getattr(plugin, "needs_resolver", False):
        if resolve is None:
            raise ModelRejected(
                f"model format {plugin.name!r} needs a registry to load", where=descriptor.name
            )
        return plugin.load_with(payload, descriptor, resolve)  # type: ignore[attr-defined, no-any-return]
    return plugin.load(payload, descriptor)


def registry_resolver(log: Log, registry: Registry) -> Resolver:
    """Load models straight from the log (pushing, tools)."""

    def resolve(ref: str) -> LoadedModel:
        d = registry.resolve(ref)
        return load_model(registry.descriptor_with_payload(log, d.name, d.version), resolve)

    return resolve


def smoke_test(model: LoadedModel, where: str) -> None:
    """Score one row of zeros: a model that cannot is rejected before it is ever served."""
    try:
        outputs = model.predict_batch([dict.fromkeys(model.feature_names, 0.0)])
    except Exception as exc:  # any failure of a model's own code is a rejection
        raise ModelRejected(
            f"expected the smoke batch to score, got {type(exc).__name__}: {exc}", where=where
        ) from exc
    if len(outputs) != 1:
        raise ModelRejected(
            f"expected 1 output for the smoke batch, got {len(outputs)}", where=where
        )


class Pushed(msgspec.Struct, frozen=True, kw_only=True):
    """What a push did: the descriptor (without payload) and whether it was new."""

    descriptor: ev.ModelDescriptor
    created: bool


def push_model(
    log: Log,
    path: Path,
    name: str,
    *,
    format: str | None = None,
    endpoint: str | None = None,
    description: str = "",
    location: bool = False,
    features: tuple[str, ...] = (),
    metrics: dict[str, float] | None = None,
    lineage: ev.Lineage | None = None,
) -> Pushed:
    """Detect, pack, load and smoke-score a model, then append its descriptor to ``models``.

    Pushing the same bytes under the same name returns the existing version and appends
    nothing. A model that fails any step raises and appends nothing.
    """
    if not path.exists():
        raise InputError(expected_got("a model file or folder", str(path)))
    fmt = format or formats.detect(path)
    plugin = formats.get(fmt)
    payload = plugin.pack(path)
    digest = digest_of(payload)
    where = f"{path.name} as {name}"
    registry = Registry.from_log(log)
    known = registry.digests.get((name, digest))
    if known is not None:
        return Pushed(descriptor=registry.versions[name][known], created=False)
    draft = ev.ModelDescriptor(
        name=name, version=registry.next_version(name), digest=digest, format=fmt,
        endpoint=endpoint, description=description,
        inputs=[ev.TensorSpec(name=f, dtype="double", shape=[-1]) for f in features],
        payload=payload, size=len(payload), metrics=metrics or {},
        lineage=lineage or ev.Lineage(source_path=str(path.resolve())), created_at=ev.now(),
    )  # fmt: skip
    model = load_model(draft, registry_resolver(log, registry))
    try:
        smoke_test(model, where)
        inputs = [
            ev.TensorSpec(name=f, dtype=_dtype(model, f), shape=[-1]) for f in model.feature_names
        ]
        descriptor = msgspec.structs.replace(
            draft, inputs=inputs, outputs=model.outputs,
            payload=None if location else payload,
            location=path.resolve().as_uri() if location else None,
        )  # fmt: skip
    finally:
        model.close()
    log.create_topic(TOPIC, 1)  # one partition: model and route events in one order
    with log.transaction() as tx:
        registry.catch_up(log)  # another push may have landed meanwhile
        known = registry.digests.get((name, digest))
        if known is not None:
            return Pushed(descriptor=registry.versions[name][known], created=False)
        descriptor = msgspec.structs.replace(descriptor, version=registry.next_version(name))
        tx.append(TOPIC, [ev.encode(descriptor)], partition=0)
    return Pushed(descriptor=msgspec.structs.replace(descriptor, payload=None), created=True)


def _dtype(model: LoadedModel, feature: str) -> str:
    for spec in model.inputs:
        if spec.name == feature:
            return spec.dtype
    return model.inputs[0].dtype if len(model.inputs) == 1 else "double"
