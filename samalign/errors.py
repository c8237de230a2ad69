"""One exception hierarchy for samalign.

Every error raised on purpose by the library derives from :class:`SamalignError`, so callers
can catch everything samalign raises with a single ``except``. Errors that come from a model's
answer keep the raw model text in :attr:`SamalignError.raw`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    """An input record or text cannot be processed (empty, too long, not UTF-8, bad JSON)."""


class BackendError(SamalignError):
    """A model backend failed: server unreachable, unknown adapter, HTTP error, timeout."""


class OutputParseError(SamalignError):
    """A model answer could not be parsed into the stage's answer format."""


class ModelRequestBlockedError(SamalignError):
    """A real model request was attempted while real requests are blocked (test kill-switch)."""


def validation_problems(err: ValidationError, what: str) -> str:
    """A pydantic validation error as one line, ``field.path: message; …``.

    Args:
        err: The validation error.
        what: The name used for an error about the whole value (no field path).
    """
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or what}: {e['msg']}" for e in err.errors()
    )


__all__ = [
    "BackendError",
    "ConfigError",
    "InputError",
    "ModelRequestBlockedError",
    "OutputParseError",
    "SamalignError",
    "validation_problems",
]
