"""What every stage node shares: settings, the run context view, the request builder, wiring."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, Literal, Protocol, TypeVar

from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableLambda
from langgraph.runtime import get_runtime
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from samalign.agents.runner import (
    CallOptions,
    StageRequest,
    StageResult,
    arun_stage,
    run_stage,
)
from samalign.agents.state import NerState, StateUpdate
from samalign.errors import ConfigError, InputError, validation_problems
from samalign.prompts.domain import Domain, ProfileName
from samalign.prompts.profiles import StagePrompt
from samalign.prompts.specs import StageSpec, default_specs
from samalign.serving.models import StageModel, StageModels
from samalign.types import StageUsage

S = TypeVar("S", bound=NerState)
U = TypeVar("U", bound=StateUpdate)
V = TypeVar("V")


class AgentSettings(BaseModel):
    """Knobs the stage nodes read; :class:`~samalign.graphs.PipelineOptions` extends it.

    Attributes:
        grounding: ``flat`` (longest mention first, non-overlapping occurrences) or
            ``nested`` (every occurrence).
        parse_retries: Retries after an unparseable answer, with the error fed back.
        max_text_chars: Longest text the sentence graph accepts.
        constrain_mentions: Restrict mentions in every answer to strings of the text
            (extractors: an ``enum`` of text n-grams; classifier and calibrator: the
            candidates), so no mention can be hallucinated. Off by default: each request then
            has its own schema, which the server compiles per request (slower); with it off,
            schemas depend only on the domain and are compiled once, and grounding turns
            invented mentions into Diagnostics.
        max_mention_tokens: Longest mention, in word/punctuation tokens, when constrained.
        max_mentions_per_type: Upper bound on mentions per type in one answer.
        fuzzy_threshold: Word-level LCS score needed for fuzzy grounding.
        max_completion_tokens: Completion budget of every stage (default: each stage's own,
            512).
        anchor_schema_chunk: Ask the anchor about at most this many types per request
            (sorted, then split; the requests run concurrently and their mentions are united).
            IEPile trained and evaluated its LoRA with at most 6 types per instruction, so set
            6 when the anchor is the public IEPile adapter. ``None``: one request.
        max_relation_blocks: Upper bound on blocks, and on pairs per block, in a relation
            answer.
        relation_arguments: Which occurrences of a repeated mention a relation triple links:
            ``closest`` (the pair of occurrences nearest each other) or ``all`` (every pair;
            CoNLL04's SpERT release annotates a relation for every occurrence of a repeated
            mention, ADE and SciERC for one).
        prompt_profile: The prompt profile every SAM-NER stage renders with:
            ``default`` (samalign's prompts, constrained decoding; faster) or ``reference``
            (the SAM-NER authors' prompts, answer formats and definitions; see
            ``docs/reference.md``). ``None``: each domain's ``profile`` field decides.

    Raises:
        ConfigError: If a value is invalid (naming the field and the problem).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    grounding: Literal["flat", "nested"] = "flat"
    parse_retries: int = Field(default=1, ge=0, le=5)
    max_text_chars: int = Field(default=4000, ge=1)
    constrain_mentions: bool = False
    max_mention_tokens: int = Field(default=12, ge=1, le=64)
    max_mentions_per_type: int = Field(default=32, ge=1, le=512)
    fuzzy_threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    anchor_schema_chunk: int | None = Field(default=None, ge=1)
    max_relation_blocks: int = Field(default=16, ge=1, le=256)
    relation_arguments: Literal["closest", "all"] = "closest"
    prompt_profile: ProfileName | None = None

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            problems = validation_problems(err, "options")
            raise ConfigError(f"invalid {type(self).__name__}: {problems}") from None


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
        InputError: Empty or whitespace-only text, text over ``max_text_chars``, or text that
            is not valid Unicode (it holds a lone surrogate).
    """
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InputError("text is empty or whitespace only; give a sentence to extract from")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(
            f"text is not valid Unicode: it holds a lone surrogate (\\u{ord(text[err.start]):04x})"
            f" at character {err.start}; fix the text (no model can be sent it)"
        ) from None
    if len(text) > settings.max_text_chars:
        raise InputError(
            f"text has {len(text)} characters, over the sentence limit of "
            f"{settings.max_text_chars}; the sentence graph takes sentences: run long "
            "documents through the document graph (build_document_graph, or samalign extract "
            "--graph document), or raise PipelineOptions.max_text_chars (--max-chars)"
        )


@dataclass(frozen=True)
class Prepared(Generic[V]):
    """A prepared model call plus whatever the finish step needs.

    Attributes:
        request: What to send.
        parse: Turns the raw answer into the stage's value (raising ``OutputParseError``).
        extra: Anything the finish step needs from the prepare step.
    """

    request: StageRequest
    parse: Callable[[str], V]
    extra: Any = None


@cache
def _default_specs() -> dict[str, StageSpec]:
    return default_specs()


def stage_request(
    stage: str,
    ctx: StageContext,
    settings: AgentSettings,
    *,
    variables: Mapping[str, Any],
    schema: dict[str, Any] | None,
    parse: Callable[[str], V],
    adapter_stage: str | None = None,
    extra: Any = None,
) -> Prepared[V]:
    """How a node builds a model call from the default specs.

    Renders the stage's prompt (the domain's template override, else the default spec) with
    ``variables`` and hands it to :func:`prompt_request` (where every call is built), which
    sets the answer schema, the completion budget (``settings.max_completion_tokens``, else
    the stage's own) and the adapter the domain names for ``adapter_stage`` (default:
    ``stage``). Retries and the call itself are the
    runner's (:func:`stage_node` passes ``settings.parse_retries``).

    Args:
        stage: The stage whose prompt spec is used (also the request's stage name).
        ctx: The run context (domain, models).
        settings: The node's settings.
        variables: The template variables.
        schema: JSON schema of the answer, or ``None``.
        parse: Parser of the raw answer.
        adapter_stage: The stage whose adapter override applies (default: ``stage``).
        extra: Passed through to the finish step.

    Raises:
        ConfigError: If the template fails to render.
    """
    spec = _default_specs()[stage].with_template(ctx.domain.prompts.get(stage))
    rendered = StagePrompt(
        prompt=spec.render(variables), schema=schema, parse=parse, max_tokens=spec.max_tokens
    )
    return prompt_request(stage, ctx, settings, rendered, adapter_stage=adapter_stage, extra=extra)


def prompt_request(
    stage: str,
    ctx: StageContext,
    settings: AgentSettings,
    rendered: StagePrompt,
    *,
    adapter_stage: str | None = None,
    extra: Any = None,
) -> Prepared[Any]:
    """A model call from a prompt a prompt profile rendered (the SAM-NER stages).

    :func:`stage_request` renders with the default specs and ends here; the SAM-NER stages
    (extractors, classifier, calibrator) render through the run's prompt profile
    (:func:`~samalign.prompts.profiles.resolve_profile`), which also chooses the answer
    schema and parser. Sets the completion budget (``settings.max_completion_tokens``, else
    the rendered stage's own) and the adapter the domain names for ``adapter_stage``
    (default: ``stage``).

    Args:
        stage: The request's stage name.
        ctx: The run context (domain, models).
        settings: The node's settings.
        rendered: The prompt, answer schema, parser and budget.
        adapter_stage: The stage whose adapter override applies (default: ``stage``).
        extra: Passed through to the finish step.
    """
    request = StageRequest(
        stage=stage,
        messages=[HumanMessage(content=rendered.prompt)],
        schema=rendered.schema,
        max_tokens=settings.max_completion_tokens or rendered.max_tokens,
        adapter=ctx.domain.adapters.get(adapter_stage or stage),
    )
    return Prepared(request, rendered.parse, extra=extra)


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


def stage_update(stage: str, result: StageResult[Any], update: U) -> U:
    """Add the stage's diagnostics and usage to a node's update."""
    return update.model_copy(
        update={
            "diagnostics": [*result.diagnostics, *update.diagnostics],
            "usage": {stage: result.usage},
        }
    )


@dataclass(frozen=True)
class _NodeCalls(Generic[S]):
    """What a stage node's prepare step asked for: the calls, and what the finish step needs."""

    state: S
    ctx: StageContext
    calls: list[Prepared[Any]]
    several: bool
    model: StageModel
    options: CallOptions


def stage_node(
    name: str,
    prepare: Callable[[S, StageContext], Prepared[Any] | list[Prepared[Any]] | U],
    finish: Callable[[S, StageContext, Prepared[Any], StageResult[Any]], U],
    settings: AgentSettings,
    *,
    model_stage: str | None = None,
) -> RunnableLambda[S, dict[str, Any]]:
    """A graph node (sync and async) from a prepare step and a finish step.

    ``prepare`` returns a :class:`Prepared` call, a list of them (made concurrently; ``finish``
    then gets a result whose ``value`` is the list of values), or a finished update (no call
    needed, e.g. nothing to classify). ``finish`` turns the stage result into the update.
    ``model_stage`` is the key of the stage model in ``StageModels`` (default: ``name``).
    """

    def begin(state: S) -> _NodeCalls[S] | dict[str, Any]:
        """The node's model calls, or its finished update when it needs none."""
        ctx = current_context()
        prepared = prepare(state, ctx)
        if isinstance(prepared, StateUpdate):
            return prepared.model_copy(update={"usage": {name: StageUsage()}}).as_update()
        model = ctx.models.require(model_stage or name)
        return _NodeCalls(
            state,
            ctx,
            prepared if isinstance(prepared, list) else [prepared],
            several=isinstance(prepared, list),
            model=model,
            options={"retries": settings.parse_retries, "cache": getattr(ctx, "cache", None)},
        )

    def end(calls: _NodeCalls[S], results: list[StageResult[Any]]) -> dict[str, Any]:
        result = _combine(results) if calls.several else results[0]
        update = finish(calls.state, calls.ctx, calls.calls[0], result)
        return stage_update(name, result, update).as_update()

    def sync(state: S) -> dict[str, Any]:
        calls = begin(state)
        if isinstance(calls, dict):
            return calls
        opts = calls.options
        return end(calls, [run_stage(p.request, calls.model, p.parse, **opts) for p in calls.calls])

    async def asynchronous(state: S) -> dict[str, Any]:
        calls = begin(state)
        if isinstance(calls, dict):
            return calls
        opts = calls.options
        results = await asyncio.gather(
            *(arun_stage(p.request, calls.model, p.parse, **opts) for p in calls.calls)
        )
        return end(calls, list(results))

    return RunnableLambda(sync, afunc=asynchronous, name=name)


def pure_node(name: str, fn: Callable[[S], StateUpdate]) -> RunnableLambda[S, dict[str, Any]]:
    """A node for a model-free step, with a native async path (no thread hop)."""

    def sync(state: S) -> dict[str, Any]:
        return fn(state).as_update()

    async def asynchronous(state: S) -> dict[str, Any]:
        return fn(state).as_update()

    return RunnableLambda(sync, afunc=asynchronous, name=name)


__all__ = [
    "AgentSettings",
    "Prepared",
    "StageContext",
    "current_context",
    "prompt_request",
    "pure_node",
    "stage_node",
    "stage_request",
    "stage_update",
    "validate_text",
]
