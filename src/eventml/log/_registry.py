"""Log backends by URL scheme: built-ins, then the ``eventml.log`` entry-point group.

A URL without a scheme is a folder (or a ``.db`` / ``.sqlite`` file) for the embedded SQLite
log. A backend is a :class:`~eventml.log.base.Log` subclass with a classmethod
``from_url(url, settings)``; it is imported only when its scheme is first used, so a
missing optional dependency fails with its install hint there and nowhere else.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Protocol, cast

from eventml.config import Settings
from eventml.errors import ConfigError, PluginError
from eventml.log.base import Log


class LogFactory(Protocol):
    """What a backend class provides to be opened from a URL."""

    @classmethod
    def from_url(cls, url: str, settings: Settings) -> Log: ...


_BUILTIN: dict[str, str] = {
    "memory": "eventml.log._memory:MemoryLog",
    "sqlite": "eventml.log._sqlite:SqliteLog",
    "kafka": "eventml.log._kafka:KafkaLog",
}
_INSTALL_HINT: dict[str, str] = {"kafka": "pip install 'eventml[kafka]'"}
_registered: dict[str, str | LogFactory] = {}


def register(scheme: str, backend: str | LogFactory) -> None:
    """Register a backend for ``scheme://`` URLs; a name already taken raises."""
    if scheme in _registered or scheme in _BUILTIN:
        raise PluginError(f"log backend {scheme!r} is already registered")
    _registered[scheme] = backend


def _lookup(scheme: str) -> str | LogFactory | None:
    if scheme in _registered:
        return _registered[scheme]
    if scheme in _BUILTIN:
        return _BUILTIN[scheme]
    found = [ep for ep in entry_points(group="eventml.log") if ep.name == scheme]
    if len({ep.value for ep in found}) > 1:
        raise PluginError(
            f"log backend {scheme!r} is registered twice: {', '.join(ep.value for ep in found)}"
        )
    return found[0].value if found else None


def _resolve(scheme: str, target: str | LogFactory) -> LogFactory:
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = _INSTALL_HINT.get(scheme)
        extra = f"; install it with: {hint}" if hint else ""
        raise PluginError(f"log backend {scheme!r} cannot be imported ({exc}){extra}") from exc
    return cast(LogFactory, getattr(module, attr))


def split_scheme(url: str) -> tuple[str, str]:
    """``("sqlite", path)`` for a bare path, else the URL's scheme and the rest."""
    if "://" not in url:
        return "sqlite", url
    scheme, _, rest = url.partition("://")
    return scheme.lower(), rest


def open_log(url: str | None = None, settings: Settings | None = None) -> Log:
    """Open the log at ``url`` (default: ``settings.log``, i.e. ``EVENTML_LOG`` or ./eventml-data).

    >>> with open_log("memory://") as log:
    ...     list(log.append("records", [b"x", b"y"]).offsets)
    [0, 1]
    """
    settings = settings or Settings.from_env()
    url = url or settings.log
    scheme, _ = split_scheme(url)
    target = _lookup(scheme)
    if target is None:
        known = sorted({*_BUILTIN, *_registered})
        raise ConfigError(
            f"expected a log URL with one of the schemes {', '.join(known)} or a folder path, "
            f"got {url!r}"
        )
    return _resolve(scheme, target).from_url(url, settings)
