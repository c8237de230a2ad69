"""``samalign extract``: run the NER, joint or document graph over a file of texts."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from samalign.batch.job import ExtractJob, sentence_graph_of
from samalign.batch.local_job import run_local_extract
from samalign.batch.outputs import JobSummary, check_output_path
from samalign.batch.ray_job import RayOptions
from samalign.batch.records import check_input_file
from samalign.cli.options import (
    CONCURRENCY_HELP,
    MODEL_BACKENDS,
    Subcommands,
    add_backend_flags,
    add_command,
    add_field_flag,
    add_pipeline_flags,
    backend_spec,
    bounded,
    chosen_backend,
    concurrency_for,
    pipeline_values,
    refuse_flags,
    stage_adapters,
    stage_cache,
)
from samalign.errors import ConfigError
from samalign.graphs import PipelineOptions
from samalign.prompts import load_domain

RAY_FLAGS: tuple[tuple[str, str, str | None, str | None], ...] = (
    (
        "--ray-address",
        "address",
        "Ray cluster to join (auto, ray://HOST:10001); default: a local cluster",
        "ADDR",
    ),
    ("--actors", "actors", "actors (default: one per --server, else 1)", None),
    ("--actor-cpus", "actor_cpus", "CPUs per actor (default 1)", None),
    ("--actor-gpus", "actor_gpus", "GPUs per actor (in-process backend on GPU)", None),
    ("--ray-cpus", "num_cpus", "CPUs of the local cluster (default: all)", None),
    ("--batch-size", "batch_size", "records per actor call", None),
    ("--shard-size", "shard_size", "records per output shard (unit of resume)", None),
    ("--output-format", "output_format", None, None),
    (
        "--max-task-retries",
        "max_task_retries",
        "retries of a batch whose actor died, then its records are error rows",
        None,
    ),
)
"""The ``--engine ray`` flags: (flag, the :class:`~samalign.batch.ray_job.RayOptions` field it
sets, help, metavar); each flag's default, type and range are its field's."""


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def add_parser(sub: Subcommands) -> None:
    """Add ``samalign extract``."""
    p = add_command(sub, "extract", run)
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
        p.add_argument("--concurrency", type=int, help=f"records {CONCURRENCY_HELP}"),
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
    for flag, field, help_text, metavar in RAY_FLAGS:
        add_field_flag(r, flag, RayOptions, field, help=help_text, metavar=metavar)
    add_backend_flags(p, backends=MODEL_BACKENDS)
    add_pipeline_flags(p)


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
    return _note_errors(summary)


def _note_errors(summary: JobSummary) -> int:
    """Say on stderr how many records have an error; the exit status (0) of both engines."""
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
    backend = chosen_backend(args)
    # One place decides each stage's adapter: --adapter, else the domain, else the stage name.
    adapters = stage_adapters(args, stages, domain.adapter_for)
    domain = domain.model_copy(update={"adapters": {**domain.adapters, **adapters}})
    return ExtractJob(
        domain=domain,
        graph=args.graph,
        sentence_graph=sentence_graph,
        options=options,
        adapters=adapters,
        backend=backend_spec(args, backend),
        concurrency=concurrency_for(args, backend),
    )


def _ray_options(args: argparse.Namespace) -> RayOptions:
    """The Ray options the flags set (their ranges are checked by ``check_numbers``)."""
    values = {field: getattr(args, _dest(flag)) for flag, field, _, _ in RAY_FLAGS}
    return RayOptions(**values, progress=not args.quiet)


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
    return _note_errors(summary)


def run(args: argparse.Namespace) -> int:
    """Run the NER, joint or document graph over a file of texts (vLLM server or in-process model).

    Extract entities (and, with --graph joint or document, relation triplets) from INPUT (JSONL of
    {id, text}, plain text with one document per line, or - for stdin) and write JSONL: one line per
    input record, in input order, with entities, triplets, diagnostics and error. Rerunning with the
    same --out resumes. With --engine ray: many inputs (JSONL, text or Parquet) on a Ray cluster,
    written as Parquet or JSONL shards to the folder --out (docs/scale.md).
    """
    if args.engine == "ray":
        return _extract_ray(args)
    refuse_flags(args, ("ray_address", "actors", "ray_cpus"), "options of --engine ray")
    return asyncio.run(_extract(args))


__all__ = ["RAY_FLAGS", "add_parser", "run"]
