"""The long-document graph: split, fan out with Send, merge back with document offsets."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from langgraph.graph import END, START, StateGraph

from samalign.errors import ConfigError, InputError
from samalign.graphs import (
    PipelineOptions,
    RunContext,
    build_document_graph,
    build_joint_graph,
    build_ner_graph,
)
from samalign.graphs.state import NerState
from samalign.prompts import load_domain
from samalign.testing.fakes import fake_stage_models
from samalign.types import Entity, Span

S1 = "John Smith works for IBM in Armonk."
S2 = "Dr. Mary Jones moved to Boston in 2019."
S3 = "Acme Corp. hired 3.5 thousand people in Ohio, Texas and Maine last year."
DOC = f"{S1}  {S2}\n\n{S3}"
GOLD_TYPES = {
    "Peop": ["John Smith", "Mary Jones"],
    "Org": ["IBM", "Acme Corp."],
    "Loc": ["Armonk", "Boston"],
}
"""The gold CoNLL04 type of each mention (``FakeNer.gold_of``)."""
NER = {
    S1: ["John Smith", "IBM", "Armonk"],
    S2: ["Mary Jones", "Boston"],
    S3: ["Acme Corp."],
}
DOC_ENTITIES = ["John Smith", "IBM", "Armonk", "Mary Jones", "Boston", "Acme Corp."]
"""The entities of DOC in document order (S3 holds only the last one)."""


def relation_answer(messages: Any) -> str:
    prompt = json.loads(messages[0].content)
    text = prompt["input"]
    if text == S1:
        return json.dumps(
            [{"subject": "John Smith", "pairs": [{"object": "IBM", "relation": "work for"}]}]
        )
    if text == S2:
        return json.dumps(
            [{"subject": "Mary Jones", "pairs": [{"object": "Boston", "relation": "live in"}]}]
        )
    return "[]"


def context(fake_ner: Any) -> RunContext:
    ner = fake_ner(anchor=NER, explorer=NER, gold=fake_ner.gold_of("conll04", **GOLD_TYPES))
    scripts = ner.scripts_by_stage()
    scripts["relations_forward"] = relation_answer
    scripts["relations_reverse"] = "[]"
    return RunContext(domain=load_domain("conll04"), models=fake_stage_models(scripts))


def test_document_graph_shifts_offsets_and_keeps_order(fake_ner: Any) -> None:
    # "always": one relation request per sentence (the default skips S3, see below)
    graph = build_document_graph(build_joint_graph(PipelineOptions(relation_schedule="always")))
    result = graph.invoke({"text": DOC}, context=context(fake_ner))
    assert [e.text for e in result["entities"]] == DOC_ENTITIES
    for entity in result["entities"]:
        assert DOC[entity.start : entity.end] == entity.text
    assert [(t.head.text, t.relation, t.tail.text) for t in result["triplets"]] == [
        ("John Smith", "Work_For", "IBM"),
        ("Mary Jones", "Live_In", "Boston"),
    ]
    for t in result["triplets"]:
        assert DOC[t.head.start : t.head.end] == t.head.text
        assert DOC[t.tail.start : t.tail.end] == t.tail.text
    sentences = result["sentences"]
    assert sorted((s.start, s.end) for s in sentences) == [
        (DOC.index(S1), DOC.index(S1) + len(S1)),
        (DOC.index(S2), DOC.index(S2) + len(S2)),
        (DOC.index(S3), DOC.index(S3) + len(S3)),
    ]
    assert result["errors"] == []
    assert result["usage"]["relations_forward"].calls == 3
    assert result["usage"]["anchor"].calls == 3


def test_document_graph_skips_relations_of_a_sentence_with_one_entity(fake_ner: Any) -> None:
    always = build_document_graph(build_joint_graph(PipelineOptions(relation_schedule="always")))
    needed = build_document_graph(build_joint_graph())  # default relation_schedule="needed"
    full = always.invoke({"text": DOC}, context=context(fake_ner))
    result = needed.invoke({"text": DOC}, context=context(fake_ner))
    assert result["entities"] == full["entities"]
    assert result["triplets"] == full["triplets"]
    assert len(result["triplets"]) == 2
    assert result["usage"]["relations_forward"].calls == 2  # S3 has only "Acme Corp."
    assert result["usage"]["relations_reverse"].calls == 2


async def test_document_graph_async_and_progress_events(fake_ner: Any) -> None:
    graph = build_document_graph(build_ner_graph())
    events: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    async for mode, chunk in graph.astream(
        {"text": DOC}, context=context(fake_ner), stream_mode=["custom", "values"]
    ):
        if mode == "custom":
            events.append(chunk)
        else:
            final = chunk
    progress = [e["document_progress"] for e in events]
    assert sorted(p["sentence"] for p in progress) == [0, 1, 2]
    assert {p["total"] for p in progress} == {3}
    assert len(final["entities"]) == 6


def test_a_failing_sentence_is_reported_and_the_rest_goes_on(fake_ner: Any) -> None:
    # max_text_chars below the third sentence's length: that sentence fails with InputError.
    options = PipelineOptions(max_text_chars=max(len(S1), len(S2)))
    graph = build_document_graph(build_ner_graph(options))
    result = graph.invoke({"text": DOC}, context=context(fake_ner))
    assert [e.text for e in result["entities"]] == DOC_ENTITIES[:5]  # not S3's "Acme Corp."
    [error] = result["errors"]
    assert error.startswith("sentence 2 ") and "InputError" in error


def test_backend_and_config_errors_fail_the_document(fake_ner: Any) -> None:
    ctx = context(fake_ner)
    missing = RunContext(domain=ctx.domain, models=fake_stage_models({"anchor": "{}"}))
    with pytest.raises(ConfigError, match="no model configured"):
        build_document_graph(build_ner_graph()).invoke({"text": DOC}, context=missing)


def test_empty_document_is_an_input_error(fake_ner: Any) -> None:
    graph = build_document_graph(build_ner_graph())
    with pytest.raises(InputError, match="empty"):
        graph.invoke({"text": "  \n "}, context=context(fake_ner))
    with pytest.raises(ConfigError):
        build_document_graph(build_ner_graph(), max_sentence_chars=0)


def _capitalised_words_graph() -> Any:
    """A model-free sentence graph: every capitalised word is an entity."""

    def extract(state: NerState) -> dict[str, Any]:
        return {
            "entities": [
                Entity(span=Span.of(state.text, m.start(), m.end()), label="word")
                for m in re.finditer(r"\b[A-Z][a-z]+\b", state.text)
            ]
        }

    graph: StateGraph[NerState, Any, Any, Any] = StateGraph(NerState)
    graph.add_node("extract", extract)
    graph.add_edge(START, "extract")
    graph.add_edge("extract", END)
    return graph.compile()


def test_one_megabyte_document() -> None:
    # Long sentences keep the test quick (~1,400 sentences); benchmarks/throughput.py
    # measures a 1 MB document of real CrossNER sentences.
    clause = "Alice met Bob in Paris on Monday, and they talked about 3.14 things"
    sentence = ", while ".join([clause] * 10) + "."
    doc = " ".join([sentence] * (1_000_000 // (len(sentence) + 1) + 1))
    assert len(doc) >= 1_000_000
    graph = build_document_graph(_capitalised_words_graph(), wave_size=128)
    result = graph.invoke({"text": doc}, config={"max_concurrency": 16})
    n = len(result["sentences"])
    assert n == doc.count(sentence)
    assert len(result["entities"]) == 40 * n
    for entity in result["entities"][:: max(1, n // 50)]:
        assert doc[entity.start : entity.end] == entity.text
    starts = [e.start for e in result["entities"]]
    assert starts == sorted(starts)
