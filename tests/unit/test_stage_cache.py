"""The stage-answer cache: keys, bounds, stores, and no repeated model call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from samalign.agents.cache import (
    CacheConfig,
    CachedReply,
    MemoryCache,
    SqliteCache,
    request_key,
)
from samalign.cli import main
from samalign.errors import ConfigError
from samalign.graphs import PipelineOptions, RunContext, build_joint_graph, build_ner_graph
from samalign.prompts import load_domain
from samalign.testing.fakes import ScriptedChatModel, fake_stage_models

TEXT = "John Smith works for IBM in Armonk ."


def model_calls(models: Any) -> int:
    total = 0
    for stage in models:
        chat = models[stage].chat_model
        assert isinstance(chat, ScriptedChatModel)
        total += len(chat.calls)
    return total


def test_key_covers_model_adapter_messages_schema_and_budget() -> None:
    a = ScriptedChatModel(script="x")
    msgs = [HumanMessage(content="p")]
    base = request_key(a, "anchor", msgs, {"max_tokens": 10})
    assert base == request_key(a, "anchor", [HumanMessage(content="p")], {"max_tokens": 10})
    assert base != request_key(a, "explorer", msgs, {"max_tokens": 10})
    assert base != request_key(a, "anchor", [HumanMessage(content="q")], {"max_tokens": 10})
    assert base != request_key(a, "anchor", msgs, {"max_tokens": 11})
    assert base != request_key(a, "anchor", msgs, {"max_tokens": 10, "response_format": {}})
    from langchain_openai import ChatOpenAI

    def openai(**kw: Any) -> ChatOpenAI:
        args: dict[str, Any] = {
            "model": "anchor",
            "base_url": "http://127.0.0.1:1/v1",
            "api_key": "x",
            "temperature": 0,
            "seed": 0,
        }
        return ChatOpenAI(**{**args, **kw})

    key = request_key(openai(), "anchor", msgs, {})
    assert key == request_key(openai(), "anchor", msgs, {})
    assert key != request_key(openai(base_url="http://127.0.0.1:2/v1"), "anchor", msgs, {})
    assert key != request_key(openai(temperature=0.7), "anchor", msgs, {})
    assert key != request_key(openai(seed=1), "anchor", msgs, {})


def test_memory_cache_is_bounded_lru() -> None:
    cache = MemoryCache(max_entries=2)
    reply = CachedReply("t", "stop", 1, 1)
    cache.put("a", reply)
    cache.put("b", reply)
    assert cache.get("a") == reply  # a is now the most recent
    cache.put("c", reply)
    assert len(cache) == 2 and cache.get("b") is None and cache.get("a") == reply
    assert cache.stats.hits == 2 and cache.stats.misses == 1
    with pytest.raises(ConfigError):
        MemoryCache(max_entries=0)


def test_sqlite_cache_persists_and_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cache.db"
    cache = SqliteCache(path, max_entries=3)
    for i in range(5):
        cache.put(f"k{i}", CachedReply(f"answer {i}", "length", i, i))
    assert len(cache) == 3
    cache.close()
    again = SqliteCache(path, max_entries=3)
    assert again.get("k4") == CachedReply("answer 4", "length", 4, 4)
    assert again.get("k0") is None
    again.close()


def test_cache_config_parsing() -> None:
    assert CacheConfig.parse("memory") == CacheConfig()
    assert CacheConfig.parse("sqlite:/tmp/x.db") == CacheConfig(kind="sqlite", path="/tmp/x.db")
    assert CacheConfig.parse({"kind": "memory", "max_entries": 5}).max_entries == 5
    for bad in ("sqlite", "disk", {"kind": "memory", "path": "x"}, {"max_entries": 0}):
        with pytest.raises(ConfigError, match="stage cache"):
            CacheConfig.parse(bad)


def test_rerunning_makes_no_repeated_model_call(armonk_scripts: dict[str, Any]) -> None:
    models = fake_stage_models(armonk_scripts)
    cache = MemoryCache()
    context = RunContext(load_domain("conll04"), models, cache=cache)
    graph = build_joint_graph()
    first = graph.invoke({"text": TEXT}, context=context)
    made = model_calls(models)
    assert made == 6 and len(cache) == 6
    second = graph.invoke({"text": TEXT}, context=context)
    assert model_calls(models) == made, "no repeated model call"
    assert second["entities"] == first["entities"] and second["triplets"] == first["triplets"]
    for stage, usage in second["usage"].items():
        if stage in armonk_scripts:
            assert usage.calls == 0 and usage.cached == 1 and usage.prompt_tokens == 0, stage
    assert first["usage"]["anchor"].calls == 1 and first["usage"]["anchor"].cached == 0
    # a batch whose texts repeat: each distinct sentence is asked once
    graph.batch([{"text": TEXT}, {"text": "IBM hired John Smith ."}] * 3, context=context)
    assert model_calls(models) == made + 6


async def test_async_path_uses_the_cache_too(armonk_scripts: dict[str, Any]) -> None:
    models = fake_stage_models(armonk_scripts)
    context = RunContext(load_domain("conll04"), models, cache="memory")
    graph = build_ner_graph()
    await graph.ainvoke({"text": "Alice met Bob ."}, context=context)
    made = model_calls(models)
    await graph.ainvoke({"text": "Alice met Bob ."}, context=context)
    assert model_calls(models) == made


def test_another_domain_or_ablation_is_not_served_from_the_cache(
    armonk_scripts: dict[str, Any],
) -> None:
    models = fake_stage_models(armonk_scripts)
    cache = MemoryCache()
    graph = build_ner_graph()
    graph.invoke({"text": TEXT}, context=RunContext(load_domain("conll04"), models, cache=cache))
    made = model_calls(models)

    def calls(stage: str) -> int:
        chat = models[stage].chat_model
        assert isinstance(chat, ScriptedChatModel)
        return len(chat.calls)

    graph.invoke({"text": TEXT}, context=RunContext("crossner_ai", models, cache=cache))
    assert calls("anchor") == calls("explorer") == 2  # other labels: other prompts
    made = model_calls(models)
    direct = build_ner_graph(PipelineOptions(use_calibration=False))
    direct.invoke({"text": TEXT}, context=RunContext(load_domain("conll04"), models, cache=cache))
    # the extractors' requests are shared with the full pipeline; direct typing is new
    assert model_calls(models) == made + 1 and calls("direct_typing") == 1


def test_parse_failures_and_retries_replay_identically(armonk_scripts: dict[str, Any]) -> None:
    scripts = {**armonk_scripts, "anchor": ["not json", '{"person": ["John Smith"]}']}
    models = fake_stage_models(scripts)
    context = RunContext(load_domain("conll04"), models, cache=MemoryCache())
    graph = build_ner_graph()
    first = graph.invoke({"text": TEXT}, context=context)
    made = model_calls(models)
    second = graph.invoke({"text": TEXT}, context=context)
    assert model_calls(models) == made
    assert [d.kind for d in second["diagnostics"]] == [d.kind for d in first["diagnostics"]]
    assert second["usage"]["anchor"].cached == 2


def test_eval_sweep_rerun_with_a_sqlite_cache_calls_no_model(
    tmp_path: Path, shared_data: Path
) -> None:
    """`samalign eval --sweep --cache sqlite:...` twice: the second run is served by the cache."""
    db = tmp_path / "cache.db"
    args = [
        "eval",
        "crossner_ai",
        "--split",
        "dev",
        "--backend",
        "simulated",
        "--limit",
        "6",
        "--sweep",
        "--data-dir",
        str(shared_data),
        "--quiet",
        "--cache",
        f"sqlite:{db}",
    ]
    assert main([*args, "--out", str(tmp_path / "a.json")]) == 0
    first = json.loads((tmp_path / "a.json").read_text())
    assert main([*args, "--out", str(tmp_path / "b.json")]) == 0
    second = json.loads((tmp_path / "b.json").read_text())
    calls_first = sum(s["calls"] for s in first["cost"]["stages"].values())
    assert calls_first > 0
    assert sum(s["calls"] for s in second["cost"]["stages"].values()) == 0
    assert second["entity"]["span"] == first["entity"]["span"]
    for name, variant in second["ablations"].items():
        assert variant["calls_per_sentence"] == 0, name
