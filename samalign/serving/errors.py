"""Turn backend exceptions into :class:`~samalign.errors.BackendError` with a useful message."""

from __future__ import annotations

import openai

from samalign.errors import BackendError, SamalignError, shorten

SNIPPET_CHARS = 200
"""How much of an unusable answer an error message quotes."""


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """``text`` cut to ``limit`` characters (marked with ``…``), quoted, for an error message."""
    return repr(shorten(text, limit))


class ServerAnswerError(BackendError):
    """A server's answer to a chat request could not be used, or did not arrive in time.

    Raised for a body cut off mid-way, a body that is not JSON, a completion without
    ``choices``, or no complete answer within the request's deadline. Retried like a 5xx
    answer (:func:`samalign.serving.balancer.server_failure` counts it as a soft failure);
    the message says what the server sent.
    """


def explain_error(exc: BaseException, *, stage: str, adapter: str) -> SamalignError:
    """Wrap an exception raised by a chat model call.

    Args:
        exc: What the chat model raised.
        stage: The stage that made the call.
        adapter: The adapter (served model name) it asked for.

    Returns:
        ``exc`` itself if it already is a samalign error (a :class:`BackendError` raised
        without ``stage``/``adapter``, e.g. by an in-process engine, gets them filled in), else
        a :class:`BackendError` with ``stage``, ``adapter`` and the HTTP ``status_code`` when
        the server answered.
    """
    if isinstance(exc, SamalignError):
        if isinstance(exc, BackendError):
            exc.stage = exc.stage or stage
            exc.adapter = exc.adapter or adapter
        return exc
    where = f"stage {stage!r} (adapter {adapter!r})"
    status_code: int | None = None
    if isinstance(exc, openai.NotFoundError):
        status_code = exc.status_code
        msg = (
            f"{where}: the server does not serve adapter {adapter!r} (HTTP 404). Check the "
            "adapter names the server was started with (GET /v1/models) or name the right one "
            "in the domain's 'adapters' or in vllm_server_models(adapters=...)."
        )
    elif isinstance(exc, openai.APITimeoutError):
        msg = f"{where}: the request timed out; raise the timeout or lower the concurrency"
    elif isinstance(exc, openai.APIConnectionError):
        msg = f"{where}: cannot reach the model server ({exc}); is it running at that URL?"
    elif isinstance(exc, openai.APIStatusError):
        status_code = exc.status_code
        msg = f"{where}: the server answered HTTP {exc.status_code}: {exc.message}"
    else:
        msg = f"{where}: the model call failed: {type(exc).__name__}: {exc}"
    return BackendError(msg, stage=stage, adapter=adapter, status_code=status_code)


__all__ = ["SNIPPET_CHARS", "ServerAnswerError", "explain_error", "snippet"]
