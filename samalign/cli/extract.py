"""``samalign extract``: run the NER, joint or document graph over a file of texts."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from samalign.batch import (
    InputRecord,
    JsonlWriter,
    completed_ids,
    finalize_output,
    read_records,
    run_records,
)
from samalign.cli.options import (
    MODEL_BACKENDS,
    add_backend_flags,
    add_pipeline_flags,
    chosen_backend,
    pipeline_values,
    stage_adapters,
    stage_cache,
    stage_models,
)
from samalign.errors import ConfigError, InputError
from samalign.graphs import (
    PipelineOptions,
    RunContext,
    build_document_graph,
    build_joint_graph,
    build_ner_graph,
)
from samalign.prompts import load_domain


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``samalign extract``."""
    p = sub.add_parser(
        "extract",
        help="run the NER, joint or document graph over a file of texts (vLLM server or "
        "in-process model)",
        description="Extract entities (and, with --graph joint or document, relation "
        "triplets) from INPUT (JSONL of {id, text}, plain text with one document per line, or "
        "- for stdin) and write JSONL: one line per input record, in input order, with "
        "entities, triplets, diagnostics and error. Rerunning with the same --out resumes.",
    )
    p.add_argument("input", help="JSONL file, plain text file, or - for stdin")
    p.add_argument("--domain", required=True, help="built-in domain name or domain YAML path")
    p.add_argument(
        "--graph",
        choices=["ner", "joint", "document"],
        default="ner",
        help="ner: entities of each sentence (default); joint: entities and relation triplets "
        "(AnchorAlign; needs a domain with relation types); document: split each record into "
        "sentences and run the sentence graph (joint if the domain has relation types, else "
        "ner; see --sentence-graph) on each",
    )
    p.add_argument(
        "--sentence-graph",
        choices=["ner", "joint"],
        default=None,
        help="the sentence graph of --graph document (default: joint when the domain has "
        "relation types, else ner)",
    )
    p.add_argument("--out", type=Path, help="output JSONL (default: stdout; no resume)")
    p.add_argument("--concurrency", type=int, default=16, help="records in flight (default 16)")
    p.add_argument("--format", choices=["auto", "jsonl", "text"], default="auto")
    p.add_argument(
        "--retry-errors",
        action="store_true",
        help="when resuming, redo records whose earlier result has an error",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_backend_flags(p, backends=MODEL_BACKENDS)
    add_pipeline_flags(p)
    p.set_defaults(func=run)


async def _extract(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    domain = load_domain(args.domain)
    sentence_graph = args.sentence_graph or (
        "joint" if args.graph == "joint" or domain.relation_types else "ner"
    )
    if args.graph == "ner":
        sentence_graph = "ner"
    if sentence_graph == "joint" and not domain.relation_types:
        raise ConfigError(
            f"domain {domain.name!r} has no relation types; joint extraction needs them (use "
            "a domain such as conll04, scierc or ade, or --graph ner)"
        )
    options = PipelineOptions(**pipeline_values(args, joint=sentence_graph == "joint"))
    stages = options.joint_model_stages if sentence_graph == "joint" else options.model_stages
    # One place decides each stage's adapter: --adapter, else the domain, else the stage name.
    adapters = stage_adapters(args, stages, domain.adapter_for)
    domain = domain.model_copy(update={"adapters": {**domain.adapters, **adapters}})
    if args.input != "-" and not Path(args.input).is_file():
        raise InputError(f"input file {args.input} not found")
    backend = chosen_backend(args)
    cache = stage_cache(args)
    models = stage_models(args, backend, stages, adapters)
    context = RunContext(domain=domain, models=models, cache=cache)
    inner = build_joint_graph(options) if sentence_graph == "joint" else build_ner_graph(options)
    graph = (
        build_document_graph(inner, max_sentence_chars=min(2000, args.max_chars))
        if args.graph == "document"
        else inner
    )

    done: set[str] = set()
    handle: TextIO
    if args.out is not None:
        done = completed_ids(args.out, retry_errors=args.retry_errors)
        try:
            handle = open(args.out, "a", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as err:
            raise InputError(f"cannot write {args.out}: {err.strerror}") from None
    else:
        handle = sys.stdout
    writer = JsonlWriter(handle)
    order: list[str] = []

    def pending() -> Iterator[InputRecord]:
        for record in read_records(args.input, fmt=args.format):
            order.append(record.id)
            if record.id not in done:
                yield record

    records = pending()
    failed = 0
    bar = tqdm(desc="extract", unit="rec", disable=args.quiet, file=sys.stderr, initial=len(done))
    sentence_bar = (
        tqdm(desc="sentences", unit="sent", disable=args.quiet, file=sys.stderr, position=1)
        if args.graph == "document"
        else None
    )

    def on_event(event: object) -> None:
        if sentence_bar is not None and isinstance(event, dict) and "document_progress" in event:
            sentence_bar.update(1)

    try:
        async for result in run_records(
            graph,
            context,
            records,
            concurrency=args.concurrency,
            on_event=on_event if sentence_bar is not None else None,
        ):
            writer.write(result)
            failed += result.error is not None
            bar.update(1)
    finally:
        bar.close()
        if sentence_bar is not None:
            sentence_bar.close()
        if handle is not sys.stdout:
            handle.close()
        models.close()
        close_cache = getattr(cache, "close", None)
        if callable(close_cache):
            close_cache()
    if args.out is not None and done:
        finalize_output(args.out, order)
    if failed:
        print(
            f"samalign: {failed} record(s) have an error; see their 'error' field", file=sys.stderr
        )
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``samalign extract``."""
    if args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    return asyncio.run(_extract(args))


__all__ = ["add_parser", "run"]
