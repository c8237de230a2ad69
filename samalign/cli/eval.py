"""``samalign eval``: score a pipeline variant on a benchmark split and write a report."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from samalign.cli.options import (
    MODEL_DIR_ENV,
    add_backend_flags,
    add_data_format_flags,
    add_pipeline_flags,
    chosen_backend,
    parse_pairs,
    pipeline_values,
    stage_adapters,
    stage_cache,
    stage_models,
)
from samalign.datasets import TOKENISED_FORMATS
from samalign.errors import ConfigError
from samalign.evaluation.backends import (
    BACKENDS,
    EvalBackend,
    gold_backend,
    models_backend,
    server_backend,
    simulated_backend,
)
from samalign.evaluation.chart import missing_matplotlib
from samalign.evaluation.datasets import BUILTIN_DATASETS, Dataset, load_dataset
from samalign.evaluation.report import EvalReport, report_paths
from samalign.evaluation.runner import aevaluate, asweep, graph_stages
from samalign.evaluation.simulate import NoiseModel
from samalign.graphs import PipelineOptions
from samalign.prompts.domain import Domain, load_domain
from samalign.serving import StageModels

EPILOG = """\
examples:
  samalign eval crossner_ai --split dev --backend gold --out runs/gold/ai_dev.json
  samalign eval crossner_music --backend simulated --sweep --out runs/sim/music.json
  samalign eval crossner_ai --server http://127.0.0.1:8000 --out runs/ai_test.json
  samalign eval conll04 --graph joint --server http://127.0.0.1:8000 --out runs/conll04.json
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``samalign eval``."""
    p = sub.add_parser(
        "eval",
        help="evaluate a pipeline on a benchmark split and write a report",
        description="Run the NER or joint graph over a dataset split and write a JSON report "
        "(every protocol, per-label table, per-stage cost, every sentence that lost or gained "
        "something and why), a markdown summary and a PNG chart next to it (the chart needs "
        "matplotlib: pip install 'samalign[eval]'). DATASET is a "
        f"built-in name ({', '.join(BUILTIN_DATASETS)}) or a path: a BIO file (token<TAB>tag "
        "or tag<TAB>token), a SpERT .json file, a CrossRE .jsonl file (detected from the "
        "content; --format names one), or a folder with <split>.txt / <split>_triples.json / "
        "<split>.json / <split>.jsonl; docs/data.md documents the formats. Rerunning with the "
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
    add_data_format_flags(p, formats=TOKENISED_FORMATS)
    p.add_argument("--graph", choices=["ner", "joint"], default="ner")
    p.add_argument("--limit", type=int, help="evaluate only the first N sentences")
    p.add_argument("--concurrency", type=int, default=16, help="sentences in flight")
    p.add_argument(
        "--exclude-label",
        action="append",
        default=[],
        metavar="LABEL",
        help="leave an entity label out of every score (repeatable; e.g. misc)",
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
    add_backend_flags(p, backends=BACKENDS)
    add_pipeline_flags(p)
    p.set_defaults(func=run)


def _options(args: argparse.Namespace, dataset: Dataset) -> PipelineOptions:
    values = pipeline_values(args, joint=args.graph == "joint")
    if "relation_arguments" not in values:  # the dataset's annotation convention
        info = BUILTIN_DATASETS.get(dataset.name)
        values["relation_arguments"] = info.relation_arguments if info is not None else "closest"
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


class _Backends:
    """Builds the backend of each pipeline variant and closes the real models at the end.

    The in-process backends load a model once per distinct stage set (a sweep's variants
    mostly share one); the server backend is cheap to build per variant.
    """

    def __init__(self, args: argparse.Namespace, dataset: Dataset, domain: Domain) -> None:
        self.args = args
        self.dataset = dataset
        self.domain = domain
        default = "transformers" if args.model or os.environ.get(MODEL_DIR_ENV) else None
        self.name = chosen_backend(args, default=default)
        if self.name != "simulated" and (args.noise or args.seed):
            raise ConfigError("--noise and --seed are only for --backend simulated")
        if self.name in ("gold", "simulated") and args.adapter:
            raise ConfigError(f"--adapter does not apply to the {self.name} backend")
        # one cache for every variant: a sweep's variants share most stage requests
        self.cache = stage_cache(args)
        self._replay: EvalBackend | None = None
        if self.name == "gold":
            self._replay = gold_backend(dataset.sentences, domain, cache=self.cache)
        elif self.name == "simulated":
            self._replay = simulated_backend(
                dataset.sentences,
                domain,
                noise=_noise(args.noise),
                seed=args.seed,
                cache=self.cache,
            )
        self._models: dict[tuple[str, ...], StageModels] = {}

    def __call__(self, options: PipelineOptions) -> EvalBackend:
        if self._replay is not None:
            return self._replay
        stages = graph_stages(self.args.graph, options)
        adapters = stage_adapters(self.args, stages, self.domain.adapter_for)
        if self.name == "server":
            return server_backend(
                self.args.server,
                self.domain,
                stages,
                adapters=adapters,
                timeout=self.args.timeout,
                cache=self.cache,
            )
        key = tuple(stages)
        if key not in self._models:
            self._models[key] = stage_models(self.args, self.name, stages, adapters)
        settings = {"model": str(self.args.model or os.environ.get(MODEL_DIR_ENV))}
        return models_backend(
            self.name, self._models[key], self.domain, adapters, settings, cache=self.cache
        )

    def close(self) -> None:
        for models in self._models.values():
            models.close()
        self._models.clear()
        close = getattr(self.cache, "close", None)
        if callable(close):
            close()


def _print_summary(report: EvalReport, out: Path, chart_note: str | None) -> None:
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
    kinds = ("md",) if chart_note else ("md", "png")  # no stale chart of an earlier run
    beside = [paths[k].name for k in kinds if paths[k].is_file()]
    print(f"report: {paths['json']} (+ {', '.join(beside)})")
    if chart_note:
        print(f"samalign: {chart_note}", file=sys.stderr)


async def _run(args: argparse.Namespace) -> int:
    dataset = load_dataset(
        args.dataset,
        args.split,
        fold=args.fold,
        data_dir_path=args.data_dir,
        fmt=args.format,
        columns=args.bio_columns,
        require_relations=args.graph == "joint",
    )
    domain_name = args.domain or dataset.domain
    if domain_name is None:
        raise ConfigError(
            f"dataset {args.dataset!r} is not built in: name its domain with --domain"
        )
    domain = load_domain(domain_name)
    options = _options(args, dataset)
    chart_note = missing_matplotlib()  # said once, after the summary
    backends = _Backends(args, dataset, domain)
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
    try:
        if args.sweep:
            report = await asweep(
                dataset, domain, backends, options=options, out=args.out, **common
            )
        else:
            report = await aevaluate(
                dataset, domain, backends(options), options=options, out=args.out, **common
            )
    finally:
        backends.close()
    _print_summary(report, args.out, chart_note)
    if report.errors:
        print(
            f"samalign: {report.errors} sentence(s) failed; see 'mismatches' in the report "
            f"({backends.name} backend; --retry-errors redoes them)",
            file=sys.stderr,
        )
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``samalign eval``."""
    if args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    return asyncio.run(_run(args))


__all__ = ["add_parser", "run"]
