"""IEPile NER records (zjunlp/IEPile), in the instruction form or the raw form (JSON Lines).

* Instruction form (``train.json``): ``{"task": "NER", "instruction": "<JSON string with
  'instruction', 'schema' (a batch of entity types) and 'input'>", "output": "<JSON string
  mapping every schema type to a list of mention strings>"}``. The record asks about its
  ``schema`` (types with an empty list are explicit negatives).
* Raw form (``sample.json``): ``{"text": ..., "entity": [{"entity": ..., "entity_type": ...}]}``;
  the label set is the ``schema`` argument (IEPile's ``schema.json``, first line) plus the
  types seen.

IEPile's label set is closed (``label_set``: every schema type seen). Relation records
(``task: "RE"``, or raw records with ``relation``) carry triples of strings without entity
types or offsets and are refused: samalign's relation data is SpERT or CrossRE.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from samalign.datasets.files import (
    json_lines,
    loads,
    mention_list,
    read_text,
    str_field,
    unicode_text,
)
from samalign.datasets.records import DataFile, EntityMention, Origin, Record, unique_ids
from samalign.errors import InputError, quoted

_RE_REFUSED = (
    "IEPile relation records (triples of strings, no entity types or offsets) are not read; "
    "use IEPile's NER files, and SpERT or CrossRE data for relations (docs/data.md)"
)


def _instruction(rec: dict[str, Any], where: str) -> tuple[str, list[EntityMention], list[str]]:
    instruction = str_field(rec, "instruction", where)
    try:
        inner = loads(instruction, f"{where}: field 'instruction'")
    except json.JSONDecodeError:
        raise InputError(f"{where}: field 'instruction' is not a JSON string") from None
    if not isinstance(inner, dict):
        raise InputError(f"{where}: field 'instruction' must decode to an object")
    schema, text = inner.get("schema"), inner.get("input")
    if not isinstance(schema, list) or not all(isinstance(s, str) for s in schema):
        raise InputError(f"{where}: the instruction's 'schema' must be a list of type names")
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: the instruction's 'input' must be a non-empty string")
    unicode_text(text, "the instruction's 'input'", where)
    if "output" not in rec:
        raise InputError(
            f"{where}: field 'output' is missing (test-split records have no gold output)"
        )
    raw_output = rec["output"]
    try:
        output = (
            loads(raw_output, f"{where}: field 'output'")
            if isinstance(raw_output, str)
            else raw_output
        )
    except json.JSONDecodeError:
        raise InputError(f"{where}: field 'output' is not a JSON string") from None
    if not isinstance(output, dict):
        raise InputError(f"{where}: field 'output' must be a JSON object mapping types to lists")
    unknown = sorted(set(output) - set(schema))
    if unknown:
        raise InputError(
            f"{where}: 'output' uses types {quoted(unknown, 200)} that are not in the schema"
        )
    mentions = [
        EntityMention(type=type_, text=m)
        for type_ in schema
        for m in mention_list(output.get(type_, []), where, f"output[{quoted(type_)}]")
    ]
    return text, mentions, schema


def _raw(rec: dict[str, Any], where: str) -> tuple[str, list[EntityMention]]:
    text = str_field(rec, "text", where)
    entities = rec.get("entity")
    if not isinstance(entities, list):
        raise InputError(f"{where}: field 'entity' must be a list of {{entity, entity_type}}")
    mentions: list[EntityMention] = []
    for i, ent in enumerate(entities):
        if (
            not isinstance(ent, dict)
            or not isinstance(ent.get("entity"), str)
            or not isinstance(ent.get("entity_type"), str)
        ):
            raise InputError(
                f"{where}: entity {i} must be an object with string 'entity', 'entity_type'"
            )
        if ent["entity"].strip():
            mentions.append(EntityMention(type=ent["entity_type"], text=ent["entity"].strip()))
    return text, mentions


def read_iepile(path: str | Path, *, schema: Sequence[str] | None = None) -> DataFile:
    """Read IEPile NER JSON Lines (instruction form or raw form).

    Args:
        path: The JSONL file.
        schema: The label set for raw-form records (IEPile's ``schema.json`` first line);
            instruction-form records carry their own schema.

    Returns:
        One record per line (ids: the record's ``id``, else ``<stem>:<line>``).

    Raises:
        InputError: A line is malformed: the instruction is not a JSON string with
            ``schema`` and ``input``, the output is not a JSON object of lists, a raw record
            lacks ``text``/``entity``, or the record is a relation record.
    """
    file = Path(path)
    records: list[Record] = []
    labels: dict[str, None] = dict.fromkeys(schema or ())
    for number, rec in json_lines(file, read_text(file)):
        where = f"{file}:{number}"
        if rec.get("task") == "RE" or "relation" in rec:
            raise InputError(f"{where}: {_RE_REFUSED}")
        asked: list[str] = []
        if "instruction" in rec:
            text, mentions, asked = _instruction(rec, where)
            labels.update(dict.fromkeys(asked))
        elif "text" in rec:
            text, mentions = _raw(rec, where)
            labels.update(dict.fromkeys(m.type for m in mentions))
        else:
            raise InputError(
                f"{where}: expected IEPile fields 'instruction' (+ 'output') or 'text'"
            )
        source = str(rec["id"]) if rec.get("id") else None
        records.append(
            Record(
                id=source or f"{file.stem}:{number}",
                text=text,
                entities=tuple(dict.fromkeys(mentions)),
                asked=tuple(asked),
                source_id=source,
                origin=Origin(file=str(file), index=len(records), line=number),
            )
        )
    if not labels:
        raise InputError(f"{file}: no entity types found; pass the schema for raw records")
    return DataFile(
        path=file, format="iepile", records=tuple(unique_ids(records)), label_set=tuple(labels)
    )


__all__ = ["read_iepile"]
