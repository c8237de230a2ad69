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
from typing import Any, Generic, TypeVar

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from samalign.agents.cache import CachedReply, StageCache, request_key
from samalign.errors import OutputParseError
from samalign.serving.errors import explain_error
from samalign.serving.models import StageModel
from samalign.types import Diagnostic, StageUsage

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
            diagnostics.append(
                Diagnostic(
                    stage=request.stage,
                    kind="truncated" if truncated else "parse_error",
                    message=(
                        f"attempt {attempt + 1}/{retries + 1}: {problem}"
                        + ("; giving up, the stage yields nothing" if last else "; retrying")
                    ),
                    raw=raw,
                )
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
            diagnostics.append(
                Diagnostic(
                    stage=request.stage,
                    kind="truncated",
                    message="the answer was cut off (max_tokens); kept what could be parsed",
                    raw=raw,
                )
            )
        return StageResult(value=value, diagnostics=diagnostics, usage=usage, raw=raw)
    return StageResult(value=None, diagnostics=diagnostics, usage=usage, raw=raw)


def _lookup(
    cache: StageCache | None,
    model: StageModel,
    adapter: str,
    messages: list[BaseMessage],
    kwargs: dict[str, Any],
) -> tuple[str, _Reply | None]:
    """The request's cache key and its stored answer (``("", None)`` without a cache)."""
    if cache is None:
        return "", None
    key = request_key(model.chat_model, adapter, messages, kwargs)
    stored = cache.get(key)
    return key, _Reply.of_cached(stored) if stored is not None else None


def _remember(cache: StageCache | None, key: str, reply: _Reply) -> _Reply:
    if cache is not None:
        cache.put(key, reply.stored())
    return reply


def run_stage(
    request: StageRequest,
    model: StageModel,
    parse: Callable[[str], T],
    *,
    retries: int = 1,
    cache: StageCache | None = None,
) -> StageResult[T]:
    """Call the stage model synchronously (see module docs).

    Args:
        request: What to ask.
        model: The stage model.
        parse: Turns the answer text into the stage's value (raises ``OutputParseError``).
        retries: Retries after an unparseable answer, with the error fed back.
        cache: Replay answers stored for the same request, and store new ones
            (:mod:`samalign.agents.cache`).

    Raises:
        BackendError: The backend failed (after its own connection retries).
    """
    kwargs = _call_kwargs(request, model)
    gen = _protocol(request, parse, retries)
    adapter = request.adapter or model.adapter
    try:
        messages = next(gen)
        while True:
            key, cached = _lookup(cache, model, adapter, messages, kwargs)
            if cached is not None:
                messages = gen.send(cached)
                continue
            start = time.perf_counter()
            try:
                answer = model.chat_model.invoke(messages, **kwargs)
            except Exception as exc:
                raise explain_error(exc, stage=request.stage, adapter=adapter) from exc
            reply = _remember(cache, key, _reply_from(answer, time.perf_counter() - start))
            messages = gen.send(reply)
    except StopIteration as stop:
        result: StageResult[T] = stop.value
        return result


async def arun_stage(
    request: StageRequest,
    model: StageModel,
    parse: Callable[[str], T],
    *,
    retries: int = 1,
    cache: StageCache | None = None,
) -> StageResult[T]:
    """Call the stage model asynchronously (see :func:`run_stage`)."""
    kwargs = _call_kwargs(request, model)
    gen = _protocol(request, parse, retries)
    adapter = request.adapter or model.adapter
    try:
        messages = next(gen)
        while True:
            key, cached = _lookup(cache, model, adapter, messages, kwargs)
            if cached is not None:
                messages = gen.send(cached)
                continue
            start = time.perf_counter()
            try:
                answer = await model.chat_model.ainvoke(messages, **kwargs)
            except Exception as exc:
                raise explain_error(exc, stage=request.stage, adapter=adapter) from exc
            reply = _remember(cache, key, _reply_from(answer, time.perf_counter() - start))
            messages = gen.send(reply)
    except StopIteration as stop:
        result: StageResult[T] = stop.value
        return result


__all__ = ["StageRequest", "StageResult", "arun_stage", "run_stage"]
