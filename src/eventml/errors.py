"""Every error eventml raises, rooted at :class:`EventmlError`.

A message says what was expected, what arrived and where, for example
``expected float for feature 'alcohol', got "abc" (line 17 of wine.csv)``.
Errors carry the data a caller may act on (``where``, ``status_code``); third-party
errors are re-raised as one of these with ``raise ... from exc``.

The tree::

    EventmlError                      root; ``status_code`` is the HTTP status it maps to
    ├── ConfigError                   a setting, URL or flag that cannot be used
    ├── InputError                    bad input from a user or a producer (400)
    │   ├── DecodeError               bytes that are not a valid event
    │   └── SchemaMismatch            features that do not fit a model's input schema
    ├── NotFound                      a topic, group, model or record that does not exist (404)
    ├── LogError                      the log cannot do what was asked
    │   ├── LogUnavailable            the backend cannot be reached or opened (503)
    │   └── GroupBusy                 another live consumer holds the group (409)
    ├── ModelError                    anything about a model
    │   ├── ModelRejected             a payload that cannot be loaded; nothing that serves changes
    │   └── UnsupportedModel          a model element or format eventml will not score (400)
    └── PluginError                   an extension (backend, format) is missing or registered twice
"""

from __future__ import annotations


class EventmlError(Exception):
    """Root of every eventml error."""

    status_code: int = 500

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.message = message
        self.where = where
        super().__init__(f"{message} ({where})" if where else message)


class ConfigError(EventmlError):
    """A setting, URL or command-line flag that cannot be used."""

    status_code = 400


class InputError(EventmlError):
    """Bad input from a user or a producer."""

    status_code = 400


class DecodeError(InputError):
    """Bytes that do not decode to a valid event."""


class SchemaMismatch(InputError):
    """Features that do not fit a model's input schema; ``row`` is the row of the batch."""

    def __init__(self, message: str, *, where: str | None = None, row: int | None = None) -> None:
        super().__init__(message, where=where)
        self.row = row


class NotFound(EventmlError):
    """A topic, consumer group, model or record that does not exist."""

    status_code = 404


class LogError(EventmlError):
    """The log cannot do what was asked."""


class LogUnavailable(LogError):
    """The log backend cannot be reached or opened."""

    status_code = 503


class GroupBusy(LogError):
    """Another live consumer holds this consumer group."""

    status_code = 409


class ModelError(EventmlError):
    """Anything about a model."""


class ModelRejected(ModelError):
    """A model payload that cannot be loaded or scored; what serves is unchanged."""

    status_code = 400


class UnsupportedModel(ModelRejected):
    """A model element, format or feature that eventml refuses rather than mis-scores."""


class PluginError(EventmlError):
    """An extension (log backend, model format) that is missing or registered twice."""


def expected_got(expected: str, got: object, where: str | None = None) -> str:
    """Format the house style: ``expected X, got Y (where)``.

    >>> expected_got("float for feature 'alcohol'", "abc", "line 17 of wine.csv")
    'expected float for feature \\'alcohol\\', got "abc" (line 17 of wine.csv)'
    """
    shown = f'"{got}"' if isinstance(got, str) else repr(got)
    text = f"expected {expected}, got {shown}"
    return f"{text} ({where})" if where else text


def error_text(exc: BaseException) -> str:
    """How a failure is recorded in events: an eventml error's own text (it says what was
    expected and where), any other exception's type and message.

    >>> error_text(ValueError("no"))
    'ValueError: no'
    >>> error_text(InputError("expected a float, got 'x'"))
    "expected a float, got 'x'"
    """
    return str(exc) if isinstance(exc, EventmlError) else f"{type(exc).__name__}: {exc}"
