"""The SAM-NER graph end to end with scripted fake stage models."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from samalign.agents.consensus import NOISE_REASON
from samalign.errors import ConfigError, InputError
from samalign.graphs import PipelineOptions, RunContext, build_ner_graph
from samalign.prompts import domain_from_mapping, load_domain
from samalign.testing.fakes import fake_stage_models
from samalign.types import Archetype, Diagnostic, Entity, NoiseRecord

TEXT = (
    "LSTM , a recurrent network , was proposed by Sepp Hochreiter and Jürgen Schmidhuber "
    "in Munich using data ."
)
ANCHOR = ["Sepp Hochreiter", "LSTM", "Munich"]
EXPLORER = [
    "Sepp Hochreiter",
    "Jürgen Schmidhuber",
    "recurrent network",
    "LSTM",
    "data",
    "Yann LeCun",  # not in the text: a hallucination
]
GOLD = {
    "LSTM": ("Computer_Science", "algorithm"),
    "recurrent network": ("Computer_Science", "algorithm"),
    "Sepp Hochreiter": ("Person", "researcher"),
    "Jürgen Schmidhuber": ("Person", "researcher"),
    "Munich": ("Location", "location"),
    "data": ("Misc", "miscellaneous"),
}
ARCHETYPES = [a.value for a in Archetype]


def span_of(text: str, mention: str, nth: int = 0) -> tuple[int, int]:
    starts = [m.start() for m in re.finditer(re.escape(mention), text)]
    return starts[nth], starts[nth] + len(mention)


def summary(
    entities: list[Entity],
) -> list[tuple[int, int, str, str | None, str | None, tuple[str, ...]]]:
    return [
        (
            e.start,
            e.end,
            e.text,
            e.label,
            e.archetype.value if e.archetype else None,
            tuple(e.sources),
        )
        for e in entities
    ]


def expected(
    mentions: dict[str, tuple[str, ...]], *, archetypes: bool = True, text: str = TEXT
) -> list[tuple[int, int, str, str | None, str | None, tuple[str, ...]]]:
    domain = load_domain("crossner_ai")
    rows = []
    for mention, sources in mentions.items():
        start, end = span_of(text, mention)
        archetype, name = GOLD[mention]
        rows.append(
            (
                start,
                end,
                mention,
                domain.label_for_name(name),
                archetype if archetypes else None,
                sources,
            )
        )
    return sorted(rows)


FULL_EXPECTED = {
    "LSTM": ("anchor", "explorer"),
    "recurrent network": ("explorer",),
    "Sepp Hochreiter": ("anchor", "explorer"),
    "Jürgen Schmidhuber": ("explorer",),
    "Munich": ("anchor",),
}


@pytest.fixture
def fakes(fake_ner: Any) -> Any:
    return fake_ner(anchor={TEXT: ANCHOR}, explorer={TEXT: EXPLORER}, gold=GOLD)


@pytest.fixture
def context(fakes: Any) -> RunContext:
    return RunContext(domain="crossner_ai", models=fakes.models())


def calls(context: RunContext, stage: str, stage_calls: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = stage_calls(context.models, stage)
    return result


# ---------------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------------


def test_full_pipeline_entities(context: RunContext) -> None:
    result = build_ner_graph().invoke({"text": TEXT}, context=context)
    entities: list[Entity] = result["entities"]
    assert summary(entities) == expected(FULL_EXPECTED)
    for entity in entities:
        assert TEXT[entity.start : entity.end] == entity.span.text
        entity.span.check(TEXT)
    assert result["anchor_mentions"] == ANCHOR
    assert result["explorer_mentions"] == [m for m in EXPLORER if m != "Yann LeCun"]


def test_noise_is_recorded(context: RunContext) -> None:
    result = build_ner_graph().invoke({"text": TEXT}, context=context)
    assert result["noise"] == [NoiseRecord(mention="data", reason=NOISE_REASON)]
    assert "data" not in {c.text for c in result["candidates"]}


def test_hallucination_is_a_diagnostic_not_an_entity(context: RunContext) -> None:
    result = build_ner_graph().invoke({"text": TEXT}, context=context)
    diagnostics: list[Diagnostic] = result["diagnostics"]
    assert [(d.stage, d.kind) for d in diagnostics] == [("explorer", "hallucination")]
    assert "Yann LeCun" in diagnostics[0].message
    assert diagnostics[0].raw is not None and "Yann LeCun" in diagnostics[0].raw
    assert all("LeCun" not in e.text for e in result["entities"])
    assert all("LeCun" not in c.text for c in result["candidates"])


def test_intermediate_state(context: RunContext) -> None:
    result = build_ner_graph().invoke({"text": TEXT}, context=context)
    candidates: list[Entity] = result["candidates"]
    assert [c.start for c in candidates] == sorted(c.start for c in candidates)
    assert all(c.label is None and c.archetype is None for c in candidates)
    archetyped = {a.text: a.archetype for a in result["archetyped"]}
    assert archetyped == {m: Archetype(GOLD[m][0]) for m in FULL_EXPECTED}


def test_usage_per_stage(context: RunContext) -> None:
    result = build_ner_graph().invoke({"text": TEXT}, context=context)
    usage = result["usage"]
    assert set(usage) == {"anchor", "explorer", "consensus", "archetype", "calibrate"}
    for stage in ("anchor", "explorer", "archetype", "calibrate"):
        assert usage[stage].calls == 1, stage
        assert usage[stage].prompt_tokens > 0, stage
    assert usage["consensus"].calls == 0


def test_repeated_mention_is_grounded_to_every_occurrence(fake_ner: Any) -> None:
    text = "LSTM beats GRU , and LSTM is by Sepp Hochreiter ."
    fakes = fake_ner(anchor={text: ["LSTM", "Sepp Hochreiter"]}, explorer={text: []}, gold=GOLD)
    result = build_ner_graph().invoke(
        {"text": text}, context=RunContext("crossner_ai", fakes.models())
    )
    lstm = [(e.start, e.end) for e in result["entities"] if e.text == "LSTM"]
    assert lstm == [span_of(text, "LSTM", 0), span_of(text, "LSTM", 1)]
    assert {e.label for e in result["entities"] if e.text == "LSTM"} == {"algorithm"}


def test_non_ascii_offsets(fake_ner: Any) -> None:
    text = "Jürgen Schmidhuber élève 東京 LSTM"
    gold = fake_ner.gold_of(
        "crossner_ai", researcher=["Jürgen Schmidhuber"], location=["東京"], algorithm=["LSTM"]
    )
    fakes = fake_ner(
        # the anchor drops the umlaut; grounding must map it back to the source characters
        anchor={text: ["Jurgen Schmidhuber", "東京", "LSTM"]},
        explorer={text: ["LSTM", "élève", "東京"]},
        gold=gold,
    )
    result = build_ner_graph().invoke(
        {"text": text}, context=RunContext("crossner_ai", fakes.models())
    )
    got = {(e.text, e.start, e.end, e.label) for e in result["entities"]}
    assert got == {
        ("Jürgen Schmidhuber", 0, 18, "researcher"),
        ("東京", 25, 27, "location"),
        ("LSTM", 28, 32, "algorithm"),
    }
    for e in result["entities"]:
        assert text[e.start : e.end] == e.text
    assert [n.mention for n in result["noise"]] == ["élève"]
    sources = {e.text: e.sources for e in result["entities"]}
    assert sources["東京"] == ("anchor", "explorer")
    assert sources["Jürgen Schmidhuber"] == ("anchor",)
    assert result["anchor_mentions"] == ["Jürgen Schmidhuber", "東京", "LSTM"]


# ---------------------------------------------------------------------------------------------
# graph shape follows the options
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "nodes"),
    [
        (PipelineOptions(), {"anchor", "explorer", "consensus", "archetype", "calibrate"}),
        (PipelineOptions(use_anchor=False), {"explorer", "merge", "archetype", "calibrate"}),
        (PipelineOptions(use_explorer=False), {"anchor", "merge", "archetype", "calibrate"}),
        (
            PipelineOptions(use_consensus=False),
            {"anchor", "explorer", "merge", "archetype", "calibrate"},
        ),
        (PipelineOptions(use_calibration=False), {"anchor", "explorer", "consensus", "archetype"}),
    ],
)
def test_graph_nodes_follow_options(options: PipelineOptions, nodes: set[str]) -> None:
    graph = build_ner_graph(options)
    assert set(graph.nodes) - {"__start__"} == nodes
    drawn = graph.get_graph()
    assert set(drawn.nodes) - {"__start__", "__end__"} == nodes


def test_no_extractor_is_rejected() -> None:
    with pytest.raises(ConfigError, match="at least one extractor"):
        PipelineOptions(use_anchor=False, use_explorer=False)


def test_without_anchor(fakes: Any, stage_calls: Any) -> None:
    models = fakes.models()
    result = build_ner_graph(PipelineOptions(use_anchor=False)).invoke(
        {"text": TEXT}, context=RunContext("crossner_ai", models)
    )
    # no CCR: the explorer's single-token "data" survives; everything is explorer-sourced
    want = {m: ("explorer",) for m in EXPLORER if m != "Yann LeCun"}
    assert summary(result["entities"]) == expected(want)
    assert result.get("noise", []) == []
    assert stage_calls(models, "anchor") == []
    assert "merge" in result["usage"]


def test_without_explorer(fakes: Any, stage_calls: Any) -> None:
    models = fakes.models()
    result = build_ner_graph(PipelineOptions(use_explorer=False)).invoke(
        {"text": TEXT}, context=RunContext("crossner_ai", models)
    )
    assert summary(result["entities"]) == expected({m: ("anchor",) for m in ANCHOR})
    assert stage_calls(models, "explorer") == []


def test_without_consensus_is_plain_union(fakes: Any) -> None:
    result = build_ner_graph(PipelineOptions(use_consensus=False)).invoke(
        {"text": TEXT}, context=RunContext("crossner_ai", fakes.models())
    )
    want = {**FULL_EXPECTED, "data": ("explorer",)}
    assert summary(result["entities"]) == expected(want)
    assert result.get("noise", []) == []


def test_without_calibration_types_directly(fakes: Any, stage_calls: Any) -> None:
    models = fakes.models()
    result = build_ner_graph(PipelineOptions(use_calibration=False)).invoke(
        {"text": TEXT}, context=RunContext("crossner_ai", models)
    )
    assert summary(result["entities"]) == expected(FULL_EXPECTED, archetypes=False)
    assert stage_calls(models, "calibrate") == []
    assert stage_calls(models, "archetype") == [], "w/o cali. uses the direct_typing model"
    assert "calibrate" not in result["usage"]
    archetype_call = stage_calls(models, "direct_typing")[0]
    prompt = json.loads(archetype_call["messages"][0].content)
    domain = load_domain("crossner_ai")
    assert prompt["Schema"] == domain.names
    schema = archetype_call["kwargs"]["response_format"]["json_schema"]["schema"]
    assert schema["required"] == domain.names


def test_calibration_off_needs_no_calibrate_model(fakes: Any) -> None:
    scripts = fakes.scripts_by_stage()
    del scripts["calibrate"]
    result = build_ner_graph(PipelineOptions(use_calibration=False)).invoke(
        {"text": TEXT}, context=RunContext("crossner_ai", fake_stage_models(scripts))
    )
    assert result["entities"]


def test_missing_stage_model_is_a_config_error(fakes: Any) -> None:
    scripts = fakes.scripts_by_stage()
    del scripts["calibrate"]
    with pytest.raises(ConfigError, match="calibrate"):
        build_ner_graph().invoke(
            {"text": TEXT}, context=RunContext("crossner_ai", fake_stage_models(scripts))
        )


# ---------------------------------------------------------------------------------------------
# invoke / ainvoke / batch / abatch / stream
# ---------------------------------------------------------------------------------------------


async def test_all_entry_points_agree(fake_ner: Any) -> None:
    other = "Munich hosted a talk on LSTM ."
    fakes = fake_ner(
        anchor={TEXT: ANCHOR, other: ["Munich", "LSTM"]},
        explorer={TEXT: EXPLORER, other: ["LSTM", "talk"]},
        gold=GOLD,
    )
    context = RunContext("crossner_ai", fakes.models())
    graph = build_ner_graph()
    inputs = [{"text": TEXT}, {"text": other}]
    invoked = [summary(graph.invoke(i, context=context)["entities"]) for i in inputs]
    ainvoked = [summary((await graph.ainvoke(i, context=context))["entities"]) for i in inputs]
    batched = [summary(r["entities"]) for r in graph.batch(inputs, context=context)]
    abatched = [summary(r["entities"]) for r in await graph.abatch(inputs, context=context)]
    assert invoked[0] == expected(FULL_EXPECTED)
    assert invoked[1] == sorted(
        [
            (0, 6, "Munich", "location", "Location", ("anchor",)),
            (24, 28, "LSTM", "algorithm", "Computer_Science", ("anchor", "explorer")),
        ]
    )
    assert ainvoked == invoked
    assert batched == invoked
    assert abatched == invoked


def test_stream_emits_stage_updates(context: RunContext) -> None:
    seen = []
    for chunk in build_ner_graph().stream({"text": TEXT}, context=context, stream_mode="updates"):
        seen.extend(chunk)
    assert set(seen) == {"anchor", "explorer", "consensus", "archetype", "calibrate"}
    assert seen[-1] == "calibrate"


# ---------------------------------------------------------------------------------------------
# what each stage sends
# ---------------------------------------------------------------------------------------------


def test_extractor_requests(context: RunContext, stage_calls: Any) -> None:
    build_ner_graph(PipelineOptions(constrain_mentions=True)).invoke(
        {"text": TEXT}, context=context
    )
    domain = load_domain("crossner_ai")
    anchor = calls(context, "anchor", stage_calls)[0]
    prompt = json.loads(anchor["messages"][0].content)
    assert prompt["input"] == TEXT
    assert prompt["schema"] == domain.names
    assert "extract entities" in prompt["instruction"]
    schema = anchor["kwargs"]["response_format"]["json_schema"]["schema"]
    Draft202012Validator.check_schema(schema)
    assert schema["required"] == domain.names
    enum = set(schema["$defs"]["mention"]["enum"])
    assert set(FULL_EXPECTED) | {"data"} <= enum
    assert "Yann LeCun" not in enum
    explorer = calls(context, "explorer", stage_calls)[0]
    assert json.loads(explorer["messages"][0].content)["Input"] == TEXT


def test_archetype_prompt_marks_candidates(context: RunContext, stage_calls: Any) -> None:
    build_ner_graph(PipelineOptions(constrain_mentions=True)).invoke(
        {"text": TEXT}, context=context
    )
    call = calls(context, "archetype", stage_calls)[0]
    prompt = json.loads(call["messages"][0].content)
    tagged = prompt["Sentence"]
    assert tagged == (
        "<ENT>LSTM</ENT> , a <ENT>recurrent network</ENT> , was proposed by "
        "<ENT>Sepp Hochreiter</ENT> and <ENT>Jürgen Schmidhuber</ENT> in <ENT>Munich</ENT> "
        "using data ."
    )
    assert prompt["Schema"] == ARCHETYPES
    assert "<ENT></ENT>" in prompt["instruction"]
    schema = call["kwargs"]["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ARCHETYPES
    assert set(schema["$defs"]["mention"]["enum"]) == set(FULL_EXPECTED)


def test_calibrate_schema_restricts_to_domain_types(context: RunContext, stage_calls: Any) -> None:
    build_ner_graph().invoke({"text": TEXT}, context=context)
    domain = load_domain("crossner_ai")
    call = calls(context, "calibrate", stage_calls)[0]
    response_format = call["kwargs"]["response_format"]
    assert response_format["type"] == "json_schema"
    schema = response_format["json_schema"]["schema"]
    Draft202012Validator.check_schema(schema)
    assert schema["items"]["properties"]["type"]["enum"] == domain.names
    validator = Draft202012Validator(schema)
    good = [{"entity": m, "type": GOLD[m][1]} for m in FULL_EXPECTED]
    validator.validate(good)
    with pytest.raises(ValidationError):
        validator.validate([*good, {"entity": "LSTM", "type": "Computer_Science"}])
    prompt = call["messages"][0].content
    assert "Candidate Types" in prompt
    assert f"Text: {TEXT}" in prompt
    for a in ARCHETYPES:
        assert f"- {a}: " in prompt
    for t in domain.entity_types:
        assert f"- {t.name}: {t.definition}" in prompt
    initial = json.loads(re.search(r"Initial Output: (\{.*\})", prompt).group(1))  # type: ignore[union-attr]
    assert initial == {m: GOLD[m][0] for m in FULL_EXPECTED}


@pytest.mark.parametrize(("budget", "expected_tokens"), [(None, 512), (100, 100)])
def test_completion_budget(
    fakes: Any, stage_calls: Any, budget: int | None, expected_tokens: int
) -> None:
    models = fakes.models()
    build_ner_graph(PipelineOptions(max_completion_tokens=budget)).invoke(
        {"text": TEXT}, context=RunContext("crossner_ai", models)
    )
    for stage in ("anchor", "explorer", "archetype", "calibrate"):
        assert stage_calls(models, stage)[0]["kwargs"]["max_tokens"] == expected_tokens, stage


def test_domain_adapter_override_sets_model(fakes: Any, stage_calls: Any) -> None:
    base = load_domain("crossner_ai").model_dump()
    base["adapters"] = {"anchor": "iepile-anchor", "calibrate": "identity"}
    domain = domain_from_mapping(base, origin="test")
    models = fakes.models()
    build_ner_graph().invoke({"text": TEXT}, context=RunContext(domain, models))
    assert stage_calls(models, "anchor")[0]["kwargs"]["model"] == "iepile-anchor"
    assert stage_calls(models, "calibrate")[0]["kwargs"]["model"] == "identity"
    assert "model" not in stage_calls(models, "explorer")[0]["kwargs"]
    assert "model" not in stage_calls(models, "archetype")[0]["kwargs"]


# ---------------------------------------------------------------------------------------------
# empty and bad inputs
# ---------------------------------------------------------------------------------------------


def test_no_candidates_means_no_typing_calls(fake_ner: Any, stage_calls: Any) -> None:
    text = "Nothing to see here ."
    fakes = fake_ner(anchor={text: []}, explorer={text: ["Nothing"]})
    models = fakes.models()
    result = build_ner_graph().invoke({"text": text}, context=RunContext("crossner_ai", models))
    assert result["entities"] == []
    assert result["candidates"] == []
    assert [n.mention for n in result["noise"]] == ["Nothing"]
    assert stage_calls(models, "archetype") == []
    assert stage_calls(models, "calibrate") == []
    assert result["usage"]["archetype"].calls == 0
    assert result["usage"]["calibrate"].calls == 0


def test_no_candidates_without_calibration(fake_ner: Any, stage_calls: Any) -> None:
    text = "Nothing to see here ."
    models = fake_ner(anchor={text: []}, explorer={text: []}).models()
    result = build_ner_graph(PipelineOptions(use_calibration=False)).invoke(
        {"text": text}, context=RunContext("crossner_ai", models)
    )
    assert result["entities"] == []
    assert stage_calls(models, "archetype") == []


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_text_is_an_input_error(context: RunContext, text: str, stage_calls: Any) -> None:
    with pytest.raises(InputError, match="empty"):
        build_ner_graph().invoke({"text": text}, context=context)
    assert calls(context, "anchor", stage_calls) == []


def test_text_over_limit_is_an_input_error(context: RunContext) -> None:
    graph = build_ner_graph(PipelineOptions(max_text_chars=20))
    with pytest.raises(InputError, match="20"):
        graph.invoke({"text": "x" * 21}, context=context)
    graph.invoke({"text": "LSTM is an algorithm"}, context=context)  # exactly 20: accepted


async def test_input_error_from_ainvoke(context: RunContext) -> None:
    with pytest.raises(InputError):
        await build_ner_graph().ainvoke({"text": " "}, context=context)


def test_invoke_without_context_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="RunContext"):
        build_ner_graph().invoke({"text": TEXT})


def test_run_context_rejects_bad_models() -> None:
    with pytest.raises(ConfigError, match="StageModels"):
        RunContext("crossner_ai", {"anchor": "not a model"})  # type: ignore[arg-type]


def test_run_context_unknown_domain() -> None:
    with pytest.raises(ConfigError, match="unknown domain"):
        RunContext("no_such_domain", fake_stage_models({}))


# ---------------------------------------------------------------------------------------------
# bad model answers
# ---------------------------------------------------------------------------------------------


def test_archetype_parse_failure_is_a_diagnostic(fake_ner: Any) -> None:
    fakes = fake_ner(
        anchor={TEXT: ANCHOR},
        explorer={TEXT: EXPLORER},
        gold=GOLD,
        scripts={"archetype": "I am not sure."},
    )
    result = build_ner_graph().invoke(
        {"text": TEXT}, context=RunContext("crossner_ai", fakes.models())
    )
    kinds = [(d.stage, d.kind) for d in result["diagnostics"]]
    assert kinds.count(("archetype", "parse_error")) == 2  # first try + one retry
    assert ("archetype", "unclassified") in kinds
    # unclassified candidates fall back to Misc; calibration still types them
    assert {a.archetype for a in result["archetyped"]} == {Archetype.MISC}
    assert summary(result["entities"]) == [
        (s, e, t, label, "Misc", src) for s, e, t, label, _, src in expected(FULL_EXPECTED)
    ]
    assert result["usage"]["archetype"].calls == 2


def test_calibrate_parse_failure_yields_no_entities(fake_ner: Any) -> None:
    fakes = fake_ner(
        anchor={TEXT: ANCHOR}, explorer={TEXT: EXPLORER}, gold=GOLD, scripts={"calibrate": "??"}
    )
    result = build_ner_graph().invoke(
        {"text": TEXT}, context=RunContext("crossner_ai", fakes.models())
    )
    assert result["entities"] == []
    kinds = [(d.stage, d.kind) for d in result["diagnostics"]]
    assert ("calibrate", "parse_error") in kinds
    assert ("calibrate", "unclassified") in kinds


def test_unparseable_anchor_good_explorer(fake_ner: Any) -> None:
    fakes = fake_ner(explorer={TEXT: EXPLORER}, gold=GOLD, scripts={"anchor": "no idea"})
    result = build_ner_graph().invoke(
        {"text": TEXT}, context=RunContext("crossner_ai", fakes.models())
    )
    assert result["anchor_mentions"] == []
    # with no anchor corroboration every single-token explorer mention is noise
    assert [n.mention for n in result["noise"]] == ["LSTM", "data"]
    want = {
        m: ("explorer",) for m in ["Sepp Hochreiter", "Jürgen Schmidhuber", "recurrent network"]
    }
    assert summary(result["entities"]) == expected(want)
    kinds = [(d.stage, d.kind) for d in result["diagnostics"]]
    assert kinds.count(("anchor", "parse_error")) == 2


def test_calibrator_out_of_schema_and_unknown_mentions(fake_ner: Any) -> None:
    answer = json.dumps(
        {
            "LSTM": "Computer_Science",  # not a target type
            "Sepp Hochreiter": "RESEARCHER",  # case-insensitive name
            "Geoffrey Hinton": "researcher",  # not in the initial output
            "recurrent network": "algorithm",
            "Jürgen Schmidhuber": "researcher",
            "Munich": "location",
        }
    )
    fakes = fake_ner(
        anchor={TEXT: ANCHOR}, explorer={TEXT: EXPLORER}, gold=GOLD, scripts={"calibrate": answer}
    )
    result = build_ner_graph().invoke(
        {"text": TEXT}, context=RunContext("crossner_ai", fakes.models())
    )
    labels = {e.text: e.label for e in result["entities"]}
    assert labels == {
        "Sepp Hochreiter": "researcher",
        "recurrent network": "algorithm",
        "Jürgen Schmidhuber": "researcher",
        "Munich": "location",
    }
    kinds = {(d.stage, d.kind) for d in result["diagnostics"]}
    assert ("calibrate", "label_out_of_schema") in kinds
    assert ("calibrate", "hallucination") in kinds
    assert ("calibrate", "unclassified") in kinds


def test_extractor_out_of_schema_type_keeps_mention(fake_ner: Any) -> None:
    text = "Sepp Hochreiter met Jürgen Schmidhuber ."
    fakes = fake_ner(
        explorer={text: ["Jürgen Schmidhuber"]},
        gold=GOLD,
        scripts={"anchor": '{"scientist": ["Sepp Hochreiter"]}'},
    )
    result = build_ner_graph().invoke(
        {"text": text}, context=RunContext("crossner_ai", fakes.models())
    )
    assert result["anchor_mentions"] == ["Sepp Hochreiter"]
    assert ("anchor", "label_out_of_schema") in {(d.stage, d.kind) for d in result["diagnostics"]}
    assert {e.text for e in result["entities"]} == {"Sepp Hochreiter", "Jürgen Schmidhuber"}


# ---------------------------------------------------------------------------------------------
# constrained decoding must allow every mention of an accepted text
# ---------------------------------------------------------------------------------------------


def _anchor_enum(text: str, fake_ner: Any, stage_calls: Any) -> set[str] | None:
    """The mentions the anchor may emit (None: unrestricted, grounding checks them)."""
    models = fake_ner(anchor={text: []}, explorer={text: []}).models()
    build_ner_graph(PipelineOptions(constrain_mentions=True)).invoke(
        {"text": text}, context=RunContext("crossner_ai", models)
    )
    schema = stage_calls(models, "anchor")[0]["kwargs"]["response_format"]["json_schema"]["schema"]
    if "$defs" not in schema:
        return None
    return set(schema["$defs"]["mention"]["enum"])


def test_mention_enum_allows_cjk_words(fake_ner: Any, stage_calls: Any) -> None:
    enum = _anchor_enum("他住在東京。", fake_ner, stage_calls)
    assert enum is not None and "東京" in enum


def test_mention_enum_covers_the_end_of_a_long_accepted_text(
    fake_ner: Any, stage_calls: Any
) -> None:
    text = " ".join(f"w{i}" for i in range(600)) + " Sepp Hochreiter ."
    assert len(text) <= PipelineOptions().max_text_chars
    enum = _anchor_enum(text, fake_ner, stage_calls)
    assert enum is None or "Sepp Hochreiter" in enum


def test_default_schemas_are_request_invariant(fake_ner: Any, stage_calls: Any) -> None:
    """Without constrained mentions, a stage sends the same schema for every sentence."""
    texts = [TEXT, "Yann LeCun works on convolutional networks at NYU ."]
    models = fake_ner(anchor={t: [] for t in texts}, explorer={t: [] for t in texts}).models()
    graph = build_ner_graph()
    for text in texts:
        graph.invoke({"text": text}, context=RunContext("crossner_ai", models))
    for stage in ("anchor", "explorer"):
        schemas = [
            json.dumps(c["kwargs"]["response_format"], sort_keys=True)
            for c in stage_calls(models, stage)
        ]
        assert len(schemas) == 2 and schemas[0] == schemas[1]


def test_unconstrained_mentions_have_no_enum(fake_ner: Any, stage_calls: Any) -> None:
    models = fake_ner(anchor={TEXT: ANCHOR}, explorer={TEXT: []}).models()
    build_ner_graph(PipelineOptions(constrain_mentions=False)).invoke(
        {"text": TEXT}, context=RunContext("crossner_ai", models)
    )
    schema = stage_calls(models, "anchor")[0]["kwargs"]["response_format"]["json_schema"]["schema"]
    assert "$defs" not in schema


def test_anchor_schema_chunks_follow_iepile(fake_ner: Any, stage_calls: Any) -> None:
    """With anchor_schema_chunk=6 the anchor asks about sorted type chunks and unites mentions."""
    models = fake_ner(anchor={TEXT: ANCHOR}, explorer={TEXT: []}).models()
    options = PipelineOptions(anchor_schema_chunk=6)
    result = build_ner_graph(options).invoke(
        {"text": TEXT}, context=RunContext("crossner_ai", models)
    )
    calls = stage_calls(models, "anchor")
    names = load_domain("crossner_ai").names
    schemas = [json.loads(c["messages"][0].content)["schema"] for c in calls]
    assert [len(s) for s in schemas] == [6, 6, 2]
    assert [n for s in schemas for n in s] == sorted(names)
    assert result["usage"]["anchor"].calls == 3
    assert result["anchor_mentions"], "mentions from every chunk are united"
    assert stage_calls(models, "explorer") and len(stage_calls(models, "explorer")) == 1


def test_stream_yields_one_update_per_stage(context: RunContext) -> None:
    updates = list(build_ner_graph().stream({"text": TEXT}, context=context, stream_mode="updates"))
    nodes = [next(iter(u)) for u in updates]
    assert set(nodes[:2]) == {"anchor", "explorer"}
    assert nodes[2:] == ["consensus", "archetype", "calibrate"]
    assert updates[-1]["calibrate"]["entities"]
