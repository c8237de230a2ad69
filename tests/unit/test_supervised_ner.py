"""AnchorAlign's supervised setting: the supervised NER stage, its graph shape and replay."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from samalign.cli.options import add_pipeline_flags, pipeline_values
from samalign.errors import ConfigError, OutputParseError
from samalign.evaluation.backends import simulated_backend
from samalign.evaluation.gold import GoldOracle, gold_stage_models, prompt_texts, schema_types
from samalign.evaluation.runner import ablation_variants
from samalign.evaluation.sentences import Sentence, make_entity, token_offsets
from samalign.evaluation.simulate import NoiseModel
from samalign.graphs import PipelineOptions, RunContext, build_joint_graph, build_ner_graph
from samalign.prompts import load_domain
from samalign.prompts.specs import default_specs
from samalign.prompts.supervised import SUPERVISED_NER_FORMAT, SUPERVISED_NER_INSTRUCTION
from samalign.testing.fakes import ScriptedChatModel, fake_stage_models

TEXT = "John Smith works for IBM in Armonk ; John Smith lives in Armonk ."
SAMNER_NODES = {"anchor", "explorer", "consensus", "merge", "archetype", "calibrate"}


def records(*pairs: tuple[str, str]) -> str:
    return json.dumps([{"mention": m, "type": t} for m, t in pairs])


# ------------------------------------------------------------------------------ answer format


def test_format_schema_renders_and_parses_typed_records() -> None:
    names = ["person", "organization"]
    schema = SUPERVISED_NER_FORMAT.schema(names, max_items=4)
    validator = Draft202012Validator(schema)
    gold = SUPERVISED_NER_FORMAT.render_gold(
        names, [("John", "person"), ("IBM", "organization"), ("John", "person")]
    )
    assert json.loads(gold) == [
        {"mention": "John", "type": "person"},
        {"mention": "IBM", "type": "organization"},
    ]  # text order kept, the repeated pair written once
    assert validator.is_valid(json.loads(gold))
    assert not validator.is_valid([{"mention": "John", "type": "location"}])
    constrained = SUPERVISED_NER_FORMAT.schema(names, mentions=["John", "IBM"])
    assert not Draft202012Validator(constrained).is_valid([{"mention": "Bob", "type": "person"}])
    parsed = SUPERVISED_NER_FORMAT.parse(gold, names)
    assert parsed.pairs == (("person", "John"), ("organization", "IBM"))
    # lenient: fenced, the IEPile object form, types outside the schema reported
    odd = SUPERVISED_NER_FORMAT.parse(
        '```json\n[{"mention": "IBM", "type": "ORGANIZATION"}, {"mention": "x", "type": "verb"}]',
        names,
    )
    assert odd.pairs == (("organization", "IBM"),) and odd.out_of_schema == ("verb",)
    assert SUPERVISED_NER_FORMAT.parse('{"person": ["John"]}', names).pairs == (("person", "John"),)
    with pytest.raises(OutputParseError, match='"mention"'):
        SUPERVISED_NER_FORMAT.parse('["John", "IBM"]', names)
    with pytest.raises(Exception, match="not in the schema"):
        SUPERVISED_NER_FORMAT.render_gold(names, [("Armonk", "location")])


def test_spec_renders_the_iepile_shape_and_replay_reads_it() -> None:
    spec = default_specs()["supervised_ner"]
    prompt = spec.render({"labels": ["person", "location"], "text": TEXT})
    assert json.loads(prompt) == {
        "instruction": SUPERVISED_NER_INSTRUCTION,
        "schema": ["person", "location"],
        "input": TEXT,
    }
    assert next(iter(prompt_texts(prompt))) == TEXT
    assert schema_types(SUPERVISED_NER_FORMAT.schema(["a", "b"])) == ["a", "b"]


# ------------------------------------------------------------------------------ options, graph


def test_supervised_options_have_one_ner_stage_and_refuse_samner_switches() -> None:
    options = PipelineOptions(ner_mode="supervised")
    assert options.model_stages == ["supervised_ner"]
    assert options.joint_model_stages == [
        "supervised_ner",
        "relations_forward",
        "relations_reverse",
    ]
    assert PipelineOptions(ner_mode="supervised", aggregate_relations=False).joint_model_stages == [
        "supervised_ner",
        "relations_forward",
    ]
    assert not options.runs_consensus
    with pytest.raises(ConfigError, match="use_calibration=False cannot apply"):
        PipelineOptions(ner_mode="supervised", use_calibration=False)
    with pytest.raises(ConfigError, match="ner_mode"):
        PipelineOptions(ner_mode="distant")  # type: ignore[arg-type]
    assert PipelineOptions().ner_mode == "zero_shot"


def test_graph_shape_follows_the_ner_mode() -> None:
    supervised = PipelineOptions(ner_mode="supervised")
    ner = set(build_ner_graph(supervised).get_graph().nodes)
    assert ner == {"__start__", "supervised_ner", "__end__"}
    joint = set(build_joint_graph(supervised).get_graph().nodes)
    assert joint == {
        "__start__",
        "supervised_ner",
        "relations_forward",
        "relations_reverse",
        "anchor_filter",
        "__end__",
    }
    assert not joint & SAMNER_NODES
    assert "supervised_ner" not in set(build_joint_graph().get_graph().nodes)


def test_supervised_node_types_are_final() -> None:
    domain = load_domain("conll04")
    answer = records(
        ("John Smith", "person"),
        ("IBM", "organization"),
        ("Armonk", "location"),
        ("IBM", "location"),  # a second type for a string: the first is kept
        ("lives", "verb"),  # outside the schema: dropped
        ("Mary Jones", "person"),  # not in the text: dropped
    )
    models = fake_stage_models({"supervised_ner": answer})
    graph = build_ner_graph(PipelineOptions(ner_mode="supervised", grounding="nested"))
    result = graph.invoke({"text": TEXT}, context=RunContext(domain=domain, models=models))
    entities = [(e.text, e.start, e.label, e.sources) for e in result["entities"]]
    assert entities == [
        ("John Smith", 0, "Peop", ("supervised_ner",)),
        ("IBM", 21, "Org", ("supervised_ner",)),
        ("Armonk", 28, "Loc", ("supervised_ner",)),
        ("John Smith", 37, "Peop", ("supervised_ner",)),
        ("Armonk", 57, "Loc", ("supervised_ner",)),
    ]
    assert [(c.start, c.label) for c in result["candidates"]] == [
        (e[1], None) for e in entities
    ]  # the same spans, untyped
    assert not result.get("archetyped") and not result.get("anchor_mentions")
    kinds = {d.kind: d.message for d in result["diagnostics"]}
    assert set(kinds) == {"label_out_of_schema", "duplicate_assignment", "hallucination"}
    assert "'lives'" in kinds["label_out_of_schema"] and "Mary Jones" in kinds["hallucination"]
    assert set(result["usage"]) == {"supervised_ner"}
    call = models.require("supervised_ner").chat_model
    assert isinstance(call, ScriptedChatModel)
    prompt = json.loads(call.calls[0]["messages"][0].content)
    assert prompt["schema"] == domain.names and prompt["input"] == TEXT
    schema = call.calls[0]["kwargs"]["response_format"]["json_schema"]
    assert schema["name"] == "supervised_ner_answer"
    assert schema["schema"]["items"]["properties"]["type"]["enum"] == domain.names


def test_unusable_answer_fails_the_stage_not_the_graph() -> None:
    models = fake_stage_models({"supervised_ner": "no json here"})
    graph = build_ner_graph(PipelineOptions(ner_mode="supervised", parse_retries=0))
    result = graph.invoke(
        {"text": TEXT}, context=RunContext(domain=load_domain("conll04"), models=models)
    )
    assert result["entities"] == [] and result["failed_stages"] == ["supervised_ner"]
    assert [d.kind for d in result["diagnostics"]] == ["parse_error"]


def test_joint_graph_runs_supervised_ner_then_the_decoders_and_the_filter() -> None:
    domain = load_domain("conll04")
    models = fake_stage_models(
        {
            "supervised_ner": records(("John Smith", "person"), ("IBM", "organization")),
            "relations_forward": json.dumps(
                [
                    {"subject": "John Smith", "pairs": [{"object": "IBM", "relation": "work for"}]},
                    {
                        "subject": "John Smith",
                        "pairs": [{"object": "Armonk", "relation": "live in"}],
                    },
                ]
            ),
            "relations_reverse": "[]",
        }
    )
    graph = build_joint_graph(PipelineOptions(ner_mode="supervised"))
    result = graph.invoke({"text": TEXT}, context=RunContext(domain=domain, models=models))
    assert {(t.head.text, t.relation, t.tail.text) for t in result["triplets"]} == {
        ("John Smith", "Work_For", "IBM")
    }
    head = result["triplets"][0].head
    assert head.label == "Peop" and head.sources == ("supervised_ner",)
    # Armonk is no NER entity: the anchor filter (Eq. 13) drops the triplet
    assert [d.triplet.tail.text for d in result["dropped_triplets"]] == ["Armonk"]


# ------------------------------------------------------------------------------ CLI, sweep


def _flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_pipeline_flags(parser)
    return parser.parse_args(list(argv))


def test_cli_flag_sets_the_mode_and_refuses_samner_ablations() -> None:
    values = pipeline_values(_flags("--ner-mode", "supervised", "--no-aggregation"), joint=True)
    options = PipelineOptions(**values)
    assert options.ner_mode == "supervised" and not options.aggregate_relations
    assert pipeline_values(_flags(), joint=False)["ner_mode"] == "zero_shot"
    with pytest.raises(ConfigError, match="--no-explorer: SAM-NER ablations do not apply"):
        pipeline_values(_flags("--ner-mode", "supervised", "--no-explorer"), joint=True)


def test_supervised_sweep_has_only_the_relation_ablations() -> None:
    assert list(ablation_variants("joint", supervised=True)) == [
        "full",
        "no_aggregation",
        "no_constraint",
        "no_aggregation_no_constraint",
    ]
    assert list(ablation_variants("ner", supervised=True)) == ["full"]
    assert "no_calibration" in ablation_variants("joint")


# ------------------------------------------------------------------------------ replay


def _sentence() -> Sentence:
    tokens = TEXT.split()
    offsets = token_offsets(tokens)
    spans = [(0, 2, "Peop"), (4, 5, "Org"), (6, 7, "Loc"), (8, 10, "Peop"), (12, 13, "Loc")]
    return Sentence(
        id="c-0",
        tokens=tuple(tokens),
        text=TEXT,
        entities=tuple(make_entity(TEXT, offsets, s, e, label) for s, e, label in spans),
    )


def test_gold_oracle_answers_the_typed_entities() -> None:
    s = _sentence()
    oracle = GoldOracle([s], load_domain("conll04"))
    names = oracle.domain.names
    prompt = default_specs()["supervised_ner"].render({"labels": names, "text": TEXT})
    answer = json.loads(
        oracle.answer("supervised_ner", prompt, SUPERVISED_NER_FORMAT.schema(names))
    )
    assert answer == [
        {"mention": "John Smith", "type": "person"},
        {"mention": "IBM", "type": "organization"},
        {"mention": "Armonk", "type": "location"},
    ]
    only = json.loads(
        oracle.answer("supervised_ner", prompt, SUPERVISED_NER_FORMAT.schema(["person"]))
    )
    assert only == [{"mention": "John Smith", "type": "person"}]
    replay = gold_stage_models([s], oracle.domain)
    graph = build_ner_graph(PipelineOptions(ner_mode="supervised"))
    result = graph.invoke({"text": TEXT}, context=RunContext(oracle.domain, replay.for_sentence(s)))
    got = {(e.start, e.end, e.label) for e in result["entities"]}
    assert got == {(e.span.start, e.span.end, e.label) for e in s.entities}


def test_simulated_supervised_ner_misses_and_mistypes_at_its_rates() -> None:
    s = _sentence()
    domain = load_domain("conll04")
    options = PipelineOptions(ner_mode="supervised", grounding="nested")
    graph = build_ner_graph(options)

    def labels(noise: NoiseModel) -> set[tuple[int, str | None]]:
        backend = simulated_backend([s], domain, noise=noise, seed=0)
        result = graph.invoke({"text": TEXT}, context=backend.context_for(s))
        return {(e.start, e.label) for e in result["entities"]}

    gold = {(e.span.start, e.label) for e in s.entities}
    assert labels(NoiseModel(supervised_miss=0.0, supervised_error=0.0)) == gold
    assert labels(NoiseModel(supervised_miss=1.0)) == set()
    wrong = labels(NoiseModel(supervised_miss=0.0, supervised_error=1.0))
    assert {start for start, _ in wrong} == {start for start, _ in gold}
    assert not wrong & gold


async def test_gold_replay_supervised_conll04_sentences(gold_replay: Any) -> None:
    """A few CoNLL04 test sentences through the supervised joint graph, answered with gold.

    The whole split is replayed in ``tests/integration/test_gold_replay.py``.
    """
    report = await gold_replay.run(
        "conll04", "test", graph="joint", relation_arguments="all", ner_mode="supervised", limit=12
    )
    assert report.sentences == 12
    assert report.relation is not None and report.relation.strict.gold > 0
    assert report.entity.span.f1 >= 0.99
    assert report.relation.strict.f1 >= 0.99
    gold_replay.check(report)
    assert set(report.cost.stages) == {"supervised_ner", "relations_forward", "relations_reverse"}
    assert report.cost.total["calls"] == 3 * report.sentences
