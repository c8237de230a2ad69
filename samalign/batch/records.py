r"""Batch input and output records: reading JSONL/plain text robustly, writing JSONL.

Every input line that holds a record yields exactly one :class:`InputRecord`; a line that
cannot be read yields a record with ``error`` set, so the output can account for it. Nothing is
silently dropped or replaced:

* a line that is not UTF-8, not JSON, nested too deeply, longer than :data:`MAX_LINE_BYTES`, not
  an object, or without a string ``text`` is an error record;
* text or an id holding a lone surrogate (a ``\ud800`` escape: not valid Unicode) is an error
  record (its id written with the escape, ``text`` empty);
* ids are strings or integers (an integer id ``7`` is written as ``"7"``); a record without an
  id, or with ``null`` or ``""``, is named ``line-N`` (N: its line number); any other id (a
  float, a boolean, an object, a list, more than :data:`MAX_ID_CHARS` characters) is an error
  record named ``line-N`` whose error quotes the id;
* a repeated id is an error record that keeps the id and names the line that had it first;
* a UTF-8 byte-order mark at the start of the file is ignored.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticSerializationError

from samalign.batch.jsonl import JsonlAppender, encodable, read_lines
from samalign.errors import InputError
from samalign.types import Diagnostic, DroppedTriplet, Entity, StageUsage, Triplet

InputFormat = Literal["auto", "jsonl", "text"]

MAX_LINE_BYTES = 64 * 1024 * 1024
"""Longest input line read (bytes); a longer line is skipped to its end as an error record."""

MAX_ID_CHARS = 1024
"""Longest id accepted."""

BOM = b"\xef\xbb\xbf"
"""The UTF-8 byte-order mark some editors put at the start of a file."""


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
    except RecursionError:
        return InputRecord(
            id=fallback,
            text="",
            line=number,
            error="invalid record: JSON nested too deeply; a record is a flat {id, text} object",
        )
    except ValueError as err:  # e.g. an integer with more digits than Python converts
        return InputRecord(id=fallback, text="", line=number, error=f"invalid JSON: {err}")
    if not isinstance(data, dict):
        return InputRecord(
            id=fallback, text="", line=number, error="a JSONL record must be an object with 'text'"
        )
    return _record_of(data, number, fallback)


def _show(value: Any, limit: int = 60) -> str:
    """A short, printable rendering of an input value for an error message."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= limit else text[:limit] + "…"


def _surrogate_at(text: str) -> int | None:
    """Index of the first lone surrogate in ``text`` (``None`` if it is valid Unicode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return None


def _record_of(data: dict[str, Any], number: int, fallback: str) -> InputRecord:
    """A record from an object's ``id`` (optional: ``fallback``) and ``text`` fields."""
    raw_id = data.get("id")
    if raw_id is None or raw_id == "":
        rid = fallback
    elif isinstance(raw_id, str) or (isinstance(raw_id, int) and not isinstance(raw_id, bool)):
        rid = str(raw_id)
    else:
        kind = "boolean" if isinstance(raw_id, bool) else type(raw_id).__name__
        kind = {"dict": "object", "list": "list", "float": "number with a fraction"}.get(kind, kind)
        return InputRecord(
            id=fallback,
            text="",
            line=number,
            error=f"the id {_show(raw_id)} is a {kind}; ids must be strings or integers "
            f"(this record is named {fallback!r} here); fix the id in the input",
        )
    if len(rid) > MAX_ID_CHARS:
        return InputRecord(
            id=fallback,
            text="",
            line=number,
            error=f"the id has {len(rid)} characters, over the limit of {MAX_ID_CHARS} "
            f"(this record is named {fallback!r} here): {_show(rid)}",
        )
    bad = _surrogate_at(rid)
    if bad is not None:
        return InputRecord(
            id=encodable(rid),
            text="",
            line=number,
            error="the id is not valid Unicode: it holds a lone surrogate "
            f"(\\u{ord(rid[bad]):04x}) at character {bad}, written here as its escape; fix the id "
            "in the input",
        )
    text = data.get("text")
    if not isinstance(text, str):
        return InputRecord(id=rid, text="", line=number, error="record has no string field 'text'")
    bad = _surrogate_at(text)
    if bad is not None:
        return InputRecord(
            id=rid,
            text="",
            line=number,
            error=f"the text is not valid Unicode: it holds a lone surrogate "
            f"(\\u{ord(text[bad]):04x}) at character {bad}; fix or drop the record",
        )
    return InputRecord(id=rid, text=text, line=number)


def _raw_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) of each line; ``None`` for a line over :data:`MAX_LINE_BYTES`.

    A line too long to read is skipped to its end without holding it in memory; a UTF-8
    byte-order mark at the start of the stream is dropped.
    """
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while True:  # skip the rest of the line
                rest = stream.readline(1 << 20)
                if not rest or rest.endswith(b"\n"):
                    break
            yield number, None
            continue
        if number == 1:
            raw = raw.removeprefix(BOM)
        yield number, raw


def check_input_file(source: str | Path) -> None:
    """Fail early unless ``source`` is ``-`` (stdin) or a file that can be read.

    Regular files and pipes (``<(zcat big.gz)``) are accepted; a folder or a device is not.

    Raises:
        InputError: Naming the input and what is wrong with it.
    """
    if str(source) == "-":
        return
    path = Path(source)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InputError(f"input file {source} not found") from None
    except OSError as err:
        raise InputError(f"cannot read input {source}: {err.strerror or err}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"input {source} is a folder; give the path of a JSONL or text file")
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISFIFO(info.st_mode)):
        raise InputError(
            f"input {source} is not a regular file (a device or socket); give the path of a "
            "JSONL or text file, or - for stdin"
        )
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read input {source}: permission denied")


def read_records(
    source: str | Path | IO[bytes],
    *,
    fmt: InputFormat = "auto",
    name: str = "",
    id_prefix: str = "",
    seen: dict[str, str] | None = None,
) -> Iterator[InputRecord]:
    """Read input records from a path, ``-`` (stdin) or a binary stream.

    JSONL lines are ``{"id": ..., "text": ...}`` objects (``id`` defaults to ``line-N``);
    plain text has one document per line (id ``line-N``). Blank lines are skipped. A line that
    cannot be read, an odd id and a duplicate id get an error record (see the module docs).

    Args:
        source: A path, ``-`` or a binary stream.
        fmt: ``auto`` (by the file name, else by the first line), ``jsonl`` or ``text``.
        name: The source's name (for format detection of a stream).
        id_prefix: Put before the ``line-N`` ids of records without an id (several inputs).
        seen: Ids already read (id → where it was first seen), from earlier inputs of the same
            run; updated.

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
    seen = {} if seen is None else seen
    chosen: Literal["jsonl", "text"] | None = None if fmt == "auto" else fmt
    where = f"{name}:" if id_prefix else "line "
    try:
        for number, raw in _raw_lines(stream):
            if raw is None:
                yield _unique(
                    InputRecord(
                        id=f"{id_prefix}line-{number}",
                        text="",
                        line=number,
                        error=f"line is longer than {MAX_LINE_BYTES} bytes; split the record",
                    ),
                    seen,
                    f"{where}{number}",
                )
                continue
            if not raw.strip():
                continue
            if chosen is None:
                chosen = _detect(raw, name)
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                utf16 = number == 1 and raw.startswith((b"\xff\xfe", b"\xfe\xff"))
                yield InputRecord(
                    id=f"{id_prefix}line-{number}",
                    text="",
                    line=number,
                    error=f"line is not valid UTF-8 (byte {err.start})"
                    + ("; the file is UTF-16" if utf16 else "")
                    + "; re-encode the file as UTF-8",
                )
                continue
            if chosen == "jsonl":
                record = _jsonl_record(line, number, id_prefix)
            else:
                record = InputRecord(id=f"{id_prefix}line-{number}", text=line, line=number)
            yield _unique(record, seen, f"{where}{number}")
    finally:
        if stream is not source and name != "-":
            stream.close()


def _unique(record: InputRecord, seen: dict[str, str], where: str) -> InputRecord:
    """The record, or an error record if its id was seen before (``seen``: id → where first).

    A repeated id keeps its own record (the output has one line per input line), with an
    error naming where the id was first seen.
    """
    first = seen.get(record.id)
    if first is not None:
        if record.error is not None:
            return record
        return record.model_copy(
            update={
                "error": f"duplicate id {record.id!r}: {first} has it too; ids must be "
                "unique (this line still gets its own output line, with this error)"
            }
        )
    seen[record.id] = where
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
    path: str | Path, *, id_prefix: str = "", seen: dict[str, str] | None = None
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
    seen = {} if seen is None else seen
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
                yield _unique(_record_of(data, number, fallback), seen, f"{path} row {number}")
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
    seen: dict[str, str] = {}
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


def output_line(record: OutputRecord) -> str:
    r"""One output record as its JSON line (no newline), always valid UTF-8.

    A lone surrogate (in a model's raw text kept in ``diagnostics``) is written as its JSON
    escape (``\ud800``), which reads back as the same string.
    """
    try:
        return record.model_dump_json()
    except PydanticSerializationError:  # a lone surrogate: pydantic will not encode it
        return encodable(json.dumps(record.model_dump(mode="json"), ensure_ascii=False))


class JsonlWriter:
    """Appends output records, one JSON line each, flushed and fsync'ed per record."""

    def __init__(self, handle: IO[str]) -> None:
        self._out = JsonlAppender(handle)

    def write(self, record: OutputRecord) -> None:
        """Write one record (see :func:`output_line`)."""
        self._out.write_line(output_line(record))


__all__ = [
    "MAX_ID_CHARS",
    "MAX_LINE_BYTES",
    "DroppedTripletRecord",
    "EntityRecord",
    "InputFormat",
    "InputRecord",
    "JsonlWriter",
    "OutputRecord",
    "TripletRecord",
    "check_input_file",
    "completed_ids",
    "is_parquet",
    "output_line",
    "read_inputs",
    "read_parquet_records",
    "read_records",
]
