"""The joint entity + relation graph with scripted fake stage models."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from jsonschema import Draft202012Validator, ValidationError
from langchain_core.messages import BaseMessage

from samalign.agents.anchor_filter import anchor_filter
from samalign.errors import ConfigError
from samalign.graphs import PipelineOptions, RunContext, build_joint_graph
from samalign.prompts import load_domain
from samalign.serving.models import StageModels
from samalign.testing.fakes import ScriptedChatModel, fake_stage_models

TEXT = "John Smith , who works for IBM in Armonk , met Mary Jones of Acme in Boston ."
# NER: John Smith, IBM, Armonk, Mary Jones, Boston (Acme is missed by NER)
NER = ["John Smith", "IBM", "Armonk", "Mary Jones", "Boston"]
GOLD_TYPES = {
    "Peop": ["John Smith", "Mary Jones"],
    "Org": ["IBM", "Acme"],
    "Loc": ["Armonk", "Boston"],
}
"""The gold CoNLL04 type of each mention (``FakeNer.gold_of``)."""
FORWARD = [
    {
        "subject": "John Smith",  # shared subject: two pairs
        "pairs": [
            {"object": "IBM", "relation": "work for"},
            {"object": "Armonk", "relation": "live in"},
        ],
    },
    {"subject": "IBM", "pairs": [{"object": "Armonk", "relation": "organization based in"}]},
    {
        "subject": "Mary Jones",
        "pairs": [{"object": "Acme", "relation": "work for"}],
    },  # Acme: NER missed
    {
        "subject": "Mary Jones",
        "pairs": [{"object": "Boston", "relation": "married to"}],
    },  # out of schema
    {"subject": "Zed Zedson", "pairs": [{"object": "IBM", "relation": "work for"}]},  # not in text
    {
        "subject": "Boston",
        "pairs": [{"object": "Boston", "relation": "located in"}],
    },  # self relation
    {"subject": "IBM", "pairs": [{"object": "Boston", "relation": "live in"}]},  # Org -> Loc: type
    {"pairs": [{"object": "IBM", "relation": "work for"}]},  # malformed: no subject
]
REVERSE = [
    {
        "object": "IBM",  # reversed duplicate of a forward triple
        "pairs": [{"subject": "John Smith", "relation": "work for"}],
    },
    {
        "object": "Boston",
        "pairs": [{"subject": "Mary Jones", "relation": "live in"}],
    },  # reverse only
]


def prompt_of(messages: Sequence[BaseMessage]) -> str:
    content = messages[0].content
    return content if isinstance(content, str) else str(content)


def models(
    fake_ner: Any, *, forward: Any = None, reverse: Any = None, anchor: Any = None
) -> StageModels:
    ner = fake_ner(
        anchor={TEXT: NER}, explorer={TEXT: NER}, gold=fake_ner.gold_of("conll04", **GOLD_TYPES)
    )
    scripts = ner.scripts_by_stage()
    scripts["relations_forward"] = json.dumps(FORWARD) if forward is None else forward
    scripts["relations_reverse"] = json.dumps(REVERSE) if reverse is None else reverse
    if anchor is not None:
        scripts["anchor"] = anchor
    return fake_stage_models(scripts)


def context(stage_models: StageModels) -> RunContext:
    return RunContext(domain=load_domain("conll04"), models=stage_models)


def triples(items: Sequence[Any]) -> set[tuple[str, str, str]]:
    return {(t.head.text, t.relation, t.tail.text) for t in items}


def test_joint_graph_full_pipeline(fake_ner: Any) -> None:
    result = build_joint_graph().invoke({"text": TEXT}, context=context(models(fake_ner)))
    assert {e.text for e in result["entities"]} == set(NER)
    assert triples(result["forward_triplets"]) == {
        ("John Smith", "Work_For", "IBM"),
        ("John Smith", "Live_In", "Armonk"),
        ("IBM", "OrgBased_In", "Armonk"),
        ("Mary Jones", "Work_For", "Acme"),
    }
    assert triples(result["reverse_triplets"]) == {
        ("John Smith", "Work_For", "IBM"),
        ("Mary Jones", "Live_In", "Boston"),
    }
    assert triples(result["triplets"]) == {
        ("John Smith", "Work_For", "IBM"),
        ("John Smith", "Live_In", "Armonk"),
        ("IBM", "OrgBased_In", "Armonk"),
        ("Mary Jones", "Live_In", "Boston"),
    }
    [dropped] = result["dropped_triplets"]
    assert (dropped.triplet.head.text, dropped.triplet.tail.text) == ("Mary Jones", "Acme")
    assert "tail 'Acme' not recognised" in dropped.reason
    by_triple = {(t.head.text, t.relation, t.tail.text): t for t in result["triplets"]}
    assert by_triple[("John Smith", "Work_For", "IBM")].sources == ("forward", "reverse")
    assert by_triple[("Mary Jones", "Live_In", "Boston")].sources == ("reverse",)
    # Arguments carry the NER entity (label, archetype) and satisfy the text.
    for t in result["triplets"]:
        for arg in (t.head, t.tail):
            assert TEXT[arg.start : arg.end] == arg.text
            assert arg.label is not None and arg.archetype is not None
    work = by_triple[("John Smith", "Work_For", "IBM")]
    assert (work.head.label, work.tail.label) == ("Peop", "Org")
    kinds = {d.kind for d in result["diagnostics"] if d.stage == "relations_forward"}
    assert kinds == {
        "label_out_of_schema",
        "malformed",
        "hallucination",
        "self_relation",
        "argument_type",
    }
    messages = " ".join(d.message for d in result["diagnostics"])
    assert "married to" in messages and "Zed Zedson" in messages
    assert result["usage"]["relations_forward"].calls == 1
    assert result["usage"]["relations_reverse"].calls == 1


def test_filter_node_matches_pure_function(fake_ner: Any) -> None:
    for aggregate in (True, False):
        for constrain in (True, False):
            options = PipelineOptions(aggregate_relations=aggregate, anchor_constraint=constrain)
            result = build_joint_graph(options).invoke(
                {"text": TEXT}, context=context(models(fake_ner))
            )
            fwd = [(t.head.text, t.relation, t.tail.text) for t in result["forward_triplets"]]
            rev = [
                (t.head.text, t.relation, t.tail.text) for t in result.get("reverse_triplets", [])
            ]
            kept, dropped = anchor_filter(
                fwd,
                rev,
                [e.text for e in result["entities"]],
                aggregate=aggregate,
                constrain=constrain,
            )
            assert [(t.head.text, t.relation, t.tail.text) for t in result["triplets"]] == kept
            assert [
                (d.triplet.head.text, d.triplet.relation, d.triplet.tail.text)
                for d in result["dropped_triplets"]
            ] == dropped


def test_ablations_change_the_graph_shape() -> None:
    full = set(build_joint_graph().get_graph().nodes)
    assert {"relations_forward", "relations_reverse", "anchor_filter"} <= full
    assert "recover" not in full
    forward_only = set(
        build_joint_graph(PipelineOptions(aggregate_relations=False)).get_graph().nodes
    )
    assert "relations_reverse" not in forward_only and "relations_forward" in forward_only
    recover = set(build_joint_graph(PipelineOptions(recover_dropped=True)).get_graph().nodes)
    assert "recover" in recover
    no_anchor = set(build_joint_graph(PipelineOptions(use_anchor=False)).get_graph().nodes)
    assert "anchor" not in no_anchor and "relations_forward" in no_anchor
    assert PipelineOptions().joint_model_stages == [
        "anchor",
        "explorer",
        "archetype",
        "calibrate",
        "relations_forward",
        "relations_reverse",
    ]
    assert (
        PipelineOptions(use_anchor=False, recover_dropped=True).joint_model_stages[-1] == "anchor"
    )
    with pytest.raises(ConfigError, match="recover_dropped needs anchor_constraint"):
        PipelineOptions(recover_dropped=True, anchor_constraint=False)


def test_without_constraint_unrecognised_argument_is_typed_by_the_relation(fake_ner: Any) -> None:
    options = PipelineOptions(anchor_constraint=False)
    result = build_joint_graph(options).invoke({"text": TEXT}, context=context(models(fake_ner)))
    acme = next(t for t in result["triplets"] if t.tail.text == "Acme")
    assert acme.tail.label == "Org"  # Work_For admits only Org as its object
    assert acme.tail.archetype is None and acme.tail.sources == ()
    assert result["dropped_triplets"] == []


def _verifying(ner_answer: Callable[[Sequence[BaseMessage]], str]) -> Callable[..., str]:
    """An anchor that answers NER requests from its table and confirms Acme when asked."""

    def answer(messages: Sequence[BaseMessage]) -> str:
        if '"schema": ["organization"]' in prompt_of(messages):
            return json.dumps({"organization": ["Acme"]})
        return str(ner_answer(messages))

    return answer


def test_recover_dropped_asks_the_anchor(fake_ner: Any) -> None:
    options = PipelineOptions(recover_dropped=True)
    # An anchor that does not confirm Acme: the triplet stays dropped.
    stage_models = models(fake_ner)
    result = build_joint_graph(options).invoke({"text": TEXT}, context=context(stage_models))
    assert ("Mary Jones", "Work_For", "Acme") not in triples(result["triplets"])
    assert len(result["dropped_triplets"]) == 1
    assert result["usage"]["recover"].calls == 1

    # An anchor that confirms Acme as an organization: the triplet is kept, Acme is an entity.
    confirm = models(fake_ner)
    chat = confirm["anchor"].chat_model
    assert isinstance(chat, ScriptedChatModel)
    chat.script = _verifying(chat.script)
    result = build_joint_graph(options).invoke({"text": TEXT}, context=context(confirm))
    assert ("Mary Jones", "Work_For", "Acme") in triples(result["triplets"])
    acme = next(e for e in result["entities"] if e.text == "Acme")
    assert acme.label == "Org" and acme.sources == ("anchor",)
    assert result["dropped_triplets"] == []
    assert any(d.kind == "recovered" for d in result["diagnostics"])
    verify_call = chat.calls[-1]
    schema = verify_call["kwargs"]["response_format"]["json_schema"]["schema"]
    assert schema["$defs"]["mention"]["enum"] == ["Acme"]
    Draft202012Validator(schema).validate({"organization": ["Acme"]})


def test_relation_requests_carry_schema_and_definitions(fake_ner: Any) -> None:
    stage_models = models(fake_ner)
    build_joint_graph().invoke({"text": TEXT}, context=context(stage_models))
    for stage, block_key, pair_key in (
        ("relations_forward", "subject", "object"),
        ("relations_reverse", "object", "subject"),
    ):
        chat = stage_models[stage].chat_model
        assert isinstance(chat, ScriptedChatModel)
        [call] = chat.calls
        prompt = prompt_of(call["messages"])
        payload = json.loads(prompt)
        assert payload["input"] == TEXT
        names = [r["relation"] for r in payload["schema"]]
        assert names == ["kill", "organization based in", "work for", "live in", "located in"]
        work = payload["schema"][2]
        assert work["subject types"] == ["person"] and work["object types"] == ["organization"]
        assert work["definition"]
        schema = call["kwargs"]["response_format"]["json_schema"]["schema"]
        validator = Draft202012Validator(schema)
        validator.validate(
            [{block_key: "John Smith", "pairs": [{pair_key: "IBM", "relation": "work for"}]}]
        )
        with pytest.raises(ValidationError, match="'owns' is not one of"):
            validator.validate(
                [{block_key: "John Smith", "pairs": [{pair_key: "IBM", "relation": "owns"}]}]
            )


def test_unusable_relation_answer_keeps_entities(fake_ner: Any) -> None:
    stage_models = models(fake_ner, forward="not json at all", reverse="[]")
    result = build_joint_graph().invoke({"text": TEXT}, context=context(stage_models))
    assert {e.text for e in result["entities"]} == set(NER)
    assert result["triplets"] == []
    assert "relations_forward" in result["failed_stages"]
    assert any(d.kind == "parse_error" for d in result["diagnostics"])


def test_domain_without_relations_is_a_config_error(fake_ner: Any) -> None:
    stage_models = models(fake_ner)
    ctx = RunContext(domain=load_domain("crossner_ai"), models=stage_models)
    with pytest.raises(ConfigError, match="no relation_types"):
        build_joint_graph().invoke({"text": TEXT}, context=ctx)


async def test_joint_graph_async_matches_sync(fake_ner: Any) -> None:
    sync = build_joint_graph().invoke({"text": TEXT}, context=context(models(fake_ner)))
    asynchronous = await build_joint_graph().ainvoke(
        {"text": TEXT}, context=context(models(fake_ner))
    )
    assert triples(sync["triplets"]) == triples(asynchronous["triplets"])
    assert sync["dropped_triplets"] == asynchronous["dropped_triplets"]


def test_repeated_mention_uses_closest_pair(fake_ner: Any) -> None:
    text = "IBM hired John Smith . Later , John Smith moved to Boston ."
    ner = fake_ner(
        anchor={text: ["IBM", "John Smith", "Boston"]},
        explorer={text: ["IBM", "John Smith", "Boston"]},
        gold=fake_ner.gold_of("conll04", **GOLD_TYPES),
    )
    scripts = ner.scripts_by_stage()
    scripts["relations_forward"] = json.dumps(
        [{"subject": "John Smith", "pairs": [{"object": "Boston", "relation": "live in"}]}]
    )
    scripts["relations_reverse"] = "[]"
    result = build_joint_graph().invoke(
        {"text": text},
        context=RunContext(domain=load_domain("conll04"), models=fake_stage_models(scripts)),
    )
    [triplet] = result["triplets"]
    assert triplet.head.start == text.rindex("John Smith")  # the occurrence next to Boston


# --- relation_schedule: needed (default) / always / parallel ---------------------------------


def _run(fake_ner: Any, text: str, anchor: Sequence[str], **options: Any) -> tuple[Any, Any]:
    ner = fake_ner(
        anchor={text: anchor},
        explorer={text: anchor},
        gold=fake_ner.gold_of("conll04", **GOLD_TYPES),
    )
    scripts = ner.scripts_by_stage()
    answer = [{"subject": "John Smith", "pairs": [{"object": "IBM", "relation": "work for"}]}]
    scripts["relations_forward"] = json.dumps(answer)
    scripts["relations_reverse"] = "[]"
    stage_models = fake_stage_models(scripts)
    result = build_joint_graph(PipelineOptions(**options)).invoke(
        {"text": text}, context=RunContext(domain=load_domain("conll04"), models=stage_models)
    )
    return result, stage_models


def test_needed_skips_decoders_without_an_entity_pair(fake_ner: Any, stage_calls: Any) -> None:
    text = "John Smith , who works for IBM , spoke ."
    result, stage_models = _run(fake_ner, text, ["John Smith"])
    assert [e.text for e in result["entities"]] == ["John Smith"]
    for stage in ("relations_forward", "relations_reverse"):
        assert stage_calls(stage_models, stage) == []
        assert result["usage"][stage].calls == 0  # the node ran and made no request
    assert result["triplets"] == [] and result["forward_triplets"] == []
    # the same sentence with "always": both decoders are asked, nothing survives the filter
    always, always_models = _run(fake_ner, text, ["John Smith"], relation_schedule="always")
    assert len(stage_calls(always_models, "relations_forward")) == 1
    assert always["triplets"] == [] and len(always["dropped_triplets"]) == 1
    assert always["entities"] == result["entities"]


def test_needed_asks_when_a_pair_exists_and_when_the_filter_cannot_drop(
    fake_ner: Any, stage_calls: Any
) -> None:
    text = "John Smith , who works for IBM , spoke ."
    result, stage_models = _run(fake_ner, text, ["John Smith", "IBM"])
    assert len(stage_calls(stage_models, "relations_forward")) == 1
    assert triples(result["triplets"]) == {("John Smith", "Work_For", "IBM")}
    # without the anchor filter (or with recovery) every candidate can matter: always asked
    for options in ({"anchor_constraint": False}, {"recover_dropped": True}):
        assert PipelineOptions(**options).effective_relation_schedule == "always"
        kept, used = _run(fake_ner, text, ["John Smith"], **options)
        assert len(stage_calls(used, "relations_forward")) == 1, options
    kept, _ = _run(fake_ner, text, ["John Smith"], anchor_constraint=False)
    assert triples(kept["triplets"]) == {("John Smith", "Work_For", "IBM")}


def test_parallel_starts_decoders_with_ner_and_gives_the_same_result(fake_ner: Any) -> None:
    graph = build_joint_graph(PipelineOptions(relation_schedule="parallel"))
    edges = {(e.source, e.target) for e in graph.get_graph().edges}
    assert ("__start__", "relations_forward") in edges
    assert ("__start__", "relations_reverse") in edges
    assert ("calibrate", "relations_check") in edges
    assert ("relations_check", "anchor_filter") in edges
    always = build_joint_graph(PipelineOptions(relation_schedule="always"))
    a = always.invoke(
        {"text": TEXT}, context=RunContext(domain=load_domain("conll04"), models=models(fake_ner))
    )
    p = graph.invoke(
        {"text": TEXT}, context=RunContext(domain=load_domain("conll04"), models=models(fake_ner))
    )
    assert {e.text for e in p["entities"]} == set(NER)
    for key in ("entities", "triplets", "forward_triplets", "reverse_triplets", "dropped_triplets"):
        assert p[key] == a[key], key
    assert sorted(d.model_dump_json() for d in p["diagnostics"]) == sorted(
        d.model_dump_json() for d in a["diagnostics"]
    )
    assert {s: u.calls for s, u in p["usage"].items()} == {
        s: u.calls for s, u in a["usage"].items()
    }


async def test_parallel_keeps_a_failed_decoder_and_async_path(fake_ner: Any) -> None:
    stage_models = models(fake_ner, forward="not json at all", reverse="[]")
    graph = build_joint_graph(PipelineOptions(relation_schedule="parallel"))
    ctx = RunContext(domain=load_domain("conll04"), models=stage_models)
    result = await graph.ainvoke({"text": TEXT}, context=ctx)
    assert {e.text for e in result["entities"]} == set(NER)
    assert result["triplets"] == [] and "relations_forward" in result["failed_stages"]
    assert any(d.kind == "parse_error" for d in result["diagnostics"])
