"""The long-document graph: split into sentences, run a sentence graph on each, merge back.

``START → split → (one Send per sentence, in waves) → sentence → advance → … → merge → END``.
Sentences come from the rule-based splitter of :mod:`samalign.graphs.sentences` with exact
character offsets (only their offsets are kept in the state); each runs through the unchanged
sentence graph (NER or joint) with the caller's run context, and the results are shifted back
to document offsets. What stays in memory per sentence is its final entities and triplets
(and, by default, its diagnostics without raw model text), never its intermediate state.

Sentences are fanned out in waves of ``wave_size`` ``Send``s: LangGraph's cost per step
grows faster than linearly with the number of tasks in it, so one step with ten thousand
sentences is several times slower than waves of a few hundred. Bound the sentences in flight
with ``config={"max_concurrency": N}``. The compiled graph raises its recursion limit to allow
one wave per two steps (a 1 MB document has about 15,000 sentences: 60 waves of 256).

Progress: every finished sentence emits a custom stream event
``{"document_progress": {"sentence": i, "total": n}}`` (``graph.stream(...,
stream_mode="custom")``); ``samalign extract --graph document`` turns them into a progress
bar.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import operator
from typing import Annotated, Any, Unpack

from langchain_core.runnables import RunnableLambda
from langgraph.config import get_stream_writer
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import get_runtime
from langgraph.types import Send
from pydantic import BaseModel, ConfigDict, Field

from samalign.agents.state import AccumulatedTraceFields, StateUpdate, TextFields
from samalign.errors import BackendError, ConfigError, InputError, SamalignError
from samalign.graphs.compile import CompileOptions, compile_graph
from samalign.graphs.context import RunContext
from samalign.graphs.schemas import DocumentOutput, DocumentResultFields
from samalign.graphs.sentences import iter_sentences
from samalign.types import DroppedTriplet, Entity, Triplet

log = logging.getLogger(__name__)

DEFAULT_SENTENCE_CHARS = 2000
"""Longest piece the splitter hands to the sentence graph (longer sentences are cut)."""

DEFAULT_WAVE_SIZE = 256
"""Sentences fanned out per step."""

RECURSION_LIMIT = 1_000_000
"""Steps allowed per document (two per wave)."""


class SentenceTask(BaseModel):
    """What one ``sentence`` node gets: the sentence and where it is in the document."""

    model_config = ConfigDict(frozen=True)

    index: int
    total: int
    start: int
    text: str


class SentenceResult(BaseModel):
    """One sentence's results, in document offsets.

    Attributes:
        index: Position of the sentence in the document (0-based).
        start: Offset of the sentence in the document.
        end: Offset after the sentence.
        entities: Its entities (document offsets).
        triplets: Its kept triplets (document offsets).
        dropped_triplets: Its triplets removed by the anchor filter (document offsets).
        error: Why the sentence could not be processed, if it could not.
    """

    model_config = ConfigDict(frozen=True)

    index: int
    start: int
    end: int
    entities: list[Entity] = Field(default_factory=list)
    triplets: list[Triplet] = Field(default_factory=list)
    dropped_triplets: list[DroppedTriplet] = Field(default_factory=list)
    error: str | None = None


class _Waves(BaseModel):
    bounds: list[tuple[int, int]] = Field(default_factory=list)
    cursor: int = 0


class _Sentences(BaseModel):
    sentences: Annotated[list[SentenceResult], operator.add] = Field(default_factory=list)


# The fields are the bases' (pydantic orders them from the last base to the first).
class DocumentState(AccumulatedTraceFields, DocumentResultFields, _Sentences, _Waves, TextFields):
    """State of the document graph.

    Attributes:
        text: The document.
        id: The caller's id for the document, passed through unchanged (optional).
        bounds: ``(start, end)`` of every sentence (set by ``split``).
        cursor: Index of the first sentence of the next wave.
        sentences: Per-sentence results (filled by the ``sentence`` nodes).
        entities: All entities, in document offsets and document order.
        triplets: All kept triplets, in document offsets.
        dropped_triplets: All triplets the anchor filter removed.
        errors: ``"sentence i [start, end): reason"`` for each sentence that failed.
        failed_stages: Stages whose answer was unusable (one entry per occurrence).
        diagnostics: Everything the stages noticed (append-only).
        usage: Per-stage model calls, tokens and latency, summed over sentences.
    """

    model_config = ConfigDict(extra="forbid")


class DocumentUpdate(StateUpdate, DocumentResultFields, _Waves):
    """What the document graph's nodes write (only the fields set reach the state)."""

    sentences: list[SentenceResult] = Field(default_factory=list)


def _shift_entity(entity: Entity, offset: int) -> Entity:
    return entity.model_copy(update={"span": entity.span.shifted(offset)})


def _shift_triplet(triplet: Triplet, offset: int) -> Triplet:
    return triplet.model_copy(
        update={
            "head": _shift_entity(triplet.head, offset),
            "tail": _shift_entity(triplet.tail, offset),
        }
    )


def _splitter(max_chars: int) -> RunnableLambda[Any, dict[str, Any]]:
    def split(state: DocumentState) -> dict[str, Any]:
        if not state.text.strip():
            raise InputError("document text is empty or whitespace only")
        bounds = [(s.start, s.end) for s in iter_sentences(state.text, max_chars=max_chars)]
        return DocumentUpdate(bounds=bounds, cursor=0).as_update()

    async def asplit(state: DocumentState) -> dict[str, Any]:
        return split(state)

    return RunnableLambda(split, afunc=asplit, name="split")


def _waves(wave_size: int) -> Any:
    def route(state: DocumentState) -> list[Send] | str:
        total = len(state.bounds)
        stop = min(state.cursor + wave_size, total)
        return [
            Send(
                "sentence",
                SentenceTask(index=i, total=total, start=start, text=state.text[start:end]),
            )
            for i, (start, end) in enumerate(state.bounds[state.cursor : stop], state.cursor)
        ] or "merge"

    return route


def _advance(wave_size: int) -> RunnableLambda[Any, dict[str, Any]]:
    def advance(state: DocumentState) -> dict[str, Any]:
        return DocumentUpdate(cursor=state.cursor + wave_size).as_update()

    async def aadvance(state: DocumentState) -> dict[str, Any]:
        return advance(state)

    return RunnableLambda(advance, afunc=aadvance, name="advance")


def _sentence_node(
    sentence_graph: CompiledStateGraph[Any, RunContext, Any, Any], *, keep_raw: bool
) -> RunnableLambda[Any, dict[str, Any]]:
    from samalign.graphs.results import JointResult  # results imports this module

    def result_of(task: SentenceTask, state: dict[str, Any]) -> dict[str, Any]:
        end = task.start + len(task.text)
        sentence = JointResult.from_state(state)  # an NER graph's state: no triplets
        diagnostics = sentence.diagnostics
        if not keep_raw:
            diagnostics = [d.model_copy(update={"raw": None}) if d.raw else d for d in diagnostics]
        result = SentenceResult(
            index=task.index,
            start=task.start,
            end=end,
            entities=[_shift_entity(e, task.start) for e in sentence.entities],
            triplets=[_shift_triplet(t, task.start) for t in sentence.triplets],
            dropped_triplets=[
                d.model_copy(update={"triplet": _shift_triplet(d.triplet, task.start)})
                for d in sentence.dropped_triplets
            ],
        )
        get_stream_writer()({"document_progress": {"sentence": task.index, "total": task.total}})
        return DocumentUpdate(
            sentences=[result],
            diagnostics=diagnostics,
            usage=sentence.usage,
            failed_stages=sentence.failed_stages,
        ).as_update()

    def failed(task: SentenceTask, err: SamalignError) -> dict[str, Any]:
        if isinstance(err, ConfigError | BackendError):
            raise err
        end = task.start + len(task.text)
        log.warning("sentence %d [%d, %d) failed: %s", task.index, task.start, end, err)
        get_stream_writer()({"document_progress": {"sentence": task.index, "total": task.total}})
        failure = SentenceResult(
            index=task.index, start=task.start, end=end, error=f"{type(err).__name__}: {err}"
        )
        return DocumentUpdate(sentences=[failure]).as_update()

    def sync(task: SentenceTask) -> dict[str, Any]:
        context = get_runtime().context
        try:  # a fresh contextvars context, as in the async path
            state = contextvars.Context().run(
                sentence_graph.invoke, {"text": task.text}, context=context
            )
        except SamalignError as err:
            return failed(task, err)
        return result_of(task, state)

    async def asynchronous(task: SentenceTask) -> dict[str, Any]:
        context = get_runtime().context
        try:
            # A fresh contextvars context: the sentence graph runs as its own top-level run
            # instead of a child of this node (inheriting the parent's config and callbacks
            # costs ~10 ms per sentence); cancelling this node still cancels it.
            run = asyncio.create_task(
                sentence_graph.ainvoke({"text": task.text}, context=context),
                context=contextvars.Context(),
            )
            state = await run
        except SamalignError as err:
            return failed(task, err)
        return result_of(task, state)

    return RunnableLambda(sync, afunc=asynchronous, name="sentence")


def _merge(state: DocumentState) -> dict[str, Any]:
    ordered = sorted(state.sentences, key=lambda r: r.index)
    return DocumentUpdate(
        entities=[e for r in ordered for e in r.entities],
        triplets=[t for r in ordered for t in r.triplets],
        dropped_triplets=[d for r in ordered for d in r.dropped_triplets],
        errors=[f"sentence {r.index} [{r.start}, {r.end}): {r.error}" for r in ordered if r.error],
    ).as_update()


async def _amerge(state: DocumentState) -> dict[str, Any]:
    return _merge(state)


DocumentGraph = CompiledStateGraph[DocumentState, RunContext, Any, Any]


def build_document_graph(
    sentence_graph: CompiledStateGraph[Any, RunContext, Any, Any],
    *,
    max_sentence_chars: int = DEFAULT_SENTENCE_CHARS,
    wave_size: int = DEFAULT_WAVE_SIZE,
    keep_raw_diagnostics: bool = False,
    **compile: Unpack[CompileOptions],
) -> DocumentGraph:
    """Build a graph that runs ``sentence_graph`` over every sentence of a long document.

    Args:
        sentence_graph: A compiled sentence graph (``build_ner_graph`` or
            ``build_joint_graph``), used unchanged.
        max_sentence_chars: Longest piece handed to the sentence graph; longer sentences are
            cut at whitespace (keep it at or below the sentence graph's ``max_text_chars``).
        wave_size: Sentences fanned out per step.
        keep_raw_diagnostics: Keep the raw model text in diagnostics (off: bounded memory on
            large documents).
        **compile: ``checkpointer``, ``name`` (default ``samalign_document``) and ``output``
            (:class:`~samalign.graphs.compile.CompileOptions`): ``state`` (default) returns the
            whole state (with ``bounds`` and per-sentence ``sentences``); ``result`` only the
            :class:`DocumentOutput` fields.

    Returns:
        A compiled graph. Invoke it with ``{"text": document}``, the same ``context`` as the
        sentence graph and ``config={"max_concurrency": N}``; the result's ``entities`` and
        ``triplets`` have document offsets, ``sentences`` has per-sentence results and
        ``errors`` lists sentences that failed (the others still count).

    Raises:
        ConfigError: If ``max_sentence_chars`` or ``wave_size`` is not positive.
    """
    if max_sentence_chars < 1:
        raise ConfigError("max_sentence_chars must be at least 1")
    if wave_size < 1:
        raise ConfigError("wave_size must be at least 1")

    def wire(graph: StateGraph[Any, RunContext, Any, Any]) -> str:
        graph.add_node(
            "sentence",
            _sentence_node(sentence_graph, keep_raw=keep_raw_diagnostics),
            input_schema=SentenceTask,
        )
        graph.add_node("split", _splitter(max_sentence_chars))
        graph.add_node("advance", _advance(wave_size))
        graph.add_node("merge", RunnableLambda(_merge, afunc=_amerge, name="merge"))
        graph.add_edge(START, "split")
        graph.add_conditional_edges("split", _waves(wave_size), ["sentence", "merge"])
        graph.add_edge("sentence", "advance")
        graph.add_conditional_edges("advance", _waves(wave_size), ["sentence", "merge"])
        return "merge"

    compiled = compile_graph(DocumentState, DocumentOutput, wire, compile, name="samalign_document")
    return compiled.with_config(recursion_limit=RECURSION_LIMIT)


__all__ = [
    "DEFAULT_SENTENCE_CHARS",
    "DEFAULT_WAVE_SIZE",
    "DocumentGraph",
    "DocumentState",
    "SentenceResult",
    "SentenceTask",
    "build_document_graph",
]
