"""The Ray Data stage: a samalign graph as a callable class for ``Dataset.map_batches``.

Each actor builds the job's graph and stage models once (vLLM servers: one client per stage
and server; an in-process backend: the model on the actor's own device), then turns every batch
of ``{id, text}`` rows into output rows (:mod:`samalign.batch.rows`: the fields of
``samalign extract``'s JSONL, nested fields as JSON text, ``error`` a string or null, one fixed
schema). Inside a batch the records run concurrently on the actor's event loop
(:func:`~samalign.batch.run.run_records`, ``job.concurrency`` in flight), so one actor keeps a
server busy. Nothing a batch does raises: a bad row is an error row, and a batch that fails as
a whole (which Ray would turn into a failed dataset) becomes an error row per record::

    import ray
    from samalign.batch.ray_stage import ExtractStage

    ds = ray.data.read_parquet("s3://bucket/docs/")            # columns id, text
    out = ds.map_batches(
        ExtractStage,
        fn_constructor_kwargs={"job": job},                    # an ExtractJob
        batch_size=256,
        batch_format="pyarrow",
        concurrency=4,                                         # actors
        max_restarts=-1,
        max_task_retries=3,                                    # a killed actor's batch is redone
    )
    out.write_parquet("s3://bucket/entities/")

Columns other than ``id`` and ``text`` are passed through unchanged (e.g. a sequence number),
except those named like an output column, which the output replaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from samalign.batch.job import ExtractJob
from samalign.batch.records import InputRecord, OutputRecord
from samalign.batch.rows import ROW_FIELDS, rows_table
from samalign.batch.run import run_records
from samalign.graphs import RunContext
from samalign.serving.models import StageModels

log = logging.getLogger(__name__)

ModelsFactory = Callable[[ExtractJob], StageModels]
"""Builds an actor's stage models from the job (default: :meth:`ExtractJob.build_models`)."""


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _as_table(batch: Any) -> Any:
    import pyarrow as pa

    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, pa.RecordBatch):
        return pa.Table.from_batches([batch])
    if isinstance(batch, Mapping):  # batch_format="numpy": column → array
        return pa.table({k: list(v) for k, v in batch.items()})
    to_arrow = getattr(batch, "to_arrow", None)  # pandas via pyarrow
    if callable(to_arrow):
        return to_arrow()
    return pa.Table.from_pandas(batch, preserve_index=False)


def _input_records(table: Any) -> list[InputRecord]:
    names = set(table.column_names)
    ids = table.column("id").to_pylist() if "id" in names else [None] * table.num_rows
    texts = table.column("text").to_pylist() if "text" in names else [None] * table.num_rows
    records: list[InputRecord] = []
    for number, (raw_id, text) in enumerate(zip(ids, texts, strict=True), start=1):
        rid = str(raw_id) if isinstance(raw_id, str | int) and str(raw_id) else ""
        if not rid:
            records.append(
                InputRecord(id="", text="", line=number, error="row has no 'id' (string or int)")
            )
        elif not isinstance(text, str):
            records.append(
                InputRecord(id=rid, text="", line=number, error="record has no string field 'text'")
            )
        else:
            records.append(InputRecord(id=rid, text=text, line=number))
    return records


class ExtractStage:
    """Runs an :class:`~samalign.batch.job.ExtractJob` over batches (see module docs).

    Args:
        job: The job (or its JSON-able dict).
        models_factory: Builds the stage models (default: the job's backend); for tests and
            custom chat models. Must be picklable when used with Ray.
    """

    def __init__(
        self, job: ExtractJob | Mapping[str, Any], models_factory: ModelsFactory | None = None
    ) -> None:
        self.job = job if isinstance(job, ExtractJob) else ExtractJob.model_validate(job)
        self._graph = self.job.build_graph()
        self._models = (models_factory or ExtractJob.build_models)(self.job)
        self._context = RunContext(domain=self.job.domain, models=self._models)
        self._loop = asyncio.new_event_loop()

    def __call__(self, batch: Any) -> Any:
        """Turn a batch of ``{id, text}`` rows into output rows (a ``pyarrow.Table``)."""
        table = _as_table(batch)
        records = _input_records(table)
        if _running_loop() is None:
            outputs = self._loop.run_until_complete(self._run(records))
        else:  # called from async code (a notebook, an async actor): use a helper thread
            with ThreadPoolExecutor(max_workers=1) as pool:
                outputs = pool.submit(self._loop.run_until_complete, self._run(records)).result()
        keep = [n for n in table.column_names if n not in ("id", "text", *ROW_FIELDS)]
        return rows_table(
            outputs,
            extra={n: table.column(n).to_pylist() for n in keep},
            extra_fields=[table.schema.field(n) for n in keep],
        )

    async def _run(self, records: list[InputRecord]) -> list[OutputRecord]:
        outputs: list[OutputRecord] = []
        try:
            async for result in run_records(
                self._graph, self._context, records, concurrency=self.job.concurrency
            ):
                outputs.append(result)
        except Exception as err:  # one failing batch must not fail the dataset
            log.exception("a batch of %d records failed", len(records))
            message = f"the batch failed: unexpected {type(err).__name__}: {err}"
            outputs += [
                OutputRecord(id=r.id, text=r.text, error=message) for r in records[len(outputs) :]
            ]
        return outputs

    def close(self) -> None:
        """Release in-process engines (server backends have nothing to release)."""
        self._models.close()
        loop = self._loop
        if loop.is_closed() or loop.is_running():
            return
        if _running_loop() is not None:  # another loop runs in this thread: cannot drain ours
            loop.close()
            return
        pending = asyncio.all_tasks(loop)
        for task in pending:  # e.g. the tasks of a batch that failed as a whole
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            self.close()


__all__ = ["ExtractStage", "ModelsFactory"]
