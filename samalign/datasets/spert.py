"""SpERT JSON files (CoNLL04, SciERC, ADE as distributed by SpERT and PFN).

A file is a JSON array of records ``{"tokens": [...], "entities": [{"type", "start", "end"}],
"relations": [{"type", "head", "tail"}], "orig_id": ...}``: ``end`` is **exclusive** (the span
is ``tokens[start:end]``), ``head`` and ``tail`` index the record's ``entities``, relations are
directed. Entities may nest or overlap (SciERC, ADE). An exact repeat of an entity or relation
in a record is read once (scores are over sets; SciERC's train split repeats 4 relations).

Every record is validated, and the same way for evaluation and training data: a record that
is not an object, lacks ``tokens`` or ``entities`` (or has CrossRE's ``ner`` instead), has a
token span that is empty or runs past the tokens, a relation index outside ``entities``, a type
outside the label set (``ner2idx.json``/``rel2idx.json`` beside the file, when present), or —
when relations are required — no ``relations`` field, raises
:class:`~samalign.errors.InputError` naming the file, the record (index and ``orig_id``), the
field and the fix.

Inclusive ends. Data written with inclusive ends (``tokens[start:end + 1]``, as CrossRE and
DyGIE write them) puts every one-token entity at ``end == start``, and an entity ending on the
last token at ``end == len(tokens)`` … ``+ 1``. Both are refused (an empty span, a span past
the tokens) with a message saying that ``end`` is exclusive and how to fix the data. Since
almost every dataset has one-token entities, an inclusive-end file is refused at its first
one; a file whose every entity spans two or more tokens cannot be told apart and is read as
written.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

from samalign.datasets.files import (
    LabelSet,
    has_relations,
    int_field,
    json_array,
    loads,
    read_text,
)
from samalign.datasets.records import (
    DataFile,
    EntityMention,
    Record,
    RelationMention,
    TokenSpans,
)
from samalign.datasets.relational import SPERT_LAYOUT, RelationReading
from samalign.errors import InputError, quoted

INCLUSIVE_HINT = (
    "'end' is exclusive (the span is tokens[start:end]); if your data uses inclusive ends, "
    "add 1 to every 'end', or read CrossRE-style files ('ner': [start, end, type], inclusive) "
    "with --format crossre"
)


def read_label_map(path: Path) -> list[str] | None:
    """Labels of a ``ner2idx.json``/``rel2idx.json`` file in index order (``None`` if absent).

    Raises:
        InputError: If the file exists but is not a ``{label: index}`` object.
    """
    if not path.is_file():
        return None
    try:
        data = loads(read_text(path), str(path))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: cannot read the label map: {err}") from None
    if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
        raise InputError(f"{path}: expected a JSON object {{label: index}}")
    return [str(k) for k, _ in sorted(data.items(), key=lambda kv: kv[1])]


def _entities(
    data: dict[str, Any], tokens: list[str], where: str, labels: LabelSet
) -> tuple[list[EntityMention], list[int]]:
    """The record's unique entities and, per listed entity, its index among them."""
    if "entities" not in data:
        if "ner" in data:
            raise InputError(
                f"{where}: field 'entities' is missing and the record has 'ner' instead: that is "
                "the CrossRE/DyGIE layout ('ner': [start, end, type] with an inclusive end), "
                "not SpERT's; read the file with --format crossre, or convert each "
                "[start, end, type] to {'type': type, 'start': start, 'end': end + 1}"
            )
        raise InputError(
            f"{where}: field 'entities' is missing; a SpERT record lists its entities as "
            "[{'type', 'start', 'end'}] with an exclusive end ([] when it has none)"
        )
    raw = data["entities"]
    if not isinstance(raw, list):
        raise InputError(f"{where}: field 'entities' must be a list of {{'type', 'start', 'end'}}")
    spans = TokenSpans(tokens)
    unique: dict[EntityMention, int] = {}
    position: list[int] = []
    for k, ent in enumerate(raw):
        at = f"{where}, entity {k}"
        if not isinstance(ent, dict) or "type" not in ent:
            raise InputError(f"{at}: expected {{'type', 'start', 'end'}}, got {quoted(ent)}")
        start = int_field(ent.get("start"), "'start'", at)
        end = int_field(ent.get("end"), "'end'", at)
        if not 0 <= start < end <= len(tokens):
            raise InputError(
                f"{at}: token span [{start}, {end}) is empty or outside the record's "
                f"{len(tokens)} tokens; {INCLUSIVE_HINT}"
            )
        type_ = labels.check(ent["type"], "entity", at)
        position.append(unique.setdefault(spans.entity(start, end, type_), len(unique)))
    return list(unique), position


def _relations(
    data: dict[str, Any], where: str, position: list[int], labels: LabelSet
) -> list[RelationMention]:
    raw = data["relations"]
    if not isinstance(raw, list):
        raise InputError(f"{where}: field 'relations' must be a list of {{'type', 'head', 'tail'}}")
    out: dict[RelationMention, None] = {}
    for k, rel in enumerate(raw):
        at = f"{where}, relation {k}"
        if not isinstance(rel, dict) or "type" not in rel:
            raise InputError(f"{at}: expected {{'type', 'head', 'tail'}}, got {quoted(rel)}")
        ends = []
        for name in ("head", "tail"):
            value = int_field(rel.get(name), f"'{name}'", at)
            if not 0 <= value < len(position):
                raise InputError(
                    f"{at}: {name} index {value} is outside the record's {len(position)} "
                    "entities ('head' and 'tail' index the record's 'entities' list, from 0)"
                )
            ends.append(position[value])
        type_ = labels.check(rel["type"], "relation", at)
        out.setdefault(RelationMention(type=type_, head=ends[0], tail=ends[1]), None)
    return list(out)


def _record(
    index: int, line: int | None, value: Any, reading: RelationReading
) -> tuple[Record, bool]:
    where, data, orig_id, tokens = reading.start(index, line, value)
    entities, position = _entities(data, tokens, where, reading.entity_labels)
    listed = has_relations(data, where, reading.require_relations, "[{'type', 'head', 'tail'}]")
    relations = _relations(data, where, position, reading.relation_labels) if listed else []
    rid = f"{reading.file.stem}:{orig_id if orig_id is not None else index}"
    return reading.record(rid, tokens, entities, relations, orig_id, index, line), listed


def read_spert(
    path: str | Path,
    *,
    entity_labels: Collection[str] | None = None,
    relation_labels: Collection[str] | None = None,
    require_relations: bool = False,
) -> DataFile:
    """Read a SpERT JSON file, validating every record.

    Args:
        path: The JSON file.
        entity_labels: If given, every entity type must be one of these (default: the labels
            of ``ner2idx.json`` beside the file when it exists, else any type).
        relation_labels: The same for relation types (default: ``rel2idx.json``).
        require_relations: Refuse a record without a ``relations`` field (scoring or training
            relations needs them); otherwise such a record has no relations.

    Returns:
        The records (ids ``<stem>:<orig_id>``); ``relations`` is true when any record has a
        ``relations`` field.

    Raises:
        InputError: On a malformed file or record (naming the file, record, field and fix).
    """
    file = Path(path)
    ner_map, rel_map = file.parent / "ner2idx.json", file.parent / "rel2idx.json"
    entities = (
        LabelSet(entity_labels)
        if entity_labels is not None
        else LabelSet(read_label_map(ner_map), f"from {ner_map}")
    )
    relations = (
        LabelSet(relation_labels)
        if relation_labels is not None
        else LabelSet(read_label_map(rel_map), f"from {rel_map}")
    )
    reading = RelationReading(SPERT_LAYOUT, file, entities, relations, require_relations)
    items = json_array(file, reading.text())
    return reading.read(((i, None, item) for i, item in enumerate(items)), _record)


__all__ = ["INCLUSIVE_HINT", "read_label_map", "read_spert"]
