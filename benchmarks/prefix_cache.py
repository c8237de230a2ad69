"""The transformers backend's prefix cache: stage requests with and without it.

Records the requests the joint graph really sends (every stage, ``relation_schedule="always"``
so the relation decoders are asked for every sentence) with the in-process backend over
``--n`` timed plus ``--warmup`` other CoNLL04 dev sentences, then answers each stage's
requests again in three fresh engines — transformers' default KV cache (what the backend did
before), reserved KV buffers without the prefix cache, and both — each warmed up on the
warm-up sentences' requests first (so the stage prompt heads are cached, as in a running
service), ``--concurrency`` requests in flight. Reports per stage: seconds, requests/s, the
speed-up, the share of prompt tokens served from the cache, and the cache's memory; checks
that every answer is the same tokens in the three engines. ``--stages`` times only some
stages' requests (the graph still runs every stage); ``--bound-mb`` adds a fourth engine whose
prefix cache has that smaller bound (least recently used entries evicted). Prints one JSON
object.

    python benchmarks/prefix_cache.py --model DIR --n 48 --warmup 16
    python benchmarks/prefix_cache.py --model DIR --stages calibrate relations_forward \
        relations_reverse --bound-mb 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from common import DATA, bench_domain, bench_texts, sentence_keys, sentence_of

STAGES = ("anchor", "explorer", "archetype", "calibrate", "relations_forward", "relations_reverse")
SETTINGS = {
    "default_kv": {"reserve_kv": False, "prefix_cache_mb": 0},
    "reserved_kv": {"reserve_kv": True, "prefix_cache_mb": 0},
    "prefix_cache": {"reserve_kv": True},
}


def record_requests(args: argparse.Namespace, texts: list[str]) -> dict[str, list[list[Any]]]:
    """Stage → per sentence, the requests the joint graph sent (in-process, the real model)."""
    from samalign import PipelineOptions, RunContext, build_joint_graph, transformers_models

    options = PipelineOptions(
        relation_schedule="always",
        constrain_mentions=args.constrain_mentions,
        max_completion_tokens=args.max_tokens,
    )
    models = transformers_models(args.model, stages=options.joint_model_stages)
    engine = models["anchor"].chat_model.engine  # type: ignore[attr-defined]
    recorded: dict[str, list[list[Any]]] = {s: [[] for _ in texts] for s in STAGES}
    keys = sentence_keys([(str(i), t) for i, t in enumerate(texts)])
    original = engine._submit  # what generate and agenerate both run

    async def submit(request: Any) -> Any:
        body = {
            "model": request.adapter,
            "messages": [{"content": t.content} for t in request.messages],
        }
        recorded[request.adapter][int(sentence_of(body, keys))].append(request)
        return await original(request)

    engine._submit = submit
    graph = build_joint_graph(options)
    try:
        graph.batch(
            [{"text": t} for t in texts],
            config={"max_concurrency": args.concurrency},
            context=RunContext(domain=bench_domain(args.domain), models=models),
        )
    finally:
        models.close()
    return recorded


async def answer(engine: Any, requests: list[Any], concurrency: int) -> tuple[float, list[Any]]:
    slots = asyncio.Semaphore(concurrency)

    async def one(request: Any) -> Any:
        async with slots:
            return await engine.agenerate(request)

    start = time.perf_counter()
    results = await asyncio.gather(*(one(r) for r in requests))
    return time.perf_counter() - start, list(results)


def measure(
    args: argparse.Namespace, recorded: dict[str, list[list[Any]]], setting: dict[str, Any]
) -> dict[str, Any]:
    from samalign.serving.transformers_backend import TransformersEngine

    options = {"prefix_cache_mb": args.prefix_cache_mb, **setting}
    engine = TransformersEngine(args.model, max_batch_size=args.concurrency, **options)
    out: dict[str, Any] = {}
    evicted = 0  # over the engine's life, every stage's warm-up and timed requests
    try:
        for stage, per_sentence in recorded.items():
            if stage not in args.stages:
                continue
            warm = [r for rs in per_sentence[args.n :] for r in rs]
            timed = [r for rs in per_sentence[: args.n] for r in rs]
            if not timed:
                continue
            asyncio.run(answer(engine, warm, args.concurrency))
            evicted += engine.stats()["prefix_cache_evicted"]  # reset_stats zeroes it
            engine.reset_stats()
            seconds, results = asyncio.run(answer(engine, timed, args.concurrency))
            stats = engine.stats()
            out[stage] = {
                "requests": len(timed),
                "seconds": round(seconds, 3),
                "requests_per_s": round(len(timed) / seconds, 2),
                "prompt_tokens_mean": round(sum(r.prompt_tokens for r in results) / len(results)),
                "completion_tokens_mean": round(
                    sum(r.completion_tokens for r in results) / len(results), 1
                ),
                "reused_share": round(
                    stats["prefix_cache_reused_tokens"]
                    / max(stats["prefix_cache_prompt_tokens"], 1),
                    3,
                ),
                "tokens": [list(r.token_ids) for r in results],
            }
        final = engine.stats()
        out["_cache"] = {
            "entries": final["prefix_cache_entries"],
            "mb": round(final["prefix_cache_bytes"] / 2**20, 2),
            "max_mb": round(final["prefix_cache_max_bytes"] / 2**20, 1),
            "evicted": evicted + final["prefix_cache_evicted"],
        }
    finally:
        engine.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="model directory")
    parser.add_argument("--domain", default="conll04")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    parser.add_argument("--n", type=int, default=48, help="timed sentences")
    parser.add_argument("--warmup", type=int, default=16, help="warm-up sentences")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--max-tokens", type=int, default=64, help="completion budget/stage")
    parser.add_argument("--constrain-mentions", action="store_true")
    parser.add_argument("--prefix-cache-mb", type=float, default=256.0)
    parser.add_argument(
        "--stages", nargs="+", choices=STAGES, default=list(STAGES), help="stages to time"
    )
    parser.add_argument(
        "--bound-mb", type=float, help="also time a prefix cache bounded to this many MB"
    )
    args = parser.parse_args()
    from samalign.serving.threads import prefer_passive_openmp

    prefer_passive_openmp()  # before torch loads, as the backend does
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    texts = [t for _, t in bench_texts(args.data, args.domain, args.n + args.warmup)]
    recorded = record_requests(args, texts)
    settings = dict(SETTINGS)
    if args.bound_mb is not None:
        settings["prefix_cache_bounded"] = {"reserve_kv": True, "prefix_cache_mb": args.bound_mb}
    runs = {name: measure(args, recorded, setting) for name, setting in settings.items()}
    stages: dict[str, Any] = defaultdict(dict)
    identical = True
    for stage in STAGES:
        if stage not in runs["default_kv"]:
            continue
        base = runs["default_kv"][stage]
        for name, run in runs.items():
            row = {k: v for k, v in run[stage].items() if k != "tokens"}
            row["speedup_vs_default_kv"] = round(base["seconds"] / run[stage]["seconds"], 2)
            identical &= run[stage]["tokens"] == base["tokens"]
            stages[stage][name] = row
    result = {
        "model": str(args.model),
        "domain": args.domain,
        "n": args.n,
        "warmup": args.warmup,
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "constrain_mentions": args.constrain_mentions,
        "stages_timed": [s for s in STAGES if s in args.stages],
        "loadavg_before": loadavg_before,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "identical_tokens": identical,
        "stages": stages,
        "cache": runs["prefix_cache"]["_cache"],
        "caches": {name: run["_cache"] for name, run in runs.items() if "prefix" in name},
    }
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
