"""Graph overhead benchmark: the NER graph vs. the same requests sent directly.

Runs the SAM-NER graph over CrossNER dev sentences against a vLLM server, records every
stage request the graph made (at the HTTP layer), then replays exactly those requests
through the OpenAI client at the same concurrency. Prints one JSON object.

    python benchmarks/throughput.py --server http://127.0.0.1:8000 --domain crossner_ai \
        --n 200 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx2 as httpx  # the HTTP client openai >= 3 uses natively (an httpx client is slower)
import openai

from samalign import PipelineOptions, RunContext, build_ner_graph, load_domain, vllm_server_models
from samalign.evaluation import read_crossner
from samalign.graphs.batch import run_records
from samalign.records import InputRecord
from samalign.serving import StageModels, api_base

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "crossner"


def _shared_prefix_share(token_lists: list[list[int]]) -> float:
    """Share of prompt tokens that is a prefix shared with at least one other prompt."""
    if len(token_lists) < 2:
        return 0.0
    ordered = sorted(token_lists)

    def lcp(a: list[int], b: list[int]) -> int:
        n = 0
        for x, y in zip(a, b, strict=False):
            if x != y:
                break
            n += 1
        return n

    shared = 0
    for i, toks in enumerate(ordered):
        best = 0
        if i > 0:
            best = lcp(toks, ordered[i - 1])
        if i + 1 < len(ordered):
            best = max(best, lcp(toks, ordered[i + 1]))
        shared += best
    return shared / sum(len(t) for t in ordered)


async def _tokenize(client: httpx.AsyncClient, server: str, body: dict[str, Any]) -> list[int]:
    url = server.rstrip("/").removesuffix("/v1") + "/tokenize"
    response = await client.post(
        url, json={"model": body["model"], "messages": body["messages"]}, timeout=60
    )
    response.raise_for_status()
    tokens: list[int] = response.json()["tokens"]
    return tokens


async def _run_graph(
    server: str,
    domain: str,
    texts: list[tuple[str, str]],
    concurrency: int,
    options: PipelineOptions,
) -> tuple[float, list[dict[str, Any]], list[Any], int]:
    bodies: list[dict[str, Any]] = []
    inflight = [0, 0]  # now, peak

    async def on_request(request: httpx.Request) -> None:
        if request.url.path.endswith("/chat/completions"):
            bodies.append(json.loads(request.content))
            inflight[0] += 1
            inflight[1] = max(inflight)

    async def on_response(response: httpx.Response) -> None:
        if response.request.url.path.endswith("/chat/completions"):
            inflight[0] -= 1

    # One client per stage, as vllm_server_models would create by default (openai's own
    # httpx2 client with its default pool), with hooks that record each request.
    clients = {
        stage: openai.DefaultAsyncHttpxClient(
            event_hooks={"request": [on_request], "response": [on_response]}
        )
        for stage in options.model_stages
    }
    models = StageModels(
        {
            stage: vllm_server_models(server, stages=[stage], http_async_client=client)[stage]
            for stage, client in clients.items()
        }
    )
    context = RunContext(domain=load_domain(domain), models=models)
    graph = build_ner_graph(options)
    records = [InputRecord(id=i, text=t, line=n) for n, (i, t) in enumerate(texts)]
    start = time.perf_counter()
    results = [r async for r in run_records(graph, context, records, concurrency=concurrency)]
    elapsed = time.perf_counter() - start
    for client in clients.values():
        await client.aclose()
    return elapsed, bodies, results, inflight[1]


async def _replay(server: str, bodies: list[dict[str, Any]], concurrency: int) -> float:
    # one client per adapter, like the graph's stage models
    clients = {
        name: openai.AsyncOpenAI(base_url=api_base(server), api_key="EMPTY", max_retries=3)
        for name in {b["model"] for b in bodies}
    }
    slots = asyncio.Semaphore(concurrency)

    async def send(body: dict[str, Any]) -> None:
        async with slots:
            await clients[body["model"]].chat.completions.create(**body)

    start = time.perf_counter()
    await asyncio.gather(*(send(b) for b in bodies))
    elapsed = time.perf_counter() - start
    for client in clients.values():
        await client.close()
    return elapsed


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    domain_dir = args.data / args.domain.removeprefix("crossner_")
    sentences = read_crossner(domain_dir / "dev.txt")
    texts = [(s.id, s.text) for s in sentences[: args.n]]
    options = PipelineOptions(
        constrain_mentions=args.constrain_mentions, max_completion_tokens=args.max_tokens
    )
    # Warm-up pass over the same sentences (greedy decoding: the timed pass sends the same
    # requests), so both timed phases see the same warm prefix cache and compiled grammars.
    await _run_graph(args.server, args.domain, texts, args.concurrency, options)
    graph_s, bodies, results, peak = await _run_graph(
        args.server, args.domain, texts, args.concurrency, options
    )
    # The replay may keep as many requests in flight as the graph did at its peak.
    direct_s = await _replay(args.server, bodies, max(peak, args.concurrency))

    by_stage: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for body in bodies:
        by_stage[body["model"]].append(body)
    async with httpx.AsyncClient() as client:
        prefix_share = {}
        for stage, stage_bodies in by_stage.items():
            tokens = await asyncio.gather(
                *(_tokenize(client, args.server, b) for b in stage_bodies)
            )
            prefix_share[stage] = round(_shared_prefix_share(list(tokens)), 4)
    prompt_tokens = sum(u.prompt_tokens for r in results for u in r.usage.values())
    completion_tokens = sum(u.completion_tokens for r in results for u in r.usage.values())
    calls = sum(u.calls for r in results for u in r.usage.values())
    n = len(texts)
    errors = sum(r.error is not None for r in results)
    with_candidates = sum(
        1 for r in results if "archetype" in r.usage and r.usage["archetype"].calls
    )
    graph_rate, direct_rate = n / graph_s, n / direct_s
    return {
        "n": n,
        "concurrency": args.concurrency,
        "constrain_mentions": args.constrain_mentions,
        "max_tokens": args.max_tokens,
        "errors": errors,
        "graph_peak_inflight_requests": peak,
        "replay_concurrency": max(peak, args.concurrency),
        "graph_seconds": round(graph_s, 3),
        "direct_seconds": round(direct_s, 3),
        "graph_sentences_per_s": round(graph_rate, 3),
        "direct_sentences_per_s": round(direct_rate, 3),
        "ratio": round(graph_rate / direct_rate, 4),
        "calls_per_sentence": round(calls / n, 3),
        "sentences_with_candidates": with_candidates,
        "calls_per_sentence_with_candidates": round(
            sum(
                u.calls
                for r in results
                if "archetype" in r.usage and r.usage["archetype"].calls
                for u in r.usage.values()
            )
            / max(with_candidates, 1),
            3,
        ),
        "requests_recorded": len(bodies),
        "calls_per_stage": {s: len(b) for s, b in sorted(by_stage.items())},
        "prompt_tokens_per_sentence": round(prompt_tokens / n, 1),
        "completion_tokens_per_sentence": round(completion_tokens / n, 1),
        "prefix_share": prefix_share,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--domain", default="crossner_ai")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--data", type=Path, default=DATA, help="CrossNER folder")
    parser.add_argument("--constrain-mentions", action="store_true")
    parser.add_argument("--max-tokens", type=int, default=None, help="completion budget/stage")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
