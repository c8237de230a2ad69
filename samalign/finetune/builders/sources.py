"""Readers for the public data formats the builders accept, with per-record validation.

Every reader returns a :class:`SourceDataset`: one :class:`SourceRecord` per passage with its
text, its gold mentions (type, mention string and, when the format has them, character
offsets), the entity types the record asks about, and the gold relations. A malformed record
raises :class:`~samalign.errors.InputError` naming the file, the line or item and the field.

Formats (``fmt``):

* ``pilener`` — SLIMER's Pile-NER JSONL (``doc_question_pairID``, ``tagName``, ``input``,
  ``output``): one line per (passage, type); lines of one passage are grouped. A type asked
  with an empty answer is an explicit negative type of the passage.
* ``uniner`` — UniversalNER conversations (JSON array of ``{"id", "conversations"}``:
  ``Text: ...``, ``I've read this text.``, then ``What describes <type> in the text?`` /
  ``["..."]`` pairs). Conversations over the same text are grouped.
* ``iepile`` — IEPile NER JSONL: the instruction form (``instruction`` is a JSON string with
  ``schema`` and ``input``; ``output`` a JSON string mapping every schema type to a list) or
  the raw form (``text``, ``entity``: ``[{"entity", "entity_type"}]``).
* ``bio`` — CoNLL-style BIO (``token<TAB>tag`` per line, blank line between sentences), e.g.
  CrossNER.
* ``spert`` — SpERT JSON (``tokens``, ``entities`` with token offsets, ``relations`` indexing
  ``entities``), e.g. CoNLL04, SciERC, ADE.

For ``bio`` and ``spert`` the text is the tokens joined by single spaces (the CrossNER
protocol and UniNER's conversion), and the dataset's label set is closed: every record is
fully annotated for every label, so an absent label is a true negative.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from samalign.errors import InputError

SourceFormat = Literal["auto", "pilener", "uniner", "iepile", "bio", "spert"]
"""The formats :func:`read_source` reads (``auto`` detects one from the file)."""

SOURCE_FORMATS: tuple[str, ...] = ("pilener", "uniner", "iepile", "bio", "spert")


@dataclass(frozen=True)
class SourceMention:
    """A gold mention: its type, its string and, when the format gives them, its offsets.

    Attributes:
        type: The entity type as written in the source (e.g. ``programlang``, ``Peop``).
        text: The mention string.
        start: Character offset in the record text (inclusive), or ``None``.
        end: Character offset in the record text (exclusive), or ``None``.
    """

    type: str
    text: str
    start: int | None = None
    end: int | None = None


@dataclass(frozen=True)
class SourceRelation:
    """A gold relation between two mentions of the same record (indices into ``mentions``)."""

    type: str
    head: int
    tail: int


@dataclass(frozen=True)
class SourceRecord:
    """One passage of a source dataset.

    Attributes:
        id: A stable id (``<file stem>:<line or item>`` unless the format carries one).
        text: The passage.
        mentions: Gold mentions in source order.
        asked: Types the record explicitly asks about (positives and explicit negatives), in
            source order; empty when the format only lists positives.
        relations: Gold relations (``spert`` only).
        origin: ``<path>:<line or item>`` for error messages.
    """

    id: str
    text: str
    mentions: tuple[SourceMention, ...]
    asked: tuple[str, ...] = ()
    relations: tuple[SourceRelation, ...] = ()
    origin: str = ""

    @property
    def types(self) -> list[str]:
        """Types with at least one mention, in first-mention order."""
        return list(dict.fromkeys(m.type for m in self.mentions))


@dataclass(frozen=True)
class SourceDataset:
    """Records read from one file.

    Attributes:
        path: The file.
        format: The format it was read as.
        records: The passages.
        label_set: The dataset's closed entity label set (every record fully annotated for
            each), or ``None`` for open-label sets (Pile-NER) where a type a record does not
            mention may still occur in it.
        relation_set: Relation types seen (``spert`` only).
    """

    path: Path
    format: str
    records: list[SourceRecord]
    label_set: tuple[str, ...] | None = None
    relation_set: tuple[str, ...] = ()


def _fail(origin: str, message: str) -> InputError:
    return InputError(f"{origin}: {message}")


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise InputError(f"{path}: input file not found")
    try:
        return path.read_text(encoding="utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror}") from None


def _json_lines(path: Path, raw: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise _fail(f"{path}:{number}", f"not valid JSON ({err.msg})") from None
        except (ValueError, RecursionError):
            raise _fail(f"{path}:{number}", "not a record (JSON nested too deeply)") from None
        if not isinstance(value, dict):
            raise _fail(f"{path}:{number}", f"expected a JSON object, got {type(value).__name__}")
        yield number, value


def _json_array(path: Path, raw: str) -> list[Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except (ValueError, RecursionError):
        raise InputError(f"{path}: not a JSON array of records (nested too deeply)") from None
    if not isinstance(value, list):
        raise InputError(f"{path}: expected a JSON array of records, got {type(value).__name__}")
    return value


def _str_field(rec: dict[str, Any], key: str, origin: str, *, allow_empty: bool = False) -> str:
    if key not in rec:
        raise _fail(origin, f"field {key!r} is missing")
    value = rec[key]
    if not isinstance(value, str):
        raise _fail(origin, f"field {key!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise _fail(origin, f"field {key!r} is empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise _fail(
            origin, f"field {key!r} is not valid Unicode (lone surrogate at character {err.start})"
        ) from None
    return value


def _mention_list(raw: Any, origin: str, what: str) -> list[str]:
    """A JSON list of mention strings (given as a list or a JSON string of a list)."""
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            raise _fail(origin, f"{what} is not a JSON list of strings: {raw[:80]!r}") from None
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise _fail(origin, f"{what} must be a list of strings, got {str(raw)[:80]!r}")
    return [str(v).strip() for v in value if str(v).strip()]


# ------------------------------------------------------------------------------------------
# Pile-NER (SLIMER single-type records)
# ------------------------------------------------------------------------------------------


def read_pilener(path: str | Path) -> SourceDataset:
    """Read SLIMER's Pile-NER JSONL, grouping the per-type lines of each passage.

    Raises:
        InputError: A line is not JSON or lacks ``tagName``/``input``/``output``.
    """
    file = Path(path)
    raw = _read_text(file)
    groups: dict[str, dict[str, Any]] = {}
    for number, rec in _json_lines(file, raw):
        origin = f"{file}:{number}"
        text = _str_field(rec, "input", origin)
        tag = _str_field(rec, "tagName", origin).strip()
        mentions = _mention_list(rec.get("output", "[]"), origin, "field 'output'")
        pair = rec.get("doc_question_pairID")
        doc = str(pair).split(":", 1)[0] if pair is not None else f"line{number}"
        key = f"{doc}\u0000{text}"
        group = groups.setdefault(
            key, {"id": f"pilener:{doc}", "text": text, "asked": [], "m": [], "origin": origin}
        )
        if tag not in group["asked"]:
            group["asked"].append(tag)
        group["m"].extend(SourceMention(tag, m) for m in mentions)
    records = [
        SourceRecord(
            id=g["id"],
            text=g["text"],
            mentions=tuple(dict.fromkeys(g["m"])),
            asked=tuple(g["asked"]),
            origin=g["origin"],
        )
        for g in groups.values()
    ]
    return SourceDataset(path=file, format="pilener", records=_unique_ids(records))


# ------------------------------------------------------------------------------------------
# UniversalNER conversations
# ------------------------------------------------------------------------------------------

_QUESTION = re.compile(r"^What describes (?P<type>.+?) in the text\?$", re.DOTALL)


def read_uniner(path: str | Path) -> SourceDataset:
    """Read UniversalNER conversation records, grouping conversations over the same text.

    Raises:
        InputError: A record has no ``conversations`` list, the first turn is not
            ``Text: ...``, a question is not ``What describes <type> in the text?``, or an
            answer is not a JSON list.
    """
    file = Path(path)
    items = _json_array(file, _read_text(file))
    groups: dict[str, dict[str, Any]] = {}
    for index, item in enumerate(items):
        origin = f"{file}: item {index}"
        if not isinstance(item, dict) or not isinstance(item.get("conversations"), list):
            raise _fail(origin, "expected an object with a 'conversations' list")
        if "id" in item:
            origin = f"{origin} (id {item['id']!r})"
        turns = item["conversations"]
        values: list[str] = []
        for number, turn in enumerate(turns):
            if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
                raise _fail(origin, f"turn {number} must be an object with a string 'value'")
            values.append(turn["value"])
        if not values or not values[0].startswith("Text: "):
            raise _fail(origin, "the first turn must be 'Text: <passage>'")
        text = values[0][len("Text: ") :]
        if not text.strip():
            raise _fail(origin, "the passage after 'Text: ' is empty")
        group = groups.setdefault(
            text,
            {"id": f"uniner:{item.get('id', index)}", "asked": [], "m": [], "origin": origin},
        )
        # turns: text, "I've read this text.", then (question, answer) pairs
        for q in range(2, len(values) - 1, 2):
            match = _QUESTION.match(values[q].strip())
            if match is None:
                raise _fail(
                    origin,
                    f"turn {q} must be 'What describes <type> in the text?', got "
                    f"{values[q][:80]!r}",
                )
            type_ = match.group("type").strip()
            mentions = _mention_list(values[q + 1], origin, f"the answer in turn {q + 1}")
            if type_ not in group["asked"]:
                group["asked"].append(type_)
            group["m"].extend(SourceMention(type_, m) for m in mentions)
    records = [
        SourceRecord(
            id=g["id"],
            text=text,
            mentions=tuple(dict.fromkeys(g["m"])),
            asked=tuple(g["asked"]),
            origin=g["origin"],
        )
        for text, g in groups.items()
    ]
    return SourceDataset(path=file, format="uniner", records=_unique_ids(records))


# ------------------------------------------------------------------------------------------
# IEPile NER
# ------------------------------------------------------------------------------------------


def read_iepile(path: str | Path, *, schema: Sequence[str] | None = None) -> SourceDataset:
    """Read IEPile NER JSONL (instruction form or raw form).

    Args:
        path: The JSONL file.
        schema: The label set for raw-form records (IEPile's ``schema.json`` first line);
            instruction-form records carry their own schema.

    Raises:
        InputError: A line is malformed: the instruction is not a JSON string with
            ``schema`` and ``input``, the output is not a JSON object of lists, or a raw
            record lacks ``text``/``entity``.
    """
    file = Path(path)
    records: list[SourceRecord] = []
    labels: dict[str, None] = dict.fromkeys(schema or ())
    for number, rec in _json_lines(file, _read_text(file)):
        origin = f"{file}:{number}"
        rid = str(rec.get("id") or f"{file.stem}:{number}")
        if "instruction" in rec:
            records.append(_iepile_instruction(rec, origin, rid, labels))
        elif "text" in rec:
            records.append(_iepile_raw(rec, origin, rid, labels))
        else:
            raise _fail(origin, "expected IEPile fields 'instruction' (+ 'output') or 'text'")
    if not labels:
        raise InputError(f"{file}: no entity types found; pass the schema for raw records")
    return SourceDataset(
        path=file, format="iepile", records=_unique_ids(records), label_set=tuple(labels)
    )


def _iepile_instruction(
    rec: dict[str, Any], origin: str, rid: str, labels: dict[str, None]
) -> SourceRecord:
    instruction = _str_field(rec, "instruction", origin)
    try:
        inner = json.loads(instruction)
    except json.JSONDecodeError:
        raise _fail(origin, "field 'instruction' is not a JSON string") from None
    if not isinstance(inner, dict):
        raise _fail(origin, "field 'instruction' must decode to an object")
    schema = inner.get("schema")
    text = inner.get("input")
    if not isinstance(schema, list) or not all(isinstance(s, str) for s in schema):
        raise _fail(origin, "the instruction's 'schema' must be a list of type names")
    if not isinstance(text, str) or not text.strip():
        raise _fail(origin, "the instruction's 'input' must be a non-empty string")
    if "output" not in rec:
        raise _fail(origin, "field 'output' is missing (test-split records have no gold output)")
    raw_output = rec["output"]
    try:
        output = json.loads(raw_output) if isinstance(raw_output, str) else raw_output
    except json.JSONDecodeError:
        raise _fail(origin, "field 'output' is not a JSON string") from None
    if not isinstance(output, dict):
        raise _fail(origin, "field 'output' must be a JSON object mapping types to lists")
    unknown = sorted(set(output) - set(schema))
    if unknown:
        raise _fail(origin, f"'output' uses types {unknown} that are not in the schema")
    mentions: list[SourceMention] = []
    for type_ in schema:
        for m in _mention_list(output.get(type_, []), origin, f"output[{type_!r}]"):
            mentions.append(SourceMention(type_, m))
    labels.update(dict.fromkeys(schema))
    return SourceRecord(
        id=rid,
        text=text,
        mentions=tuple(dict.fromkeys(mentions)),
        asked=tuple(schema),
        origin=origin,
    )


def _iepile_raw(
    rec: dict[str, Any], origin: str, rid: str, labels: dict[str, None]
) -> SourceRecord:
    text = _str_field(rec, "text", origin)
    entities = rec.get("entity")
    if not isinstance(entities, list):
        raise _fail(origin, "field 'entity' must be a list of {entity, entity_type}")
    mentions: list[SourceMention] = []
    for i, ent in enumerate(entities):
        if (
            not isinstance(ent, dict)
            or not isinstance(ent.get("entity"), str)
            or not isinstance(ent.get("entity_type"), str)
        ):
            raise _fail(origin, f"entity {i} must be an object with string 'entity', 'entity_type'")
        if ent["entity"].strip():
            mentions.append(SourceMention(ent["entity_type"], ent["entity"].strip()))
            labels.setdefault(ent["entity_type"], None)
    return SourceRecord(id=rid, text=text, mentions=tuple(dict.fromkeys(mentions)), origin=origin)


# ------------------------------------------------------------------------------------------
# Token-level formats: BIO and SpERT
# ------------------------------------------------------------------------------------------


def _offsets(tokens: Sequence[str]) -> list[int]:
    starts, pos = [], 0
    for tok in tokens:
        starts.append(pos)
        pos += len(tok) + 1
    return starts


def _token_mention(
    tokens: Sequence[str], starts: list[int], type_: str, first: int, last: int
) -> SourceMention:
    start = starts[first]
    end = starts[last] + len(tokens[last])
    return SourceMention(type_, " ".join(tokens[first : last + 1]), start, end)


def read_bio(path: str | Path) -> SourceDataset:
    """Read a CoNLL-style BIO file (CrossNER).

    An ``I-x`` tag that does not continue an ``x`` mention starts a new one (IOB1 habit).

    Raises:
        InputError: A line is not ``token<TAB>tag``, or a tag is not ``O``/``B-x``/``I-x``.
    """
    file = Path(path)
    records: list[SourceRecord] = []
    labels: dict[str, None] = {}
    tokens: list[str] = []
    tags: list[str] = []
    first_line = 1

    def flush() -> None:
        origin = f"{file}:{first_line}"
        starts = _offsets(tokens)
        mentions: list[SourceMention] = []
        current: tuple[int, int, str] | None = None
        for i, tag in enumerate([*tags, "O"]):
            prefix, _, label = tag.partition("-")
            continues = prefix == "I" and current is not None and current[2] == label
            if current is not None and not continues:
                mentions.append(_token_mention(tokens, starts, current[2], current[0], current[1]))
                current = None
            if prefix in ("B", "I") and not continues:
                current = (i, i, label)
                labels.setdefault(label, None)
            elif continues and current is not None:
                current = (current[0], i, label)
        records.append(
            SourceRecord(
                id=f"{file.parent.name}-{file.stem}-{len(records)}",
                text=" ".join(tokens),
                mentions=tuple(mentions),
                origin=origin,
            )
        )

    for number, line in enumerate(_read_text(file).splitlines(), start=1):
        if not line.strip():
            if tokens:
                flush()
                tokens, tags = [], []
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) != 2 or not parts[0]:
            raise _fail(f"{file}:{number}", f"expected 'token<TAB>tag', got {line!r}")
        tag = parts[1].strip()
        if tag != "O" and not re.fullmatch(r"[BI]-\S+", tag):
            raise _fail(f"{file}:{number}", f"tag {tag!r} is not O, B-<type> or I-<type>")
        if not tokens:
            first_line = number
        tokens.append(parts[0])
        tags.append(tag)
    if tokens:
        flush()
    return SourceDataset(path=file, format="bio", records=records, label_set=tuple(sorted(labels)))


def read_spert(path: str | Path) -> SourceDataset:
    """Read SpERT JSON (CoNLL04, SciERC, ADE).

    Raises:
        InputError: An item lacks ``tokens``/``entities``, an entity's token range is outside
            the sentence, or a relation points at an entity that does not exist.
    """
    file = Path(path)
    items = _json_array(file, _read_text(file))
    records: list[SourceRecord] = []
    labels: dict[str, None] = {}
    relation_types: dict[str, None] = {}
    for index, item in enumerate(items):
        origin = f"{file}: item {index}"
        if not isinstance(item, dict):
            raise _fail(origin, f"expected an object, got {type(item).__name__}")
        if "orig_id" in item:
            origin = f"{origin} (orig_id {item['orig_id']!r})"
        tokens = item.get("tokens")
        if (
            not isinstance(tokens, list)
            or not tokens
            or not all(isinstance(t, str) and t for t in tokens)
        ):
            raise _fail(origin, "field 'tokens' must be a non-empty list of non-empty strings")
        entities = item.get("entities")
        if not isinstance(entities, list):
            raise _fail(origin, "field 'entities' must be a list")
        starts = _offsets(tokens)
        mentions: list[SourceMention] = []
        for i, ent in enumerate(entities):
            if not isinstance(ent, dict):
                raise _fail(origin, f"entity {i} must be an object")
            type_, start, end = ent.get("type"), ent.get("start"), ent.get("end")
            if not isinstance(type_, str) or not type_:
                raise _fail(origin, f"entity {i}: field 'type' must be a non-empty string")
            if not (
                isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(tokens)
            ):
                raise _fail(
                    origin,
                    f"entity {i}: token range [{start}, {end}) is not inside the sentence of "
                    f"{len(tokens)} tokens ('end' is exclusive)",
                )
            mentions.append(_token_mention(tokens, starts, type_, start, end - 1))
            labels.setdefault(type_, None)
        relations: list[SourceRelation] = []
        for i, rel in enumerate(item.get("relations") or []):
            if not isinstance(rel, dict):
                raise _fail(origin, f"relation {i} must be an object")
            type_, head, tail = rel.get("type"), rel.get("head"), rel.get("tail")
            if not isinstance(type_, str) or not type_:
                raise _fail(origin, f"relation {i}: field 'type' must be a non-empty string")
            for name, value in (("head", head), ("tail", tail)):
                if not isinstance(value, int) or not 0 <= value < len(mentions):
                    raise _fail(
                        origin,
                        f"relation {i}: '{name}' = {value!r} is not an index into the "
                        f"{len(mentions)} entities",
                    )
            assert isinstance(head, int) and isinstance(tail, int)
            relations.append(SourceRelation(type_, head, tail))
            relation_types.setdefault(type_, None)
        rid = item.get("orig_id", index)
        records.append(
            SourceRecord(
                id=f"{file.stem}:{rid}",
                text=" ".join(tokens),
                mentions=tuple(mentions),
                relations=tuple(relations),
                origin=origin,
            )
        )
    return SourceDataset(
        path=file,
        format="spert",
        records=_unique_ids(records),
        label_set=tuple(sorted(labels)),
        relation_set=tuple(sorted(relation_types)),
    )


# ------------------------------------------------------------------------------------------
# Detection and dispatch
# ------------------------------------------------------------------------------------------


def _unique_ids(records: list[SourceRecord]) -> list[SourceRecord]:
    seen: dict[str, int] = {}
    out: list[SourceRecord] = []
    for rec in records:
        n = seen.get(rec.id, 0)
        seen[rec.id] = n + 1
        if n:
            rec = SourceRecord(
                id=f"{rec.id}#{n}",
                text=rec.text,
                mentions=rec.mentions,
                asked=rec.asked,
                relations=rec.relations,
                origin=rec.origin,
            )
        out.append(rec)
    return out


def detect_format(path: str | Path) -> str:
    """Guess a file's format from its content (see the module docs for the formats).

    Raises:
        InputError: If the file matches none of them.
    """
    file = Path(path)
    raw = _read_text(file)
    head = raw.lstrip()[:4096]
    if head.startswith("["):
        try:
            items = json.loads(raw)
        except (ValueError, RecursionError):
            items = None
        first = items[0] if isinstance(items, list) and items else None
        if isinstance(first, dict):
            if "conversations" in first:
                return "uniner"
            if "tokens" in first:
                return "spert"
    elif head.startswith("{"):
        line = head.splitlines()[0]
        try:
            first = json.loads(line)
        except (ValueError, RecursionError):
            first = None
        if isinstance(first, dict):
            if "tagName" in first:
                return "pilener"
            if "instruction" in first or ("text" in first and "entity" in first):
                return "iepile"
    else:
        lines = [ln for ln in head.splitlines()[:50] if ln.strip()]
        tagged = [ln for ln in lines if len(ln.split("\t" if "\t" in ln else None)) == 2]
        if lines and len(tagged) == len(lines):
            return "bio"
    raise InputError(
        f"{file}: cannot tell the format; pass it explicitly (one of {list(SOURCE_FORMATS)})"
    )


def read_source(
    path: str | Path, fmt: SourceFormat | str = "auto", *, schema: Sequence[str] | None = None
) -> SourceDataset:
    """Read a source dataset in any supported format (see module docs).

    Args:
        path: The file.
        fmt: The format, or ``auto`` to detect it.
        schema: Label set for raw IEPile records.

    Raises:
        InputError: Unknown format, unreadable file or a malformed record (named).
    """
    kind = detect_format(path) if fmt == "auto" else fmt
    if kind == "pilener":
        return read_pilener(path)
    if kind == "uniner":
        return read_uniner(path)
    if kind == "iepile":
        return read_iepile(path, schema=schema)
    if kind == "bio":
        return read_bio(path)
    if kind == "spert":
        return read_spert(path)
    raise InputError(f"unknown source format {fmt!r}; use one of {['auto', *SOURCE_FORMATS]}")


__all__ = [
    "SOURCE_FORMATS",
    "SourceDataset",
    "SourceFormat",
    "SourceMention",
    "SourceRecord",
    "SourceRelation",
    "detect_format",
    "read_bio",
    "read_iepile",
    "read_pilener",
    "read_source",
    "read_spert",
    "read_uniner",
]
