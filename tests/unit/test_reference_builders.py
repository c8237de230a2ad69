"""The SAM-NER authors' training-data recipes (``--profile reference``) on English IEPile records.

The shared IEPile sample is Chinese, so the English IEPile instruction records here are made
from CoNLL04 (``../shared/data/conll04``): its types renamed to IEPile's (``person``,
``organization``, ``location``, ``else``) and years added as IEPile's value type ``date``.
The expected prompts and answers follow ``src/EntityClassification/getTrainingData.py`` of
DMIRLAB-Group/SAM-NER@d9e41bc by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from samalign.cli import main
from samalign.errors import ConfigError
from samalign.finetune.builders import (
    build_archetype_examples,
    build_calibrate_examples,
    build_extraction_examples,
    read_source,
)
from samalign.finetune.builders.archetype_reference import tag_first_occurrences
from samalign.finetune.builders.sources import SourceDataset, SourceMention, SourceRecord
from samalign.prompts import load_domain
from samalign.prompts.profiles import prompt_profile
from samalign.types import Archetype

TrainHead = Callable[[int], SourceDataset]
"""The ``crossner_ai_train`` fixture: the first ``n`` CrossNER AI train records."""

REF = prompt_profile("reference")
CLASSIFIER_INSTRUCTION = (
    "You are an expert in entity classification. Your task is to classify each entity marked "
    "with <ENT></ENT> without omission and strictly select the most appropriate and unique "
    "entity type from the given schema based on the sentence semantics."
)
IEPILE_NAMES = {"Peop": "person", "Org": "organization", "Loc": "location", "Other": "else"}
YEAR = re.compile(r"(?<!\S)\d{4}(?!\S)")


def iepile_line(text: str, schema: list[str], output: dict[str, list[str]]) -> str:
    """One IEPile NER instruction record (the format of IEPile's train.json)."""
    instruction = {
        "instruction": "You are an expert in named entity recognition. Please extract entities "
        "that match the schema definition from the input. Return an empty list if the entity "
        "type does not exist. Please respond in the format of a JSON string.",
        "schema": schema,
        "input": text,
    }
    return json.dumps(
        {
            "task": "NER",
            "source": "CoNLL04",
            "instruction": json.dumps(instruction, ensure_ascii=False),
            "output": json.dumps({t: output.get(t, []) for t in schema}, ensure_ascii=False),
        },
        ensure_ascii=False,
    )


def conll04_as_iepile(shared_data: Path, path: Path, limit: int = 80) -> list[dict[str, Any]]:
    """Write CoNLL04 dev sentences as English IEPile records; every 4th with a year asks
    ``date`` first. Returns what was written (text, schema, output) per record."""
    source = read_source(shared_data / "conll04" / "dev_triples.json")
    written: list[dict[str, Any]] = []
    for i, rec in enumerate(source.records[:limit]):
        output: dict[str, list[str]] = {}
        for m in rec.mentions:
            output.setdefault(IEPILE_NAMES[m.type], []).append(m.text)
        years = YEAR.findall(rec.text)
        schema = ["person", "organization", "location", "else", "date"]
        if years:
            output["date"] = list(dict.fromkeys(years))
            if i % 4 == 0:
                schema = ["date", *schema[:-1]]
        written.append({"text": rec.text, "schema": schema, "output": output})
    path.write_text(
        "\n".join(iepile_line(w["text"], w["schema"], w["output"]) for w in written) + "\n",
        encoding="utf-8",
    )
    return written


def records(*items: tuple[str, list[str], dict[str, list[str]]]) -> SourceDataset:
    recs = [
        SourceRecord(
            id=f"r{i}",
            text=text,
            mentions=tuple(SourceMention(t, m) for t in schema for m in output.get(t, [])),
            asked=tuple(schema),
            origin=f"test:{i}",
        )
        for i, (text, schema, output) in enumerate(items)
    ]
    labels = tuple(dict.fromkeys(t for _, schema, _ in items for t in schema))
    return SourceDataset(path=Path("test.jsonl"), format="iepile", records=recs, label_set=labels)


def test_authors_tagging_first_occurrence_longest_first_no_overlap() -> None:
    text = "John Smith flew from Logan Airport in Boston in 1990 ; Smith landed ."
    # "Smith" is first found inside "John Smith", overlaps it and stays untagged everywhere
    assert tag_first_occurrences(text, ["John Smith", "Smith", "Logan Airport"]) == (
        "<ENT>John Smith</ENT> flew from <ENT>Logan Airport</ENT> in Boston in 1990 ; Smith "
        "landed ."
    )
    # a mention starting/ending with a word character must not continue a word there
    assert (
        tag_first_occurrences("MAIN AI and AI-based", ["AI"]) == "MAIN <ENT>AI</ENT> and AI-based"
    )
    assert tag_first_occurrences("see (c) and x", ["(c)", "", "  "]) == "see <ENT>(c)</ENT> and x"
    assert tag_first_occurrences("no match", ["absent"]) == "no match"


def test_reference_recipe_filters_projects_tags_and_answers_as_the_authors() -> None:
    dataset = records(
        (  # the first non-empty type is a value type: the passage is dropped
            "In 1990 John Smith moved .",
            ["date", "person", "location"],
            {"date": ["1990"], "person": ["John Smith"]},
        ),
        (  # kept: date removed; facility and location both project to location
            "John Smith flew from Logan Airport in Boston in 1990 ; Smith landed .",
            ["person", "date", "location", "facility", "organization"],
            {
                "person": ["John Smith", "Smith"],
                "date": ["1990"],
                "location": ["Boston"],
                "facility": ["Logan Airport"],
            },
        ),
        ("Nothing here .", ["person"], {}),
        ("张三在北京 .", ["person", "location"], {"person": ["张三"], "location": ["北京"]}),
    )
    examples, report = build_archetype_examples([dataset], profile="reference")
    (example,) = examples
    assert example.prompt == (
        CLASSIFIER_INSTRUCTION + "sentence:<ENT>John Smith</ENT> flew from <ENT>Logan "
        "Airport</ENT> in Boston in 1990 ; Smith landed . schema:['person', 'organization', "
        "'location']"
    )
    # grouped by archetype; the later type's list replaced location's ["Boston"]
    assert example.answer == (
        '[{"John Smith": "person"}, {"Smith": "person"}, {"Logan Airport": "location"}]'
    )
    summary = report.to_dict()
    assert summary["skipped"] == {"first_type_dropped": 1, "no_entities": 1, "chinese_text": 1}
    assert summary["mentions_replaced_by_a_later_type"] == 1
    assert summary["dropped_type_mentions"] == 1
    assert summary["answer_mentions_not_tagged"] == 1  # the second "Smith"
    full, _ = build_archetype_examples([dataset], profile="reference", schema="full")
    assert full[0].prompt.endswith(
        "schema:" + str([a.value.lower() for a in Archetype])
    )  # the test-time schema, printed as the authors' f-string prints a list


def test_unmapped_types_follow_the_unmapped_option() -> None:
    dataset = records(
        ("The Widget 3000 by Acme .", ["product", "gadget"], {"gadget": ["Widget 3000"]}),
        (
            "Acme sells the Widget 3000 .",
            ["organization", "gadget"],
            {
                "organization": ["Acme"],
                "gadget": ["Widget 3000"],
            },
        ),
    )
    examples, report = build_archetype_examples([dataset], profile="reference")
    assert [e.answer for e in examples] == ['[{"Acme": "organization"}]']
    assert report.to_dict()["skipped"] == {"no_entities": 1}
    misc, _ = build_archetype_examples([dataset], profile="reference", unmapped="misc")
    assert misc[0].answer == '[{"Widget 3000": "misc"}]'
    assert misc[0].prompt.endswith("schema:['artifact', 'misc']")
    with pytest.raises(ConfigError, match="'gadget' is not in the mapping M"):
        build_archetype_examples([dataset], profile="reference", unmapped="error")


def test_english_iepile_records_from_conll04_through_the_cli(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "iepile_en.jsonl"
    written = conll04_as_iepile(shared_data, source)
    out = tmp_path / "archetype.jsonl"
    assert (
        main(
            [
                "finetune",
                "build",
                "archetype",
                str(source),
                "--profile",
                "reference",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    counts = json.loads(capsys.readouterr().out)

    def first(w: dict[str, Any]) -> str | None:  # the first non-empty type, in schema order
        return next((t for t in w["schema"] if w["output"].get(t)), None)

    dropped = sum(1 for w in written if first(w) == "date")
    empty = sum(1 for w in written if first(w) is None)
    assert counts["skipped"].get("first_type_dropped", 0) == dropped > 0
    assert counts["examples"] == len(written) - dropped - empty
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    kept = [w for w in written if first(w) not in (None, "date")]
    assert len(lines) == len(kept)
    archetypes = {
        "person": "person",
        "organization": "organization",
        "location": "location",
        "else": "misc",
    }
    for line, w in zip(lines, kept, strict=True):
        prompt, answer = line["messages"][0]["content"], line["messages"][1]["content"]
        assert prompt.startswith(CLASSIFIER_INSTRUCTION + "sentence:")
        sentence, _, schema = prompt[len(CLASSIFIER_INSTRUCTION) + 9 :].rpartition(" schema:")
        assert re.sub("</?ENT>", "", sentence) == w["text"]
        assert "date" not in schema  # value types never reach the classifier
        expected = [
            {m: archetypes[t]}
            for t in w["schema"]
            if t != "date"
            for m in dict.fromkeys(w["output"].get(t, []))
        ]  # grouped by type in schema order (one type per archetype here)
        assert json.loads(answer) == expected
        assert answer == json.dumps(expected, ensure_ascii=False)  # json.dumps spacing kept


def test_default_recipe_never_tags_value_types(shared_data: Path, tmp_path: Path) -> None:
    source = tmp_path / "iepile_en.jsonl"
    conll04_as_iepile(shared_data, source, limit=40)
    dataset = read_source(source)
    examples, report = build_archetype_examples([dataset], unmapped="misc")
    dates = {m.text for rec in dataset.records for m in rec.mentions if m.type == "date"}
    others = {m.text for rec in dataset.records for m in rec.mentions if m.type != "date"}
    years = dates - others  # CoNLL04 annotates some years as Other ("else") too
    assert years
    assert (
        report.to_dict()["skipped"]["dropped_type_mention"]
        == sum(m.type == "date" for rec in dataset.records for m in rec.mentions)
        > 0
    )
    for ex in examples:  # a year is never tagged nor typed (not even Misc)
        assert not set(re.findall(r"<ENT>(.*?)</ENT>", ex.prompt)) & years
        assert not {m for ms in json.loads(ex.answer).values() for m in ms} & years


def test_reference_explorer_and_calibrator_examples(crossner_ai_train: TrainHead) -> None:
    domain = load_domain("crossner_ai")
    dataset = crossner_ai_train(5)
    explorer, _ = build_extraction_examples(
        "explorer", [dataset], domain=domain, shuffle_types=False, profile="reference"
    )
    rec = dataset.records[0]
    types = REF.extraction_types(domain)
    positives = [t for t in dict.fromkeys(m.type for m in rec.mentions) if t not in types]
    assert (
        explorer[0].prompt
        == REF.extractor("explorer", domain, [*types, *positives], rec.text).prompt
    )
    answer = json.loads(explorer[0].answer)
    assert explorer[0].answer == json.dumps(answer, ensure_ascii=False)  # json.dumps' spacing
    assert {m for ms in answer.values() for m in ms} == {m.text for m in rec.mentions}
    calibrate, _ = build_calibrate_examples([dataset], domain=domain, profile="reference")
    parsed = REF.calibration_format.parse(calibrate[0].answer)
    assert {m for m, _ in parsed.assignments} <= {m.text for m in rec.mentions}
    assert {t for _, t in parsed.assignments} <= set(domain.labels)  # labels, not names
    assert calibrate[0].answer.startswith("final answer:\n@@\n[{")
    assert "Source Domain Type Definitions: " in calibrate[0].prompt
