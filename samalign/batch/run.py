"""Run a graph over many records concurrently, in input order, losing none."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from langgraph.graph.state import CompiledStateGraph

from samalign.batch.records import (
    DroppedTripletRecord,
    EntityRecord,
    InputRecord,
    OutputRecord,
    TripletRecord,
)
from samalign.errors import SamalignError, at_least
from samalign.graphs.context import RunContext
from samalign.graphs.results import DocumentResult, JointResult, read_result
from samalign.types import DroppedTriplet, Triplet

log = logging.getLogger(__name__)


def to_output(record: InputRecord, state: Mapping[str, Any]) -> OutputRecord:
    """Flatten a graph result into an output record, checking every span against the text."""
    result = read_result({"text": record.text, **state})
    entities = result.entities
    for entity in entities:
        entity.span.check(record.text)
    triplets: list[Triplet] = []
    dropped: list[DroppedTriplet] = []
    errors: list[str] = []
    if isinstance(result, JointResult | DocumentResult):
        triplets, dropped = result.triplets, result.dropped_triplets
    if isinstance(result, DocumentResult):
        errors = result.errors
    for triplet in (*triplets, *(d.triplet for d in dropped)):
        triplet.head.span.check(record.text)
        triplet.tail.span.check(record.text)
    return OutputRecord(
        id=record.id,
        text=record.text,
        entities=[EntityRecord.of(e) for e in entities],
        triplets=[TripletRecord.of(t) for t in triplets],
        dropped_triplets=[DroppedTripletRecord.of_dropped(d) for d in dropped],
        sentence_errors=list(errors),
        diagnostics=result.diagnostics,
        usage=result.usage,
    )


async def _invoke(
    graph: CompiledStateGraph[Any, RunContext, Any, Any],
    context: RunContext,
    text: str,
    on_event: Callable[[Any], None] | None,
) -> dict[str, Any]:
    if on_event is None:
        state: dict[str, Any] = await graph.ainvoke({"text": text}, context=context)
        return state
    final: dict[str, Any] = {}
    async for mode, chunk in graph.astream(
        {"text": text}, context=context, stream_mode=["custom", "values"]
    ):
        if mode == "custom":
            on_event(chunk)
        elif isinstance(chunk, dict):
            final = chunk
    return final


async def _run_one(
    graph: CompiledStateGraph[Any, RunContext, Any, Any],
    context: RunContext,
    record: InputRecord,
    on_event: Callable[[Any], None] | None = None,
) -> OutputRecord:
    if record.error is not None:
        return OutputRecord(id=record.id, text=record.text, error=record.error)
    try:
        state = await _invoke(graph, context, record.text, on_event)
        return to_output(record, state)
    except SamalignError as err:
        return OutputRecord(id=record.id, text=record.text, error=f"{type(err).__name__}: {err}")
    except Exception as err:  # one bad record must not stop the batch
        log.exception("record %s failed unexpectedly", record.id)
        return OutputRecord(
            id=record.id, text=record.text, error=f"unexpected {type(err).__name__}: {err}"
        )


async def run_records(
    graph: CompiledStateGraph[Any, RunContext, Any, Any],
    context: RunContext,
    records: Iterable[InputRecord],
    *,
    concurrency: int = 8,
    on_event: Callable[[Any], None] | None = None,
) -> AsyncIterator[OutputRecord]:
    """Run ``graph`` over records with bounded concurrency; yield results in input order.

    Every input record yields exactly one output record: a failure (bad input, backend error,
    anything unexpected) becomes the record's ``error``; other records go on.

    Args:
        graph: A compiled samalign graph.
        context: The run context for every record.
        records: Input records (read lazily).
        concurrency: Records in flight at once.
        on_event: Called with every custom stream event of the graph (e.g. the document
            graph's per-sentence progress); ``None``: plain ``ainvoke``.
    """
    at_least("concurrency", concurrency)
    # The semaphore bounds work in flight; the queue is a wider reorder window, so one slow
    # record does not stall the records behind it.
    window = max(4 * concurrency, 64)
    pending: asyncio.Queue[asyncio.Task[OutputRecord] | None] = asyncio.Queue(maxsize=window)
    slots = asyncio.Semaphore(concurrency)

    async def bounded(record: InputRecord) -> OutputRecord:
        async with slots:
            return await _run_one(graph, context, record, on_event)

    async def producer() -> None:
        try:
            for record in records:
                await pending.put(asyncio.create_task(bounded(record)))
        finally:
            await pending.put(None)  # always wake the consumer; errors surface via `feeder`

    feeder = asyncio.create_task(producer())
    try:
        while True:
            task = await pending.get()
            if task is None:
                break
            yield await task
        await feeder
    finally:
        feeder.cancel()
        while not pending.empty():
            leftover = pending.get_nowait()
            if leftover is not None:
                leftover.cancel()


__all__ = ["run_records", "to_output"]
