"""SpERT reader: CoNLL04, SciERC and ADE files, and every malformed record refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from samalign.datasets import read_file, read_spert
from samalign.errors import InputError
from samalign.evaluation.datasets import read_spert as read_spert_sentences

# SOURCE.md of each dataset: records / entities / relations
SPERT_SOURCE_COUNTS = {
    "conll04/train_triples.json": (922, 3377, 1283),
    "conll04/dev_triples.json": (231, 893, 343),
    "conll04/test_triples.json": (288, 1079, 422),
    "scierc/train_triples.json": (1861, 5598, 3215),  # SOURCE.md: 3,219 with 4 exact repeats
    "scierc/dev_triples.json": (275, 811, 455),
    "scierc/test_triples.json": (551, 1685, 974),
    "ade/ade_full.json": (4272, 10839, 6821),
}


@pytest.mark.parametrize("path", sorted(SPERT_SOURCE_COUNTS))
def test_spert_files_match_their_source_counts(shared_data: Path, path: str) -> None:
    data = read_file(shared_data / path, require_relations=True)
    assert data.format == "spert" and data.relations
    records, entities, relations = SPERT_SOURCE_COUNTS[path]
    assert len(data.records) == records
    assert sum(len(r.entities) for r in data.records) == entities
    assert sum(len(r.relations) for r in data.records) == relations
    assert len({r.id for r in data.records}) == records
    for record in data.records:
        assert record.source_id is not None
        for e in record.entities:
            assert e.start is not None and e.end is not None
            assert record.text[e.start : e.end] == e.text
        for rel in record.relations:
            assert 0 <= rel.head < len(record.entities) and 0 <= rel.tail < len(record.entities)


def test_conll04_labels_come_from_the_label_maps(shared_data: Path) -> None:
    data = read_spert(shared_data / "conll04" / "train_triples.json")
    assert data.label_set == ("Loc", "Org", "Other", "Peop")
    assert data.relation_set == ("Kill", "Live_In", "Located_In", "OrgBased_In", "Work_For")


def _spert(path: Path, records: object) -> Path:
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


GOOD = {
    "tokens": ["John", "works", "for", "IBM"],
    "entities": [{"type": "Peop", "start": 0, "end": 1}, {"type": "Org", "start": 3, "end": 4}],
    "relations": [{"type": "Work_For", "head": 0, "tail": 1}],
    "orig_id": 7,
}


SPERT_ERRORS = [
    (
        {"entities": [{"type": "Peop", "start": 0, "end": 5}]},
        r"test\.json record 1 \(orig_id 7\), entity 0: token span \[0, 5\) is empty or "
        r"outside the record's 4 tokens",
    ),
    ({"entities": [{"type": "Peop", "start": 2, "end": 2}]}, r"token span \[2, 2\) is empty"),
    ({"entities": [{"type": "Peop", "start": "0", "end": 1}]}, r"'start' must be an integer"),
    (
        {"relations": [{"type": "Work_For", "head": 0, "tail": 2}]},
        r"relation 0: tail index 2 is outside the record's 2 entities",
    ),
    ({"relations": [{"type": "Work_For", "head": -1, "tail": 1}]}, r"head index -1"),
    ({"tokens": []}, r"record 1 \(orig_id 7\): 'tokens' must be a non-empty list"),
    ({"tokens": ["John", "", "for", "IBM"]}, r"a token is empty or contains whitespace"),
    (
        {"entities": [{"type": "Person", "start": 0, "end": 1}]},
        r"entity type 'Person' is not in the label set",
    ),
    (
        {"relations": [{"type": "Boss_Of", "head": 0, "tail": 1}]},
        r"relation type 'Boss_Of' is not in the label set",
    ),
]


@pytest.mark.parametrize(("change", "message"), SPERT_ERRORS)
def test_malformed_spert_names_file_and_record(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    path = _spert(tmp_path / "test.json", [GOOD, {**GOOD, **change}])
    with pytest.raises(InputError, match=message):
        read_spert_sentences(
            path,
            entity_labels=["Peop", "Org"],
            relation_labels=["Work_For"],
        )


def _without(record: dict[str, object], *keys: str) -> dict[str, object]:
    return {k: v for k, v in record.items() if k not in keys}


# every malformed case names the file, the record (index and orig_id), the field and the fix
REFUSED = [
    (
        {**_without(GOOD, "entities"), "ner": [[0, 0, "Peop"], [3, 3, "Org"]]},
        "field 'entities' is missing and the record has 'ner' instead",
        "--format crossre",
    ),
    (_without(GOOD, "entities"), "field 'entities' is missing", "exclusive end"),
    (
        {**GOOD, "entities": [{"type": "Peop", "start": 0, "end": 0}]},
        "entity 0: token span [0, 0) is empty",
        "add 1 to every 'end'",
    ),
    (
        {**GOOD, "entities": [{"type": "Org", "start": 3, "end": 5}]},
        "entity 0: token span [3, 5) is empty or outside the record's 4 tokens",
        "'end' is exclusive",
    ),
    (
        {**_without(GOOD, "tokens"), "sentence": GOOD["tokens"]},
        "field 'tokens' is missing and the record has 'sentence' instead",
        "--format crossre",
    ),
    ({**GOOD, "entities": {"type": "Peop"}}, "field 'entities' must be a list", "'start'"),
    ({**GOOD, "relations": "Work_For"}, "field 'relations' must be a list", "'head'"),
    (["John"], "expected an object, got list", "record 1"),
]


@pytest.mark.parametrize(("bad", "field", "fix"), REFUSED)
def test_malformed_records_are_refused_with_field_and_fix(
    tmp_path: Path, bad: object, field: str, fix: str
) -> None:
    path = _spert(tmp_path / "x.json", [GOOD, bad])
    with pytest.raises(InputError) as err:
        read_spert(path)
    message = str(err.value)
    assert f"{path} record 1" in message
    assert field in message and fix in message
    if isinstance(bad, dict) and "orig_id" in bad:
        assert "(orig_id 7)" in message


def test_missing_relations_are_refused_only_when_required(tmp_path: Path) -> None:
    path = _spert(tmp_path / "x.json", [GOOD, _without(GOOD, "relations")])
    data = read_spert(path)
    assert data.relations and data.records[1].relations == ()
    with pytest.raises(InputError, match=r"record 1 \(orig_id 7\): field 'relations' is missing"):
        read_spert(path, require_relations=True)
    ner_only = read_spert(_spert(tmp_path / "ner.json", [_without(GOOD, "relations")]))
    assert not ner_only.relations


def test_repeats_are_read_once_and_relations_follow_them(tmp_path: Path) -> None:
    record = {
        **GOOD,
        "entities": [*GOOD["entities"], GOOD["entities"][1]],  # type: ignore[list-item]
        "relations": [
            {"type": "Work_For", "head": 0, "tail": 2},  # points at the repeat
            {"type": "Work_For", "head": 0, "tail": 1},
        ],
    }
    [rec] = read_spert(_spert(tmp_path / "x.json", [record])).records
    assert [(e.text, e.type) for e in rec.entities] == [("John", "Peop"), ("IBM", "Org")]
    assert [(r.head, r.type, r.tail) for r in rec.relations] == [(0, "Work_For", 1)]


def test_spert_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="expected a JSON array"):
        read_spert_sentences(_spert(tmp_path / "a.json", {"tokens": []}))
    bad = tmp_path / "b.json"
    bad.write_text("[{", encoding="utf-8")
    with pytest.raises(InputError, match=r"b\.json: invalid JSON"):
        read_spert_sentences(bad)
    with pytest.raises(InputError, match="cannot read"):
        read_spert_sentences(tmp_path / "missing.json")


def test_spert_reads_label_maps_beside_the_file(tmp_path: Path) -> None:
    (tmp_path / "ner2idx.json").write_text('{"Peop": 0, "Org": 1}')
    (tmp_path / "rel2idx.json").write_text('{"Work_For": 0}')
    [sentence] = read_spert_sentences(_spert(tmp_path / "dev_triples.json", [GOOD]))
    assert [t.key for t in sentence.triplets] == [((0, 1), "Peop", "Work_For", (3, 4), "Org")]
    other = {**GOOD, "entities": [{"type": "Misc", "start": 0, "end": 1}], "relations": []}
    with pytest.raises(InputError, match="'Misc' is not in the label set"):
        read_spert_sentences(_spert(tmp_path / "dev_triples.json", [other]))


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(("\ufeff" + json.dumps([GOOD])).encode())
    assert read_file(path).records[0].tokens == ("John", "works", "for", "IBM")
