"""One exception hierarchy for samalign.

Every error raised on purpose by the library derives from :class:`SamalignError`, so callers
can catch everything samalign raises with a single ``except``. Errors that come from a model's
answer keep the raw model text in :attr:`SamalignError.raw`; errors about one place carry it
as fields (:class:`BackendError`: ``stage``, ``adapter``, ``status_code``; :class:`InputError`:
``path``, ``line``), so code can branch on them without parsing the message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pydantic import ValidationError


class SamalignError(Exception):
    """Base class of every error samalign raises on purpose.

    Args:
        message: What went wrong and how to fix it.
        raw: The raw model text involved, when there is one.
    """

    def __init__(self, message: str, *, raw: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.raw = raw

    def __str__(self) -> str:
        return self.message


class ConfigError(SamalignError):
    """A configuration, domain file, prompt template or option is invalid."""


class InputError(SamalignError):
    """An input record or text cannot be processed (empty, too long, not UTF-8, bad JSON).

    Args:
        message: What went wrong and how to fix it.
        raw: The raw model text involved, when there is one.
        path: The input file, when the problem is in one.
        line: The 1-based line (or record) number in ``path``, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        raw: str | None = None,
        path: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message, raw=raw)
        self.path = path
        self.line = line


class BackendError(SamalignError):
    """A model backend failed: server unreachable, unknown adapter, HTTP error, timeout.

    Args:
        message: What went wrong and how to fix it.
        raw: The raw model text involved, when there is one.
        stage: The stage whose call failed, when a stage call failed.
        adapter: The adapter (served model name) the call asked for.
        status_code: The HTTP status the server answered (``None``: no answer, e.g. the server
            was unreachable or the backend is in-process).
    """

    def __init__(
        self,
        message: str,
        *,
        raw: str | None = None,
        stage: str | None = None,
        adapter: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message, raw=raw)
        self.stage = stage
        self.adapter = adapter
        self.status_code = status_code


class OutputParseError(SamalignError):
    """A model answer could not be parsed into the stage's answer format."""


class ModelRequestBlockedError(SamalignError):
    """A real model request was attempted while real requests are blocked (test kill-switch).

    See :func:`samalign.testing.block_model_requests`.
    """


Number = TypeVar("Number", int, float)


def at_least(name: str, value: Number, minimum: int = 1) -> Number:
    """``value``, checked: a :class:`ConfigError` when it is below ``minimum``.

    The message says ``{name} must be at least {minimum}`` (``must not be negative`` for 0).

    Raises:
        ConfigError: ``value < minimum``.
    """
    if value < minimum:
        limit = "not be negative" if minimum == 0 else f"be at least {minimum}"
        raise ConfigError(f"{name} must {limit}")
    return value


def validation_problems(err: ValidationError, what: str, *, limit: int = 10) -> str:
    """A pydantic validation error as one line, ``field.path: message; …``.

    At most ``limit`` problems are named (then ``… and N more``), each cut short, so a huge
    invalid input never makes a huge message.

    Args:
        err: The validation error.
        what: The name used for an error about the whole value (no field path).
        limit: The most problems named.
    """
    errors = err.errors()
    shown = [
        f"{'.'.join(str(p) for p in e['loc'])[:100] or what}: {str(e['msg'])[:200]}"
        for e in errors[:limit]
    ]
    more = f"; … and {len(errors) - limit} more" if len(errors) > limit else ""
    return "; ".join(shown) + more


def shorten(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters (then ``…``), for an error message.

    A value from an input file (a token, a type, an id, a whole record) or a parser's message
    about it can be of any size; an error message quotes it through this so it stays short.
    """
    return text if len(text) <= limit else text[:limit] + "…"


def quoted(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (:func:`shorten`), for an error message."""
    return shorten(repr(value), limit)


__all__ = [
    "BackendError",
    "ConfigError",
    "InputError",
    "ModelRequestBlockedError",
    "OutputParseError",
    "SamalignError",
    "at_least",
    "quoted",
    "shorten",
    "validation_problems",
]
