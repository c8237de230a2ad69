"""AnchorAlign's supervised setting's training data: supervised_ner and grouped joints."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from samalign.cli import main
from samalign.errors import ConfigError
from samalign.finetune.builders import (
    ChatExample,
    build_joint_examples,
    build_relation_examples,
    build_supervised_examples,
    read_examples,
    read_source,
    write_examples,
)
from samalign.finetune.builders.sources import SourceDataset
from samalign.graphs import PipelineOptions, RunContext, build_joint_graph
from samalign.prompts import load_domain
from samalign.prompts.supervised import SUPERVISED_NER_FORMAT
from samalign.testing.fakes import fake_stage_models

PILENER = "pilener_slimer/5pos_5neg_perNE_top391NEs_TrueDef/validation.jsonl"


def _slice(shared_data: Path, path: str, n: int) -> SourceDataset:
    full = read_source(shared_data / path)
    return SourceDataset(
        path=full.path, format=full.format, records=full.records[:n], label_set=full.label_set
    )


def test_answers_are_the_typed_gold_entities_in_text_order(shared_data: Path) -> None:
    domain = load_domain("conll04")
    dataset = read_source(shared_data / "conll04" / "dev_triples.json")
    examples, report = build_supervised_examples([dataset], domain=domain)
    assert report.examples == len(examples) == report.records == len(dataset.records)
    assert {ex.stage for ex in examples} == {"supervised_ner"} and {ex.task for ex in examples} == {
        "ner"
    }
    for ex, rec in zip(examples, dataset.records, strict=True):
        prompt = json.loads(ex.prompt)
        assert prompt["schema"] == domain.names and prompt["input"] == rec.text
        answer = json.loads(ex.answer)
        ordered = sorted(rec.mentions, key=lambda m: m.start or 0)
        expected = list(dict.fromkeys((m.text, domain.entity_type(m.type).name) for m in ordered))
        assert [(r["mention"], r["type"]) for r in answer] == expected
        assert ex.answer == json.dumps(answer, separators=(",", ":"))  # compact
        assert SUPERVISED_NER_FORMAT.parse(ex.answer, domain.names).pairs == tuple(
            (t, m) for m, t in expected
        )
    assert report.counts["mentions"] == sum(len(json.loads(ex.answer)) for ex in examples)


def test_every_benchmark_builds_and_bad_inputs_are_refused(shared_data: Path) -> None:
    for name, path in (("scierc", "scierc/dev_triples.json"), ("ade", "ade/ade_split_0_test.json")):
        examples, report = build_supervised_examples(
            [read_source(shared_data / path)], domain=load_domain(name)
        )
        assert examples and not report.skipped
    pile = read_source(
        shared_data / "pilener_slimer/5pos_5neg_perNE_top391NEs_TrueDef/validation.jsonl"
    )
    with pytest.raises(ConfigError, match="closed label set"):
        build_supervised_examples([pile], domain=load_domain("conll04"))
    with pytest.raises(ConfigError, match="not in domain"):
        build_supervised_examples(
            [_slice(shared_data, "ade/ade_split_0_test.json", 3)], domain=load_domain("conll04")
        )


def test_supervised_joint_graph_sends_exactly_the_builders_prompts(shared_data: Path) -> None:
    """Answer the three stages from the built examples; the graph reproduces the gold."""
    domain = load_domain("conll04")
    dataset = _slice(shared_data, "conll04/dev_triples.json", 20)
    built = {
        "supervised_ner": build_supervised_examples([dataset], domain=domain)[0],
        **{
            stage: build_relation_examples(stage, [dataset], domain=domain)[0]
            for stage in ("relations_forward", "relations_reverse")
        },
    }

    def answer_from(examples: list[ChatExample]) -> Any:
        table = {ex.prompt: ex.answer for ex in examples}
        return lambda messages: table[str(messages[0].content)]

    models = fake_stage_models({stage: answer_from(exs) for stage, exs in built.items()})
    context = RunContext(domain=domain, models=models)
    graph = build_joint_graph(PipelineOptions(ner_mode="supervised", relation_arguments="all"))
    entity_gold = entity_got = entity_tp = 0
    tp = fp = fn = 0
    for rec in dataset.records:
        result = graph.invoke({"text": rec.text}, context=context)
        gold_entities = {(m.start, m.end, m.type) for m in rec.mentions}
        got_entities = {(e.start, e.end, e.label) for e in result["entities"]}
        entity_gold, entity_got = entity_gold + len(gold_entities), entity_got + len(got_entities)
        entity_tp += len(gold_entities & got_entities)
        gold = {
            (
                (rec.mentions[r.head].start, rec.mentions[r.head].type),
                r.type,
                (rec.mentions[r.tail].start, rec.mentions[r.tail].type),
            )
            for r in rec.relations
        }
        got = {
            ((t.head.start, t.head.label), t.relation, (t.tail.start, t.tail.label))
            for t in result["triplets"]
        }
        tp, fp, fn = tp + len(got & gold), fp + len(got - gold), fn + len(gold - got)
    assert entity_tp == entity_gold and entity_got - entity_tp <= 1
    assert fn == 0 and fp <= 1


def test_joint_examples_of_a_sentence_share_a_group(shared_data: Path, tmp_path: Path) -> None:
    domain = load_domain("conll04")
    dataset = _slice(shared_data, "conll04/dev_triples.json", 30)
    examples, report = build_joint_examples([dataset], domain=domain, ner_stage="supervised_ner")
    assert Counter(ex.stage for ex in examples) == {
        "supervised_ner": 30,
        "relations_forward": 30,
        "relations_reverse": 30,
    }
    groups: dict[str, set[str]] = {}
    for ex in examples:
        groups.setdefault(ex.group, set()).add(ex.stage)
    assert len(groups) == 30 and all(len(s) == 3 for s in groups.values())
    assert all(g.startswith(str(dataset.path)) for g in groups)  # file + item: unique
    path = tmp_path / "joint.jsonl"
    write_examples(path, examples)
    assert read_examples(path) == examples
    # other builders write no group, so their files are as before
    alone = build_supervised_examples([dataset], domain=domain)[0]
    assert all(ex.group == "" and "group" not in ex.to_json() for ex in alone)
    assert report.counts["ner_examples"] == 30


def test_cli_builds_supervised_ner(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sup.jsonl"
    source = str(shared_data / "conll04" / "dev_triples.json")
    argv = ["finetune", "build", "supervised_ner", source, "--limit", "12", "--out", str(out)]
    assert main([*argv, "--domain", "conll04"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["stage"] == "supervised_ner" and counts["examples"] == 12
    assert len(read_examples(out)) == 12
    assert main(argv) == 2
    assert "supervised_ner examples need --domain" in capsys.readouterr().err
    joint = tmp_path / "joint.jsonl"
    assert main(["finetune", "build", "joint", source, "--limit", "5", "--domain", "conll04",
                 "--ner-stage", "supervised_ner", "--out", str(joint)]) == 0  # fmt: skip
    assert Counter(ex.stage for ex in read_examples(joint))["supervised_ner"] == 5


def test_cli_exclude_builds_an_ade_folds_train_part(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ade = shared_data / "ade"
    out = tmp_path / "fold0.jsonl"
    argv = ["finetune", "build", "supervised_ner", str(ade / "ade_full.json"), "--domain", "ade"]
    exclude = ["--exclude", str(ade / "ade_split_0_test.json")]
    assert main([*argv, *exclude, "--out", str(out)]) == 0
    counts = json.loads(capsys.readouterr().out)
    test_texts = {r.text for r in read_source(ade / "ade_split_0_test.json").records}
    full = read_source(ade / "ade_full.json").records
    held = sum(r.text in test_texts for r in full)
    assert held >= len(test_texts) and counts["skipped"]["excluded"] == held
    assert counts["examples"] == len(full) - held
    assert not {ex.prompt for ex in read_examples(out)} & {
        ex.prompt
        for ex in build_supervised_examples(
            [read_source(ade / "ade_split_0_test.json")], domain=load_domain("ade")
        )[0]
    }


def test_cli_max_triples_keeps_the_simple_sentences(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = shared_data / "conll04" / "dev_triples.json"
    out = tmp_path / "simple.jsonl"
    argv = ["finetune", "build", "joint", str(source), "--domain", "conll04", "--out", str(out)]
    assert main([*argv, "--ner-stage", "supervised_ner", "--max-triples", "1"]) == 0
    counts = json.loads(capsys.readouterr().out)
    records = read_source(source).records
    simple = sum(len(r.relations) <= 1 for r in records)
    assert counts["skipped"]["over_max_triples"] == len(records) - simple
    examples = read_examples(out)
    assert Counter(ex.stage for ex in examples)["supervised_ner"] == simple
    for ex in examples:
        if ex.stage == "relations_forward":
            assert sum(len(block["pairs"]) for block in json.loads(ex.answer)) <= 1
    assert main([*argv, "--max-triples", "-1"]) == 2
