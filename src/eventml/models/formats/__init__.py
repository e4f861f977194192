"""Model format plugins by short name: built-ins, then the ``eventml.formats`` entry points.

A plugin is imported only when first used, so a missing optional dependency fails there
with its install hint (``pip install 'eventml[tensorflow]'``); a name registered twice raises.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from pathlib import Path

from eventml.errors import InputError, PluginError
from eventml.models.base import ModelFormat

_BUILTIN: dict[str, str] = {
    "onnx": "eventml.models.formats._onnx:OnnxFormat",
    "pmml": "eventml.models.formats._pmml_format:PmmlFormat",
    "sklearn": "eventml.models.formats._sklearn:SklearnFormat",
    "river": "eventml.models.formats._river:RiverFormat",
    "tensorflow": "eventml.models.formats._tensorflow:TensorflowFormat",
    "test-latency": "eventml.testing:LatencyFormat",
}
_INSTALL_HINT: dict[str, str] = {
    "sklearn": "pip install 'eventml[sklearn]'",
    "river": "pip install 'eventml[river]'",
    "tensorflow": "pip install 'eventml[tensorflow]'",
}
# Tried in this order by detect(); formats whose detection is cheap and certain first.
DETECT_ORDER = ("onnx", "pmml", "river", "sklearn", "tensorflow")
_registered: dict[str, str | ModelFormat] = {}
_loaded: dict[str, ModelFormat] = {}


def register(name: str, plugin: str | ModelFormat) -> None:
    """Register a format plugin (an instance, or ``"module:Class"``); a taken name raises."""
    if name in _registered or name in _BUILTIN:
        raise PluginError(f"model format {name!r} is already registered")
    _registered[name] = plugin


def names() -> list[str]:
    """Every known format name."""
    found = {ep.name for ep in entry_points(group="eventml.formats")}
    return sorted({*_BUILTIN, *_registered, *found})


def get(name: str) -> ModelFormat:
    """The plugin for ``name``, imported on first use."""
    if name in _loaded:
        return _loaded[name]
    target: str | ModelFormat | None = _registered.get(name) or _BUILTIN.get(name)
    if target is None:
        eps = [ep for ep in entry_points(group="eventml.formats") if ep.name == name]
        if len({ep.value for ep in eps}) > 1:
            raise PluginError(f"model format {name!r} is registered twice")
        target = eps[0].value if eps else None
    if target is None:
        raise InputError(f"expected a model format among {names()}, got {name!r}")
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = _INSTALL_HINT.get(name)
            extra = f"; install it with: {hint}" if hint else ""
            raise PluginError(f"model format {name!r} cannot be imported ({exc}){extra}") from exc
        target = getattr(module, attr)()
    assert isinstance(target, ModelFormat)
    _loaded[name] = target
    return target


def detect(path: Path) -> str:
    """The format of a model file or folder, by asking each plugin in :data:`DETECT_ORDER`."""
    head = b""
    if path.is_file():
        with path.open("rb") as f:
            head = f.read(4096)
    elif not path.is_dir():
        raise InputError(f"expected a model file or folder, got {str(path)!r}")
    for name in [*DETECT_ORDER, *(n for n in names() if n not in DETECT_ORDER)]:
        try:
            plugin = get(name)
        except PluginError:
            continue  # an optional format that is not installed cannot claim the file
        if plugin.detect(path, head):
            return name
    raise InputError(
        f"expected a model file of a known format ({', '.join(names())}), "
        f"got {path.name!r}; name it with --format"
    )
