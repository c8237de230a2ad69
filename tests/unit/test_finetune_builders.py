"""Training-data builders: readers, validation, negatives, archetype projection, parity."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from samalign.cli import main
from samalign.datasets import read_file
from samalign.errors import ConfigError, InputError
from samalign.finetune.builders import (
    ChatExample,
    build_archetype_examples,
    build_calibrate_examples,
    build_extraction_examples,
    detect_format,
    read_examples,
    read_source,
    write_examples,
)
from samalign.finetune.builders.common import NegativeSampler
from samalign.finetune.builders.sources import SourceDataset, SourceMention, SourceRecord
from samalign.graphs import RunContext, build_ner_graph
from samalign.prompts import load_domain
from samalign.prompts.specs import CALIBRATION_FORMAT, EXTRACTION_FORMAT
from samalign.testing.fakes import fake_stage_models
from samalign.types import Archetype

TrainHead = Callable[[int], SourceDataset]
"""The ``crossner_ai_train`` fixture: the first ``n`` CrossNER AI train records."""

PILENER = "pilener_slimer/5pos_5neg_perNE_top391NEs_TrueDef/validation.jsonl"
ARCHETYPES = [a.value for a in Archetype]


def user(example: ChatExample) -> str:
    return example.messages[0]["content"]


def prompt_json(example: ChatExample) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(example.prompt)
    return value


# ------------------------------------------------------------------------------------------
# readers on the shared data
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        PILENER,
        "uniner_format/CrossNER_AI.json",
        "iepile/NER/train.json",
        "crossner/ai/train.txt",
        "conll04/train_triples.json",
        "ade/ade_split_0_test.json",
    ],
)
def test_read_source_is_a_view_of_the_dataset_reader(shared_data: Path, path: str) -> None:
    """The readers are tested in test_datasets_*; the builders see the same records."""
    data = read_file(shared_data / path)
    dataset = read_source(shared_data / path)
    assert dataset.format == data.format == detect_format(shared_data / path)
    assert dataset.label_set == data.label_set and dataset.relation_set == data.relation_set
    assert len(dataset.records) == len(data.records) > 0
    for ours, theirs in zip(dataset.records, data.records, strict=True):
        assert (ours.id, ours.text, ours.asked) == (theirs.id, theirs.text, theirs.asked)
        assert [(m.type, m.text, m.start, m.end) for m in ours.mentions] == [
            (e.type, e.text, e.start, e.end) for e in theirs.entities
        ]
        assert [(r.type, r.head, r.tail) for r in ours.relations] == [
            (r.type, r.head, r.tail) for r in theirs.relations
        ]
        assert ours.origin == theirs.where


def test_pilener_groups_the_per_type_lines_of_a_passage(shared_data: Path) -> None:
    dataset = read_source(shared_data / PILENER)
    lines = [json.loads(x) for x in (shared_data / PILENER).read_text().splitlines()]
    asked = sum(len(r.asked) for r in dataset.records)
    assert asked == len({(x["input"], x["tagName"]) for x in lines})
    record = next(r for r in dataset.records if r.id == "pilener:41753")
    assert "name" in record.asked
    assert SourceMention("name", "map-stream") in record.mentions


def test_spert_mentions_are_character_spans_of_the_joined_tokens(shared_data: Path) -> None:
    dataset = read_source(shared_data / "conll04" / "train_triples.json")
    assert dataset.label_set == ("Loc", "Org", "Other", "Peop")
    assert set(dataset.relation_set) == {"Kill", "Live_In", "Located_In", "OrgBased_In", "Work_For"}
    for record in dataset.records:
        for m in record.mentions:
            assert m.start is not None and m.end is not None
            assert record.text[m.start : m.end] == m.text
        for rel in record.relations:
            assert 0 <= rel.head < len(record.mentions)
    assert sum(len(r.relations) for r in dataset.records) == 1283


def test_bio_mentions_match_the_evaluation_loader(shared_data: Path) -> None:
    from samalign.evaluation import read_crossner

    path = shared_data / "crossner" / "ai" / "dev.txt"
    ours = read_source(path)
    theirs = read_crossner(path)
    assert theirs
    for a, b in zip(ours.records, theirs, strict=True):
        assert a.text == b.text
        assert [(m.start, m.end, m.type) for m in a.mentions] == [
            (e.span.start, e.span.end, e.label) for e in b.entities
        ]


# ------------------------------------------------------------------------------------------
# extractor examples
# ------------------------------------------------------------------------------------------


def test_explorer_closed_label_set_asks_every_domain_type_in_domain_order(
    shared_data: Path,
) -> None:
    domain = load_domain("crossner_ai")
    dataset = read_source(shared_data / "crossner" / "ai" / "train.txt")
    examples, report = build_extraction_examples(
        "explorer", [dataset], domain=domain, shuffle_types=False
    )
    assert report.examples == report.records == 100
    first = examples[0]
    assert prompt_json(first)["Schema"] == domain.names
    answer = json.loads(first.answer)
    assert list(answer) == domain.names
    assert answer["programming language"] == [] or isinstance(answer["programming language"], list)
    # labels are verbalised: "programlang" never appears, "organisation" is "organization"
    assert all("programlang" not in ex.prompt for ex in examples)
    gold = Counter(m.type for r in dataset.records for m in r.mentions)
    assert report.counts["mentions"] <= sum(gold.values())


def test_explorer_open_set_samples_absent_types_by_frequency(shared_data: Path) -> None:
    dataset = read_source(shared_data / PILENER)
    examples, report = build_extraction_examples("explorer", [dataset], negative_ratio=2.0, seed=3)
    assert examples
    for ex, rec in zip(examples, dataset.records, strict=True):
        schema = prompt_json(ex)["Schema"]
        answer = json.loads(ex.answer)
        positives = [t for t, v in answer.items() if v]
        assert set(positives) == {m.type for m in rec.mentions}
        negatives = [t for t in schema if t not in positives]
        assert set(rec.asked) <= set(schema)  # explicit negatives are kept
        assert len(negatives) >= max(1, 2 * len(positives))
        assert len(schema) == len(set(schema))
    again, _ = build_extraction_examples("explorer", [dataset], negative_ratio=2.0, seed=3)
    assert [e.prompt for e in again] == [e.prompt for e in examples]
    other, _ = build_extraction_examples("explorer", [dataset], negative_ratio=2.0, seed=4)
    assert [e.prompt for e in other] != [e.prompt for e in examples]
    assert report.counts["negative_types"] >= 2 * report.counts["mentions"] // 4


def test_negative_sampler_follows_frequencies_and_excludes() -> None:
    sampler = NegativeSampler({"a": 80, "b": 15, "c": 5, "d": 0}, random.Random(0))
    draws = Counter(t for _ in range(4000) for t in sampler.sample(1, {"x"}))
    assert set(draws) == {"a", "b", "c"}
    assert draws["a"] / 4000 == pytest.approx(0.80, abs=0.03)
    assert draws["c"] / 4000 == pytest.approx(0.05, abs=0.02)
    assert sampler.sample(5, {"a"}) in (["b", "c"], ["c", "b"])
    assert sampler.sample(0, set()) == []


def test_mentions_not_in_the_text_are_dropped_and_counted() -> None:
    rec = SourceRecord(
        id="r1",
        text="Marie Curie worked in Paris .",
        mentions=(SourceMention("person", "Marie Curie"), SourceMention("city", "London")),
        asked=("person", "city"),
    )
    dataset = SourceDataset(path=Path("x"), format="pilener", records=[rec])
    examples, report = build_extraction_examples("explorer", [dataset], shuffle_types=False)
    assert json.loads(examples[0].answer) == {"person": ["Marie Curie"], "city": []}
    assert report.skipped["mention_not_in_text"] == 1
    kept, _ = build_extraction_examples(
        "explorer", [dataset], shuffle_types=False, keep_ungrounded=True
    )
    assert json.loads(kept[0].answer)["city"] == ["London"]


def test_anchor_uses_the_iepile_instruction_and_the_records_schema(shared_data: Path) -> None:
    dataset = read_source(shared_data / "iepile" / "NER" / "train.json")
    examples, _ = build_extraction_examples("anchor", [dataset], shuffle_types=False)
    source = [
        json.loads(x) for x in (shared_data / "iepile/NER/train.json").read_text().splitlines()
    ]
    assert examples
    for ex, rec in zip(examples, source, strict=True):
        inner = json.loads(rec["instruction"])
        prompt = prompt_json(ex)
        assert prompt["instruction"].startswith("You are an expert in named entity recognition.")
        assert prompt["schema"] == inner["schema"]
        assert prompt["input"] == inner["input"]
        assert json.loads(ex.answer) == json.loads(rec["output"])


def test_too_long_texts_are_skipped() -> None:
    rec = SourceRecord(id="r", text="word " * 50, mentions=(SourceMention("x", "word"),))
    dataset = SourceDataset(path=Path("x"), format="bio", records=[rec], label_set=("x",))
    examples, report = build_extraction_examples("explorer", [dataset], max_text_chars=100)
    assert examples == [] and report.skipped["text_too_long"] == 1


def test_labels_outside_the_domain_are_a_config_error(shared_data: Path) -> None:
    dataset = read_source(shared_data / "crossner" / "ai" / "train.txt")
    with pytest.raises(ConfigError, match="not in domain 'crossner_music'"):
        build_extraction_examples("explorer", [dataset], domain=load_domain("crossner_music"))


# ------------------------------------------------------------------------------------------
# archetype and calibrate examples
# ------------------------------------------------------------------------------------------


def test_archetype_examples_tag_gold_mentions_and_project_through_m() -> None:
    rec = SourceRecord(
        id="r",
        text="Sepp Hochreiter visited Munich and Munich again with LSTM .",
        mentions=(
            SourceMention("person", "Sepp Hochreiter"),
            SourceMention("location", "Munich"),
            SourceMention("programlang", "LSTM"),  # not in M
        ),
        asked=("person", "location", "disease", "programlang"),
    )
    dataset = SourceDataset(path=Path("x"), format="pilener", records=[rec])
    examples, report = build_archetype_examples([dataset])
    (ex,) = examples
    prompt = prompt_json(ex)
    assert prompt["Sentence"] == (
        "<ENT>Sepp Hochreiter</ENT> visited <ENT>Munich</ENT> and <ENT>Munich</ENT> again "
        "with LSTM ."
    )
    # A^i = M(T^i): person → Person, location → Location, disease → Medicine, in archetype order
    assert prompt["Schema"] == ["Person", "Location", "Medicine"]
    assert json.loads(ex.answer) == {
        "Person": ["Sepp Hochreiter"],
        "Location": ["Munich"],
        "Medicine": [],
    }
    assert report.skipped["mention_without_archetype"] == 1

    misc, _ = build_archetype_examples([dataset], unmapped="misc")
    assert json.loads(misc[0].answer)["Misc"] == ["LSTM"]
    assert "<ENT>LSTM</ENT>" in prompt_json(misc[0])["Sentence"]
    full, _ = build_archetype_examples([dataset], schema="full")
    assert prompt_json(full[0])["Schema"] == ARCHETYPES
    with pytest.raises(ConfigError, match="'programlang' has no archetype"):
        build_archetype_examples([dataset], unmapped="error")
    mapped, _ = build_archetype_examples(
        [dataset], archetype_map={"programlang": "Computer_Science"}
    )
    assert json.loads(mapped[0].answer)["Computer_Science"] == ["LSTM"]
    with pytest.raises(ConfigError, match="is not an archetype"):
        build_archetype_examples([dataset], archetype_map={"programlang": "Software"})


def test_archetype_examples_use_the_domains_table(shared_data: Path) -> None:
    domain = load_domain("crossner_ai")
    dataset = read_source(shared_data / "crossner" / "ai" / "train.txt")
    examples, report = build_archetype_examples([dataset], domain=domain)
    assert report.examples == 100
    table = {t.name: t.archetype for t in domain.entity_types}
    for ex, rec in zip(examples, dataset.records, strict=True):
        answer = json.loads(ex.answer)
        tagged = re.findall(r"<ENT>(.*?)</ENT>", prompt_json(ex)["Sentence"])
        assert sorted(set(tagged)) == sorted(m for ms in answer.values() for m in ms)
        for m in rec.mentions:
            arch = table[domain.entity_type(m.type).name]
            assert arch is not None
            if m.text in answer.get(arch.value, []):
                break
        else:
            pytest.fail(f"no gold mention of {rec.id} kept its archetype")


def test_direct_typing_examples_use_target_names(shared_data: Path) -> None:
    domain = load_domain("crossner_ai")
    dataset = read_source(shared_data / "crossner" / "ai" / "train.txt")
    examples, report = build_archetype_examples([dataset], domain=domain, direct=True)
    assert report.stage == "direct_typing"
    assert prompt_json(examples[0])["Schema"] == domain.names
    with pytest.raises(ConfigError, match="need a domain"):
        build_archetype_examples([dataset], direct=True)


def test_calibrate_examples_round_trip_through_the_parser(shared_data: Path) -> None:
    domain = load_domain("crossner_ai")
    dataset = read_source(shared_data / "crossner" / "ai" / "train.txt")
    examples, _ = build_calibrate_examples([dataset], domain=domain)
    names = set(domain.names)
    assert examples
    for ex in examples:
        parsed = CALIBRATION_FORMAT.parse(ex.answer)
        initial = json.loads(ex.prompt.rsplit("Initial Output: ", 1)[1])
        assert [m for m, _ in parsed.assignments] == list(initial)
        assert {t for _, t in parsed.assignments} <= names
        assert set(initial.values()) <= set(ARCHETYPES)


# ------------------------------------------------------------------------------------------
# train/serve parity: the graph sends exactly the builders' prompts
# ------------------------------------------------------------------------------------------


def test_builders_render_exactly_what_the_graph_sends(crossner_ai_train: TrainHead) -> None:
    """Answer every stage with the builders' gold answers and compare the prompts sent."""
    domain = load_domain("crossner_ai")
    dataset = crossner_ai_train(12)
    explorer, _ = build_extraction_examples(
        "explorer", [dataset], domain=domain, shuffle_types=False
    )
    anchor, _ = build_extraction_examples("anchor", [dataset], domain=domain, shuffle_types=False)
    archetype, _ = build_archetype_examples([dataset], domain=domain, schema="full")
    calibrate, _ = build_calibrate_examples([dataset], domain=domain)
    by_text = {rec.text: i for i, rec in enumerate(dataset.records)}

    def answer_with(examples: list[ChatExample], key: str) -> Any:
        table = {ex.prompt: ex.answer for ex in examples}

        def respond(messages: Any) -> str:
            return table[str(messages[0].content)]

        return respond

    models = fake_stage_models(
        {
            "anchor": answer_with(anchor, "anchor"),
            "explorer": answer_with(explorer, "explorer"),
            "archetype": answer_with(archetype, "archetype"),
            "calibrate": answer_with(calibrate, "calibrate"),
        }
    )
    graph = build_ner_graph()
    context = RunContext(domain=domain, models=models)
    assert len(dataset.records) == 12
    for rec in dataset.records:
        result = graph.invoke({"text": rec.text}, context=context)  # a KeyError = no match
        i = by_text[rec.text]
        gold = {(m.start, m.end, m.type) for m in rec.mentions}
        got = {(e.start, e.end, e.label) for e in result["entities"]}
        assert got == gold, rec.id
        assert explorer[i].prompt and anchor[i].prompt
    for stage in ("anchor", "explorer", "archetype", "calibrate"):
        chat = models[stage].chat_model
        assert len(chat.calls) == len(dataset.records)  # type: ignore[attr-defined]


def test_extraction_answers_parse_back_to_the_gold(shared_data: Path) -> None:
    dataset = read_source(shared_data / "conll04" / "dev_triples.json")
    examples, _ = build_extraction_examples("explorer", [dataset])
    assert examples
    for ex, rec in zip(examples, dataset.records, strict=True):
        schema = prompt_json(ex)["Schema"]
        parsed = EXTRACTION_FORMAT.parse(ex.answer, schema)
        assert {m for _, m in parsed.pairs} == {m.text for m in rec.mentions}


# ------------------------------------------------------------------------------------------
# files and CLI
# ------------------------------------------------------------------------------------------


def test_examples_file_round_trip_and_validation(tmp_path: Path) -> None:
    ex = ChatExample(id="a", stage="explorer", task="ner", prompt="p", answer="{}", source="s")
    path = tmp_path / "ex.jsonl"
    assert write_examples(path, [ex, ex]) == 2
    assert read_examples(path) == [ex, ex]
    path.write_text('{"messages": [{"role": "user", "content": "p"}]}\n')
    with pytest.raises(InputError, match=r"ex.jsonl:1: 'messages' must be a list of two"):
        read_examples(path)
    path.write_text(
        '{"messages": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "a"}],'
        ' "task": "x"}\n'
    )
    with pytest.raises(InputError, match="'task' must be one of"):
        read_examples(path)


def test_cli_build_writes_examples_and_reports_counts(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "arch.jsonl"
    status = main(
        [
            "finetune",
            "build",
            "archetype",
            str(shared_data / "crossner" / "ai" / "train.txt"),
            "--domain",
            "crossner_ai",
            "--limit",
            "10",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    assert report["examples"] == 10 == len(read_examples(out))
    assert report["stage"] == "archetype"
    status = main(
        [
            "finetune",
            "build",
            "calibrate",
            str(shared_data / "crossner" / "ai" / "train.txt"),
            "--out",
            str(tmp_path / "c.jsonl"),
        ]
    )
    assert status == 2
    assert "need --domain" in capsys.readouterr().err


def test_cli_build_reads_a_tag_first_bio_file_like_the_original(
    shared_data: Path,
    tmp_path: Path,
    swap_bio_columns: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = shared_data / "crossner" / "ai" / "train.txt"
    swapped = swap_bio_columns(source, tmp_path / "train.txt")
    outputs = []
    for path, name in ((source, "a.jsonl"), (swapped, "b.jsonl")):
        args = ["finetune", "build", "anchor", str(path), "--domain", "crossner_ai"]
        assert main([*args, "--limit", "10", "--out", str(tmp_path / name)]) == 0
        outputs.append([(e.prompt, e.answer) for e in read_examples(tmp_path / name)])
    assert outputs[0] == outputs[1] and len(outputs[0]) == 10
    args = ["finetune", "build", "anchor", str(swapped), "--bio-columns", "token-tag"]
    assert main([*args, "--out", str(tmp_path / "c.jsonl")]) == 2
    assert "the columns look swapped" in capsys.readouterr().err


def test_cli_build_refuses_spert_records_keyed_ner_as_eval_does(
    ner_keyed_spert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ner_keyed_spert
    assert main(["finetune", "build", "explorer", str(path), "--out", str(tmp_path / "x")]) == 2
    build_err = capsys.readouterr().err
    out = str(tmp_path / "r.json")
    assert main(["eval", str(path), "--domain", "conll04", "--backend", "gold", "--out", out]) == 2
    eval_err = capsys.readouterr().err
    assert "field 'entities' is missing and the record has 'ner' instead" in build_err
    assert build_err == eval_err  # one reader, one message


def test_cli_build_relation_examples_from_crossre(
    tmp_path: Path,
    crossre_records: list[dict[str, Any]],
    write_crossre: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_crossre(tmp_path / "ai-train.json", crossre_records)
    domain = tmp_path / "domain.yaml"
    domain.write_text(
        json.dumps(
            {
                "name": "crossre_sample",
                "entity_types": [
                    {"label": t, "definition": f"A {t}."}
                    for t in ("organisation", "conference", "algorithm", "metrics")
                ],
                "relation_types": [
                    {"label": r, "definition": f"The subject is {r} of the object."}
                    for r in ("role", "named", "compare")
                ],
            }
        ),
        encoding="utf-8",
    )
    out = tmp_path / "rel.jsonl"
    args = ["finetune", "build", "relations_forward", str(path), "--domain", str(domain)]
    assert main([*args, "--out", str(out)]) == 0
    examples = read_examples(out)
    assert len(examples) == 3
    from samalign.prompts.specs import RELATION_FORMATS

    parsed = RELATION_FORMATS["relations_forward"].parse(examples[0].answer, ["role", "named"])
    assert set(parsed.triplets) == {
        ("ELRA", "role", "LREC"),
        ("International Language Resources and Evaluation Conference", "named", "LREC"),
    }
    del crossre_records[1]["relations"]
    write_crossre(path, crossre_records)
    assert main([*args, "--out", str(out)]) == 2
    assert "ai-train.json:2 (doc_key 'ai-test-4'): field 'relations' is missing" in (
        capsys.readouterr().err
    )


# ------------------------------------------------------------------------------------------
# relation and joint examples
# ------------------------------------------------------------------------------------------


def test_relation_examples_render_gold_blocks_in_both_directions(shared_data: Path) -> None:
    from samalign.finetune.builders import build_relation_examples
    from samalign.prompts.specs import RELATION_FORMATS

    domain = load_domain("conll04")
    dataset = read_source(shared_data / "conll04" / "dev_triples.json")
    names = domain.relation_names
    for stage in ("relations_forward", "relations_reverse"):
        examples, report = build_relation_examples(stage, [dataset], domain=domain)
        assert report.examples == len(dataset.records) == 231
        key = "subject" if stage == "relations_forward" else "object"
        for ex, rec in zip(examples, dataset.records, strict=True):
            assert ex.task == "re" and ex.stage == stage
            prompt = prompt_json(ex)
            assert prompt["schema"] == domain.relation_schema()
            assert prompt["input"] == rec.text
            blocks = json.loads(ex.answer)
            assert all(key in block for block in blocks)
            parsed = RELATION_FORMATS[stage].parse(ex.answer, names)
            gold = {
                (
                    rec.mentions[r.head].text,
                    domain.relation_for_name(r.type).name,  # type: ignore[union-attr]
                    rec.mentions[r.tail].text,
                )
                for r in rec.relations
            }
            assert set(parsed.triplets) == gold


def test_relation_examples_need_a_relation_domain_and_spert(shared_data: Path) -> None:
    from samalign.finetune.builders import build_relation_examples

    conll = read_source(shared_data / "conll04" / "dev_triples.json")
    with pytest.raises(ConfigError, match="has no relation_types"):
        build_relation_examples("relations_forward", [conll], domain=load_domain("crossner_ai"))
    with pytest.raises(ConfigError, match="relation 'Kill' is not in domain 'ade'"):
        build_relation_examples("relations_forward", [conll], domain=load_domain("ade"))
    bio = read_source(shared_data / "crossner" / "ai" / "train.txt")
    with pytest.raises(ConfigError, match="need SpERT-style data"):
        build_relation_examples("relations_forward", [bio], domain=load_domain("conll04"))
    scierc = read_source(shared_data / "scierc" / "dev_triples.json")
    kept, report = build_relation_examples(
        "relations_reverse", [scierc], domain=load_domain("scierc"), keep_empty=False
    )
    assert report.skipped["no_relations"] > 0
    assert len(kept) == report.records - report.skipped["no_relations"]


def test_joint_mixture_holds_ner_and_both_relation_decoders(shared_data: Path) -> None:
    from samalign.finetune.builders import build_joint_examples

    dataset = read_source(shared_data / "ade" / "ade_split_0_test.json")
    examples, report = build_joint_examples([dataset], domain=load_domain("ade"), seed=1)
    stages = Counter(ex.stage for ex in examples)
    assert stages == {"explorer": 427, "relations_forward": 427, "relations_reverse": 427}
    assert Counter(ex.task for ex in examples) == {"ner": 427, "re": 854}
    assert report.counts["ner_examples"] == 427 and report.counts["re_examples"] == 854
    assert [ex.stage for ex in examples[:20]] != sorted(ex.stage for ex in examples[:20])
    again, _ = build_joint_examples([dataset], domain=load_domain("ade"), seed=1)
    assert again == examples


def test_joint_graph_sends_exactly_the_builders_prompts(shared_data: Path) -> None:
    """Answer all six stages with gold answers; the graph must reproduce the gold triplets."""
    from samalign.finetune.builders import build_relation_examples
    from samalign.graphs import build_joint_graph

    domain = load_domain("conll04")
    full = read_source(shared_data / "conll04" / "dev_triples.json")
    dataset = SourceDataset(
        path=full.path, format="spert", records=full.records[:20], label_set=full.label_set
    )
    built = {
        "anchor": build_extraction_examples("anchor", [dataset], domain=domain)[0],
        "explorer": build_extraction_examples(
            "explorer", [dataset], domain=domain, shuffle_types=False
        )[0],
        "archetype": build_archetype_examples([dataset], domain=domain, schema="full")[0],
        "calibrate": build_calibrate_examples([dataset], domain=domain)[0],
        "relations_forward": build_relation_examples("relations_forward", [dataset], domain=domain)[
            0
        ],
        "relations_reverse": build_relation_examples("relations_reverse", [dataset], domain=domain)[
            0
        ],
    }

    def answer_from(examples: list[ChatExample]) -> Any:
        table = {ex.prompt: ex.answer for ex in examples}
        return lambda messages: table[str(messages[0].content)]

    models = fake_stage_models({stage: answer_from(exs) for stage, exs in built.items()})
    context = RunContext(domain=domain, models=models)
    graph = build_joint_graph()
    tp = fp = fn = 0
    for rec in dataset.records:
        result = graph.invoke({"text": rec.text}, context=context)
        gold = {
            (
                (rec.mentions[r.head].start, rec.mentions[r.head].end, rec.mentions[r.head].type),
                r.type,
                (rec.mentions[r.tail].start, rec.mentions[r.tail].end, rec.mentions[r.tail].type),
            )
            for r in rec.relations
        }
        got = {
            (
                (t.head.start, t.head.end, t.head.label),
                t.relation,
                (t.tail.start, t.tail.end, t.tail.label),
            )
            for t in result["triplets"]
        }
        tp, fp, fn = tp + len(got & gold), fp + len(got - gold), fn + len(gold - got)
    assert fn <= 1 and fp <= 1  # a repeated mention string may pick another occurrence
    assert tp >= 25
