"""Gold replay: the backend's stage logic, and the harness's self-test on a few sentences.

The replay thresholds are those of the evaluation issue. Gold answers are mention strings, so
what a string cannot say is lost: a string annotated in one place and not another, a string
carrying two gold labels in one sentence, a nested entity under flat grounding, which
occurrence of a repeated mention a relation links. The report gives every loss a reason;
gold replay must show no other reason (anything else is a bug in prompts, parsing, grounding
or merging).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from samalign.agents.archetype import tag_entities
from samalign.errors import BackendError
from samalign.evaluation.datasets import load_dataset
from samalign.evaluation.gold import (
    GoldOracle,
    ReplayChatModel,
    gold_stage_models,
    prompt_texts,
    relation_schema_names,
    request_schema,
    schema_types,
    strip_tags,
    tagged_mentions,
)
from samalign.evaluation.sentences import GoldTriplet, Sentence, make_entity, token_offsets
from samalign.graphs import PipelineOptions, RunContext, build_joint_graph, build_ner_graph
from samalign.prompts import load_domain
from samalign.prompts.relations import FORWARD_FORMAT, REVERSE_FORMAT
from samalign.prompts.specs import CALIBRATION_FORMAT, EXTRACTION_FORMAT, default_specs
from samalign.types import Archetype, Span

ARCHETYPES = [a.value for a in Archetype]


def words(text: str) -> list[str]:
    return text.split()


def sentence(
    sid: str,
    tokens: Sequence[str],
    entities: Sequence[tuple[int, int, str]],
    triplets: Sequence[tuple[int, str, int]] = (),
) -> Sentence:
    text = " ".join(tokens)
    offsets = token_offsets(tokens)
    ents = [make_entity(text, offsets, s, e, label) for s, e, label in entities]
    return Sentence(
        id=sid,
        tokens=tuple(tokens),
        text=text,
        entities=tuple(ents),
        triplets=tuple(GoldTriplet(head=ents[h], relation=r, tail=ents[t]) for h, r, t in triplets),
    )


AI = sentence(
    "ai-0",
    words("LSTM was proposed by Sepp Hochreiter in Munich ; LSTM is used at Google ."),
    [(0, 1, "algorithm"), (4, 6, "researcher"), (7, 8, "location"), (13, 14, "organisation")],
)

CONLL = sentence(
    "c-0",
    words("John Smith works for IBM in Armonk ."),
    [(0, 2, "Peop"), (4, 5, "Org"), (6, 7, "Loc")],
    [(0, "Work_For", 1), (1, "OrgBased_In", 2)],
)


# ------------------------------------------------------------------------------ prompt parsing


def test_prompt_helpers() -> None:
    assert strip_tags("<ENT>a</ENT> b") == "a b"
    assert tagged_mentions("<ENT>New <ENT>York</ENT></ENT> and <ENT>York</ENT> .") == [
        "York",
        "New York",
    ]
    prompt = default_specs()["anchor"].render({"labels": ["person"], "text": 'He said "hi"'})
    assert next(iter(prompt_texts(prompt))) == 'He said "hi"'
    calibrate = "Text: a b\n\nInitial Output: {}"
    assert "a b" in list(prompt_texts(calibrate))
    assert schema_types(EXTRACTION_FORMAT.schema(["x", "y"])) == ["x", "y"]
    assert schema_types(CALIBRATION_FORMAT.schema(["x", "y"])) == ["x", "y"]
    assert schema_types(None) is None
    assert relation_schema_names(FORWARD_FORMAT.schema(["kill", "live in"])) == ["kill", "live in"]
    assert relation_schema_names(EXTRACTION_FORMAT.schema(["x"])) is None
    fmt = {"type": "json_schema", "json_schema": {"name": "anchor_answer", "schema": {"a": 1}}}
    assert request_schema({"response_format": fmt}) == ("anchor_answer", {"a": 1})
    assert request_schema({"extra_body": {"response_format": fmt}}) == ("anchor_answer", {"a": 1})
    assert request_schema({}) == (None, None)


# ------------------------------------------------------------------------------ stage answers


def _oracle(*sentences: Sentence, domain: str = "crossner_ai") -> GoldOracle:
    return GoldOracle(sentences, load_domain(domain))


def test_extractors_answer_every_gold_mention_for_the_asked_types() -> None:
    oracle = _oracle(AI)
    domain = oracle.domain
    prompt = default_specs()["anchor"].render({"labels": domain.names, "text": AI.text})
    answer = json.loads(oracle.answer("anchor", prompt, EXTRACTION_FORMAT.schema(domain.names)))
    assert list(answer) == domain.names  # every schema type, in schema order
    assert answer["algorithm"] == ["LSTM"]
    assert answer["researcher"] == ["Sepp Hochreiter"]
    assert answer["organization"] == ["Google"]  # the verbalised name
    chunk = ["location", "person"]  # an anchor asked about a chunk of the types
    answer = json.loads(oracle.answer("anchor", prompt, EXTRACTION_FORMAT.schema(chunk)))
    assert answer == {"location": ["Munich"], "person": []}


def test_classifier_and_calibrator_answer_for_gold_candidates_only() -> None:
    oracle = _oracle(AI)
    spans = [e.span for e in AI.entities]
    extra = AI.text.index("used")
    tagged = tag_entities(AI.text, [*spans, Span.of(AI.text, extra, extra + 4)])
    prompt = default_specs()["archetype"].render({"labels": ARCHETYPES, "text": tagged})
    answer = json.loads(oracle.answer("archetype", prompt, EXTRACTION_FORMAT.schema(ARCHETYPES)))
    assert answer["Computer_Science"] == ["LSTM"]
    assert answer["Person"] == ["Sepp Hochreiter"]
    assert answer["Location"] == ["Munich"]
    assert answer["Organization"] == ["Google"]
    assert "used" not in json.dumps(answer)  # not gold: left out
    names = oracle.domain.names
    direct = json.loads(oracle.answer("direct_typing", prompt, EXTRACTION_FORMAT.schema(names)))
    assert direct["researcher"] == ["Sepp Hochreiter"]
    calibrate = default_specs()["calibrate"].render(
        {
            "text": AI.text,
            "initial_output": {
                "LSTM": "Computer_Science",
                "used": "Misc",
                "Google": "Organization",
            },
            "candidate_types": names,
            "archetype_definitions": [],
            "target_definitions": [],
        }
    )
    answer = json.loads(oracle.answer("calibrate", calibrate, CALIBRATION_FORMAT.schema(names)))
    assert answer == [
        {"entity": "LSTM", "type": "algorithm"},
        {"entity": "Google", "type": "organization"},
    ]


def test_string_with_two_gold_labels_takes_the_most_frequent() -> None:
    s = sentence(
        "m-0",
        words("Kiss ( Kiss , 1974 ) and Kiss Alive by Kiss"),
        [(0, 1, "band"), (2, 3, "album"), (10, 11, "band")],
    )
    oracle = _oracle(s, domain="crossner_music")
    assert oracle.label_for(oracle.gold_by_text(s)["Kiss"]) == "band"
    assert oracle.label_for(oracle.gold_by_text(s)["Kiss"], "Creative_Work") == "album"


def test_relation_answers_use_the_stage_format() -> None:
    s = CONLL
    oracle = _oracle(s, domain="conll04")
    domain = oracle.domain
    prompt = default_specs()["relations_forward"].render(
        {"relations": domain.relation_schema(), "text": s.text}
    )
    names = domain.relation_names
    forward = oracle.answer("relations_forward", prompt, FORWARD_FORMAT.schema(names))
    reverse = oracle.answer("relations_reverse", prompt, REVERSE_FORMAT.schema(names))
    expected = [("John Smith", "work for", "IBM"), ("IBM", "organization based in", "Armonk")]
    assert list(FORWARD_FORMAT.parse(forward, names).triplets) == expected
    assert list(REVERSE_FORMAT.parse(reverse, names).triplets) == expected
    assert json.loads(reverse)[0]["object"] == "IBM"


def test_custom_template_falls_back_to_scanning_the_dataset() -> None:
    other = sentence("ai-1", words("Munich is a city ."), [(0, 1, "location")])
    oracle = _oracle(AI, other)
    prompt = f"Find entities.\nSentence >>> {AI.text} <<<\nTypes: algorithm"
    assert oracle.sentence_for(prompt, "anchor") is AI  # the longest sentence in the prompt
    with pytest.raises(BackendError, match="about no sentence of the dataset"):
        oracle.sentence_for("Nothing known here.", "anchor")


def test_repeated_texts_are_replayed_by_their_own_variant() -> None:
    first = sentence("d-0", words("Paranoid by Sabbath"), [(0, 1, "album"), (2, 3, "band")])
    second = sentence("d-1", words("Paranoid by Sabbath"), [(0, 1, "song"), (2, 3, "band")])
    replay = gold_stage_models([first, second], load_domain("crossner_music"))
    graph = build_ner_graph()
    domain = load_domain("crossner_music")
    for s, label in ((first, "album"), (second, "song")):
        result = graph.invoke({"text": s.text}, context=RunContext(domain, replay.for_sentence(s)))
        assert {(e.text, e.label) for e in result["entities"]} == {
            ("Paranoid", label),
            ("Sabbath", "band"),
        }


def test_replay_model_refuses_another_stages_request() -> None:
    model = ReplayChatModel(stage="anchor", oracle=_oracle(AI))
    fmt = {"type": "json_schema", "json_schema": {"name": "calibrate_answer", "schema": {}}}
    with pytest.raises(BackendError, match="got a 'calibrate_answer' request"):
        model.invoke([HumanMessage(content=AI.text)], response_format=fmt)


def test_full_graph_replays_a_sentence_exactly() -> None:
    replay = gold_stage_models([AI], load_domain("crossner_ai"))
    context = RunContext(load_domain("crossner_ai"), replay.for_sentence(AI))
    for options in (PipelineOptions(), PipelineOptions(use_calibration=False)):
        result = build_ner_graph(options).invoke({"text": AI.text}, context=context)
        got = {(e.text, e.start, e.label) for e in result["entities"]}
        # the unannotated second "LSTM" is predicted too: a string answer grounds both
        want = {(e.text, e.span.start, e.label) for e in AI.entities}
        assert got - want == {("LSTM", AI.text.rindex("LSTM"), "algorithm")}
        assert want <= got
        assert not result["diagnostics"]


def test_joint_graph_replays_relations() -> None:
    s = CONLL
    domain = load_domain("conll04")
    replay = gold_stage_models([s], domain)
    result = build_joint_graph().invoke(
        {"text": s.text}, context=RunContext(domain, replay.for_sentence(s))
    )
    assert {(t.head.text, t.relation, t.tail.text, t.sources) for t in result["triplets"]} == {
        ("John Smith", "Work_For", "IBM", ("forward", "reverse")),
        ("IBM", "OrgBased_In", "Armonk", ("forward", "reverse")),
    }


# ------------------------------------------------------------------------------ self-test, small
# The replay of every split in full is tests/integration/test_gold_replay.py.

FEW = 12
"""Sentences per split here: enough for every stage and loss kind to appear, still fast."""


async def test_gold_replay_of_a_few_ner_sentences(gold_replay: Any, shared_data: Path) -> None:
    report = await gold_replay.run("crossner_ai", "dev", limit=FEW)
    assert report.sentences == FEW
    sentences = load_dataset("crossner_ai", "dev", data_dir_path=shared_data).sentences[:FEW]
    # two extractor calls per sentence, two typing calls per sentence with a candidate
    with_entities = sum(bool(s.entities) for s in sentences)
    assert with_entities > 0
    assert report.cost.total["calls"] == 2 * FEW + 2 * with_entities
    assert report.entity.span.f1 >= 0.998
    gold_replay.check(report)


@pytest.mark.parametrize("grounding", ["flat", "nested"])
async def test_gold_replay_of_a_few_joint_sentences(gold_replay: Any, grounding: str) -> None:
    report = await gold_replay.run(
        "conll04", "test", graph="joint", relation_arguments="all", grounding=grounding, limit=FEW
    )
    assert report.sentences == FEW
    assert report.relation is not None and report.relation.strict.gold > 0
    assert report.entity.span.f1 >= 0.99
    assert report.relation.strict.f1 >= 0.99
    gold_replay.check(report)
