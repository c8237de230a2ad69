"""The kill-switch against stray model requests (for tests), checked by every real backend.

samalign's real chat models — the ``ChatOpenAI`` models :func:`vllm_server_models` builds and
the in-process :class:`~samalign.serving.chat.EngineChatModel` — call
:func:`check_model_request` before each request; test doubles (``samalign.testing.fakes``)
do not. Requests are blocked:

* inside ``with block_model_requests():`` (``samalign.testing``), or
* when the environment variable ``SAMALIGN_BLOCK_MODEL_REQUESTS`` is set to anything but
  ``0`` (samalign's unit tests set it for every test),

unless inside ``with allow_model_requests():``. A blocked request raises
:class:`~samalign.errors.ModelRequestBlockedError` before anything is sent. The switch is
process-wide (like pydantic-ai's ``ALLOW_MODEL_REQUESTS``), so it also holds in the threads
and fresh contexts the graphs run nodes in.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from samalign.errors import ModelRequestBlockedError

BLOCK_ENV = "SAMALIGN_BLOCK_MODEL_REQUESTS"
"""Set this environment variable to ``1`` to block every real model request (tests)."""

_override: bool | None = None
"""Set by the innermost ``block_model_requests``/``allow_model_requests``; ``None``: the env."""


def model_requests_allowed() -> bool:
    """Whether a real model request may be made now (see the module docs)."""
    if _override is not None:
        return _override
    return os.environ.get(BLOCK_ENV, "") in ("", "0")


def check_model_request(model: str) -> None:
    """Raise unless a real model request may be made now.

    Args:
        model: What is about to be asked (e.g. ``"vLLM server adapter 'anchor'"``), for the
            message.

    Raises:
        ModelRequestBlockedError: Real requests are blocked.
    """
    if model_requests_allowed():
        return
    why = "inside block_model_requests()" if _override is False else f"while {BLOCK_ENV} is set"
    raise ModelRequestBlockedError(
        f"a real model request ({model}) was blocked {why}; use a fake chat model from "
        "samalign.testing.fakes in tests, or wrap the code in "
        "samalign.testing.allow_model_requests()"
    )


@contextmanager
def _overridden(allow: bool) -> Iterator[None]:
    global _override
    previous, _override = _override, allow
    try:
        yield
    finally:
        _override = previous


def block_model_requests() -> AbstractContextManager[None]:
    """Block every real model request inside the ``with`` block, whatever the environment.

    Example:
        >>> with block_model_requests():
        ...     graph.invoke({"text": text}, context=context)  # a real model raises
    """
    return _overridden(False)


def allow_model_requests() -> AbstractContextManager[None]:
    """Allow real model requests inside the ``with`` block, whatever the environment."""
    return _overridden(True)


__all__ = [
    "BLOCK_ENV",
    "allow_model_requests",
    "block_model_requests",
    "check_model_request",
    "model_requests_allowed",
]
