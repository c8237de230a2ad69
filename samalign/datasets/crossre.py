"""CrossRE JSON Lines files (mainlp/CrossRE; the same layout as DyGIE's sentence-level files).

One JSON object per line::

    {"doc_key": "ai-test-2",
     "sentence": ["Finally", ",", "every", ...],
     "ner": [[6, 6, "organisation"], [11, 11, "conference"]],
     "relations": [[6, 6, 11, 11, "role", "", false, false]]}

``ner`` items are ``[start, end, type]`` and ``relations`` items
``[head start, head end, tail start, tail end, type, ...]`` with **inclusive** token ends (the
span is ``sentence[start:end + 1]``); fields after the relation type (CrossRE's explanation and
uncertainty flags) are ignored. A relation's arguments are the ``ner`` entities with those
spans (the first one when two entities share a span). Records are converted to exclusive ends
on reading. A JSON array of the same objects is read too.

A malformed record — a missing field, SpERT's ``entities`` instead of ``ner``, a span that is
reversed or runs past the sentence (an end equal to the sentence length usually means the file
uses exclusive ends), a relation argument that is no ``ner`` span — raises
:class:`~samalign.errors.InputError` naming the file, the line (and ``doc_key``), the field
and the fix.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from samalign.datasets.files import (
    LabelSet,
    has_relations,
    int_field,
    json_array,
    json_lines,
)
from samalign.datasets.records import (
    DataFile,
    EntityMention,
    Record,
    RelationMention,
    TokenSpans,
)
from samalign.datasets.relational import CROSSRE_LAYOUT, RelationReading
from samalign.errors import InputError, quoted

EXCLUSIVE_HINT = (
    "CrossRE ends are inclusive (the span is sentence[start:end + 1]); if your data uses "
    "exclusive ends, subtract 1 from every end, or write it as SpERT JSON (--format spert)"
)


def _items(file: Path, text: str) -> Iterator[tuple[int, int | None, Any]]:
    """``(index, line or None, object)`` for a JSON Lines file or a JSON array."""
    if text.lstrip().startswith("["):
        for index, item in enumerate(json_array(file, text)):
            yield index, None, item
        return
    for index, (number, item) in enumerate(json_lines(file, text)):
        yield index, number, item


def _span(item: Any, n: int, at: str, what: str) -> tuple[int, int]:
    start = int_field(item[0], f"the {what} start", at)
    end = int_field(item[1], f"the {what} end", at)
    if not 0 <= start <= end < n:
        raise InputError(
            f"{at}: {what} span [{start}, {end}] is reversed or outside the record's {n} tokens; "
            f"{EXCLUSIVE_HINT}"
        )
    return start, end + 1


def _record(
    index: int, line: int | None, value: Any, reading: RelationReading
) -> tuple[Record, bool]:
    where, data, key, tokens = reading.start(index, line, value)
    if "ner" not in data:
        hint = (
            " and the record has 'entities' instead: that is the SpERT layout (exclusive "
            "ends); read the file with --format spert"
            if "entities" in data
            else "; CrossRE lists entities as [[start, end, type], ...] with inclusive ends"
        )
        raise InputError(f"{where}: field 'ner' is missing{hint}")
    if not isinstance(data["ner"], list):
        raise InputError(f"{where}: field 'ner' must be a list of [start, end, type]")
    spans = TokenSpans(tokens)
    entities: dict[EntityMention, int] = {}
    by_span: dict[tuple[int, int], int] = {}
    for k, item in enumerate(data["ner"]):
        at = f"{where}, ner {k}"
        if not isinstance(item, list) or len(item) != 3:
            raise InputError(f"{at}: expected [start, end, type], got {quoted(item)}")
        start, end = _span(item, len(tokens), at, "entity")
        type_ = reading.entity_labels.check(item[2], "entity", at)
        index_of = entities.setdefault(spans.entity(start, end, type_), len(entities))
        by_span.setdefault((start, end), index_of)
    listed = has_relations(
        data, where, reading.require_relations, "[[h_start, h_end, t_start, t_end, type]]"
    )
    relations: dict[RelationMention, None] = {}
    raw = data.get("relations", [])
    if not isinstance(raw, list):
        raise InputError(f"{where}: field 'relations' must be a list")
    for k, item in enumerate(raw):
        at = f"{where}, relation {k}"
        if not isinstance(item, list) or len(item) < 5:
            raise InputError(
                f"{at}: expected [head start, head end, tail start, tail end, type, ...], "
                f"got {quoted(item)}"
            )
        args = []
        for name, pair in (("head", item[0:2]), ("tail", item[2:4])):
            span = _span(pair, len(tokens), at, name)
            if span not in by_span:
                raise InputError(
                    f"{at}: the {name} span [{span[0]}, {span[1] - 1}] is not one of the "
                    "record's 'ner' spans; every relation argument must be an entity"
                )
            args.append(by_span[span])
        type_ = reading.relation_labels.check(item[4], "relation", at)
        relations.setdefault(RelationMention(type=type_, head=args[0], tail=args[1]), None)
    rid = str(key) if key is not None else f"{reading.file.stem}:{index}"
    return reading.record(rid, tokens, entities, relations, key, index, line), listed


def read_crossre(
    path: str | Path,
    *,
    entity_labels: Collection[str] | None = None,
    relation_labels: Collection[str] | None = None,
    require_relations: bool = False,
) -> DataFile:
    """Read a CrossRE JSON Lines file, validating every record.

    Args:
        path: The file (e.g. CrossRE's ``ai-test.json``).
        entity_labels: If given, every entity type must be one of these.
        relation_labels: If given, every relation type must be one of these.
        require_relations: Refuse a record without a ``relations`` field.

    Returns:
        The records (ids: the ``doc_key``, else ``<stem>:<n>``), with exclusive ends.

    Raises:
        InputError: On a malformed file or record (naming the file, line, field and fix).
    """
    reading = RelationReading(
        CROSSRE_LAYOUT,
        Path(path),
        LabelSet(entity_labels),
        LabelSet(relation_labels),
        require_relations,
    )
    return reading.read(_items(reading.file, reading.text()), _record)


__all__ = ["EXCLUSIVE_HINT", "read_crossre"]
