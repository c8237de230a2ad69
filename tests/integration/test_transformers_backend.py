"""The transformers + peft backend on the tiny model: one process, no server.

One engine is loaded for the module (every adapter of the tiny model directory into one base
model); tests send it real stage requests concurrently and check batching, constraints,
budgets, stop strings, cancellation, errors, the NER graph and ``samalign extract``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from support import random_llama, run_samalign, skip_without

from samalign import (
    ConfigError,
    InputError,
    PipelineOptions,
    RunContext,
    build_ner_graph,
    load_domain,
    transformers_models,
)
from samalign.batch.records import InputRecord
from samalign.batch.run import run_records
from samalign.serving import StageModels
from samalign.serving.engine import ChatTurn, GenerationRequest
from samalign.serving.transformers_backend import TransformersEngine
from samalign.testing.tiny import DEFAULT_ADAPTERS
from samalign.types import NER_STAGES

pytestmark = pytest.mark.integration

skip_without("torch", "peft", "xgrammar")

FAST = PipelineOptions(constrain_mentions=True, max_completion_tokens=128)
SENTENCES = [
    "The long short-term memory ( LSTM ) network was proposed by Sepp Hochreiter in Munich .",
    "Jürgen Schmidhuber élève à Lugano , 東京 , and the IDSIA lab published papers at NeurIPS .",
    "Marie Curie was born in Warsaw and later worked in Paris .",
]
SMALL_SCHEMA = {
    "type": "object",
    "properties": {
        "person": {"type": "array", "items": {"enum": ["Marie Curie", "Warsaw"]}, "maxItems": 2}
    },
    "required": ["person"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def models(tiny_model_dir: Path) -> Iterator[StageModels]:
    with transformers_models(
        tiny_model_dir, stages=[*NER_STAGES, "direct_typing"], max_batch_size=16, max_wait_ms=20
    ) as stage_models:
        yield stage_models


@pytest.fixture(scope="module")
def engine(models: StageModels) -> TransformersEngine:
    chat = models["anchor"].chat_model
    engine = getattr(chat, "engine", None)
    assert isinstance(engine, TransformersEngine)
    return engine


def _request(
    text: str, adapter: str, max_tokens: int = 16, schema: Any = None, stop: tuple[str, ...] = ()
) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatTurn("system", "Extract the entities."), ChatTurn("user", text)),
        adapter=adapter,
        max_tokens=max_tokens,
        schema=schema,
        stop=stop,
    )


def test_loads_every_adapter_once_identity_runs_as_the_base(engine: TransformersEngine) -> None:
    assert engine.adapters == set(DEFAULT_ADAPTERS)
    assert engine.identity == {"calibrate"}
    assert sorted(engine.model.peft_config) == sorted(engine.adapters - {"calibrate"})
    assert engine.device.type == "cpu" and str(engine.dtype) == "torch.float32"
    assert engine.max_model_len == 8192


async def test_concurrent_mixed_adapter_batches_match_one_by_one(
    engine: TransformersEngine,
) -> None:
    requests = [
        _request(text, adapter, max_tokens=12, schema=schema)
        for text in SENTENCES
        for adapter in ("anchor", "explorer", "archetype", "calibrate")
        for schema in (None, SMALL_SCHEMA)
    ]
    alone = [engine.generate(r) for r in requests]
    assert all(r.batch_size == 1 for r in alone)
    before = engine.stats()["batches"]
    together = await asyncio.gather(*(engine.agenerate(r) for r in requests))
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    assert [r.text for r in together] == [r.text for r in alone]
    assert max(r.batch_size for r in together) > 4
    assert engine.stats()["batches"] - before < len(requests)
    # adapters really differ, and the identity adapter is the base model
    by_adapter = {r.adapter: a.token_ids for r, a in zip(requests, alone, strict=True)}
    assert len(set(by_adapter.values())) == 4


def test_threads_calling_invoke_are_batched_together(models: StageModels) -> None:
    chat = models["explorer"].chat_model
    prompts = [f"Sentence number {i} about Paris ." for i in range(8)]
    alone = [chat.invoke(p, max_tokens=12).response_metadata["token_ids"] for p in prompts]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda p: chat.invoke(p, max_tokens=12), prompts))
    assert [a.response_metadata["token_ids"] for a in answers] == alone
    assert max(a.response_metadata["batch_size"] for a in answers) > 1


async def test_constrained_answers_follow_the_schema(engine: TransformersEngine) -> None:
    results = await asyncio.gather(
        *(engine.agenerate(_request(t, "anchor", 64, SMALL_SCHEMA)) for t in SENTENCES)
    )
    for result in results:
        assert result.finish_reason == "stop"
        jsonschema.validate(json.loads(result.text), SMALL_SCHEMA)
        assert result.token_ids[-1] in engine.stop_token_ids  # ended by the grammar
        assert " " not in result.text.replace("Marie Curie", "")  # compact JSON


def test_budget_and_stop_strings(engine: TransformersEngine) -> None:
    full = engine.generate(_request(SENTENCES[0], "explorer", 24))
    assert full.finish_reason == "length" and full.completion_tokens == 24
    short = engine.generate(_request(SENTENCES[0], "explorer", 3))
    assert short.token_ids == full.token_ids[:3] and short.finish_reason == "length"
    stop = full.text[len(full.text) // 2 :][:3]
    cut = engine.generate(_request(SENTENCES[0], "explorer", 24, stop=(stop,)))
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.token_ids == full.token_ids[: len(cut.token_ids)]


async def test_a_cancelled_request_is_dropped_from_the_queue(engine: TransformersEngine) -> None:
    started = engine.stats()["requests"]
    busy = [asyncio.create_task(engine.agenerate(_request(t, "anchor", 100))) for t in SENTENCES]
    while engine.stats()["requests"] < started + len(busy) or engine.batcher.queued:
        await asyncio.sleep(0.005)  # wait until the busy batch is running
    cancelled_before = engine.stats()["cancelled"]
    doomed = asyncio.create_task(engine.agenerate(_request("never mind", "explorer", 8)))
    deadline = time.monotonic() + 30
    while engine.batcher.queued == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    assert engine.batcher.queued == 1
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    for _ in range(200):
        if engine.stats()["cancelled"] > cancelled_before:
            break
        await asyncio.sleep(0.01)
    assert engine.stats()["cancelled"] == cancelled_before + 1
    assert all(r.completion_tokens == 100 for r in await asyncio.gather(*busy))
    assert (await engine.agenerate(_request("still fine", "explorer", 4))).completion_tokens == 4


async def test_a_failed_request_does_not_fail_its_batch(engine: TransformersEngine) -> None:
    outcomes = await asyncio.gather(
        engine.agenerate(_request("x " * 9000, "anchor")),  # longer than the context
        engine.agenerate(_request("Short one .", "anchor")),
        engine.agenerate(_request("Short two .", "nope")),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], InputError) and "context of 8192 tokens" in str(outcomes[0])
    assert not isinstance(outcomes[1], BaseException) and outcomes[1].completion_tokens == 16
    assert "adapter 'nope' is not loaded" in str(outcomes[2])


async def test_ner_graph_runs_in_one_process(models: StageModels) -> None:
    domain = load_domain("crossner_ai")
    context = RunContext(domain=domain, models=models)
    texts = SENTENCES[:2]
    results = await build_ner_graph(FAST).abatch([{"text": t} for t in texts], context=context)
    assert any(r["candidates"] for r in results)
    for text, result in zip(texts, results, strict=True):
        for entity in result["entities"]:
            assert text[entity.start : entity.end] == entity.text
            assert entity.label in domain.labels
        assert result["usage"]["anchor"].prompt_tokens > 0
        assert result["usage"]["anchor"].completion_tokens > 0
    sync = build_ner_graph(FAST).invoke({"text": SENTENCES[0]}, context=context)
    assert sync["entities"] == results[0]["entities"]  # greedy: same answers, sync or async


async def test_too_long_prompt_is_an_error_record_not_a_crash(models: StageModels) -> None:
    options = FAST.model_copy(update={"max_text_chars": 100_000, "max_completion_tokens": 16})
    graph = build_ner_graph(options)
    context = RunContext(domain="crossner_ai", models=models)
    records = [
        InputRecord(id="short", text=SENTENCES[2], line=1),
        InputRecord(id="long", text="word " * 12_000, line=2),
    ]
    out = {r.id: r async for r in run_records(graph, context, records, concurrency=2)}
    assert out["short"].error is None
    assert out["long"].error is not None and "InputError" in out["long"].error
    assert "context of 8192 tokens" in out["long"].error


def test_model_dir_errors_name_the_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    shutil.rmtree(broken / "adapters" / "explorer")
    with pytest.raises(ConfigError, match=r"adapter 'explorer' is listed .* is missing"):
        transformers_models(broken)
    with pytest.raises(ConfigError, match=r"no adapter\(s\) \['nope'\]"):
        transformers_models(tiny_model_dir, adapters={"anchor": "nope"})

    # an adapter trained on another base model (hidden size 64 instead of 128)
    from peft import LoraConfig, get_peft_model

    other = random_llama(vocab_size=64, hidden_size=64, layers=2)
    lora = LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    mismatched = tmp_path / "mismatched"
    shutil.copytree(tiny_model_dir, mismatched)
    get_peft_model(other, lora).save_pretrained(str(mismatched / "adapters" / "foreign"))
    with pytest.raises(ConfigError) as caught:
        transformers_models(mismatched, stages=["anchor"])
    message = str(caught.value)
    assert "adapter 'foreign'" in message and "does not match the base model" in message
    assert "lora_A expects 64 input features, the base layer has 128" in message


def _cli(*args: str, stdin: bytes, env: dict[str, str] | None = None) -> Any:
    return run_samalign(*args, stdin=stdin, env=env, timeout=900)


def test_extract_cli_without_a_server(tiny_model_dir: Path) -> None:
    lines = [json.dumps({"id": f"s{i}", "text": t}) for i, t in enumerate(SENTENCES[:2])]
    lines.append(json.dumps({"id": "long", "text": "word " * 12_000}))
    stdin = ("\n".join(lines) + "\n").encode()
    flags = ["--domain", "crossner_ai", "--quiet", "--max-chars", "100000"]
    flags += ["--max-tokens", "16"]
    done = _cli(
        "extract", "-", *flags, env={"SAMALIGN_MODEL_DIR": str(tiny_model_dir)}, stdin=stdin
    )
    assert done.returncode == 0, done.stderr.decode()
    records = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [r["id"] for r in records] == ["s0", "s1", "long"]
    assert records[0]["error"] is None and records[1]["error"] is None
    assert "context of 8192 tokens" in records[2]["error"]
    assert records[0]["usage"]["anchor"]["prompt_tokens"] > 0

    env = {"SAMALIGN_MODEL_DIR": ""}
    nothing = _cli("extract", "-", "--domain", "crossner_ai", stdin=b"x\n", env=env)
    assert nothing.returncode == 2
    assert "pass --server URL" in nothing.stderr.decode()
    wrong = _cli(
        "extract", "-", "--domain", "crossner_ai", "--model", str(tiny_model_dir),
        "--adapter", "anchor=nope", stdin=b"x\n", env=env,
    )  # fmt: skip
    assert wrong.returncode == 2
    assert "no adapter(s) ['nope']" in wrong.stderr.decode()


# --- the prompt-prefix cache ------------------------------------------------------------------

CACHE_SENTENCES = [
    "Geoffrey Hinton and Yann LeCun shared the Turing Award with Yoshua Bengio .",
    "Alan Turing worked at Bletchley Park during the war .",
    "Ada Lovelace wrote about the Analytical Engine of Charles Babbage .",
    "Claude Shannon founded information theory at Bell Labs .",
    "Grace Hopper built the first compiler for UNIVAC .",
    "Marvin Minsky founded the Artificial Intelligence Laboratory at MIT .",
]
"""Each has two capitalised word pairs the scripted extractors answer (whole words, so they
ground: "John McCarthy" would give "John Mc", which does not)."""


def _graph_requests(texts: list[str]) -> list[list[GenerationRequest]]:
    """Per sentence, the stage requests the NER graph sends (scripted stage answers)."""
    import re

    from samalign.serving.chat import to_turns
    from samalign.testing.fakes import fake_stage_models

    def names(messages: Any) -> list[str]:
        text = str(messages[0].content)
        return re.findall(r"[A-Z][a-z]+ [A-Z][a-z]+", text)[:2]

    scripts = {
        "anchor": lambda m: json.dumps({"person": names(m)}),
        "explorer": lambda m: json.dumps({"person": names(m)}),
        "archetype": lambda m: json.dumps(
            {"Person": re.findall(r"<ENT>(.*?)</ENT>", str(m[0].content))}
        ),
        "calibrate": lambda m: json.dumps(
            {e: "researcher" for e in json.loads(str(m[0].content).rsplit("Initial Output:", 1)[1])}
        ),
    }
    out: list[list[GenerationRequest]] = []
    for text in texts:
        fakes = fake_stage_models(scripts)
        build_ner_graph(PipelineOptions()).invoke(
            {"text": text}, context=RunContext(domain="crossner_ai", models=fakes)
        )
        requests = []
        for stage in NER_STAGES:
            for call in fakes[stage].chat_model.calls:  # type: ignore[attr-defined]
                schema = call["kwargs"]["response_format"]["json_schema"]["schema"]
                turns = to_turns(call["messages"])
                requests.append(GenerationRequest(turns, stage, max_tokens=12, schema=schema))
        out.append(requests)
    return out


async def _waves(engine: TransformersEngine, waves: list[list[GenerationRequest]]) -> list[Any]:
    answers: list[Any] = []
    for wave in waves:  # one wave after another: later waves find the earlier ones' heads
        answers += await asyncio.gather(*(engine.agenerate(r) for r in wave))
    return answers


async def test_prefix_cache_reuses_stage_heads_and_answers_the_same_tokens(
    tiny_model_dir: Path,
) -> None:
    per_sentence = _graph_requests(CACHE_SENTENCES)
    assert all(len(requests) == 4 for requests in per_sentence)  # every stage asked
    # wave 1: two sentences (their shared heads get stored); wave 2: the other four, every
    # adapter mixed in one batch, each with its cached head
    waves = [
        [r for rs in per_sentence[:2] for r in rs],
        [r for rs in per_sentence[2:] for r in rs],
    ]
    plain = TransformersEngine(tiny_model_dir, prefix_cache_mb=0, reserve_kv=False)
    try:
        reference = await _waves(plain, waves)
        assert plain.stats()["prefix_cache_hits"] == 0
    finally:
        plain.close()
    # max_wait_ms: room to render and tokenize all 16 prompts (the calibrator's are ~2,400
    # tokens) before the batch closes
    cached = TransformersEngine(
        tiny_model_dir, max_batch_size=32, max_padding_ratio=100, max_wait_ms=500
    )
    try:
        first = await _waves(cached, waves[:1])
        cached.reset_stats()
        second = await _waves(cached, waves[1:])
        stats = cached.stats()
    finally:
        cached.close()
    assert [a.token_ids for a in [*first, *second]] == [a.token_ids for a in reference]
    assert stats["prefix_cache_hits"] == len(waves[1])  # every wave-2 request found its head
    assert stats["prefix_cache_reused_tokens"] > 0.6 * stats["prefix_cache_prompt_tokens"]
    assert max(a.batch_size for a in second) == len(waves[1])  # all adapters in one batch
    assert 0 < stats["prefix_cache_bytes"] <= stats["prefix_cache_max_bytes"]
    # identity rows (calibrate) and LoRA rows keep separate entries
    assert stats["prefix_cache_entries"] >= 4


async def test_a_cached_head_never_splits_a_batch_into_more_generate_calls(
    tiny_model_dir: Path,
) -> None:
    """Batches are split by the whole prompt's length, the cached part included.

    Split by the length left to compute, the cached rows of one stage (prompts of ~2,400
    tokens, ~50 to compute) fell into several groups, each a whole decoding loop of its own:
    the cache made a stage slower than no cache on a small model.
    """
    long = (
        "Grace Hopper , who later rose to rear admiral in the navy reserve and lectured for "
        "decades at universities , conferences and schools across the whole country , built "
        "the first compiler for the UNIVAC machine with Richard Ridgway ."
    )  # what is left to compute after the cached head: ~10 times the short ones'
    per_sentence = _graph_requests([*CACHE_SENTENCES[:2], "Alan Turing spoke .", long])
    waves = [
        [r for rs in per_sentence[:2] for r in rs],
        [r for rs in per_sentence[2:] for r in rs],
    ]
    calls = {}
    for name, mb in (("plain", 0.0), ("cached", 256.0)):
        engine = TransformersEngine(
            tiny_model_dir, prefix_cache_mb=mb, max_batch_size=32, max_wait_ms=500
        )  # the default max_padding_ratio
        try:
            await _waves(engine, waves[:1])
            engine.reset_stats()
            await _waves(engine, waves[1:])
            stats = engine.stats()
        finally:
            engine.close()
        calls[name] = stats["generate_calls"]
        if name == "cached":
            assert stats["prefix_cache_hits"] == len(waves[1])
    assert calls["cached"] == calls["plain"]


async def test_prefix_cache_stays_within_its_bound(tiny_model_dir: Path) -> None:
    per_sentence = _graph_requests(CACHE_SENTENCES[:4])
    waves = [[r for r in rs] for rs in per_sentence]  # one sentence per wave
    # about one NER stage head of the tiny model (0.35-0.42 MB), so heads evict each other;
    # the calibrator's (~2,400 tokens of type definitions, ~4.7 MB) never fits
    bound_mb = 0.5
    engine = TransformersEngine(tiny_model_dir, prefix_cache_mb=bound_mb, prefix_min_tokens=8)
    plain = TransformersEngine(tiny_model_dir, prefix_cache_mb=0)
    try:
        answers = await _waves(engine, waves)
        reference = await _waves(plain, waves)
        stats = engine.stats()
    finally:
        engine.close()
        plain.close()
    assert [a.token_ids for a in answers] == [a.token_ids for a in reference]
    assert stats["prefix_cache_bytes"] <= bound_mb * 2**20
    assert stats["prefix_cache_evicted"] > 0 and stats["prefix_cache_hits"] > 0


def test_threads_follow_the_setting(tiny_model_dir: Path) -> None:
    import torch

    mine = torch.get_num_threads()
    engine = TransformersEngine(tiny_model_dir, threads=1, adapters=["anchor"])
    try:
        engine.generate(_request(SENTENCES[0], "anchor", max_tokens=2))
        assert engine.stats()["threads"] == 1
    finally:
        engine.close()
    auto = TransformersEngine(tiny_model_dir, adapters=["anchor"])  # "auto"
    try:
        auto.generate(_request(SENTENCES[0], "anchor", max_tokens=2))
        assert 1 <= auto.stats()["threads"] <= (os.cpu_count() or 1)
    finally:
        auto.close()
    assert torch.get_num_threads() == mine  # set on the generation thread, not the caller's
    with pytest.raises(ConfigError, match="threads must be"):
        TransformersEngine(tiny_model_dir, threads=0)


def test_auto_threads_leave_a_core_to_the_python_side(tiny_model_dir: Path) -> None:
    """A small model gets one intra-op thread on two cores (measured: two were 2x slower)."""
    from samalign.serving.threads import CpuShare

    engine = TransformersEngine(tiny_model_dir, adapters=["anchor"], device="cpu")
    try:
        timed: list[int] = []
        forward = engine.model.forward

        def counting(*args: Any, **kwargs: Any) -> Any:
            timed.append(1)
            return forward(*args, **kwargs)

        engine.model.forward = counting
        for cores in (1, 2):
            engine._cpu_share = CpuShare(cores=cores)
            assert engine._calibrate_threads() == 1
        assert timed == []  # decided without timing anything
        engine._cpu_share = CpuShare(cores=4)
        assert engine._calibrate_threads() in (1, 3)  # one core stays free
        assert timed  # this time it measured
    finally:
        engine.close()
