"""``samalign extract`` on one machine: one JSONL output, one line per input record, resumable.

The output ``OUT`` has exactly one line per input record (every non-blank input line), in input
order: its k-th line answers the k-th record, keyed by that position — never by id, so a
repeated id keeps its own line (an error record, see :mod:`samalign.batch.records`) and is
never confused with the first. This is the same rule as the Ray engine's shards
(:mod:`samalign.batch.ray_job`), and both engines share the readers, the job fingerprint, the
manifest and lock (:mod:`samalign.batch.outputs`) and the rule for what a resume redoes
(:func:`redo`).

Resuming (rerunning the same command) works from what ``OUT`` holds:

* ``OUT.samalign.json`` must match this job's configuration, else the run is refused (``fresh``
  starts over); a second run on the same ``OUT`` is refused while the first holds its lock;
* a partial last line (a write killed half-way) is cut off; every complete line whose id is the
  id of the record at its position is kept; a line naming another id means the input changed,
  and the run is refused;
* the records after the last kept line are run and appended, in order;
* when a line in the middle must be redone — a damaged line, or with ``retry_errors`` a record
  whose model call failed — the output is rebuilt in input order in ``OUT.partial`` (kept lines
  copied, redone ones run) and renamed over ``OUT`` when complete. ``OUT.partial`` is itself
  resumable, so a run killed while rebuilding loses nothing either.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

from samalign.batch.job import ExtractJob
from samalign.batch.jsonl import cut_partial_tail, scan_lines
from samalign.batch.outputs import (
    JobSummary,
    check_output_path,
    claim_output,
    manifest_path,
    redo,
    sync_folder,
)
from samalign.batch.records import (
    InputFormat,
    InputRecord,
    JsonlWriter,
    OutputRecord,
    check_input_file,
    read_records,
)
from samalign.batch.run import run_records
from samalign.errors import ConfigError, InputError
from samalign.graphs import RunContext
from samalign.serving.models import StageModels

Entry = tuple[str, bool] | None
"""What one output line holds: its id and whether it is an error record (``None``: damaged)."""


LocalSummary = JobSummary
"""What a local run did (records, resumed, ran, errors, seconds)."""


def partial_path(out: Path) -> Path:
    """Where an output being rebuilt is written: ``OUT.partial``."""
    return out.with_name(out.name + ".partial")


def local_manifest(job: ExtractJob) -> dict[str, Any]:
    """The manifest of a local run's output (see :mod:`samalign.batch.outputs`)."""
    return {"engine": "local", "fingerprint": job.fingerprint(), "output_format": "jsonl"}


def _entries(path: Path) -> list[Entry]:
    cut_partial_tail(path)
    entries: list[Entry] = []
    for _, value in scan_lines(path):
        if isinstance(value, dict) and isinstance(value.get("id"), str):
            entries.append((value["id"], value.get("error") is not None))
        else:
            entries.append(None)
    return entries


class _Lines:
    """The raw lines of the old output, read in step with the positions being rebuilt."""

    def __init__(self, path: Path) -> None:
        self._scan = scan_lines(path)
        self._next = 0

    def get(self, position: int) -> bytes:
        raw = b""
        while self._next <= position:
            raw, _ = next(self._scan)
            self._next += 1
        return raw

    def close(self) -> None:
        close = getattr(self._scan, "close", None)  # a generator: closing it closes the file
        if close is not None:
            close()


Action = Literal["skip", "copy", "run"]


class _Plan:
    """Decides, position by position, what to do with each input record (see module docs)."""

    def __init__(self, out: Path, *, retry_errors: bool) -> None:
        self.out = out
        self.retry_errors = retry_errors
        self.existing = _entries(out) if out.exists() else []
        partial = partial_path(out)
        self.rebuild = (
            partial.exists()
            or any(e is None for e in self.existing)
            or (retry_errors and any(e is not None and e[1] for e in self.existing))
        )
        self.target: list[Entry] = self.existing
        if self.rebuild:
            self.target = _entries(partial) if partial.exists() else []
            if any(e is None for e in self.target):  # damaged: rebuild from the start
                partial.unlink()
                self.target = []
        self.resumed = 0
        self.errors = 0
        self.seen = 0

    def _check(self, entry: Entry, record: InputRecord, position: int) -> None:
        if entry is not None and entry[0] != record.id:
            raise ConfigError(
                f"{self.out} line {position + 1} answers id {entry[0]!r}, but the input's record "
                f"there is {record.id!r}: the input changed since {self.out} was written. Rerun "
                "with the input it was written from, pass --fresh to start over, or use "
                "another --out"
            )

    def action(self, position: int, record: InputRecord) -> Action:
        self.seen = position + 1
        if position < len(self.target):
            entry = self.target[position]
            self._check(entry, record, position)
            self._count(entry)
            return "skip"
        if self.rebuild and position < len(self.existing):
            entry = self.existing[position]
            self._check(entry, record, position)
            if entry is not None and not redo(
                record.error, "error" if entry[1] else None, retry_errors=self.retry_errors
            ):
                self._count(entry)
                return "copy"
        return "run"

    def _count(self, entry: Entry) -> None:
        self.resumed += 1
        self.errors += bool(entry and entry[1])

    def check_complete(self) -> None:
        longest = max(len(self.existing), len(self.target))
        if self.seen < longest:
            raise ConfigError(
                f"{self.out} has {longest} line(s) but the input has {self.seen} record(s): the "
                f"input changed since {self.out} was written. Pass --fresh to start over, or "
                "use another --out"
            )


async def run_local_extract(
    job: ExtractJob,
    source: str | Path,
    out: Path | None,
    *,
    fmt: InputFormat = "auto",
    retry_errors: bool = False,
    fresh: bool = False,
    models: StageModels | None = None,
    progress: bool = False,
    stdout: IO[str] | None = None,
    cache: Any = None,
) -> LocalSummary:
    """Run ``job`` over one input (a file or ``-``) in this process (see the module docs).

    Args:
        job: What to run.
        source: A JSONL or plain-text file, or ``-`` for stdin.
        out: The output JSONL (resumed if it exists), or ``None`` to write to ``stdout``.
        fmt: The input format (``auto``: by name and first line).
        retry_errors: Also redo records whose earlier line has an error.
        fresh: Discard what ``out`` holds and start over.
        models: The stage models (default: built from the job's backend, closed at the end).
        progress: Show progress bars on stderr.
        stdout: Where to write without ``out`` (default: ``sys.stdout``).
        cache: A stage-answer cache for the run context (see ``RunContext.cache``).

    Raises:
        ConfigError: ``out`` is the input or not a regular file, holds another job's output or
            the output of another input, or another run is writing it.
        InputError: The input cannot be read.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    check_input_file(source)
    if out is not None:
        check_output_path(out, [source])
    own_models = models is None
    stage_models: StageModels | None = models
    claim = None
    try:
        if out is not None:  # claimed first: a second run is refused before models load
            partial = partial_path(out)

            def clear() -> None:
                for path in (out, partial):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()

            claim = claim_output(
                manifest_path(out),
                local_manifest(job),
                label=str(out),
                has_output=lambda: (out.exists() and out.stat().st_size > 0) or partial.exists(),
                fresh=fresh,
                clear=clear,
            )
        if stage_models is None:
            stage_models = job.build_models()
        summary = await _run(
            job,
            source,
            out,
            stage_models,
            fmt=fmt,
            retry_errors=retry_errors,
            progress=progress,
            stdout=stdout,
            tqdm=tqdm,
            cache=cache,
        )
    finally:
        if claim is not None:
            claim.release()
        if own_models and stage_models is not None:
            stage_models.close()
    summary.seconds = time.perf_counter() - started
    return summary


async def _run(
    job: ExtractJob,
    source: str | Path,
    out: Path | None,
    models: StageModels,
    *,
    fmt: InputFormat,
    retry_errors: bool,
    progress: bool,
    stdout: IO[str] | None,
    tqdm: Any,
    cache: Any,
) -> LocalSummary:
    plan = _Plan(out, retry_errors=retry_errors) if out is not None else None
    old = _Lines(out) if out is not None and plan is not None and plan.rebuild else None
    target = None if out is None or plan is None else partial_path(out) if plan.rebuild else out
    if target is None:
        handle: IO[str] = stdout or sys.stdout
    else:
        try:
            handle = open(target, "a", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as err:
            raise InputError(f"cannot write {target}: {err.strerror or err}") from None
    writer = JsonlWriter(handle)
    order: deque[tuple[Action, int]] = deque()
    summary = LocalSummary()
    bar = tqdm(desc="extract", unit="rec", disable=not progress, file=sys.stderr)
    sentence_bar = (
        tqdm(desc="sentences", unit="sent", disable=not progress, file=sys.stderr, position=1)
        if job.graph == "document"
        else None
    )

    def on_event(event: object) -> None:
        if sentence_bar is not None and isinstance(event, dict) and "document_progress" in event:
            sentence_bar.update(1)

    def pending() -> Iterator[InputRecord]:
        for position, record in enumerate(read_records(source, fmt=fmt)):
            action: Action = "run" if plan is None else plan.action(position, record)
            if action == "skip":  # a prefix already in the target: nothing to write
                bar.update(1)
                continue
            order.append((action, position))
            if action == "run":
                yield record

    def flush_kept() -> None:
        while order and order[0][0] == "copy":
            _, position = order.popleft()
            if old is not None:
                handle.write(old.get(position).decode("utf-8"))
            bar.update(1)

    def write(result: OutputRecord) -> None:
        flush_kept()
        order.popleft()
        writer.write(result)
        summary.ran += 1
        summary.errors += result.error is not None
        bar.update(1)

    graph = job.build_graph()
    context = RunContext(domain=job.domain, models=models, cache=cache)
    failed: BaseException | None = None
    try:
        async for result in run_records(
            graph,
            context,
            pending(),
            concurrency=job.concurrency,
            on_event=on_event if sentence_bar is not None else None,
        ):
            write(result)
        flush_kept()
        if plan is not None:
            plan.check_complete()
    except BaseException as err:
        failed = err
        raise
    finally:
        bar.close()
        if sentence_bar is not None:
            sentence_bar.close()
        if old is not None:
            old.close()
        if target is not None:
            handle.flush()
            with contextlib.suppress(OSError):
                os.fsync(handle.fileno())
            handle.close()
        if failed is None and out is not None and target is not None and target != out:
            os.replace(target, out)
            sync_folder(out.parent)
    if plan is not None:
        summary.resumed = plan.resumed
        summary.errors += plan.errors
    summary.records = summary.resumed + summary.ran
    return summary


__all__ = [
    "LocalSummary",
    "local_manifest",
    "partial_path",
    "run_local_extract",
]
