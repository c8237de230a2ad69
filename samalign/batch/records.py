"""Batch input and output records: reading JSONL/plain text robustly, writing and resuming JSONL.

Every input line that holds a record yields exactly one :class:`InputRecord`; a line that
cannot be read (bad UTF-8, bad JSON, no text) yields a record with ``error`` set, so the
output can account for it. Nothing is silently dropped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict

from samalign.batch.jsonl import JsonlAppender, read_lines
from samalign.errors import InputError
from samalign.types import Diagnostic, DroppedTriplet, Entity, NoiseRecord, StageUsage, Triplet

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
    ``noise`` holds the explorer mentions CCR dropped, with the reason (sentence graphs);
    ``sentence_errors`` lists the sentences of a document that failed (document graph; the
    record's other sentences still count).
    """

    id: str
    text: str
    entities: list[EntityRecord] = []
    triplets: list[TripletRecord] = []
    dropped_triplets: list[DroppedTripletRecord] = []
    noise: list[NoiseRecord] = []
    sentence_errors: list[str] = []
    diagnostics: list[Diagnostic] = []
    usage: dict[str, StageUsage] = {}
    error: str | None = None


def _detect(first: bytes, path: str) -> Literal["jsonl", "text"]:
    if path.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    return "jsonl" if first.lstrip().startswith(b"{") else "text"


def _jsonl_record(line: str, number: int) -> InputRecord:
    fallback = f"line-{number}"
    try:
        data: Any = json.loads(line)
    except json.JSONDecodeError as err:
        return InputRecord(id=fallback, text="", line=number, error=f"invalid JSON: {err}")
    if not isinstance(data, dict):
        return InputRecord(
            id=fallback, text="", line=number, error="a JSONL record must be an object with 'text'"
        )
    raw_id = data.get("id", fallback)
    rid = str(raw_id) if isinstance(raw_id, str | int) and str(raw_id) else fallback
    text = data.get("text")
    if not isinstance(text, str):
        return InputRecord(id=rid, text="", line=number, error="record has no string field 'text'")
    return InputRecord(id=rid, text=text, line=number)


def read_records(
    source: str | Path | IO[bytes], *, fmt: InputFormat = "auto", name: str = ""
) -> Iterator[InputRecord]:
    """Read input records from a path, ``-`` (stdin) or a binary stream.

    JSONL lines are ``{"id": ..., "text": ...}`` objects (``id`` defaults to ``line-N``);
    plain text has one document per line (id ``line-N``). Blank lines are skipped. Duplicate
    ids get an error record.

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
    seen: set[str] = set()
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
                    id=f"line-{number}",
                    text="",
                    line=number,
                    error=f"line is not valid UTF-8 (byte {err.start}); "
                    "re-encode the file as UTF-8",
                )
                continue
            if chosen == "jsonl":
                record = _jsonl_record(line, number)
            else:
                record = InputRecord(id=f"line-{number}", text=line, line=number)
            if record.id in seen:
                record = record.model_copy(
                    update={
                        "error": f"duplicate id {record.id!r} (first seen earlier); "
                        "ids must be unique"
                    }
                )
            seen.add(record.id)
            yield record
    finally:
        if stream is not source and name != "-":
            stream.close()


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
    "read_records",
]
