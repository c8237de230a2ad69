"""``samalign eval``: score a pipeline variant on a benchmark split and write a report."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from samalign.batch.outputs import check_output_path
from samalign.cli.options import (
    CONCURRENCY_HELP,
    MODEL_DIR_ENV,
    Subcommands,
    add_backend_flags,
    add_command,
    add_data_format_flags,
    add_pipeline_flags,
    bounded,
    chosen_backend,
    concurrency_for,
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
from samalign.evaluation.datasets import (
    BUILTIN_DATASETS,
    CROSSNER_DOMAINS,
    Dataset,
    load_dataset,
)
from samalign.evaluation.domains import combine_reports, write_domains_report
from samalign.evaluation.report import EvalReport, report_paths
from samalign.evaluation.runner import aevaluate, asweep, graph_stages, variant_path
from samalign.evaluation.simulate import NoiseModel
from samalign.graphs import PipelineOptions
from samalign.prompts.domain import Domain, load_domain
from samalign.serving import StageModels

ALL_CROSSNER = "crossner"
"""The DATASET name that runs the five CrossNER domains and averages their F1."""

CROSSNER_DATASETS = tuple(f"crossner_{d}" for d in CROSSNER_DOMAINS)

EPILOG = """\
examples:
  samalign eval crossner_ai --split dev --backend gold --out runs/gold/ai_dev.json
  samalign eval crossner_music --backend simulated --sweep --out runs/sim/music.json
  samalign eval crossner --prompt-profile reference --server http://127.0.0.1:8000 \\
      --out runs/samner/table1.json     # the five domains + their mean F1 (SAM-NER Table 1)
  samalign eval crossner_ai --server http://127.0.0.1:8000 --out runs/ai_test.json
  samalign eval conll04 --graph joint --server http://127.0.0.1:8000 --out runs/conll04.json
"""


def add_parser(sub: Subcommands) -> None:
    """Add ``samalign eval``."""
    p = add_command(
        sub,
        "eval",
        run,
        description="Run the NER or joint graph over a dataset split and write a JSON report "
        "(every protocol, per-label table, per-stage cost, every sentence that lost or gained "
        "something and why), a markdown summary and a PNG chart next to it (the chart needs "
        "matplotlib: pip install 'samalign[eval]'). DATASET is a "
        f"built-in name ({', '.join(BUILTIN_DATASETS)}), '{ALL_CROSSNER}' (the five CrossNER "
        "domains, one report each beside --out, and at --out their per-domain scores and mean "
        "F1), or a path: a BIO file (token<TAB>tag or tag<TAB>token), a SpERT .json file, a "
        "CrossRE .jsonl file (detected from the content; --format names one), or a folder with "
        "<split>.txt / <split>_triples.json / <split>.json / <split>.jsonl; docs/data.md "
        "documents the formats. Rerunning with the same --out resumes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "dataset", help=f"built-in dataset name, {ALL_CROSSNER!r} (all five domains) or a path"
    )
    p.add_argument("--out", type=Path, required=True, help="report path, e.g. runs/ai.json")
    p.add_argument("--split", default="test", help="train, dev or test (default: test)")
    bounded(
        p.add_argument("--fold", type=int, default=0, help="ADE fold 0-9 (default 0)"),
        minimum=0,
        maximum=9,
    )
    p.add_argument("--data-dir", type=Path, help="benchmark data folder (default: see docs)")
    p.add_argument("--domain", help="domain name or YAML (default: the dataset's name)")
    add_data_format_flags(p, formats=TOKENISED_FORMATS)
    p.add_argument("--graph", choices=["ner", "joint"], default="ner")
    bounded(
        p.add_argument("--limit", type=int, help="evaluate only the first N sentences"), minimum=1
    )
    bounded(
        p.add_argument("--concurrency", type=int, help=f"sentences {CONCURRENCY_HELP}"),
        minimum=1,
    )
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
    """Builds the backend of each pipeline variant of one dataset.

    The in-process backends load a model once per distinct stage set (a sweep's variants
    mostly share one, and so do the five domains of ``crossner``: ``models`` is the run's,
    closed by :func:`_run`); the server backend is cheap to build per variant.
    """

    def __init__(
        self,
        args: argparse.Namespace,
        dataset: Dataset,
        domain: Domain,
        models: dict[tuple[str, ...], StageModels],
    ) -> None:
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
            self._replay = gold_backend(
                dataset.sentences, domain, prompt_profile=args.prompt_profile, cache=self.cache
            )
        elif self.name == "simulated":
            self._replay = simulated_backend(
                dataset.sentences,
                domain,
                noise=_noise(args.noise),
                seed=args.seed,
                prompt_profile=args.prompt_profile,
                cache=self.cache,
            )
        self._models = models  # shared by the domains of one run; _run closes them

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
        """Close the stage-answer cache (the models are the caller's, shared by domains)."""
        close = getattr(self.cache, "close", None)
        if callable(close):
            close()


def _print_summary(report: EvalReport, out: Path, chart_note: str | None) -> None:
    entity = report.entity
    line = (
        f"{report.run.dataset}/{report.run.split} [{report.run.backend}] "
        f"sentences {report.sentences}, errors {report.errors}; "
        f"entity span F1 {100 * entity.span.f1:.2f} (P {100 * entity.span.precision:.2f}, "
        f"R {100 * entity.span.recall:.2f}), string F1 {100 * entity.string.f1:.2f}, "
        f"SAM-NER F1 {100 * entity.sam_ner.f1:.2f}"
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


async def _evaluate(
    args: argparse.Namespace,
    name: str,
    out: Path,
    models: dict[tuple[str, ...], StageModels],
    chart_note: str | None,
) -> EvalReport:
    """Evaluate one dataset as the flags say (a sweep with ``--sweep``) and print its line."""
    dataset = load_dataset(
        name,
        args.split,
        fold=args.fold,
        data_dir_path=args.data_dir,
        fmt=args.format,
        columns=args.bio_columns,
        require_relations=args.graph == "joint",
    )
    for path in report_paths(args.out).values():  # never over the data, never into a device
        check_output_path(path, [dataset.path])
    domain_name = args.domain or dataset.domain
    if domain_name is None:
        raise ConfigError(f"dataset {name!r} is not built in: name its domain with --domain")
    domain = load_domain(domain_name)
    options = _options(args, dataset)
    backends = _Backends(args, dataset, domain, models)
    common: dict[str, Any] = {
        "graph": args.graph,
        "limit": args.limit,
        "exclude_labels": args.exclude_label,
        "concurrency": concurrency_for(args, backends.name),
        "fresh": args.fresh,
        "retry_errors": args.retry_errors,
        "progress": not args.quiet,
        "fold": args.fold if dataset.name == "ade" else None,
    }
    try:
        if args.sweep:
            report = await asweep(dataset, domain, backends, options=options, out=out, **common)
        else:
            report = await aevaluate(
                dataset, domain, backends(options), options=options, out=out, **common
            )
    finally:
        backends.close()
    _print_summary(report, out, chart_note)
    if report.errors:
        print(
            f"samalign: {report.errors} sentence(s) failed; see 'mismatches' in the report "
            f"({backends.name} backend; --retry-errors redoes them)",
            file=sys.stderr,
        )
    return report


async def _run(args: argparse.Namespace) -> int:
    models: dict[tuple[str, ...], StageModels] = {}
    chart_note = missing_matplotlib()  # said once, after the summary
    try:
        if args.dataset != ALL_CROSSNER:
            await _evaluate(args, args.dataset, args.out, models, chart_note)
            return 0
        if args.domain:
            raise ConfigError(
                f"{ALL_CROSSNER}: each CrossNER domain runs with its own built-in domain; "
                "drop --domain"
            )
        reports: dict[str, EvalReport] = {}
        paths: dict[str, str] = {}
        for name in CROSSNER_DATASETS:
            out = variant_path(args.out, name)
            reports[name] = await _evaluate(args, name, out, models, chart_note)
            paths[name] = str(report_paths(out)["json"])
    finally:
        for stage_models in models.values():
            stage_models.close()
    table = combine_reports(reports, paths)
    written = write_domains_report(table, args.out)
    mean = table.variants["full"].mean_f1
    print(
        f"{ALL_CROSSNER}/{args.split}: mean F1 over the five domains: SAM-NER "
        f"{100 * mean['sam_ner']:.2f}, span {100 * mean['span']:.2f}, string "
        f"{100 * mean['string']:.2f}"
    )
    print(f"report: {written['json']} (+ {written['md'].name})")
    return 0


def run(args: argparse.Namespace) -> int:
    """Evaluate a pipeline on a benchmark split and write a report.

    Numeric flags are checked by ``check_numbers``.
    """
    return asyncio.run(_run(args))


__all__ = ["add_parser", "run"]
