"""CrossRE reader: the published JSON Lines layout (inclusive ends), converted and validated."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from samalign.datasets import detect_format, read_crossre, read_file
from samalign.errors import InputError

Records = list[dict[str, Any]]
Writer = Callable[[Path, Records], Path]


def test_reads_the_published_layout_with_exclusive_ends(crossre_path: Path) -> None:
    path = crossre_path
    assert detect_format(path) == "crossre"
    data = read_file(path)
    assert data.format == "crossre" and data.relations
    assert [r.id for r in data.records] == ["ai-test-2", "ai-test-4", "ai-test-13"]
    first = data.records[0]
    assert [(e.text, e.type, e.token_start, e.token_end) for e in first.entities] == [
        ("ELRA", "organisation", 6, 7),
        ("LREC", "conference", 11, 12),
        ("International Language Resources and Evaluation Conference", "conference", 14, 20),
    ]
    for e in first.entities:
        assert e.start is not None and e.end is not None
        assert first.text[e.start : e.end] == e.text
    assert [(r.head, r.type, r.tail) for r in first.relations] == [(0, "role", 1), (2, "named", 1)]
    assert first.origin.line == 1 and data.records[2].origin.line == 3
    assert data.label_set == ("algorithm", "conference", "metrics", "organisation")
    assert data.relation_set == ("compare", "named", "role")


def test_a_json_array_of_the_same_objects_is_read_too(
    tmp_path: Path, crossre_records: Records
) -> None:
    path = tmp_path / "ai.json"
    path.write_text(json.dumps(crossre_records), encoding="utf-8")
    assert detect_format(path) == "crossre"
    assert len(read_crossre(path).records) == 3


REFUSED: list[tuple[dict[str, Any], tuple[str, ...], str, str]] = [
    ({}, ("ner",), "field 'ner' is missing", "inclusive ends"),
    (
        {"entities": [{"type": "organisation", "start": 6, "end": 7}]},
        ("ner",),
        "field 'ner' is missing and the record has 'entities' instead",
        "--format spert",
    ),
    (
        {"tokens": ["Finally", ","]},
        ("sentence",),
        "field 'sentence' is missing and the record has 'tokens' instead",
        "--format spert",
    ),
    (
        {"ner": [[6, 6, "organisation"], [11, 21, "conference"]]},
        (),
        "ner 1: entity span [11, 21] is reversed or outside the record's 21 tokens",
        "subtract 1 from every end",
    ),
    (
        {"ner": [[6, 5, "organisation"]], "relations": []},
        (),
        "ner 0: entity span [6, 5] is reversed",
        "ends are inclusive",
    ),
    (
        {"relations": [[6, 6, 12, 12, "role", "", False, False]]},
        (),
        "relation 0: the tail span [12, 12] is not one of the record's 'ner' spans",
        "every relation argument must be an entity",
    ),
    (
        {"relations": [[6, 6, 11, 11]]},
        (),
        "relation 0: expected [head start, head end, tail start, tail end, type, ...]",
        "[6, 6, 11, 11]",
    ),
    ({"ner": [[6, 6]]}, (), "ner 0: expected [start, end, type]", "[6, 6]"),
    ({"ner": [[6, 6, ""]]}, (), "ner 0: the entity type must be a non-empty string", "''"),
]


@pytest.mark.parametrize(("change", "drop", "field", "fix"), REFUSED)
def test_malformed_records_name_line_field_and_fix(
    tmp_path: Path,
    crossre_records: Records,
    write_crossre: Writer,
    change: dict[str, Any],
    drop: tuple[str, ...],
    field: str,
    fix: str,
) -> None:
    bad = {k: v for k, v in crossre_records[0].items() if k not in drop} | change
    path = write_crossre(tmp_path / "bad.json", [crossre_records[1], bad])
    with pytest.raises(InputError) as err:
        read_crossre(path)
    message = str(err.value)
    assert f"{path}:2 (doc_key 'ai-test-2')" in message
    assert field in message and fix in message


def test_missing_relations_are_refused_only_when_required(
    tmp_path: Path, crossre_records: Records, write_crossre: Writer
) -> None:
    del crossre_records[0]["relations"]
    path = write_crossre(tmp_path / "x.jsonl", crossre_records[:1])
    assert read_crossre(path).records[0].relations == ()
    with pytest.raises(InputError, match=r"x\.jsonl:1 \(doc_key 'ai-test-2'\): field 'relations'"):
        read_crossre(path, require_relations=True)


def test_label_sets_are_checked_when_given(
    tmp_path: Path, crossre_records: Records, write_crossre: Writer
) -> None:
    path = write_crossre(tmp_path / "x.jsonl", crossre_records)
    with pytest.raises(InputError, match="relation type 'named' is not in the label set"):
        read_crossre(path, relation_labels=["role", "compare"])
    with pytest.raises(InputError, match="entity type 'metrics' is not in the label set"):
        read_crossre(path, entity_labels=["organisation", "conference", "algorithm"])
