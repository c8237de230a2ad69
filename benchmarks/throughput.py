"""Graph throughput against the server's capacity for the same requests.

``--graph ner`` (default) / ``--graph joint``: runs the graph over dev sentences (CrossNER for
``crossner_*`` domains; CoNLL04, SciERC or ADE for their domains, dev then test when ``--n``
asks for more) against a vLLM server at each ``--concurrency`` (sentences in flight), records
every stage request the graph made (HTTP hooks on the client), then replays exactly the
requests of the best graph run through the OpenAI client at each ``--replay-concurrency``
(requests in flight, all independent): the replay's best rate is the server's capacity for
this request mix, and ``graph_vs_capacity`` is the graph's best rate over it. A phase-by-phase
replay (per sentence: the NER extractors, the classifier, the calibrator, the relation
decoders; the same sentences in flight as the best graph run) measures the graph's own
overhead against a hand-written pipeline.

Also reported: model calls per sentence, split into the calls made and the calls the graph
skipped because they could not change the output (the classifier and calibrator of a sentence
without candidates; the relation decoders of a sentence whose entities cannot form a kept
triplet, ``--relation-schedule needed``); prompt and completion tokens per sentence; the
shared-prefix share of each stage's prompts (server tokenizer); client CPU per sentence.

``--graph document``: joins the sentences into one long document, runs the document graph
over it, and compares with running the document's sentences (as the splitter cuts them)
through the sentence graph with ``abatch`` at the same concurrency.

Prints one JSON object.

    python benchmarks/throughput.py --server http://127.0.0.1:8000 --domain crossner_ai \
        --n 200 --concurrency 32
    python benchmarks/throughput.py --server URL --graph joint --domain conll04 --n 512 \
        --concurrency 8 16 32 64 128 256 --replay-concurrency 64 128 256 512
    python benchmarks/throughput.py --server URL --graph document --domain crossner_ai --n 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx  # the HTTP client openai >= 3 uses natively (an httpx client is slower)
import openai
from common import DATA, bench_domain, bench_texts, sentence_keys, sentence_of

from samalign import (
    PipelineOptions,
    RunContext,
    build_document_graph,
    build_joint_graph,
    build_ner_graph,
    vllm_server_models,
)
from samalign.batch.records import InputRecord, OutputRecord
from samalign.batch.run import run_records
from samalign.cli.options import add_pipeline_flags, pipeline_values
from samalign.graphs.sentences import iter_sentences
from samalign.prompts.domain import Domain
from samalign.serving import StageModels, api_base
from samalign.serving.vllm_server import async_http_client

POOLS = ("samalign", "openai")
"""The HTTP connection pools a benchmark can use: ``vllm_server_models``' and openai's."""


@dataclass
class Server:
    """Where requests go: a server URL, and optionally an in-memory transport (tests)."""

    url: str
    transport: Any = None
    pool: str = "samalign"

    def http(self, **kwargs: Any) -> httpx.AsyncClient:
        """An HTTP client configured as ``vllm_server_models`` configures its own.

        ``pool="openai"``: openai's own pool limits instead (at most 100 idle connections).
        """
        if self.transport is not None:
            kwargs["transport"] = self.transport
        if self.pool == "openai":
            default: httpx.AsyncClient = openai.DefaultAsyncHttpxClient(**kwargs)
            return default
        client: httpx.AsyncClient = async_http_client(**kwargs)
        return client

    @property
    def other_pool(self) -> str:
        """The pool of :data:`POOLS` this server does not use (``--compare-pool``)."""
        return POOLS[1] if self.pool == POOLS[0] else POOLS[0]

    def openai(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=api_base(self.url), api_key="EMPTY", max_retries=3, http_client=self.http()
        )


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


@dataclass
class GraphRun:
    """One timed pass of the graph over the sentences."""

    concurrency: int
    seconds: float
    cpu_seconds: float
    bodies: list[dict[str, Any]]
    results: list[OutputRecord]
    peak_inflight: int
    mean_inflight: float
    times: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class _InFlight:
    now: int = 0
    peak: int = 0
    area: float = 0.0  # request-seconds
    last: float = field(default_factory=time.perf_counter)

    def step(self, delta: int) -> None:
        t = time.perf_counter()
        self.area += self.now * (t - self.last)
        self.last = t
        self.now += delta
        self.peak = max(self.peak, self.now)


def _graph(options: PipelineOptions, joint: bool) -> Any:
    return build_joint_graph(options) if joint else build_ner_graph(options)


async def run_graph(
    server: Server,
    domain: Domain,
    texts: list[tuple[str, str]],
    concurrency: int,
    options: PipelineOptions,
    joint: bool = False,
) -> GraphRun:
    """Run the graph over ``texts`` with ``concurrency`` sentences in flight, recording requests."""
    bodies: list[dict[str, Any]] = []
    times: list[list[float]] = []  # per body: [sent, answered]
    index: dict[int, int] = {}
    inflight = _InFlight()

    async def on_request(request: httpx.Request) -> None:
        if request.url.path.endswith("/chat/completions"):
            index[id(request)] = len(bodies)
            bodies.append(json.loads(request.content))
            times.append([time.perf_counter(), 0.0])
            inflight.step(+1)

    async def on_response(response: httpx.Response) -> None:
        if response.request.url.path.endswith("/chat/completions"):
            times[index.pop(id(response.request))][1] = time.perf_counter()
            inflight.step(-1)

    # one client shared by every stage, as vllm_server_models creates by default
    client = server.http(event_hooks={"request": [on_request], "response": [on_response]})
    stages = options.joint_model_stages if joint else options.model_stages
    models: StageModels = vllm_server_models(server.url, stages=stages, http_async_client=client)
    context = RunContext(domain=domain, models=models)
    graph = _graph(options, joint)
    records = [InputRecord(id=i, text=t, line=n) for n, (i, t) in enumerate(texts)]
    cpu, start = time.process_time(), time.perf_counter()
    inflight.last = start
    results = [r async for r in run_records(graph, context, records, concurrency=concurrency)]
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    inflight.step(0)
    await client.aclose()
    return GraphRun(
        concurrency=concurrency,
        seconds=elapsed,
        cpu_seconds=cpu,
        bodies=bodies,
        results=results,
        peak_inflight=inflight.peak,
        mean_inflight=inflight.area / elapsed if elapsed else 0.0,
        times=[(a, b) for a, b in times],
    )


async def replay(server: Server, bodies: list[dict[str, Any]], concurrency: int) -> float:
    """Send ``bodies`` as independent requests, ``concurrency`` in flight; return seconds."""
    client = server.openai()
    slots = asyncio.Semaphore(concurrency)

    async def send(body: dict[str, Any]) -> None:
        async with slots:
            await client.chat.completions.create(**body)

    start = time.perf_counter()
    await asyncio.gather(*(send(b) for b in bodies))
    elapsed = time.perf_counter() - start
    await client.close()
    return elapsed


async def document_async(
    args: argparse.Namespace, options: PipelineOptions, server: Server
) -> dict[str, Any]:
    texts = bench_texts(args.data, args.domain, args.n)
    document = "  ".join(t for _, t in texts)
    sentences = [s.text for s in iter_sentences(document)]
    domain = bench_domain(args.domain)
    joint = bool(domain.relation_types)
    stages = options.joint_model_stages if joint else options.model_stages
    client = server.http()
    models = vllm_server_models(server.url, stages=stages, http_async_client=client)
    context = RunContext(domain=domain, models=models)
    sentence_graph = _graph(options, joint)
    graph = build_document_graph(sentence_graph)
    concurrency = args.concurrency[0]
    config: Any = {"max_concurrency": concurrency}

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
    await client.aclose()
    abatch_mean = (abatch_s + abatch_again_s) / 2
    return {
        "graph": "document",
        "sentence_graph": "joint" if joint else "ner",
        "document_chars": len(document),
        "sentences": len(sentences),
        "concurrency": concurrency,
        "errors": len(result["errors"]),
        "entities": len(result["entities"]),
        "abatch_seconds": [round(abatch_s, 3), round(abatch_again_s, 3)],
        "document_seconds": round(document_s, 3),
        "abatch_sentences_per_s": round(len(sentences) / abatch_mean, 3),
        "document_sentences_per_s": round(len(sentences) / document_s, 3),
        "ratio": round(abatch_mean / document_s, 4),
    }


def phases(options: PipelineOptions) -> tuple[tuple[str, ...], ...]:
    """The graph's stage order: the stages of a phase run concurrently, phases in turn."""
    relations = tuple(options.relation_stages)
    ner: tuple[tuple[str, ...], ...] = (
        ("anchor", "explorer"),
        ("archetype", "direct_typing"),
        ("calibrate",),
    )
    if options.effective_relation_schedule == "parallel":
        return ((*ner[0], *relations), *ner[1:])
    return (*ner, relations)


def pipeline_plan(
    bodies: Sequence[dict[str, Any]], texts: Sequence[tuple[str, str]]
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Sentence id → stage (adapter) → its requests, in the order the graph sent them."""
    keys = sentence_keys(texts)
    plan: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for body in bodies:
        plan[sentence_of(body, keys)][body["model"]].append(body)
    return plan


async def replay_pipelined(
    server: Server,
    bodies: list[dict[str, Any]],
    texts: list[tuple[str, str]],
    concurrency: int,
    options: PipelineOptions,
) -> float:
    """Send the same requests as a hand-written pipeline would: per sentence, phase by phase.

    Within a sentence, the requests of one phase go out together (a stage's requests one after
    another, as the graph makes its retries) and the next phase starts when they are answered;
    ``concurrency`` sentences are in flight, as in the graph run.
    """
    plan = pipeline_plan(bodies, texts)
    order = phases(options)
    client = server.openai()
    slots = asyncio.Semaphore(concurrency)

    async def stage(requests: list[dict[str, Any]]) -> None:
        for body in requests:
            await client.chat.completions.create(**body)

    async def sentence(stages: dict[str, list[dict[str, Any]]]) -> None:
        async with slots:
            for phase in order:
                await asyncio.gather(*(stage(stages[s]) for s in phase if s in stages))

    start = time.perf_counter()
    await asyncio.gather(*(sentence(stages) for stages in plan.values()))
    elapsed = time.perf_counter() - start
    await client.close()
    return elapsed


def sentence_waits(run: GraphRun, texts: Sequence[tuple[str, str]]) -> dict[str, float]:
    """Where a sentence's time goes: waiting for an answer, or between two requests.

    Per sentence, from its first request to its last answer: the time with at least one of
    its requests at the server, and the rest (the client between a phase's answers and the
    next phase's requests: parsing, grounding, LangGraph steps, and waiting for the event
    loop). Means over the sentences, in seconds.
    """
    keys = sentence_keys(texts)
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for body, (sent, answered) in zip(run.bodies, run.times, strict=True):
        spans[sentence_of(body, keys)].append((sent, answered or sent))
    span_total = busy_total = 0.0
    for intervals in spans.values():
        intervals.sort()
        start, end = intervals[0][0], max(b for _, b in intervals)
        busy, (cur_a, cur_b) = 0.0, intervals[0]
        for a, b in intervals[1:]:
            if a > cur_b:
                busy += cur_b - cur_a
                cur_a, cur_b = a, b
            else:
                cur_b = max(cur_b, b)
        busy += cur_b - cur_a
        span_total += end - start
        busy_total += busy
    n = max(len(spans), 1)
    return {
        "sentence_span_s": round(span_total / n, 3),
        "at_server_s": round(busy_total / n, 3),
        "between_requests_s": round((span_total - busy_total) / n, 3),
    }


def call_counts(results: Sequence[OutputRecord], stages: Sequence[str]) -> dict[str, Any]:
    """Calls per sentence: made (by stage) and skipped (a stage node that needed no request).

    ``stages``: the graph's model stages (model-free nodes such as ``consensus`` also record
    usage; they are not counted).
    """
    n = max(len(results), 1)
    made: dict[str, int] = defaultdict(int)
    skipped: dict[str, int] = defaultdict(int)
    for r in results:
        for stage, usage in r.usage.items():
            if stage not in stages:
                continue
            if usage.calls:
                made[stage] += usage.calls
            else:
                skipped[stage] += 1
    return {
        "made": round(sum(made.values()) / n, 3),
        "skipped": round(sum(skipped.values()) / n, 3),
        "made_by_stage": {s: round(c / n, 3) for s, c in sorted(made.items())},
        "skipped_by_stage": {s: round(c / n, 3) for s, c in sorted(skipped.items())},
    }


def _graph_row(
    run: GraphRun, n: int, texts: Sequence[tuple[str, str]] | None = None
) -> dict[str, Any]:
    rate = n / run.seconds
    waits = sentence_waits(run, texts) if texts is not None else {}
    return {
        "concurrency": run.concurrency,
        "seconds": round(run.seconds, 3),
        "sentences_per_s": round(rate, 3),
        "requests_per_s": round(len(run.bodies) / run.seconds, 2),
        "peak_inflight_requests": run.peak_inflight,
        "mean_inflight_requests": round(run.mean_inflight, 1),
        "mean_latency_s": round(run.concurrency / rate, 3),  # Little's law
        "client_cpu_ms_per_sentence": round(1000 * run.cpu_seconds / n, 2),
        "errors": sum(r.error is not None for r in run.results),
        "requests": len(run.bodies),
        **waits,
    }


async def main_async(args: argparse.Namespace, server: Server | None = None) -> dict[str, Any]:
    options = PipelineOptions(**pipeline_values(args, joint=args.graph != "ner"))
    server = server or Server(args.server, pool=args.http_pool)
    if args.graph == "document":
        return await document_async(args, options, server)
    domain = bench_domain(args.domain)
    texts = bench_texts(args.data, args.domain, args.n)
    n = len(texts)
    joint = args.graph == "joint"
    # Warm-up pass over the same sentences (greedy decoding: the timed passes send the same
    # requests), so every timed phase sees the same warm prefix cache and compiled grammars.
    await run_graph(server, domain, texts, max(args.concurrency), options, joint)
    runs = [await run_graph(server, domain, texts, c, options, joint) for c in args.concurrency]
    best = max(runs, key=lambda r: n / r.seconds)
    bodies = best.bodies
    other_pool = None
    if args.compare_pool:  # the best concurrency again, with the other connection pool
        other = Server(server.url, server.transport, server.other_pool)
        other_pool = await run_graph(other, domain, texts, best.concurrency, options, joint)
    by_stage: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for body in bodies:
        by_stage[body["model"]].append(body)
    stages = [*(options.joint_model_stages if joint else options.model_stages), "recover"]
    results = best.results
    summary = {
        "graph": args.graph,
        "domain": domain.name,
        "n": n,
        "constrain_mentions": args.constrain_mentions,
        "max_tokens": args.max_tokens,
        "relation_schedule": options.effective_relation_schedule if joint else None,
        "http_pool": server.pool,
        "runs": [_graph_row(r, n, texts) for r in runs],
        "calls_per_sentence": call_counts(results, stages),
        "requests_by_stage": {s: len(b) for s, b in sorted(by_stage.items())},
        "errors": sum(r.error is not None for r in results),
        "other_pool": None
        if other_pool is None
        else {
            "pool": server.other_pool,
            **_graph_row(other_pool, n),
        },
    }
    if args.graph_only:
        return summary
    replays = {c: await replay(server, bodies, c) for c in args.replay_concurrency}
    best_replay = min(replays, key=lambda c: replays[c])
    pipelined_s = await replay_pipelined(server, bodies, texts, best.concurrency, options)
    async with server.http() as client:
        prefix_share = {}
        for stage, stage_bodies in sorted(by_stage.items()):
            tokens = await asyncio.gather(*(_tokenize(client, server.url, b) for b in stage_bodies))
            prefix_share[stage] = round(_shared_prefix_share(list(tokens)), 4)
    prompt_tokens = sum(u.prompt_tokens for r in results for u in r.usage.values())
    completion_tokens = sum(u.completion_tokens for r in results for u in r.usage.values())
    with_candidates = sum(
        1 for r in results if "archetype" in r.usage and r.usage["archetype"].calls
    )
    graph_rate = n / best.seconds
    capacity = len(bodies) / replays[best_replay]  # requests/s
    return {
        **summary,
        "replay": [
            {
                "inflight": c,
                "seconds": round(s, 3),
                "requests_per_s": round(len(bodies) / s, 2),
                "sentences_per_s": round(n / s, 3),
            }
            for c, s in replays.items()
        ],
        "best_graph_concurrency": best.concurrency,
        "best_graph_sentences_per_s": round(graph_rate, 3),
        "best_replay_inflight": best_replay,
        "capacity_sentences_per_s": round(n / replays[best_replay], 3),
        "capacity_requests_per_s": round(capacity, 2),
        "graph_vs_capacity": round(graph_rate / (n / replays[best_replay]), 4),
        "pipelined_seconds": round(pipelined_s, 3),
        "pipelined_sentences_per_s": round(n / pipelined_s, 3),
        "graph_vs_pipelined": round(pipelined_s / best.seconds, 4),
        "sentences_with_candidates": with_candidates,
        "requests_recorded": len(bodies),
        "prompt_tokens_per_sentence": round(prompt_tokens / n, 1),
        "completion_tokens_per_sentence": round(completion_tokens / n, 1),
        "prefix_share": prefix_share,
        "triplets_kept": sum(len(r.triplets) for r in results),
        "triplets_dropped": sum(len(r.dropped_triplets) for r in results),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--server", required=True)
    p.add_argument(
        "--domain",
        default="crossner_ai",
        help="a domain name or YAML file; 'demo': the demo's CoNLL04 domain (compact prompts)",
    )
    p.add_argument("--n", type=int, default=200, help="sentences (distinct; dev, then test)")
    p.add_argument(
        "--concurrency", type=int, nargs="+", default=[32], help="sentences in flight (sweep)"
    )
    p.add_argument(
        "--replay-concurrency",
        type=int,
        nargs="+",
        default=None,
        help="requests in flight of the free replay (sweep; default: 2x each --concurrency)",
    )
    p.add_argument("--graph", choices=["ner", "joint", "document"], default="ner")
    p.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    p.add_argument(
        "--http-pool",
        choices=POOLS,
        default=POOLS[0],
        help="connection pool of the HTTP clients: vllm_server_models' (default) or openai's",
    )
    p.add_argument(
        "--graph-only",
        action="store_true",
        help="only the graph runs (no replays, no prefix shares): to compare graph options",
    )
    p.add_argument(
        "--compare-pool",
        action="store_true",
        help="run the best concurrency once more with the other connection pool",
    )
    add_pipeline_flags(p)  # the pipeline options of samalign extract / eval
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.replay_concurrency is None:
        args.replay_concurrency = sorted({2 * c for c in args.concurrency})
    result = asyncio.run(main_async(args))
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
