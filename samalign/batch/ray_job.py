"""``samalign extract --engine ray``: a job over many input files on a Ray cluster, exactly once.

The driver reads the inputs with the same readers (and so the same ids, error records and
duplicate-id rule) as ``samalign extract``, numbers every record in input order and cuts the
sequence into *shards* of ``shard_size`` records. Records that could not be read become error
rows at once; the others go through a Ray Data ``map_batches`` with
:class:`~samalign.batch.ray_stage.ExtractStage` actors. The driver collects the output rows and
writes each shard, in input order, when its last row arrives: to ``part-NNNNN.parquet`` (or
``.jsonl``) through a temporary file, synced and renamed, so a shard file is either complete or
absent. ``_samalign_job.json`` in the output folder records the job's fingerprint and the input
plan (:mod:`samalign.batch.outputs`, shared with the local engine, which is also the folder's
lock: one run at a time); a rerun with the same inputs and job skips every shard already
written (resume after a crash or ``kill -9``), and refuses an output folder written by another
job or other inputs (``fresh`` deletes the shards and starts over).

Every input record is accounted once, keyed by its position (so a duplicate id keeps its own
error row): a record whose Ray task died more often than ``max_task_retries`` becomes an error
row too, instead of failing the job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from samalign.batch.job import ExtractJob
from samalign.batch.outputs import (
    JobSummary,
    check_output_path,
    claim_output,
    redo,
    write_atomic,
)
from samalign.batch.records import (
    InputFormat,
    InputRecord,
    OutputRecord,
    check_input_file,
    output_line,
    read_inputs,
)
from samalign.batch.rows import rows_table, table_outputs
from samalign.errors import BackendError, ConfigError, InputError

log = logging.getLogger(__name__)

OutputFormat = Literal["parquet", "jsonl"]
MANIFEST = "_samalign_job.json"
_SEQ = "_samalign_seq"


class RayOptions(BaseModel):
    """How the job runs on Ray.

    Attributes:
        address: Ray cluster address (``auto``, ``ray://host:10001``); ``None``: start a local
            cluster in this process (or use the one already initialised).
        num_cpus: CPUs of a local cluster (default: the machine's, at least what the actors
            ask for).
        actors: Actors running the stage (default: one per server, else 1).
        actor_cpus: CPUs each actor reserves.
        actor_gpus: GPUs each actor reserves (in-process backend on a GPU: 1).
        batch_size: Records per ``map_batches`` call.
        shard_size: Records per output shard (the unit of resume).
        output_format: ``parquet`` or ``jsonl`` shards.
        max_task_retries: Retries of a batch whose actor died (then its records are error rows).
        progress: Show a progress bar on stderr.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str | None = None
    num_cpus: int | None = Field(default=None, ge=1)
    actors: int | None = Field(default=None, ge=1)
    actor_cpus: float = Field(default=1.0, ge=0)
    actor_gpus: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=256, ge=1)
    shard_size: int = Field(default=1024, ge=1)
    output_format: OutputFormat = "parquet"
    max_task_retries: int = Field(default=3, ge=0)
    progress: bool = True


@dataclass
class RaySummary(JobSummary):
    """What a run did (the counts of :class:`~samalign.batch.outputs.JobSummary`, plus).

    Attributes:
        shards: Output shards.
        failed_tasks: Shards with records whose Ray task died too often.
    """

    shards: int = 0
    failed_tasks: list[str] = field(default_factory=list)


def shard_path(out: Path, index: int, fmt: OutputFormat) -> Path:
    """The file of shard ``index``."""
    return out / f"part-{index:05d}.{fmt}"


def _plan_hash(records: Sequence[InputRecord]) -> str:
    digest = hashlib.sha256()
    for record in records:
        digest.update(record.id.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()[:16]


def write_shard(path: Path, records: Sequence[OutputRecord], fmt: OutputFormat) -> None:
    """Write one shard atomically (temporary file, fsync, rename)."""
    if fmt == "jsonl":

        def write(temp: Path) -> None:
            with open(temp, "w", encoding="utf-8") as handle:
                for record in records:
                    handle.write(output_line(record) + "\n")

    else:
        import pyarrow.parquet as pq

        table = rows_table(records)

        def write(temp: Path) -> None:
            pq.write_table(table, temp)

    write_atomic(path, write)


def read_shard(path: Path) -> list[OutputRecord]:
    """The output records of one shard file (Parquet or JSONL).

    Raises:
        InputError: The file cannot be read.
    """
    try:
        if path.suffix == ".jsonl":
            with open(path, encoding="utf-8") as handle:
                # json.loads, not pydantic's parser: it reads a lone surrogate's escape back
                return [
                    OutputRecord.model_validate(json.loads(line)) for line in handle if line.strip()
                ]
        import pyarrow.parquet as pq

        return table_outputs(pq.read_table(path))
    except (OSError, ValueError, RecursionError) as err:
        raise InputError(
            f"cannot read output shard {path}: {type(err).__name__}: {str(err)[:300]}; delete "
            "it (it is redone) or pass --fresh"
        ) from None


def read_output(out: str | Path) -> Iterator[OutputRecord]:
    """Every output record of a finished (or partial) run, in input order."""
    folder = Path(out)
    parts = sorted(p for p in folder.glob("part-*") if p.suffix in (".parquet", ".jsonl"))
    for part in parts:
        yield from read_shard(part)


def _manifest(
    job: ExtractJob, inputs: Sequence[str], records: Sequence[InputRecord], options: RayOptions
) -> dict[str, Any]:
    return {
        "fingerprint": job.fingerprint(),
        "inputs": [str(i) for i in inputs],
        "records": len(records),
        "plan": _plan_hash(records),
        "shard_size": options.shard_size,
        "output_format": options.output_format,
    }


def _shard_files(out: Path) -> list[Path]:
    return [p for p in out.glob("part-*") if p.suffix in (".parquet", ".jsonl", ".tmp")]


def _clear(out: Path) -> None:
    """Delete a folder's output shards (``--fresh``); nothing else in it is touched."""
    for path in _shard_files(out):
        path.unlink()


class _Shard:
    """One shard being assembled: the rows kept from earlier and those still to come."""

    def __init__(self, index: int, first: int, size: int) -> None:
        self.index = index
        self.first = first
        self.rows: dict[int, OutputRecord] = {}
        self.pending: set[int] = set(range(first, first + size))

    def add(self, seq: int, record: OutputRecord) -> bool:
        """Add a row; True if it was pending (False: a duplicate delivery, ignored)."""
        if seq not in self.pending:
            return False
        self.pending.discard(seq)
        self.rows[seq] = record
        return True

    def ordered(self) -> list[OutputRecord]:
        return [self.rows[s] for s in sorted(self.rows)]


def run_ray_extract(
    job: ExtractJob,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    fmt: InputFormat = "auto",
    options: RayOptions | None = None,
    retry_errors: bool = False,
    fresh: bool = False,
    models_factory: Any = None,
) -> RaySummary:
    """Run ``job`` over ``inputs`` on Ray, writing shards to the folder ``out`` (see module docs).

    Args:
        job: What to run.
        inputs: JSONL, plain-text or Parquet files (read on the driver).
        out: The output folder (created; a rerun resumes it).
        fmt: The input format (``auto``: by name and content, per file).
        options: How to run on Ray.
        retry_errors: Also redo the records whose earlier row has an error.
        fresh: Delete the output shards the folder holds and start over.
        models_factory: Builds each actor's stage models (default: the job's backend).

    Raises:
        ConfigError: ``out`` holds another job's output, is not a folder, is an input or holds
            one, or another run is writing it.
        InputError: An input or an existing shard cannot be read.
    """
    options = options or RayOptions()
    started = time.perf_counter()
    folder = Path(out)
    names = [str(i) for i in inputs]
    for name in names:
        if name == "-":
            raise ConfigError("--engine ray reads files, not stdin (-): save the input first")
        check_input_file(name)
    check_output_path(folder, names, folder=True)
    folder.mkdir(parents=True, exist_ok=True)
    records = list(read_inputs(names, fmt=fmt))
    with claim_output(
        folder / MANIFEST,
        _manifest(job, names, records, options),
        label=str(folder),
        has_output=lambda: bool(_shard_files(folder)),
        fresh=fresh,
        clear=lambda: _clear(folder),
    ):
        for stale in folder.glob("*.tmp"):
            stale.unlink()  # a write interrupted by a crash: its shard is redone
        return _run_shards(job, folder, records, options, retry_errors, models_factory, started)


def _run_shards(
    job: ExtractJob,
    folder: Path,
    records: list[InputRecord],
    options: RayOptions,
    retry_errors: bool,
    models_factory: Any,
    started: float,
) -> RaySummary:
    """Resume what the folder holds and run the rest (the manifest is claimed)."""
    size = options.shard_size
    summary = RaySummary(records=len(records), shards=(len(records) + size - 1) // size)
    shards: dict[int, _Shard] = {}
    send: list[int] = []
    unreadable = 0
    for index in range(summary.shards):
        first = index * size
        shard = _Shard(index, first, min(size, len(records) - first))
        path = shard_path(folder, index, options.output_format)
        if path.exists():
            done = read_shard(path)
            ids = [r.id for r in records[first : first + len(done)]]
            if len(done) != len(shard.pending) or [r.id for r in done] != ids:
                raise InputError(
                    f"{path} does not hold the records of shard {index} of these inputs; "
                    "delete it (it is redone) or use a new --out"
                )
            again = [
                redo(records[first + k].error, r.error, retry_errors=retry_errors)
                for k, r in enumerate(done)
            ]
            if not any(again):
                summary.resumed += len(done)
                summary.errors += sum(r.error is not None for r in done)
                continue
            for k, row in enumerate(done):
                if not again[k]:
                    shard.add(first + k, row)
                    summary.resumed += 1
        for seq in sorted(shard.pending):
            record = records[seq]
            if record.error is not None:
                shard.add(seq, OutputRecord(id=record.id, text=record.text, error=record.error))
                unreadable += 1
            else:
                send.append(seq)
        shards[index] = shard

    from tqdm import tqdm

    bar = tqdm(
        total=len(records),
        initial=summary.resumed + unreadable,
        desc="extract (ray)",
        unit="rec",
        disable=not options.progress,
        file=sys.stderr,
    )
    try:
        if send:
            for seq, row in _run_on_ray(job, records, send, options, models_factory):
                target = shards.get(seq // size)
                if target is not None and target.add(seq, row):
                    bar.update(1)
                    summary.ran += 1
                    if not target.pending:
                        summary.errors += _finish(folder, target, options)
                        del shards[target.index]
        lost = (
            f"the Ray task running this record failed {options.max_task_retries + 1} time(s) "
            "(its worker died); rerun with --retry-errors to redo it"
        )
        for shard in list(shards.values()):  # shards of input errors, or rows Ray never gave
            if shard.pending:
                summary.failed_tasks.append(f"shard {shard.index}: {len(shard.pending)} record(s)")
            for seq in sorted(shard.pending):
                shard.add(seq, OutputRecord(id=records[seq].id, text=records[seq].text, error=lost))
                bar.update(1)
            summary.errors += _finish(folder, shard, options)
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _finish(folder: Path, shard: _Shard, options: RayOptions) -> int:
    """Write a complete shard; returns its number of error rows."""
    rows = shard.ordered()
    write_shard(shard_path(folder, shard.index, options.output_format), rows, options.output_format)
    return sum(r.error is not None for r in rows)


def _run_on_ray(
    job: ExtractJob,
    records: Sequence[InputRecord],
    send: Sequence[int],
    options: RayOptions,
    models_factory: Any,
) -> Iterator[tuple[int, OutputRecord]]:
    """Send the records ``send`` (positions) through the stage; yield (position, row)."""
    try:
        import pyarrow as pa
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray Data: pip install 'samalign[ray]'") from None
    from samalign.batch.ray_stage import ExtractStage

    actors = options.actors or max(1, len(job.backend.servers))
    started_here = False
    if not ray.is_initialized():
        try:
            if options.address:
                ray.init(address=options.address, log_to_driver=False)
            else:
                cpus = options.num_cpus or max(
                    os.cpu_count() or 1, int(actors * options.actor_cpus + 0.999)
                )
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        except Exception as err:  # ConnectionError, RuntimeError, ValueError from Ray
            where = f"the Ray cluster at {options.address}" if options.address else "local Ray"
            raise BackendError(
                f"cannot start {where}: {err}; check --ray-address (or drop it for a local cluster)"
            ) from None
        started_here = True
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        context.max_errored_blocks = -1  # a batch whose actor died too often: error rows
        tables = []
        size = options.batch_size
        for start in range(0, len(send), size):
            chunk = send[start : start + size]
            tables.append(
                pa.table(
                    {
                        "id": [records[s].id for s in chunk],
                        "text": [records[s].text for s in chunk],
                        _SEQ: pa.array(chunk, type=pa.int64()),
                    }
                )
            )
        dataset = ray.data.from_arrow(tables)
        kwargs: dict[str, Any] = {"job": job}
        if models_factory is not None:
            kwargs["models_factory"] = models_factory
        with warnings.catch_warnings():
            # Ray 2.6x deprecates passing max_restarts/max_task_retries this way (samalign[ray]
            # pins ray < 2.64, where it still works); without them a batch whose actor dies on
            # every try would be retried forever
            warnings.simplefilter("ignore", DeprecationWarning)
            result = dataset.map_batches(
                ExtractStage,
                fn_constructor_kwargs=kwargs,
                batch_size=size,
                batch_format="pyarrow",
                # one batch per actor at a time: an actor that dies takes only its own batch
                # down (a queued batch would fail with it and spend one of its retries)
                compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
                num_cpus=options.actor_cpus,
                num_gpus=options.actor_gpus or None,
                max_restarts=-1,
                max_task_retries=options.max_task_retries,
            )
        batches: Iterable[Any] = result.iter_batches(batch_format="pyarrow", batch_size=None)
        try:
            for batch in batches:
                seqs = batch.column(_SEQ).to_pylist()
                for seq, record in zip(seqs, table_outputs(batch), strict=True):
                    yield int(seq), record
        except ray.exceptions.RayError as err:  # e.g. the stage could not be built
            first = str(err).strip().splitlines()
            raise BackendError(
                f"the Ray job failed: {first[-1] if first else type(err).__name__}. Finished "
                "shards are kept; fix the cause and rerun the same command to resume."
            ) from err
    finally:
        if started_here:
            ray.shutdown()


__all__ = [
    "MANIFEST",
    "OutputFormat",
    "RayOptions",
    "RaySummary",
    "read_output",
    "read_shard",
    "run_ray_extract",
    "shard_path",
    "write_shard",
]
