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
from samalign.batch.job import ExtractJob, sentence_graph_of
from samalign.batch.ray_job import RayOptions
from samalign.cli.options import (
    MODEL_BACKENDS,
    add_backend_flags,
    add_pipeline_flags,
    backend_spec,
    chosen_backend,
    pipeline_values,
    stage_adapters,
    stage_cache,
)
from samalign.errors import ConfigError, InputError
from samalign.graphs import PipelineOptions, RunContext
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
        "entities, triplets, diagnostics and error. Rerunning with the same --out resumes. "
        "With --engine ray: many inputs (JSONL, text or Parquet) on a Ray cluster, written as "
        "Parquet or JSONL shards to the folder --out (docs/scale.md).",
    )
    p.add_argument(
        "input",
        nargs="+",
        help="JSONL file, plain text file, or - for stdin (--engine ray: one or more JSONL, "
        "text or Parquet files)",
    )
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
    r = p.add_argument_group("engine (--engine ray: a Ray cluster, docs/scale.md)")
    r.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process (default); ray: Ray Data actors, output shards in --out DIR",
    )
    r.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="Ray cluster to join (auto, ray://HOST:10001); default: a local cluster",
    )
    r.add_argument("--actors", type=int, help="actors (default: one per --server, else 1)")
    r.add_argument("--actor-cpus", type=float, default=1.0, help="CPUs per actor (default 1)")
    r.add_argument(
        "--actor-gpus", type=float, default=0.0, help="GPUs per actor (in-process backend on GPU)"
    )
    r.add_argument("--ray-cpus", type=int, help="CPUs of the local cluster (default: all)")
    r.add_argument("--batch-size", type=int, default=256, help="records per actor call")
    r.add_argument(
        "--shard-size", type=int, default=1024, help="records per output shard (unit of resume)"
    )
    r.add_argument("--output-format", choices=["parquet", "jsonl"], default="parquet")
    r.add_argument(
        "--max-task-retries",
        type=int,
        default=3,
        help="retries of a batch whose actor died, then its records are error rows",
    )
    add_backend_flags(p, backends=MODEL_BACKENDS)
    add_pipeline_flags(p)
    p.set_defaults(func=run)


async def _extract(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if len(args.input) > 1:
        raise ConfigError(
            "--engine local reads one INPUT; pass several with --engine ray (or join them)"
        )
    [source] = args.input
    job = _job(args)
    if source != "-" and not Path(source).is_file():
        raise InputError(f"input file {source} not found")
    job.check_backend()
    cache = stage_cache(args)
    models = job.build_models()
    context = RunContext(domain=job.domain, models=models, cache=cache)
    graph = job.build_graph()

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
        for record in read_records(source, fmt=args.format):
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


def _job(args: argparse.Namespace) -> ExtractJob:
    """The job the flags describe (one decision for both engines)."""
    domain = load_domain(args.domain)
    sentence_graph = sentence_graph_of(domain, args.graph, args.sentence_graph)
    options = PipelineOptions(**pipeline_values(args, joint=sentence_graph == "joint"))
    stages = options.joint_model_stages if sentence_graph == "joint" else options.model_stages
    # One place decides each stage's adapter: --adapter, else the domain, else the stage name.
    adapters = stage_adapters(args, stages, domain.adapter_for)
    domain = domain.model_copy(update={"adapters": {**domain.adapters, **adapters}})
    return ExtractJob(
        domain=domain,
        graph=args.graph,
        sentence_graph=sentence_graph,
        options=options,
        adapters=adapters,
        backend=backend_spec(args, chosen_backend(args)),
        concurrency=args.concurrency,
    )


def _ray_options(args: argparse.Namespace) -> RayOptions:
    for flag in ("actors", "ray_cpus"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1")
    for flag in ("batch_size", "shard_size"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.actor_cpus < 0 or args.actor_gpus < 0 or args.max_task_retries < 0:
        raise ConfigError("--actor-cpus, --actor-gpus and --max-task-retries must be ≥ 0")
    return RayOptions(
        address=args.ray_address,
        num_cpus=args.ray_cpus,
        actors=args.actors,
        actor_cpus=args.actor_cpus,
        actor_gpus=args.actor_gpus,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        output_format=args.output_format,
        max_task_retries=args.max_task_retries,
        progress=not args.quiet,
    )


def _extract_ray(args: argparse.Namespace) -> int:
    from samalign.batch.ray_job import run_ray_extract

    if args.out is None:
        raise ConfigError("--engine ray writes shards to a folder: pass --out DIR")
    options = _ray_options(args)
    job = _job(args)
    job.check_backend()
    summary = run_ray_extract(
        job, args.input, args.out, fmt=args.format, options=options, retry_errors=args.retry_errors
    )
    print(
        f"samalign: {summary.records} record(s) in {summary.shards} shard(s) under {args.out} "
        f"({summary.resumed} already done, {summary.ran} run now, {summary.errors} with an "
        f"error) in {summary.seconds:.1f} s",
        file=sys.stderr,
    )
    if summary.errors:
        print(
            f"samalign: {summary.errors} record(s) have an error; see their 'error' field",
            file=sys.stderr,
        )
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``samalign extract``."""
    if args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    if args.engine == "ray":
        return _extract_ray(args)
    ray_only = [
        flag
        for flag, value in (
            ("--ray-address", args.ray_address),
            ("--actors", args.actors),
            ("--ray-cpus", args.ray_cpus),
        )
        if value is not None
    ]
    if ray_only:
        raise ConfigError(f"{', '.join(ray_only)}: options of --engine ray")
    return asyncio.run(_extract(args))


__all__ = ["add_parser", "run"]
