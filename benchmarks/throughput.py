"""Graph overhead benchmark: a samalign graph vs. the same requests sent directly.

``--graph ner`` (default) / ``--graph joint``: runs the graph over dev sentences (CrossNER for
``crossner_*`` domains, CoNLL04/SciERC for ``conll04``/``scierc``) against a vLLM server,
records every stage request the graph made (at the HTTP layer), then replays exactly those
requests through the OpenAI client at the same concurrency.

``--graph document``: joins the sentences into one long document, runs the document graph
over it, and compares with running the document's sentences (as the splitter cuts them)
through the sentence graph with ``abatch`` at the same concurrency.

Prints one JSON object.

    python benchmarks/throughput.py --server http://127.0.0.1:8000 --domain crossner_ai \
        --n 200 --concurrency 32
    python benchmarks/throughput.py --server URL --graph joint --domain conll04 --n 200
    python benchmarks/throughput.py --server URL --graph document --domain crossner_ai --n 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx2 as httpx  # the HTTP client openai >= 3 uses natively (an httpx client is slower)
import openai

from samalign import (
    PipelineOptions,
    RunContext,
    build_document_graph,
    build_joint_graph,
    build_ner_graph,
    load_domain,
    vllm_server_models,
)
from samalign.batch.records import InputRecord
from samalign.batch.run import run_records
from samalign.evaluation import read_crossner
from samalign.graphs.sentences import iter_sentences
from samalign.serving import StageModels, api_base

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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
    joint: bool = False,
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
        for stage in (options.joint_model_stages if joint else options.model_stages)
    }
    models = StageModels(
        {
            stage: vllm_server_models(server, stages=[stage], http_async_client=client)[stage]
            for stage, client in clients.items()
        }
    )
    context = RunContext(domain=load_domain(domain), models=models)
    graph = build_joint_graph(options) if joint else build_ner_graph(options)
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


def _texts(data: Path, domain: str, n: int) -> list[tuple[str, str]]:
    if domain.startswith("crossner_"):
        sentences = read_crossner(data / "crossner" / domain.removeprefix("crossner_") / "dev.txt")
        return [(s.id, s.text) for s in sentences[:n]]
    records = json.loads((data / domain / "dev_triples.json").read_text(encoding="utf-8"))
    return [(f"{domain}-dev-{i}", " ".join(r["tokens"])) for i, r in enumerate(records[:n])]


async def document_async(args: argparse.Namespace, options: PipelineOptions) -> dict[str, Any]:
    texts = _texts(args.data, args.domain, args.n)
    document = "  ".join(t for _, t in texts)
    sentences = [s.text for s in iter_sentences(document)]
    domain = load_domain(args.domain)
    joint = bool(domain.relation_types)
    stages = options.joint_model_stages if joint else options.model_stages
    models = vllm_server_models(args.server, stages=stages)
    context = RunContext(domain=domain, models=models)
    sentence_graph = build_joint_graph(options) if joint else build_ner_graph(options)
    graph = build_document_graph(sentence_graph)
    config: Any = {"max_concurrency": args.concurrency}

    async def sentences_pass() -> float:
        start = time.perf_counter()
        await sentence_graph.abatch([{"text": t} for t in sentences], config, context=context)
        return time.perf_counter() - start

    async def document_pass() -> tuple[float, dict[str, Any]]:
        start = time.perf_counter()
        result = await graph.ainvoke({"text": document}, config, context=context)
        return time.perf_counter() - start, result

    await sentences_pass()  # warm-up: prefix cache and grammars
    abatch_s = await sentences_pass()
    document_s, result = await document_pass()
    abatch_again_s = await sentences_pass()  # bracket the document pass against drift
    abatch_mean = (abatch_s + abatch_again_s) / 2
    return {
        "graph": "document",
        "sentence_graph": "joint" if joint else "ner",
        "document_chars": len(document),
        "sentences": len(sentences),
        "concurrency": args.concurrency,
        "errors": len(result["errors"]),
        "entities": len(result["entities"]),
        "abatch_seconds": [round(abatch_s, 3), round(abatch_again_s, 3)],
        "document_seconds": round(document_s, 3),
        "abatch_sentences_per_s": round(len(sentences) / abatch_mean, 3),
        "document_sentences_per_s": round(len(sentences) / document_s, 3),
        "ratio": round(abatch_mean / document_s, 4),
    }


PHASES: tuple[tuple[str, ...], ...] = (
    ("anchor", "explorer"),
    ("archetype", "direct_typing"),
    ("calibrate",),
    ("relations_forward", "relations_reverse"),
)
"""The graph's stage order: the stages of a phase run concurrently, phases one after another."""

_TAGS = re.compile(r"</?ENT>")


def _sentence_of(body: dict[str, Any], keys: list[tuple[str, str]]) -> str:
    content = _TAGS.sub("", "".join(str(m.get("content", "")) for m in body["messages"]))
    for sid, needle in keys:
        if needle in content:
            return sid
    raise ValueError(f"cannot tell which sentence a {body['model']} request is about")


async def _replay_pipelined(
    server: str, bodies: list[dict[str, Any]], texts: list[tuple[str, str]], concurrency: int
) -> float:
    """Send the same requests as a hand-written pipeline would: per sentence, phase by phase.

    Within a sentence, the requests of one phase go out together (a stage's retries one after
    another, as the graph makes them) and the next phase starts when they are answered;
    ``concurrency`` sentences are in flight, as in the graph run.
    """
    # longest text first, so a sentence contained in another is not matched by mistake
    keys = sorted(
        ((sid, json.dumps(t, ensure_ascii=False)[1:-1]) for sid, t in texts),
        key=lambda k: -len(k[1]),
    )
    plan: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for body in bodies:
        plan[_sentence_of(body, keys)][body["model"]].append(body)
    clients = {
        name: openai.AsyncOpenAI(base_url=api_base(server), api_key="EMPTY", max_retries=3)
        for name in {b["model"] for b in bodies}
    }
    slots = asyncio.Semaphore(concurrency)

    async def stage(requests: list[dict[str, Any]]) -> None:
        for body in requests:
            await clients[body["model"]].chat.completions.create(**body)

    async def sentence(stages: dict[str, list[dict[str, Any]]]) -> None:
        async with slots:
            for phase in PHASES:
                await asyncio.gather(*(stage(stages[s]) for s in phase if s in stages))

    start = time.perf_counter()
    await asyncio.gather(*(sentence(stages) for stages in plan.values()))
    elapsed = time.perf_counter() - start
    for client in clients.values():
        await client.close()
    return elapsed


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    options = PipelineOptions(
        constrain_mentions=args.constrain_mentions, max_completion_tokens=args.max_tokens
    )
    if args.graph == "document":
        return await document_async(args, options)
    texts = _texts(args.data, args.domain, args.n)
    joint = args.graph == "joint"
    # Warm-up pass over the same sentences (greedy decoding: the timed pass sends the same
    # requests), so both timed phases see the same warm prefix cache and compiled grammars.
    await _run_graph(args.server, args.domain, texts, args.concurrency, options, joint)
    graph_s, bodies, results, peak = await _run_graph(
        args.server, args.domain, texts, args.concurrency, options, joint
    )
    # The replay may keep as many requests in flight as the graph did at its peak.
    direct_s = await _replay(args.server, bodies, max(peak, args.concurrency))
    pipelined_s = await _replay_pipelined(args.server, bodies, texts, args.concurrency)

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
        "graph": args.graph,
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
        "pipelined_seconds": round(pipelined_s, 3),
        "pipelined_sentences_per_s": round(n / pipelined_s, 3),
        "ratio_vs_pipelined": round(pipelined_s / graph_s, 4),
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
        "triplets_kept": sum(len(r.triplets) for r in results),
        "triplets_dropped": sum(len(r.dropped_triplets) for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--domain", default="crossner_ai")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--graph", choices=["ner", "joint", "document"], default="ner")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    parser.add_argument("--constrain-mentions", action="store_true")
    parser.add_argument("--max-tokens", type=int, default=None, help="completion budget/stage")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
