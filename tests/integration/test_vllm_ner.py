"""The SAM-NER graph and `samalign extract` end to end against a real vLLM server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import recording_client, run_samalign

from samalign import (
    BackendError,
    NerResult,
    PipelineOptions,
    RunContext,
    build_ner_graph,
    check_server,
    load_domain,
    vllm_server_models,
)
from samalign.evaluation import read_crossner
from samalign.testing import ModelRequestBlockedError, block_model_requests
from samalign.types import NER_STAGES

pytestmark = pytest.mark.integration

# A tiny random model only emits grounded mentions when answers are restricted to the text;
# a small completion budget keeps its runaway answers short (they are repaired, not lost).
FAST = PipelineOptions(constrain_mentions=True, max_completion_tokens=256)

SENTENCES = [
    "The long short-term memory ( LSTM ) network was proposed by Sepp Hochreiter in Munich .",
    "Jürgen Schmidhuber élève à Lugano , 東京 , and the IDSIA lab published papers at NeurIPS .",
]


def test_server_serves_every_stage_adapter(vllm_server: str) -> None:
    check_server(vllm_server, [*NER_STAGES, "relations_forward", "relations_reverse"])
    with pytest.raises(BackendError, match="does not serve adapter"):
        check_server(vllm_server, ["no-such-adapter"])


async def test_graph_end_to_end_each_stage_names_its_adapter(vllm_server: str) -> None:
    client, bodies = recording_client()
    models = vllm_server_models(vllm_server, http_async_client=client)
    context = RunContext(domain=load_domain("crossner_ai"), models=models)
    graph = build_ner_graph(FAST)
    results = await graph.abatch([{"text": t} for t in SENTENCES], context=context)
    await client.aclose()
    assert any(r["candidates"] for r in results), "constrained answers are grounded mentions"
    for text, result in zip(SENTENCES, results, strict=True):
        for entity in result["entities"]:
            assert text[entity.start : entity.end] == entity.text
            assert entity.label in load_domain("crossner_ai").labels
            assert entity.archetype is not None
            assert entity.sources
        for stage in ("anchor", "explorer") if not result["candidates"] else NER_STAGES:
            assert result["usage"][stage].calls >= 1
            assert result["usage"][stage].prompt_tokens > 0
    if all(r["candidates"] for r in results):
        assert {b["model"] for b in bodies} == set(NER_STAGES)
    assert {b["model"] for b in bodies} >= {"anchor", "explorer"}
    assert {b["model"] for b in bodies} <= set(NER_STAGES)
    for body in bodies:
        assert body["response_format"]["type"] == "json_schema"
        assert "guided_json" not in body


def test_sync_invoke_and_ablation_shapes(vllm_server: str) -> None:
    models = vllm_server_models(vllm_server, stages=[*NER_STAGES, "direct_typing"])
    context = RunContext(domain="crossner_music", models=models)
    full = build_ner_graph(FAST).invoke({"text": SENTENCES[0]}, context=context)
    assert set(full["usage"]) >= {"anchor", "explorer", "consensus", "archetype", "calibrate"}
    ablation = FAST.model_copy(update={"use_calibration": False, "use_anchor": False})
    direct = build_ner_graph(ablation).invoke({"text": SENTENCES[0]}, context=context)
    assert "calibrate" not in direct["usage"] and "anchor" not in direct["usage"]
    assert ablation.model_stages == ["explorer", "direct_typing"]
    assert "merge" in direct["usage"]
    for entity in direct["entities"]:
        assert entity.archetype is None
        assert entity.label in context.domain.labels


async def test_reference_profile_against_the_server(vllm_server: str, shared_data: Path) -> None:
    """The authors' prompts, sent without a schema, served by vLLM; the extractors replay gold
    (a random model finds nothing unconstrained), the classifier and calibrator are the real
    server: their answers are free text, parsed or turned into diagnostics."""
    from samalign.agents.archetype import tag_entities
    from samalign.evaluation.gold import gold_stage_models
    from samalign.prompts.profiles import prompt_profile
    from samalign.serving import StageModels

    sentence = read_crossner(shared_data / "crossner" / "ai" / "dev.txt")[3]
    domain = load_domain("crossner_ai")
    profile = prompt_profile("reference")
    gold = gold_stage_models([sentence], domain, profile=profile).for_sentence(sentence)
    client, bodies = recording_client()
    served = vllm_server_models(
        vllm_server, stages=["archetype", "calibrate"], http_async_client=client
    )
    models = StageModels({"anchor": gold["anchor"], "explorer": gold["explorer"], **served})
    options = PipelineOptions(prompt_profile="reference", max_completion_tokens=48)
    result = await build_ner_graph(options).ainvoke(
        {"text": sentence.text}, context=RunContext(domain, models)
    )
    await client.aclose()
    assert result["candidates"], "the replayed extractors found the gold mentions"
    assert {b["model"] for b in bodies} == {"archetype", "calibrate"}
    for body in bodies:
        assert "response_format" not in body  # the reference profile decodes freely
        assert body.get("max_tokens", body.get("max_completion_tokens")) == 48
    archetype = next(b for b in bodies if b["model"] == "archetype")
    tagged = tag_entities(sentence.text, [c.span for c in result["candidates"]])
    assert "<ENT>" in tagged
    assert archetype["messages"][0]["content"] == profile.classifier(domain, tagged).prompt
    calibrate = next(b for b in bodies if b["model"] == "calibrate")
    initial = {e.text: e.archetype for e in result["archetyped"]}
    expected = profile.calibrator(domain, sentence.text, initial).prompt
    assert calibrate["messages"][0]["content"] == expected
    for entity in result["entities"]:
        assert entity.label in domain.labels


def test_unknown_adapter_is_a_clear_backend_error(vllm_server: str) -> None:
    models = vllm_server_models(vllm_server, adapters={"anchor": "iepile-missing"})
    context = RunContext(domain="crossner_ai", models=models)
    with pytest.raises(BackendError, match=r"iepile-missing.*404") as info:
        build_ner_graph().invoke({"text": SENTENCES[0]}, context=context)
    assert (info.value.stage, info.value.adapter, info.value.status_code) == (
        "anchor",
        "iepile-missing",
        404,
    )


async def test_kill_switch_stops_real_requests_before_the_server(vllm_server: str) -> None:
    client, bodies = recording_client()
    models = vllm_server_models(vllm_server, http_async_client=client)
    context = RunContext(domain="crossner_ai", models=models)
    graph = build_ner_graph(FAST)
    with block_model_requests(), pytest.raises(ModelRequestBlockedError):
        await graph.ainvoke({"text": SENTENCES[0]}, context=context)
    assert bodies == []  # nothing reached the server
    result = NerResult.from_state(await graph.ainvoke({"text": SENTENCES[0]}, context=context))
    await client.aclose()
    assert {b["model"] for b in bodies} >= {"anchor", "explorer"}  # allowed again outside
    assert result.total_usage.calls >= 2


FAST_CLI = ("--constrain-mentions", "--max-tokens", "256")


def test_extract_cli_keeps_every_record_and_resumes(
    vllm_server: str, tmp_path: Path, shared_data: Path
) -> None:
    sentences = read_crossner(shared_data / "crossner" / "ai" / "dev.txt")[:16]
    lines = [json.dumps({"id": s.id, "text": s.text}).encode() for s in sentences]
    lines.insert(5, b'{"id": "broken", "text": ')  # invalid JSON
    lines.insert(9, b'{"id": "latin1", "text": "caf\xe9"}')  # invalid UTF-8
    lines.insert(12, json.dumps({"id": "empty", "text": "   "}).encode())
    lines.insert(15, json.dumps({"id": "long", "text": "x " * 5000}).encode())
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "out.jsonl"
    extract = ("extract", str(source), "--domain", "crossner_ai", "--server", vllm_server)
    extract += ("--out", str(out), "--concurrency", "20", *FAST_CLI)

    done = run_samalign(*extract)
    assert done.returncode == 0, done.stderr.decode()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    expected_ids = [s.id for s in sentences]
    for pos, rid in ((5, "line-6"), (9, "line-10"), (12, "empty"), (15, "long")):
        expected_ids.insert(pos, rid)
    assert [r["id"] for r in records] == expected_ids
    by_id = {r["id"]: r for r in records}
    assert "invalid JSON" in by_id["line-6"]["error"]
    assert "UTF-8" in by_id["line-10"]["error"]
    assert "empty" in by_id["empty"]["error"]
    assert "document graph" in by_id["long"]["error"]
    good = [r for r in records if r["error"] is None]
    assert len(good) == len(sentences)
    assert sum(len(r["entities"]) for r in good) > 0, [
        (d["stage"], d["kind"], d["message"][:80]) for d in good[0]["diagnostics"]
    ]
    for r in good:
        for e in r["entities"]:
            assert r["text"][e["start"] : e["end"]] == e["text"]
            assert set(e) == {"start", "end", "text", "label", "archetype", "sources"}

    # Resume: keep 10 complete lines and half of the 11th, rerun, get the same ids once each.
    kept = out.read_text().splitlines(keepends=True)
    out.write_text("".join(kept[:10]) + kept[10][: len(kept[10]) // 2])
    again = run_samalign(*extract, "--quiet")
    assert again.returncode == 0, again.stderr.decode()
    resumed = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in resumed] == expected_ids


def test_extract_cli_plain_text_stdin_and_bad_server(vllm_server: str) -> None:
    text = "\n".join(SENTENCES).encode() + b"\n\n"
    done = run_samalign(
        "extract",
        "-",
        "--domain",
        "crossner_politics",
        "--server",
        vllm_server,
        "--quiet",
        stdin=text,
    )
    assert done.returncode == 0, done.stderr.decode()
    records = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [r["id"] for r in records] == ["line-1", "line-2"]

    down = run_samalign(
        "extract", "-", "--domain", "crossner_ai", "--server", "http://127.0.0.1:9", stdin=text
    )
    assert down.returncode == 2
    assert "cannot reach the model server" in down.stderr.decode()

    missing = run_samalign(
        "extract",
        "-",
        "--domain",
        "crossner_ai",
        "--server",
        vllm_server,
        "--adapter",
        "anchor=nope",
        stdin=text,
    )
    assert missing.returncode == 2
    assert "does not serve adapter(s) ['nope']" in missing.stderr.decode()

    unknown = run_samalign(
        "extract", "-", "--domain", "no_such_domain", "--server", vllm_server, stdin=text
    )
    assert unknown.returncode == 2
    assert "unknown domain" in unknown.stderr.decode()


def test_quickstart_example_against_the_server(vllm_server: str) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "ner_quickstart.py"
    done = subprocess.run(
        [sys.executable, str(example), "--server", vllm_server, "--max-tokens", "64"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "model calls" in done.stdout
