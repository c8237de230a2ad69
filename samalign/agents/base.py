"""What every stage node shares: settings, the run context view, input checks, node wiring."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from langchain_core.runnables import RunnableLambda
from langgraph.runtime import get_runtime

from samalign.agents.runner import StageRequest, StageResult, arun_stage, run_stage
from samalign.errors import ConfigError, InputError
from samalign.prompts.domain import Domain
from samalign.serving.models import StageModels
from samalign.types import Diagnostic, StageUsage

Update = dict[str, Any]


@dataclass(frozen=True)
class AgentSettings:
    """Knobs shared by the stage nodes (built from the graph's ``PipelineOptions``)."""

    grounding: Literal["flat", "nested"] = "flat"
    parse_retries: int = 1
    max_text_chars: int = 4000
    constrain_mentions: bool = False
    max_mention_tokens: int = 12
    max_mentions_per_type: int = 32
    fuzzy_threshold: float = 0.8
    max_completion_tokens: int | None = None
    anchor_schema_chunk: int | None = None
    max_relation_blocks: int = 16
    relation_arguments: Literal["closest", "all"] = "closest"
    relation_schedule: Literal["needed", "always", "parallel"] = "always"


class StageContext(Protocol):
    """What a node needs from the per-invocation run context."""

    @property
    def domain(self) -> Domain:
        """The target domain."""

    @property
    def models(self) -> StageModels:
        """Stage → chat model."""


def current_context() -> StageContext:
    """The run context of the current graph invocation.

    Raises:
        ConfigError: If the graph was invoked without ``context=RunContext(...)``.
    """
    context = get_runtime().context
    if context is None:
        raise ConfigError(
            "the graph was invoked without a run context; pass "
            "context=RunContext(domain=load_domain(...), models=...) to invoke/batch"
        )
    return context


def validate_text(text: str, settings: AgentSettings) -> None:
    """Reject text no sentence-level stage can process.

    Raises:
        InputError: Empty or whitespace-only text, or text over ``max_text_chars``.
    """
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InputError("text is empty or whitespace only; give a sentence to extract from")
    if len(text) > settings.max_text_chars:
        raise InputError(
            f"text has {len(text)} characters, over the sentence limit of "
            f"{settings.max_text_chars}; the sentence graph takes sentences: run long "
            "documents through the document graph (build_document_graph, or samalign extract "
            "--graph document), or raise PipelineOptions.max_text_chars (--max-chars)"
        )


@dataclass(frozen=True)
class Prepared:
    """A prepared model call plus whatever the finish step needs."""

    request: StageRequest
    parse: Callable[[str], Any]
    extra: Any = None


Prepare = Callable[[Any, StageContext], "Prepared | list[Prepared] | Update"]
Finish = Callable[[Any, StageContext, Prepared, StageResult[Any]], Update]


def _combine(results: list[StageResult[Any]]) -> StageResult[Any]:
    """One result for a stage that made several calls: ``value`` is the list of values."""
    usage = StageUsage()
    for r in results:
        usage = usage + r.usage
    return StageResult(
        value=[r.value for r in results],
        diagnostics=[d for r in results for d in r.diagnostics],
        usage=usage,
        raw="\n".join(r.raw for r in results),
    )


def stage_update(stage: str, result: StageResult[Any], update: Update) -> Update:
    """Add the stage's diagnostics and usage to a node's state update."""
    diagnostics: list[Diagnostic] = [*result.diagnostics, *update.pop("diagnostics", [])]
    return {**update, "diagnostics": diagnostics, "usage": {stage: result.usage}}


def stage_node(
    name: str,
    prepare: Prepare,
    finish: Finish,
    settings: AgentSettings,
    *,
    model_stage: str | None = None,
) -> RunnableLambda[Any, Update]:
    """A graph node (sync and async) from a prepare step and a finish step.

    ``prepare`` returns a :class:`Prepared` call, a list of them (made concurrently; ``finish``
    then gets a result whose ``value`` is the list of values), or a finished update (no call
    needed, e.g. nothing to classify). ``finish`` turns the stage result into the update.
    ``model_stage`` is the key of the stage model in ``StageModels`` (default: ``name``).
    """

    def sync(state: Any) -> Update:
        ctx = current_context()
        prepared = prepare(state, ctx)
        if isinstance(prepared, dict):
            return {**prepared, "usage": {name: StageUsage()}}
        model = ctx.models.require(model_stage or name)
        calls = prepared if isinstance(prepared, list) else [prepared]
        cache = getattr(ctx, "cache", None)
        results = [
            run_stage(p.request, model, p.parse, retries=settings.parse_retries, cache=cache)
            for p in calls
        ]
        result = _combine(results) if isinstance(prepared, list) else results[0]
        return stage_update(name, result, finish(state, ctx, calls[0], result))

    async def asynchronous(state: Any) -> Update:
        ctx = current_context()
        prepared = prepare(state, ctx)
        if isinstance(prepared, dict):
            return {**prepared, "usage": {name: StageUsage()}}
        model = ctx.models.require(model_stage or name)
        calls = prepared if isinstance(prepared, list) else [prepared]
        cache = getattr(ctx, "cache", None)
        results = await asyncio.gather(
            *(
                arun_stage(p.request, model, p.parse, retries=settings.parse_retries, cache=cache)
                for p in calls
            )
        )
        result = _combine(list(results)) if isinstance(prepared, list) else results[0]
        return stage_update(name, result, finish(state, ctx, calls[0], result))

    return RunnableLambda(sync, afunc=asynchronous, name=name)


def pure_node(name: str, fn: Callable[[Any], Update]) -> RunnableLambda[Any, Update]:
    """A node for a model-free step, with a native async path (no thread hop)."""

    async def asynchronous(state: Any) -> Update:
        return fn(state)

    return RunnableLambda(fn, afunc=asynchronous, name=name)


__all__ = [
    "AgentSettings",
    "Prepared",
    "StageContext",
    "Update",
    "current_context",
    "pure_node",
    "stage_node",
    "stage_update",
    "validate_text",
]
