"""SpERT-style JSON loader (CoNLL04, SciERC, ADE as distributed by SpERT and PFN).

A file is a JSON array of records ``{"tokens": [...], "entities": [{"type", "start", "end"}],
"relations": [{"type", "head", "tail"}], "orig_id": ...}``: ``end`` is exclusive, ``head`` and
``tail`` index the record's ``entities``, relations are directed. Entities may nest or overlap
(SciERC, ADE).

An exact repeat of an entity or relation in a record is read once (scores are over sets;
SciERC's train split has 4 repeated relations).

A malformed record (missing field, token span out of range or empty, relation index outside
``entities``, a type outside the dataset's label set) raises
:class:`~samalign.errors.InputError` naming the file and the record (index and ``orig_id``).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

from samalign.errors import InputError
from samalign.evaluation.sentences import (
    GoldEntity,
    GoldTriplet,
    Sentence,
    make_entity,
    token_offsets,
)


def read_label_map(path: Path) -> list[str] | None:
    """Labels of a ``ner2idx.json``/``rel2idx.json`` file in index order (``None`` if absent).

    Raises:
        InputError: If the file exists but is not a ``{label: index}`` object.
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise InputError(f"{path}: cannot read the label map: {err}") from None
    if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
        raise InputError(f"{path}: expected a JSON object {{label: index}}")
    return [str(k) for k, _ in sorted(data.items(), key=lambda kv: kv[1])]


def _int(value: Any, what: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where}: {what} must be an integer, got {value!r}")
    return value


def _record(
    index: int,
    data: Any,
    where_file: str,
    sid: str,
    entity_labels: Collection[str] | None,
    relation_labels: Collection[str] | None,
) -> Sentence:
    where = f"{where_file} record {index}"
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected an object, got {type(data).__name__}")
    if "orig_id" in data:
        where += f" (orig_id {data['orig_id']!r})"
    tokens = data.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens) or not tokens:
        raise InputError(f"{where}: 'tokens' must be a non-empty list of strings")
    if any(not t or any(ch.isspace() for ch in t) for t in tokens):
        raise InputError(f"{where}: a token is empty or contains whitespace")
    text = " ".join(tokens)
    offsets = token_offsets(tokens)
    entities: list[GoldEntity] = []
    for k, ent in enumerate(data.get("entities", [])):
        at = f"{where}, entity {k}"
        if not isinstance(ent, dict) or not isinstance(ent.get("type"), str):
            raise InputError(f"{at}: expected {{'type', 'start', 'end'}}, got {ent!r}")
        start = _int(ent.get("start"), "'start'", at)
        end = _int(ent.get("end"), "'end'", at)
        if not 0 <= start < end <= len(tokens):
            raise InputError(
                f"{at}: token span [{start}, {end}) is empty or outside the record's "
                f"{len(tokens)} tokens"
            )
        if entity_labels is not None and ent["type"] not in entity_labels:
            raise InputError(
                f"{at}: entity type {ent['type']!r} is not in the label set {sorted(entity_labels)}"
            )
        entities.append(make_entity(text, offsets, start, end, ent["type"]))
    triplets: list[GoldTriplet] = []
    for k, rel in enumerate(data.get("relations", [])):
        at = f"{where}, relation {k}"
        if not isinstance(rel, dict) or not isinstance(rel.get("type"), str):
            raise InputError(f"{at}: expected {{'type', 'head', 'tail'}}, got {rel!r}")
        head = _int(rel.get("head"), "'head'", at)
        tail = _int(rel.get("tail"), "'tail'", at)
        for name, value in (("head", head), ("tail", tail)):
            if not 0 <= value < len(entities):
                raise InputError(
                    f"{at}: {name} index {value} is outside the record's {len(entities)} entities"
                )
        if relation_labels is not None and rel["type"] not in relation_labels:
            raise InputError(
                f"{at}: relation type {rel['type']!r} is not in the label set "
                f"{sorted(relation_labels)}"
            )
        triplets.append(GoldTriplet(head=entities[head], relation=rel["type"], tail=entities[tail]))
    entities.sort(key=lambda e: (e.token_start, -e.token_end, e.label))
    return Sentence(
        id=sid,
        tokens=tuple(tokens),
        text=text,
        entities=tuple(dict.fromkeys(entities)),
        triplets=tuple(dict.fromkeys(triplets)),
        origin=f"{where_file}#{index}",
    )


def read_spert_records(path: str | Path) -> list[Any]:
    """The raw records of a SpERT JSON file.

    Raises:
        InputError: If the file cannot be read or is not a JSON array.
    """
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8-sig"))  # -sig: a BOM is dropped
    except OSError as err:
        raise InputError(f"cannot read {file}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{file}: not UTF-8 text (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{file}: invalid JSON at line {err.lineno}: {err.msg}") from None
    except RecursionError:
        raise InputError(f"{file}: not a JSON array of records (nested too deeply)") from None
    if not isinstance(data, list):
        raise InputError(f"{file}: expected a JSON array of records, got {type(data).__name__}")
    return data


def read_spert(
    path: str | Path,
    *,
    prefix: str | None = None,
    entity_labels: Collection[str] | None = None,
    relation_labels: Collection[str] | None = None,
    records: list[Any] | None = None,
) -> list[Sentence]:
    """Read a SpERT JSON file.

    Args:
        path: The JSON file.
        prefix: Id prefix (default: the file's stem); ids are ``<prefix>-<index>``.
        entity_labels: If given, every entity type must be one of these (default: read
            ``ner2idx.json`` beside the file when it exists).
        relation_labels: The same for relation types (default: ``rel2idx.json``).
        records: Records already read from ``path`` (e.g. a filtered subset); ``path`` then
            only names them in messages.

    Raises:
        InputError: On a malformed file or record (naming the file and record).
    """
    file = Path(path)
    prefix = prefix or file.stem
    if entity_labels is None:
        entity_labels = read_label_map(file.parent / "ner2idx.json")
    if relation_labels is None:
        relation_labels = read_label_map(file.parent / "rel2idx.json")
    data = read_spert_records(file) if records is None else records
    return [
        _record(i, rec, str(file), f"{prefix}-{i}", entity_labels, relation_labels)
        for i, rec in enumerate(data)
    ]


__all__ = ["read_label_map", "read_spert", "read_spert_records"]
