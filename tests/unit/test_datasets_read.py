"""Format detection and the instruction formats (Pile-NER, UniNER, IEPile) on the shared data."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from samalign.datasets import EntityMention, detect_format, read_file
from samalign.errors import InputError

RaisesMentioning = Callable[..., AbstractContextManager[None]]
PILENER = "pilener_slimer/5pos_5neg_perNE_top391NEs_TrueDef/validation.jsonl"


@pytest.mark.parametrize(
    ("path", "fmt", "records"),
    [
        (PILENER, "pilener", 880),  # 1,317 (passage, type) lines over 880 passages
        ("uniner_format/CrossNER_AI.json", "uniner", 430),  # 5,603 queries over 430 texts
        ("iepile/NER/train.json", "iepile", 6),
        ("iepile/NER/sample.json", "iepile", 6),  # the raw form
        ("crossner/ai/train.txt", "bio", 100),
        ("conll04/train_triples.json", "spert", 922),
        ("scierc/dev_triples.json", "spert", 275),
        ("ade/ade_split_0_test.json", "spert", 427),
    ],
)
def test_readers_detect_and_count_the_shared_data(
    shared_data: Path, path: str, fmt: str, records: int
) -> None:
    assert detect_format(shared_data / path) == fmt
    data = read_file(shared_data / path)
    assert data.format == fmt
    assert len(data.records) == records
    assert len({r.id for r in data.records}) == records
    assert data.tokenised == (fmt in ("bio", "spert"))


def test_pilener_groups_the_per_type_lines_of_a_passage(shared_data: Path) -> None:
    data = read_file(shared_data / PILENER)
    lines = [json.loads(x) for x in (shared_data / PILENER).read_text().splitlines()]
    assert len(lines) == 1317
    asked = sum(len(r.asked) for r in data.records)
    assert asked == len({(x["input"], x["tagName"]) for x in lines})
    assert sum(not x["output"] or x["output"] == "[]" for x in lines) == 602  # SOURCE.md
    record = next(r for r in data.records if r.id == "pilener:41753")
    assert "name" in record.asked
    assert EntityMention(type="name", text="map-stream") in record.entities
    assert record.source_id == "41753" and record.origin.line is not None
    assert data.label_set is None  # open label set


def test_uniner_counts_match_its_source(shared_data: Path) -> None:
    data = read_file(shared_data / "uniner_format" / "CrossNER_AI.json")
    assert {len(r.asked) for r in data.records} == {13}  # every text asked about 13 labels
    # SOURCE.md: 1,624 gold answer strings (one text is duplicated, so a few collapse)
    assert 1600 <= sum(len(r.entities) for r in data.records) <= 1624
    assert all(e.start is None for r in data.records for e in r.entities)
    assert data.label_set is None


def test_iepile_instructions_ask_their_schema_and_raw_records_use_the_given_one(
    shared_data: Path,
) -> None:
    data = read_file(shared_data / "iepile" / "NER" / "train.json")
    assert data.label_set is not None and set(data.label_set) == {"人物", "地理位置", "组织机构"}
    for rec, line in zip(
        data.records,
        (shared_data / "iepile/NER/train.json").read_text(encoding="utf-8").splitlines(),
        strict=True,
    ):
        inner = json.loads(json.loads(line)["instruction"])
        assert list(rec.asked) == inner["schema"] and rec.text == inner["input"]
    raw = read_file(
        shared_data / "iepile" / "NER" / "sample.json", schema=["人物", "地理位置", "组织机构"]
    )
    assert raw.label_set == ("人物", "地理位置", "组织机构")
    assert any(r.entities for r in raw.records) and all(not r.asked for r in raw.records)


def test_iepile_relation_records_are_refused_with_the_alternative(shared_data: Path) -> None:
    with pytest.raises(InputError, match=r"train\.json:1: IEPile relation records.*SpERT"):
        read_file(shared_data / "iepile" / "RE" / "train.json", "iepile")


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("bad.jsonl", '{"tagName": "x", "input": "t", "output": "[]"}\n{oops\n', "bad.jsonl:2"),
        ("bad.jsonl", '{"tagName": "x", "output": "[]"}\n', "field 'input' is missing"),
        (
            "bad.jsonl",
            '{"tagName": "x", "input": "t", "output": "not json"}\n',
            "field 'output' is not a JSON list",
        ),
        (
            "bad.json",
            '[{"tokens": ["a", "b"], "entities": [{"type": "X", "start": 0, "end": 1}]},'
            ' {"tokens": ["a"], "entities": [{"type": "X", "start": 0, "end": 3}]}]',
            "record 1, entity 0: token span [0, 3)",
        ),
        (
            "bad.json",
            '[{"tokens": ["a"], "entities": [], "relations": [{"type": "R", "head": 0, '
            '"tail": 1}], "orig_id": 7}]',
            "record 0 (orig_id 7), relation 0: head index 0 is outside",
        ),
        (
            "bad.json",
            '[{"conversations": [{"from": "human", "value": "Text: a b"}, {"from": "gpt", '
            '"value": "ok"}, {"from": "human", "value": "Who?"}, {"from": "gpt", "value": "[]"}]}]',
            "turn 2 must be 'What describes <type> in the text?'",
        ),
        ("bad.txt", "a\tO\nb\tB-x\nc\tZ-x\n", "bad.txt:3: tag 'Z-x'"),
        (
            "bad.jsonl",
            '{"instruction": "{\\"schema\\": [\\"a\\"], \\"input\\": \\"t\\"}", '
            '"output": "{\\"b\\": []}"}\n',
            "'output' uses types ['b'] that are not in the schema",
        ),
    ],
)
def test_malformed_records_are_named(
    tmp_path: Path, raises_mentioning: RaisesMentioning, name: str, content: str, fragment: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    fmt = {"bad.txt": "bio"}.get(name, "auto")
    if "tagName" in content:
        fmt = "pilener"
    with raises_mentioning(InputError, fragment, str(path)):
        read_file(path, fmt)


def test_undetectable_file_says_which_formats_exist(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"foo": 1}\n')
    with pytest.raises(InputError, match=r"pass it explicitly \(--format, one of \['bio'"):
        detect_format(path)
    lines = tmp_path / "spert.jsonl"
    lines.write_text('{"tokens": ["a"], "entities": []}\n')
    with pytest.raises(InputError, match="a SpERT file is one JSON array"):
        detect_format(lines)
    with pytest.raises(InputError, match="unknown data format 'conll'"):
        read_file(path, "conll")


def test_a_malformed_bio_txt_file_is_read_as_bio_to_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "dev.txt"
    path.write_text("EU\tB-org\nrejects the\tO\tX\n", encoding="utf-8")
    assert detect_format(path) == "bio"
    with pytest.raises(InputError, match=r"dev\.txt:2: expected 'token<TAB>tag' \(3 columns"):
        read_file(path)


@pytest.mark.parametrize(
    ("name", "content", "fmt"),
    [
        ("a.jsonl", '{"tagName": "x", "input": "t", "output": "[]"}\n', "pilener"),
        ("b.json", '[{"id": "1", "conversations": [{"value": "Text: a"}]}]', "uniner"),
        ("c.jsonl", '{"text": "t", "entity": [{"entity": "t", "entity_type": "x"}]}\n', "iepile"),
        ("d.json", '[{"tokens": ["a"], "entities": []}]', "spert"),
        ("e.json", '{"sentence": ["a"], "ner": [], "relations": []}\n', "crossre"),
        ("f.tsv", "a\tO\n", "bio"),
    ],
)
def test_a_leading_byte_order_mark_is_accepted_everywhere(
    tmp_path: Path, name: str, content: str, fmt: str
) -> None:
    path = tmp_path / name
    path.write_bytes(("\ufeff" + content).encode())
    assert detect_format(path) == fmt
    data = read_file(path)
    assert data.format == fmt and len(data.records) == 1
    assert not data.records[0].text.startswith("\ufeff")
