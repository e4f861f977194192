"""Bearer tokens for the HTTP API, with roles ``read``, ``predict`` and ``admin``.

Where tokens live: a file ``tokens.json`` in the log's folder (for ``sqlite:///file.db``,
beside the file; for a log without a folder, ``memory://`` or ``kafka://``, the file named
by ``--tokens`` / ``EVENTML_TOKENS``). A file rather than events on the log because a
token is a secret of one deployment, not a fact about the data: it must not be replayed
into another log, exported with predictions or mirrored to a Kafka cluster's readers.

Only a SHA-256 digest of each token is stored, never the token (written 0600, replaced
atomically). A token is ``eml_<id>_<secret>`` with a 256-bit random secret, so a fast hash
is enough: there is nothing to brute-force. ``eventml tokens create --role R`` prints the
token once.

Roles nest: ``read`` reads (metadata, models, routes, stats, audit, metrics), ``predict``
also scores and appends labels, ``admin`` also uploads models, changes routes and loads or
unloads models. Health checks and the OpenAPI document need no token.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from pathlib import Path
from typing import Literal

import msgspec

from eventml import events as ev
from eventml.errors import ConfigError, EventmlError, InputError

Role = Literal["read", "predict", "admin"]
ROLES: tuple[Role, ...] = ("read", "predict", "admin")
FILE_NAME = "tokens.json"


class Unauthorized(EventmlError):
    """No token, or one that is not known (401)."""

    status_code = 401


class Forbidden(EventmlError):
    """A known token whose role does not allow the request (403)."""

    status_code = 403


class TokenEntry(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    role: Role
    sha256: str
    created_at: ev.UtcTime
    note: str = ""


class _TokenFile(msgspec.Struct, kw_only=True):
    tokens: list[TokenEntry] = []


def tokens_path(log_url: str | None, explicit: str | None = None) -> Path:
    """The token file of a log (see the module docstring)."""
    if explicit:
        return Path(explicit).expanduser()
    url = log_url or "./eventml-data"
    scheme, sep, rest = url.partition("://")
    if not sep:
        location = url
    elif scheme == "sqlite":
        location = rest[1:] if rest.startswith("/") else rest or "."
    else:
        raise ConfigError(
            f"expected --tokens FILE (or EVENTML_TOKENS) for a log without a folder, got {url}"
        )
    path = Path(location).expanduser()
    if path.suffix in (".db", ".sqlite", ".sqlite3") or path.is_file():
        return path.parent / FILE_NAME
    return path / FILE_NAME


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """The hashed tokens of one file; re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._by_id: dict[str, TokenEntry] = {}

    def _load(self) -> _TokenFile:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return _TokenFile()
        except OSError as exc:
            raise ConfigError(
                f"expected a readable token file, got {exc}", where=str(self.path)
            ) from exc
        try:
            return msgspec.json.decode(raw, type=_TokenFile)
        except msgspec.DecodeError as exc:
            raise ConfigError(f"expected a token file, got {exc}", where=str(self.path)) from exc

    def create(self, role: str, note: str = "") -> str:
        """A new token with ``role``; only its digest is stored. Returns the token."""
        if role not in ROLES:
            raise InputError(f"expected a role among {list(ROLES)}, got {role!r}")
        token_id = secrets.token_hex(6)
        token = f"eml_{token_id}_{secrets.token_urlsafe(32)}"
        with self._lock:
            data = self._load()
            data.tokens.append(
                TokenEntry(
                    id=token_id,
                    role=role,
                    sha256=digest(token),
                    created_at=ev.now(),
                    note=note,
                )
            )
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(msgspec.json.format(msgspec.json.encode(data)))
            os.replace(tmp, self.path)
            self._stamp = None
        return token

    def entries(self) -> list[TokenEntry]:
        self._refresh()
        return list(self._by_id.values())

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp == self._stamp:
            return
        with self._lock:
            self._by_id = {e.id: e for e in self._load().tokens}
            self._stamp = stamp

    def role_of(self, authorization: str | None) -> Role:
        """The role of an ``Authorization: Bearer ...`` header, or :class:`Unauthorized`."""
        if not authorization:
            raise Unauthorized("expected an Authorization: Bearer TOKEN header, got none")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("expected an Authorization: Bearer TOKEN header, got another scheme")
        parts = token.split("_")
        self._refresh()
        entry = self._by_id.get(parts[1]) if len(parts) >= 3 and parts[0] == "eml" else None
        if entry is None or not hmac.compare_digest(entry.sha256, digest(token)):
            raise Unauthorized("expected a valid token, got an unknown one")
        return entry.role


def allows(role: Role, needed: Role) -> bool:
    """Whether ``role`` may do what ``needed`` allows (roles nest: read < predict < admin)."""
    return ROLES.index(role) >= ROLES.index(needed)
