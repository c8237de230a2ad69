"""The ``samalign eval`` subcommand (wired into :mod:`samalign.cli`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from samalign.errors import ConfigError
from samalign.evaluation.backends import (
    BACKENDS,
    EvalBackend,
    gold_backend,
    server_backend,
    simulated_backend,
)
from samalign.evaluation.datasets import BUILTIN_DATASETS, Dataset, load_dataset
from samalign.evaluation.report import EvalReport, report_paths
from samalign.evaluation.runner import aevaluate, asweep, graph_stages
from samalign.evaluation.simulate import NoiseModel
from samalign.graphs import PipelineOptions
from samalign.prompts.domain import Domain, load_domain

EPILOG = """\
examples:
  samalign eval crossner_ai --split dev --backend gold --out runs/gold/ai_dev.json
  samalign eval crossner_music --backend simulated --sweep --out runs/sim/music.json
  samalign eval crossner_ai --server http://127.0.0.1:8000 --out runs/ai_test.json
  samalign eval conll04 --graph joint --server http://127.0.0.1:8000 --out runs/conll04.json
"""


def parse_pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    """Parse repeated ``NAME=VALUE`` command-line values.

    Raises:
        ConfigError: Naming the flag and the value that has no ``=``, name or value.
    """
    out: dict[str, str] = {}
    for value in values:
        name, sep, target = value.partition("=")
        if not sep or not name or not target:
            raise ConfigError(f"{flag} expects NAME=VALUE, got {value!r}")
        out[name] = target
    return out


def add_eval_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``eval`` subcommand to the ``samalign`` parser."""
    p = sub.add_parser(
        "eval",
        help="evaluate a pipeline on a benchmark split and write a report",
        description="Run the NER or joint graph over a dataset split and write a JSON report "
        "(every protocol, per-label table, per-stage cost, every sentence that lost or gained "
        "something and why), a markdown summary and a PNG chart next to it. DATASET is a "
        f"built-in name ({', '.join(BUILTIN_DATASETS)}) or a path (a BIO .txt file, a SpERT "
        ".json file, or a folder with <split>.txt / <split>_triples.json). Rerunning with the "
        "same --out resumes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset", help="built-in dataset name or a path")
    p.add_argument("--out", type=Path, required=True, help="report path, e.g. runs/ai.json")
    p.add_argument("--split", default="test", help="train, dev or test (default: test)")
    p.add_argument("--fold", type=int, default=0, help="ADE fold 0-9 (default 0)")
    p.add_argument("--data-dir", type=Path, help="benchmark data folder (default: see docs)")
    p.add_argument("--domain", help="domain name or YAML (default: the dataset's name)")
    p.add_argument("--graph", choices=["ner", "joint"], default="ner")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help="gold (replay gold answers: self-test), simulated (seeded noise), server "
        "(default when --server is given)",
    )
    p.add_argument("--server", help="vLLM server URL (backend server)")
    p.add_argument("--adapter", action="append", default=[], metavar="STAGE=NAME")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per model request")
    p.add_argument("--limit", type=int, help="evaluate only the first N sentences")
    p.add_argument("--concurrency", type=int, default=16, help="sentences in flight")
    p.add_argument(
        "--exclude-label",
        action="append",
        default=[],
        metavar="LABEL",
        help="leave an entity label out of every score (repeatable; e.g. misc)",
    )
    p.add_argument("--grounding", choices=["flat", "nested"], default="flat")
    p.add_argument("--max-tokens", type=int, help="completion budget per stage")
    p.add_argument("--max-chars", type=int, default=4000, help="longest sentence accepted")
    p.add_argument("--constrain-mentions", action="store_true")
    p.add_argument("--anchor-schema-chunk", type=int, help="types per anchor request (IEPile: 6)")
    p.add_argument("--no-anchor", action="store_true", help="ablation: w/o anchor extractor")
    p.add_argument("--no-explorer", action="store_true", help="ablation: w/o explorer")
    p.add_argument("--no-consensus", action="store_true", help="ablation: w/o CCR")
    p.add_argument("--no-calibration", action="store_true", help="ablation: direct typing")
    p.add_argument(
        "--relation-arguments",
        choices=["closest", "all"],
        help="which occurrences of a repeated mention a triple links (default: the dataset's "
        "annotation convention: all for conll04, closest otherwise)",
    )
    p.add_argument("--no-aggregation", action="store_true", help="ablation: forward decoder only")
    p.add_argument("--no-constraint", action="store_true", help="ablation: w/o anchor filter")
    p.add_argument(
        "--recover-dropped",
        action="store_true",
        help="beyond the paper: ask the anchor about relation arguments NER missed",
    )
    p.add_argument(
        "--sweep",
        action="store_true",
        help="run the full pipeline and every ablation of the graph; one report per variant "
        "plus a combined report with per-ablation bars",
    )
    p.add_argument("--seed", type=int, default=0, help="simulated backend: random seed")
    p.add_argument(
        "--noise",
        action="append",
        default=[],
        metavar="RATE=VALUE",
        help="simulated backend: override a noise rate (see docs/evaluation.md)",
    )
    p.add_argument("--fresh", action="store_true", help="discard earlier results at --out")
    p.add_argument("--retry-errors", action="store_true", help="redo sentences that failed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_eval)


def _options(args: argparse.Namespace, dataset: Dataset) -> PipelineOptions:
    values: dict[str, Any] = {
        "use_anchor": not args.no_anchor,
        "use_explorer": not args.no_explorer,
        "use_consensus": not args.no_consensus,
        "use_calibration": not args.no_calibration,
        "grounding": args.grounding,
        "max_text_chars": args.max_chars,
        "max_completion_tokens": args.max_tokens,
        "constrain_mentions": args.constrain_mentions,
        "anchor_schema_chunk": args.anchor_schema_chunk,
    }
    info = BUILTIN_DATASETS.get(dataset.name)
    values["relation_arguments"] = args.relation_arguments or (
        info.relation_arguments if info is not None else "closest"
    )
    if args.no_aggregation:
        values["aggregate_relations"] = False
    if args.no_constraint:
        values["anchor_constraint"] = False
    if args.recover_dropped:
        values["recover_dropped"] = True
    if (
        args.no_aggregation or args.no_constraint or args.recover_dropped
    ) and args.graph != "joint":
        raise ConfigError(
            "--no-aggregation, --no-constraint and --recover-dropped are options of --graph joint"
        )
    return PipelineOptions(**values)


def _noise(values: Sequence[str]) -> NoiseModel:
    overrides: dict[str, float] = {}
    for name, value in parse_pairs(values, "--noise").items():
        if name not in NoiseModel.model_fields:
            raise ConfigError(
                f"--noise: unknown rate {name!r}; rates: {sorted(NoiseModel.model_fields)}"
            )
        try:
            overrides[name] = float(value)
        except ValueError:
            raise ConfigError(f"--noise {name}: {value!r} is not a number") from None
    try:
        return NoiseModel(**overrides)
    except ValueError as err:
        raise ConfigError(f"--noise: {err}") from None


def _backend_factory(args: argparse.Namespace, dataset: Dataset, domain: Domain) -> tuple[str, Any]:
    name = args.backend or ("server" if args.server else None)
    if name is None:
        raise ConfigError("choose a backend: --server URL, --backend gold or --backend simulated")
    if name == "server" and not args.server:
        raise ConfigError("--backend server needs --server URL")
    if name != "server" and args.server:
        raise ConfigError(f"--server is only for the server backend, not {name!r}")
    if name != "simulated" and (args.noise or args.seed):
        raise ConfigError("--noise and --seed are only for --backend simulated")
    adapters = parse_pairs(args.adapter, "--adapter")
    if adapters and name != "server":
        raise ConfigError("--adapter is only for the server backend")
    sentences = dataset.sentences
    if name == "gold":
        shared = gold_backend(sentences, domain)
        return name, lambda _options: shared
    if name == "simulated":
        simulated = simulated_backend(sentences, domain, noise=_noise(args.noise), seed=args.seed)
        return name, lambda _options: simulated

    def server(options: PipelineOptions) -> EvalBackend:
        return server_backend(
            args.server,
            domain,
            graph_stages(args.graph, options),
            adapters=adapters,
            timeout=args.timeout,
        )

    return name, server


def _print_summary(report: EvalReport, out: Path) -> None:
    entity = report.entity
    line = (
        f"{report.run.dataset}/{report.run.split} [{report.run.backend}] "
        f"sentences {report.sentences}, errors {report.errors}; "
        f"entity span F1 {100 * entity.span.f1:.2f} (P {100 * entity.span.precision:.2f}, "
        f"R {100 * entity.span.recall:.2f}), string F1 {100 * entity.string.f1:.2f}"
    )
    if report.relation is not None:
        line += (
            f"; relation strict F1 {100 * report.relation.strict.f1:.2f}, "
            f"boundary F1 {100 * report.relation.boundary.f1:.2f}"
        )
    print(line)
    if report.ablations:
        for name, v in report.ablations.items():
            rel = (
                f", relation strict F1 {100 * v.relation_strict.f1:.2f}"
                if v.relation_strict
                else ""
            )
            print(f"  {name:<30} entity F1 {100 * v.entity_span.f1:.2f}{rel}")
    paths = report_paths(out)
    beside = [paths[k].name for k in ("md", "png") if paths[k].is_file()]
    print(f"report: {paths['json']} (+ {', '.join(beside)})")


async def _run(args: argparse.Namespace) -> int:
    dataset = load_dataset(args.dataset, args.split, fold=args.fold, data_dir_path=args.data_dir)
    domain_name = args.domain or dataset.domain
    if domain_name is None:
        raise ConfigError(
            f"dataset {args.dataset!r} is not built in: name its domain with --domain"
        )
    domain = load_domain(domain_name)
    options = _options(args, dataset)
    backend_name, make_backend = _backend_factory(args, dataset, domain)
    common: dict[str, Any] = {
        "graph": args.graph,
        "limit": args.limit,
        "exclude_labels": args.exclude_label,
        "concurrency": args.concurrency,
        "fresh": args.fresh,
        "retry_errors": args.retry_errors,
        "progress": not args.quiet,
        "fold": args.fold if dataset.name == "ade" else None,
    }
    if args.sweep:
        report = await asweep(
            dataset, domain, make_backend, options=options, out=args.out, **common
        )
    else:
        report = await aevaluate(
            dataset, domain, make_backend(options), options=options, out=args.out, **common
        )
    _print_summary(report, args.out)
    if report.errors:
        print(
            f"samalign: {report.errors} sentence(s) failed; see 'mismatches' in the report "
            f"({backend_name} backend; --retry-errors redoes them)",
            file=sys.stderr,
        )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """Run ``samalign eval``."""
    if args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    return asyncio.run(_run(args))


__all__ = ["add_eval_parser", "run_eval"]
