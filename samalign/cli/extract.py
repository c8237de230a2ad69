"""``samalign extract``: run the NER, joint or document graph over a file of texts."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from samalign.batch.job import ExtractJob, sentence_graph_of
from samalign.batch.local_job import run_local_extract
from samalign.batch.outputs import check_output_path
from samalign.batch.ray_job import RayOptions
from samalign.batch.records import check_input_file
from samalign.cli.options import (
    MODEL_BACKENDS,
    add_backend_flags,
    add_pipeline_flags,
    backend_spec,
    bounded,
    chosen_backend,
    pipeline_values,
    stage_adapters,
    stage_cache,
)
from samalign.errors import ConfigError
from samalign.graphs import PipelineOptions
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
    p.add_argument(
        "--out",
        type=Path,
        help="output JSONL, one line per input record in input order (default: stdout; no "
        "resume); OUT.samalign.json beside it records the configuration",
    )
    bounded(
        p.add_argument("--concurrency", type=int, default=16, help="records in flight"),
        minimum=1,
    )
    p.add_argument("--format", choices=["auto", "jsonl", "text"], default="auto")
    p.add_argument(
        "--retry-errors",
        action="store_true",
        help="when resuming, redo records whose earlier result has an error",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="discard what --out holds (its records and its configuration) and start over",
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
    bounded(
        r.add_argument("--actors", type=int, help="actors (default: one per --server, else 1)"),
        minimum=1,
    )
    bounded(
        r.add_argument("--actor-cpus", type=float, default=1.0, help="CPUs per actor (default 1)"),
        minimum=0,
    )
    bounded(
        r.add_argument(
            "--actor-gpus",
            type=float,
            default=0.0,
            help="GPUs per actor (in-process backend on GPU)",
        ),
        minimum=0,
    )
    bounded(
        r.add_argument("--ray-cpus", type=int, help="CPUs of the local cluster (default: all)"),
        minimum=1,
    )
    bounded(
        r.add_argument("--batch-size", type=int, default=256, help="records per actor call"),
        minimum=1,
    )
    bounded(
        r.add_argument(
            "--shard-size", type=int, default=1024, help="records per output shard (unit of resume)"
        ),
        minimum=1,
    )
    r.add_argument("--output-format", choices=["parquet", "jsonl"], default="parquet")
    bounded(
        r.add_argument(
            "--max-task-retries",
            type=int,
            default=3,
            help="retries of a batch whose actor died, then its records are error rows",
        ),
        minimum=0,
    )
    add_backend_flags(p, backends=MODEL_BACKENDS)
    add_pipeline_flags(p)
    p.set_defaults(func=run)


async def _extract(args: argparse.Namespace) -> int:
    if len(args.input) > 1:
        raise ConfigError(
            "--engine local reads one INPUT; pass several with --engine ray (or join them)"
        )
    [source] = args.input
    check_input_file(source)
    if args.out is not None:
        check_output_path(args.out, [source])
    elif args.fresh:
        raise ConfigError("--fresh applies to an --out file (without --out nothing is resumed)")
    job = _job(args)
    job.check_backend()
    cache = stage_cache(args)
    try:
        summary = await run_local_extract(
            job,
            source,
            args.out,
            fmt=args.format,
            retry_errors=args.retry_errors,
            fresh=args.fresh,
            progress=not args.quiet,
            cache=cache,
        )
    finally:
        close_cache = getattr(cache, "close", None)
        if callable(close_cache):
            close_cache()
    if summary.errors:
        print(
            f"samalign: {summary.errors} record(s) have an error; see their 'error' field",
            file=sys.stderr,
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
    """The Ray options the flags set (their ranges are checked by ``check_numbers``)."""
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
        job,
        args.input,
        args.out,
        fmt=args.format,
        options=options,
        retry_errors=args.retry_errors,
        fresh=args.fresh,
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
