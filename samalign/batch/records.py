"""Batch input and output records: reading JSONL/plain text robustly, writing and resuming JSONL.

Every input line that holds a record yields exactly one :class:`InputRecord`; a line that
cannot be read (bad UTF-8, bad JSON, no text) yields a record with ``error`` set, so the
output can account for it. Nothing is silently dropped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict

from samalign.batch.jsonl import JsonlAppender, read_lines
from samalign.errors import InputError
from samalign.types import Diagnostic, DroppedTriplet, Entity, StageUsage, Triplet

InputFormat = Literal["auto", "jsonl", "text"]


class InputRecord(BaseModel):
    """One input record (``error`` set if the line could not be read)."""

    model_config = ConfigDict(frozen=True)

    id: str
    text: str
    line: int
    error: str | None = None


class EntityRecord(BaseModel):
    """An entity as written to the output JSONL."""

    start: int
    end: int
    text: str
    label: str | None
    archetype: str | None
    sources: list[str]

    @classmethod
    def of(cls, entity: Entity) -> EntityRecord:
        """Flatten an :class:`~samalign.types.Entity`."""
        return cls(
            start=entity.start,
            end=entity.end,
            text=entity.text,
            label=entity.label,
            archetype=entity.archetype.value if entity.archetype else None,
            sources=list(entity.sources),
        )


class TripletRecord(BaseModel):
    """A relation triplet as written to the output JSONL (arguments with offsets and labels)."""

    head: EntityRecord
    relation: str
    tail: EntityRecord
    sources: list[str]

    @classmethod
    def of(cls, triplet: Triplet) -> TripletRecord:
        """Flatten a :class:`~samalign.types.Triplet`."""
        return cls(
            head=EntityRecord.of(triplet.head),
            relation=triplet.relation,
            tail=EntityRecord.of(triplet.tail),
            sources=list(triplet.sources),
        )


class DroppedTripletRecord(TripletRecord):
    """A triplet the anchor filter removed, with the reason."""

    reason: str

    @classmethod
    def of_dropped(cls, dropped: DroppedTriplet) -> DroppedTripletRecord:
        """Flatten a :class:`~samalign.types.DroppedTriplet`."""
        base = TripletRecord.of(dropped.triplet)
        return cls(**base.model_dump(), reason=dropped.reason)


class OutputRecord(BaseModel):
    """One output line: the record's entities (and triplets), diagnostics and usage, or its error.

    ``triplets`` and ``dropped_triplets`` are written by the joint and document graphs;
    ``sentence_errors`` lists the sentences of a document that failed (document graph; the
    record's other sentences still count).
    """

    id: str
    text: str
    entities: list[EntityRecord] = []
    triplets: list[TripletRecord] = []
    dropped_triplets: list[DroppedTripletRecord] = []
    sentence_errors: list[str] = []
    diagnostics: list[Diagnostic] = []
    usage: dict[str, StageUsage] = {}
    error: str | None = None


def _detect(first: bytes, path: str) -> Literal["jsonl", "text"]:
    if path.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    return "jsonl" if first.lstrip().startswith(b"{") else "text"


def _jsonl_record(line: str, number: int, prefix: str = "") -> InputRecord:
    fallback = f"{prefix}line-{number}"
    try:
        data: Any = json.loads(line)
    except json.JSONDecodeError as err:
        return InputRecord(id=fallback, text="", line=number, error=f"invalid JSON: {err}")
    if not isinstance(data, dict):
        return InputRecord(
            id=fallback, text="", line=number, error="a JSONL record must be an object with 'text'"
        )
    return _record_of(data, number, fallback)


def _record_of(data: dict[str, Any], number: int, fallback: str) -> InputRecord:
    """A record from an object's ``id`` (optional: ``fallback``) and ``text`` fields."""
    raw_id = data.get("id", fallback)
    rid = str(raw_id) if isinstance(raw_id, str | int) and str(raw_id) else fallback
    text = data.get("text")
    if not isinstance(text, str):
        return InputRecord(id=rid, text="", line=number, error="record has no string field 'text'")
    return InputRecord(id=rid, text=text, line=number)


def read_records(
    source: str | Path | IO[bytes],
    *,
    fmt: InputFormat = "auto",
    name: str = "",
    id_prefix: str = "",
    seen: set[str] | None = None,
) -> Iterator[InputRecord]:
    """Read input records from a path, ``-`` (stdin) or a binary stream.

    JSONL lines are ``{"id": ..., "text": ...}`` objects (``id`` defaults to ``line-N``);
    plain text has one document per line (id ``line-N``). Blank lines are skipped. Duplicate
    ids get an error record.

    Args:
        source: A path, ``-`` or a binary stream.
        fmt: ``auto`` (by the file name, else by the first line), ``jsonl`` or ``text``.
        name: The source's name (for format detection of a stream).
        id_prefix: Put before the ``line-N`` ids of records without an id (several inputs).
        seen: Ids already read (from earlier inputs of the same run); updated.

    Raises:
        InputError: If the file cannot be opened.
    """
    if isinstance(source, str | Path):
        if str(source) == "-":
            import sys

            stream: IO[bytes] = sys.stdin.buffer
            name = name or "-"
        else:
            try:
                stream = open(source, "rb")  # noqa: SIM115 - closed below
            except OSError as err:
                raise InputError(f"cannot open input {source}: {err.strerror}") from None
            name = name or str(source)
    else:
        stream = source
    seen = set() if seen is None else seen
    chosen: Literal["jsonl", "text"] | None = None if fmt == "auto" else fmt
    try:
        for number, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            if chosen is None:
                chosen = _detect(raw, name)
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                yield InputRecord(
                    id=f"{id_prefix}line-{number}",
                    text="",
                    line=number,
                    error=f"line is not valid UTF-8 (byte {err.start}); "
                    "re-encode the file as UTF-8",
                )
                continue
            if chosen == "jsonl":
                record = _jsonl_record(line, number, id_prefix)
            else:
                record = InputRecord(id=f"{id_prefix}line-{number}", text=line, line=number)
            yield _unique(record, seen)
    finally:
        if stream is not source and name != "-":
            stream.close()


def _unique(record: InputRecord, seen: set[str]) -> InputRecord:
    """The record, or an error record if its id was seen before (then ``seen`` has it)."""
    if record.id in seen:
        return record.model_copy(
            update={"error": f"duplicate id {record.id!r} (first seen earlier); ids must be unique"}
        )
    seen.add(record.id)
    return record


def is_parquet(path: str | Path) -> bool:
    """Whether ``path`` is a Parquet file (by its name, else by its magic bytes)."""
    if str(path).endswith((".parquet", ".pq")):
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"PAR1"
    except OSError:
        return False


def read_parquet_records(
    path: str | Path, *, id_prefix: str = "", seen: set[str] | None = None
) -> Iterator[InputRecord]:
    """Read input records from a Parquet file with a ``text`` column and an optional ``id``.

    Same rules as JSONL (:func:`read_records`): row N (from 1) without an id gets ``line-N``,
    a row whose ``text`` is not a string and a duplicate id get an error record. Read in
    batches (needs ``pyarrow``, installed with ``samalign[ray]``).

    Raises:
        InputError: The file cannot be read as Parquet or has no ``text`` column.
    """
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(
            f"reading Parquet ({path}) needs pyarrow: pip install 'samalign[ray]'"
        ) from None
    seen = set() if seen is None else seen
    try:
        parquet = pq.ParquetFile(path)
        names = set(parquet.schema_arrow.names)
        if "text" not in names:
            raise InputError(
                f"Parquet input {path} has no 'text' column (columns: {sorted(names)})"
            )
        columns = ["id", "text"] if "id" in names else ["text"]
        number = 0
        for batch in parquet.iter_batches(columns=columns, batch_size=4096):
            for data in batch.to_pylist():
                number += 1
                fallback = f"{id_prefix}line-{number}"
                yield _unique(_record_of(data, number, fallback), seen)
    except InputError:
        raise
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(f"cannot read Parquet input {path}: {err}") from None


def read_inputs(paths: Sequence[str | Path], *, fmt: InputFormat = "auto") -> Iterator[InputRecord]:
    """Read the records of several inputs (JSONL, text or Parquet files) as one stream.

    Ids are unique across all inputs (a repeated id gets an error record, as in one file).
    With more than one input, a record without an id is named ``<path>:line-N``.

    Raises:
        InputError: An input cannot be opened or read.
    """
    seen: set[str] = set()
    for path in paths:
        prefix = f"{path}:" if len(paths) > 1 else ""
        if fmt == "auto" and is_parquet(path):
            yield from read_parquet_records(path, id_prefix=prefix, seen=seen)
        else:
            yield from read_records(path, fmt=fmt, id_prefix=prefix, seen=seen)


def completed_ids(path: Path, *, retry_errors: bool = False) -> set[str]:
    """Ids already written to an output file, for resuming.

    A trailing partial line (an interrupted write) is cut off the file so the run can append.

    Args:
        path: The output JSONL file.
        retry_errors: Leave out ids whose record has an ``error`` (they are redone).

    Raises:
        InputError: If the file cannot be read or repaired.
    """
    done: set[str] = set()
    for data in read_lines(path):
        if isinstance(data, dict) and "id" in data:
            if retry_errors and data.get("error") is not None:
                done.discard(str(data["id"]))
            else:
                done.add(str(data["id"]))
    return done


def finalize_output(path: Path, order: list[str]) -> None:
    """Rewrite a resumed output file in input order, one line per id (the newest wins).

    Damaged lines and lines of ids not in ``order`` are kept at the end rather than lost.
    The file is replaced atomically.
    """
    newest: dict[str, bytes] = {}
    extra: list[bytes] = []
    with open(path, "rb") as handle:
        for raw in handle:
            try:
                data = json.loads(raw)
                newest[str(data["id"])] = raw
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                extra.append(raw)
    wanted = set(order)
    lines = [newest[i] for i in dict.fromkeys(order) if i in newest]
    lines += [raw for i, raw in newest.items() if i not in wanted] + extra
    with open(path, "rb") as handle:
        if handle.read() == b"".join(lines):
            return
    temp = path.with_name(path.name + ".tmp")
    with open(temp, "wb") as handle:
        handle.writelines(lines)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


class JsonlWriter:
    """Appends output records, one JSON line each, flushed and fsync'ed per record."""

    def __init__(self, handle: IO[str]) -> None:
        self._out = JsonlAppender(handle)

    def write(self, record: OutputRecord) -> None:
        """Write one record."""
        self._out.write_line(record.model_dump_json())


__all__ = [
    "DroppedTripletRecord",
    "EntityRecord",
    "InputFormat",
    "InputRecord",
    "JsonlWriter",
    "OutputRecord",
    "TripletRecord",
    "completed_ids",
    "finalize_output",
    "is_parquet",
    "read_inputs",
    "read_parquet_records",
    "read_records",
]
