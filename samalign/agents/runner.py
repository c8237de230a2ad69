"""The one helper every stage node uses to call its model.

It sends the stage's messages (with the stage's JSON schema as structured output where the
backend supports it), parses the answer, retries a bounded number of times with the parse
error fed back to the model, records usage, and turns what went wrong into Diagnostics. A
parse failure never fails the graph: after the last retry the stage yields no value and a
Diagnostic. Backend failures (unreachable server, unknown adapter) raise
:class:`~samalign.errors.BackendError` with the stage, the adapter and the HTTP status.
The runner calls any LangChain chat model; the test kill-switch is the real backends' own
(:mod:`samalign.serving.guard`).

The call protocol is written once as a generator (no I/O), driven by a sync and an async
driver, so ``invoke`` and ``ainvoke`` behave identically.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Generic, TypedDict, TypeVar, Unpack

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from samalign.agents.cache import CachedReply, StageCache, request_key
from samalign.errors import OutputParseError
from samalign.serving.errors import explain_error
from samalign.serving.models import StageModel
from samalign.types import Diagnostic, DiagnosticKind, StageUsage

T = TypeVar("T")


@dataclass(frozen=True)
class StageRequest:
    """What a stage asks its model.

    Attributes:
        stage: Stage name.
        messages: The chat messages.
        schema: JSON schema of the answer (sent as structured output), or ``None``.
        max_tokens: Completion budget.
        adapter: Adapter to use instead of the stage model's default, or ``None``.
    """

    stage: str
    messages: list[BaseMessage]
    schema: dict[str, Any] | None
    max_tokens: int
    adapter: str | None = None


@dataclass
class StageResult(Generic[T]):
    """What a stage got: the parsed value (``None`` if unusable), diagnostics and usage."""

    value: T | None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    usage: StageUsage = field(default_factory=StageUsage)
    raw: str = ""

    def diagnostic(self, stage: str, kind: DiagnosticKind, message: str) -> Diagnostic:
        """A :class:`~samalign.types.Diagnostic` about this answer (its raw text attached)."""
        return Diagnostic(stage=stage, kind=kind, message=message, raw=self.raw)


class CallOptions(TypedDict, total=False):
    """How :func:`run_stage` and :func:`arun_stage` call (both keyword-only, optional).

    Attributes:
        retries: Retries after an unparseable answer, with the error fed back (default 1).
        cache: Replay answers stored for the same request, and store new ones
            (:mod:`samalign.agents.cache`; default: none).
    """

    retries: int
    cache: StageCache | None


@dataclass(frozen=True)
class _Reply:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cached: bool = False

    @classmethod
    def of_cached(cls, stored: CachedReply) -> _Reply:
        return cls(stored.text, stored.finish_reason, 0, 0, 0.0, cached=True)

    def stored(self) -> CachedReply:
        return CachedReply(
            self.text, self.finish_reason, self.prompt_tokens, self.completion_tokens
        )


def _call_kwargs(request: StageRequest, model: StageModel) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if model.structured_output:
        kwargs["max_tokens"] = request.max_tokens
        if request.schema is not None:
            response_format = {
                "type": "json_schema",
                "json_schema": {"name": f"{request.stage}_answer", "schema": request.schema},
            }
            if model.schema_in_extra_body:
                kwargs["extra_body"] = {"response_format": response_format}
            else:
                kwargs["response_format"] = response_format
    if request.adapter and model.adapter_kwarg and request.adapter != model.adapter:
        kwargs[model.adapter_kwarg] = request.adapter
    return kwargs


def _reply_from(message: BaseMessage, latency_s: float) -> _Reply:
    text = message.content if isinstance(message.content, str) else message.text
    usage = getattr(message, "usage_metadata", None) or {}
    meta = message.response_metadata or {}
    return _Reply(
        text=text,
        finish_reason=meta.get("finish_reason"),
        prompt_tokens=int(usage.get("input_tokens", 0) or 0),
        completion_tokens=int(usage.get("output_tokens", 0) or 0),
        latency_s=latency_s,
    )


def _sendable(text: str) -> str:
    """``text`` as valid Unicode (a lone surrogate in a model's answer becomes ``?``).

    A re-ask sends the model its own answer back; a lone surrogate in it cannot be encoded
    into the request.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _protocol(
    request: StageRequest, parse: Callable[[str], T], retries: int
) -> Generator[list[BaseMessage], _Reply, StageResult[T]]:
    messages = list(request.messages)
    diagnostics: list[Diagnostic] = []
    usage = StageUsage()
    raw = ""

    def note(kind: DiagnosticKind, message: str) -> None:
        diagnostics.append(Diagnostic(stage=request.stage, kind=kind, message=message, raw=raw))

    for attempt in range(retries + 1):
        reply = yield messages
        raw = reply.text
        usage = usage + StageUsage(
            calls=0 if reply.cached else 1,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            latency_s=reply.latency_s,
            cached=1 if reply.cached else 0,
        )
        truncated = reply.finish_reason == "length"
        try:
            value = parse(raw)
        except OutputParseError as err:
            problem = f"{err.message}" + (" (the answer hit max_tokens)" if truncated else "")
            last = attempt == retries
            note(
                "truncated" if truncated else "parse_error",
                f"attempt {attempt + 1}/{retries + 1}: {problem}"
                + ("; giving up, the stage yields nothing" if last else "; retrying"),
            )
            messages = [
                *messages,
                AIMessage(content=_sendable(raw)),
                HumanMessage(
                    content=(
                        f"Your answer could not be used: {_sendable(problem)}. Answer again with "
                        "only the JSON value in the required format, and keep it short."
                    )
                ),
            ]
            continue
        if truncated or getattr(value, "repaired", False):
            note("truncated", "the answer was cut off (max_tokens); kept what could be parsed")
        return StageResult(value=value, diagnostics=diagnostics, usage=usage, raw=raw)
    return StageResult(value=None, diagnostics=diagnostics, usage=usage, raw=raw)


class _Exchange(Generic[T]):
    """One stage call in progress: the protocol, with the cache answering before the model.

    The drivers ask :meth:`next_messages` for what the model must answer (``None``: done, the
    result is in :attr:`result`), call the model, and hand its answer to :meth:`answered`.
    """

    def __init__(
        self,
        request: StageRequest,
        model: StageModel,
        parse: Callable[[str], T],
        options: CallOptions,
    ) -> None:
        self.kwargs = _call_kwargs(request, model)
        self._stage = request.stage
        self._adapter = request.adapter or model.adapter
        self._model = model
        self._cache = options.get("cache")
        self._gen = _protocol(request, parse, options.get("retries", 1))
        self._reply: _Reply | None = None
        self._key = ""
        self._sent = 0.0
        self.result: StageResult[T] = StageResult(value=None)

    def next_messages(self) -> list[BaseMessage] | None:
        """The messages the model must answer next, or ``None`` when the call is done."""
        reply, self._reply = self._reply, None
        try:
            messages = next(self._gen) if reply is None else self._gen.send(reply)
            while True:
                self._key, cached = self._lookup(messages)
                if cached is None:
                    self._sent = time.perf_counter()
                    return messages
                messages = self._gen.send(cached)
        except StopIteration as stop:
            self.result = stop.value
            return None

    def answered(self, answer: BaseMessage) -> None:
        """Record the model's answer to the last messages (and store it in the cache)."""
        self._reply = _reply_from(answer, time.perf_counter() - self._sent)
        if self._cache is not None:
            self._cache.put(self._key, self._reply.stored())

    def failure(self, exc: Exception) -> Exception:
        """The backend error the model's exception means (naming the stage and adapter)."""
        return explain_error(exc, stage=self._stage, adapter=self._adapter)

    def _lookup(self, messages: list[BaseMessage]) -> tuple[str, _Reply | None]:
        """The request's cache key and its stored answer (``("", None)`` without a cache)."""
        if self._cache is None:
            return "", None
        key = request_key(self._model.chat_model, self._adapter, messages, self.kwargs)
        stored = self._cache.get(key)
        return key, _Reply.of_cached(stored) if stored is not None else None


def run_stage(
    request: StageRequest,
    model: StageModel,
    parse: Callable[[str], T],
    **options: Unpack[CallOptions],
) -> StageResult[T]:
    """Call the stage model synchronously (see module docs).

    Args:
        request: What to ask.
        model: The stage model.
        parse: Turns the answer text into the stage's value (raises ``OutputParseError``).
        **options: ``retries`` and ``cache`` (:class:`CallOptions`).

    Raises:
        BackendError: The backend failed (after its own connection retries).
    """
    call = _Exchange(request, model, parse, options)
    while (messages := call.next_messages()) is not None:
        try:
            answer = model.chat_model.invoke(messages, **call.kwargs)
        except Exception as exc:
            raise call.failure(exc) from exc
        call.answered(answer)
    return call.result


async def arun_stage(
    request: StageRequest,
    model: StageModel,
    parse: Callable[[str], T],
    **options: Unpack[CallOptions],
) -> StageResult[T]:
    """Call the stage model asynchronously (see :func:`run_stage`)."""
    call = _Exchange(request, model, parse, options)
    while (messages := call.next_messages()) is not None:
        try:
            answer = await model.chat_model.ainvoke(messages, **call.kwargs)
        except Exception as exc:
            raise call.failure(exc) from exc
        call.answered(answer)
    return call.result


__all__ = ["CallOptions", "StageRequest", "StageResult", "arun_stage", "run_stage"]
