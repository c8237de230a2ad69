"""The joint and document graphs and `samalign extract --graph` against a real vLLM server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import recording_client, run_samalign

from samalign import (
    DocumentResult,
    JointResult,
    PipelineOptions,
    RunContext,
    build_document_graph,
    build_joint_graph,
    load_domain,
    vllm_server_models,
)
from samalign.agents.relations import relations_possible
from samalign.types import RELATION_STAGES

pytestmark = pytest.mark.integration

# See test_vllm_ner.py: constrained mentions and a small budget for the tiny random model.
# relation_schedule="always": the random model rarely finds two entities, so the default
# ("needed") would send hardly any relation request, and these tests are about those requests.
FAST = PipelineOptions(
    constrain_mentions=True, max_completion_tokens=192, relation_schedule="always"
)
FAST_CLI = ("--constrain-mentions", "--max-tokens", "192", "--relation-schedule", "always")


def conll04_sentences(shared_data: Path, n: int) -> list[str]:
    records = json.loads((shared_data / "conll04" / "test_triples.json").read_text())
    return [" ".join(r["tokens"]) for r in records[:n]]


def check_triplet_spans(text: str, result: dict[str, Any]) -> None:
    labels = set(load_domain("conll04").labels)
    relations = {r.label for r in load_domain("conll04").relation_types}
    all_triplets = [
        *result.get("forward_triplets", []),
        *result.get("reverse_triplets", []),
        *result["triplets"],
        *(d.triplet for d in result["dropped_triplets"]),
    ]
    for t in all_triplets:
        assert t.relation in relations
        for arg in (t.head, t.tail):
            assert text[arg.start : arg.end] == arg.text
            assert arg.label is None or arg.label in labels
        assert t.head.span != t.tail.span


async def test_joint_graph_end_to_end(vllm_server: str, shared_data: Path) -> None:
    sentences = conll04_sentences(shared_data, 24)
    client, bodies = recording_client()
    models = vllm_server_models(
        vllm_server, stages=FAST.joint_model_stages, http_async_client=client
    )
    context = RunContext(domain=load_domain("conll04"), models=models)
    results = await build_joint_graph(FAST).abatch(
        [{"text": t} for t in sentences], context=context
    )
    await client.aclose()
    for text, result in zip(sentences, results, strict=True):
        check_triplet_spans(text, result)
        typed = JointResult.from_state(result)
        assert (typed.text, typed.triplets, typed.entities) == (
            text,
            result["triplets"],
            result["entities"],
        )
        recognised = {e.text for e in result["entities"]}
        for t in result["triplets"]:  # Eq. 13: both mentions are NER mentions
            assert t.head.text in recognised and t.tail.text in recognised
        for stage in RELATION_STAGES:
            assert result["usage"][stage].calls == 1
            assert result["usage"][stage].prompt_tokens > 0
    relation_bodies = [b for b in bodies if b["model"] in RELATION_STAGES]
    assert {b["model"] for b in relation_bodies} == set(RELATION_STAGES)
    assert len(relation_bodies) == 2 * len(sentences)
    for body in relation_bodies:
        schema = body["response_format"]["json_schema"]["schema"]
        assert schema["type"] == "array"
        key = "subject" if body["model"] == "relations_forward" else "object"
        assert key in schema["items"]["properties"]
    produced = sum(len(r["forward_triplets"]) + len(r["reverse_triplets"]) for r in results)
    assert produced > 0, "constrained relation answers are grounded in the text"


async def test_needed_schedule_asks_only_sentences_with_an_entity_pair(
    vllm_server: str, shared_data: Path
) -> None:
    sentences = conll04_sentences(shared_data, 24)
    options = PipelineOptions(constrain_mentions=True, max_completion_tokens=192)  # "needed"
    domain = load_domain("conll04")
    models = vllm_server_models(vllm_server, stages=options.joint_model_stages)
    results = await build_joint_graph(options).abatch(
        [{"text": t} for t in sentences], context=RunContext(domain=domain, models=models)
    )
    asked = 0
    for result in results:
        possible = relations_possible(result["entities"], domain)
        asked += possible
        for stage in RELATION_STAGES:
            assert result["usage"][stage].calls == int(possible)
        if not possible:  # skipped: nothing a decoder wrote could have been kept
            assert result["triplets"] == result["dropped_triplets"] == []
            assert result["forward_triplets"] == result["reverse_triplets"] == []
    assert asked < len(sentences), "the random model leaves sentences without an entity pair"


def test_document_graph_end_to_end(vllm_server: str, shared_data: Path) -> None:
    sentences = conll04_sentences(shared_data, 4)
    document = "  ".join(sentences)
    models = vllm_server_models(vllm_server, stages=FAST.joint_model_stages)
    context = RunContext(domain=load_domain("conll04"), models=models)
    graph = build_document_graph(build_joint_graph(FAST))
    result = graph.invoke({"text": document}, context=context, config={"max_concurrency": 4})
    # CoNLL04 "sentences" include datelines without a terminator, which join the next one.
    assert len(result["sentences"]) >= 2
    assert "".join(document[s.start : s.end] for s in result["sentences"]).replace(" ", "") == (
        document.replace(" ", "")
    )
    assert result["errors"] == []
    typed = DocumentResult.from_state(result)
    assert (typed.sentences, typed.entities) == (result["sentences"], result["entities"])
    for entity in result["entities"]:
        assert document[entity.start : entity.end] == entity.text
    check_triplet_spans(document, result)
    assert result["usage"]["relations_forward"].calls == len(result["sentences"])


@pytest.mark.parametrize("graph", ["joint", "document"])
def test_extract_cli_writes_triplets(
    graph: str, vllm_server: str, shared_data: Path, tmp_path: Path
) -> None:
    sentences = conll04_sentences(shared_data, 24)
    if graph == "document":  # two documents of twelve sentences
        texts = ["  ".join(sentences[:12]), "  ".join(sentences[12:])]
    else:
        texts = sentences
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    out = tmp_path / "out.jsonl"
    done = run_samalign(
        "extract",
        str(source),
        "--domain",
        "conll04",
        "--server",
        vllm_server,
        "--graph",
        graph,
        "--out",
        str(out),
        *FAST_CLI,
    )
    assert done.returncode == 0, done.stderr.decode()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [str(i) for i in range(len(texts))]
    assert all(r["error"] is None for r in records)
    triplets = [t for r in records for t in (*r["triplets"], *r["dropped_triplets"])]
    assert triplets, "the tiny model's constrained answers yield some candidates"
    for r in records:
        for t in (*r["triplets"], *r["dropped_triplets"]):
            for arg in (t["head"], t["tail"]):
                assert r["text"][arg["start"] : arg["end"]] == arg["text"]
            assert set(t["head"]) == {"start", "end", "text", "label", "archetype", "sources"}
            assert t["sources"] and set(t["sources"]) <= {"forward", "reverse"}
        for t in r["dropped_triplets"]:
            assert "not recognised by NER" in t["reason"]
    if graph == "document":
        assert "sentences" in done.stderr.decode()  # the per-sentence progress bar


def test_extract_cli_joint_needs_relations(vllm_server: str, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("John works for IBM .\n")
    done = run_samalign(
        "extract",
        str(source),
        "--domain",
        "crossner_ai",
        "--server",
        vllm_server,
        "--graph",
        "joint",
    )
    assert done.returncode == 2
    assert "no relation types" in done.stderr.decode()


async def test_supervised_joint_graph_end_to_end(vllm_server: str, shared_data: Path) -> None:
    """AnchorAlign's supervised setting on a real server: supervised NER → decoders → filter."""
    options = PipelineOptions(
        ner_mode="supervised", constrain_mentions=True, max_completion_tokens=192
    )
    sentences = conll04_sentences(shared_data, 8)
    client, bodies = recording_client()
    models = vllm_server_models(
        vllm_server, stages=options.joint_model_stages, http_async_client=client
    )
    domain = load_domain("conll04")
    results = await build_joint_graph(options).abatch(
        [{"text": t} for t in sentences], context=RunContext(domain=domain, models=models)
    )
    await client.aclose()
    called = {b["model"] for b in bodies}
    assert "supervised_ner" in called and called <= {"supervised_ner", *RELATION_STAGES}
    for body in (b for b in bodies if b["model"] == "supervised_ner"):
        items = body["response_format"]["json_schema"]["schema"]["items"]
        assert items["properties"]["type"]["enum"] == domain.names
    for text, result in zip(sentences, results, strict=True):
        assert not {"anchor", "explorer", "archetype", "calibrate"} & set(result["usage"])
        assert result["usage"]["supervised_ner"].calls == 1
        for entity in result["entities"]:
            assert text[entity.start : entity.end] == entity.text
            assert entity.label in domain.labels and entity.sources == ("supervised_ner",)
        check_triplet_spans(text, result)
