"""Several domains' reports as one table: per-domain scores and the mean of their F1.

SAM-NER reports, per CrossNER domain, micro P/R/F1 and, as the average, the mean of the five
domains' F1 (the authors' ``src/eval/eval.py`` calls it ``micro_avg``; it is the arithmetic
mean of the per-domain F1, not a micro-average over all entities). :func:`combine_reports`
builds that table from one :class:`~samalign.evaluation.report.EvalReport` per domain, for
every protocol and, after a sweep, for every ablation (Tables 1, 2, 3 and 6's score column);
``samalign eval crossner`` runs the five domains and writes it.

JSON layout (``format: "samalign-eval-domains"``, ``version: 1``)::

    split, backend, options      of the runs (the full variant's options)
    datasets                     the datasets, in order
    reports                      {dataset: report path}
    variants                     {variant: {per_dataset: {dataset: {protocol: PRF}},
                                            mean_f1: {protocol: mean of the datasets' F1},
                                            wall_time_s: summed over the datasets}}

Protocols: ``sam_ner`` (the authors'), ``span`` (CrossNER's), ``string`` (UniNER's).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from samalign.errors import ConfigError
from samalign.evaluation.metrics import PRF
from samalign.evaluation.report import EvalReport, VariantSummary

PROTOCOLS: tuple[str, ...] = ("sam_ner", "span", "string")
"""The entity protocols the table carries."""

DOMAINS_FORMAT = "samalign-eval-domains"


class VariantAcross(BaseModel):
    """One pipeline variant over every dataset."""

    model_config = ConfigDict(frozen=True)

    per_dataset: dict[str, dict[str, PRF]]
    mean_f1: dict[str, float]
    wall_time_s: float


class DomainsReport(BaseModel):
    """Per-domain scores and their mean (see the module docs)."""

    model_config = ConfigDict(frozen=True)

    format: Literal["samalign-eval-domains"] = "samalign-eval-domains"
    version: int = 1
    split: str
    backend: str
    options: dict[str, Any]
    datasets: list[str]
    reports: dict[str, str]
    variants: dict[str, VariantAcross]


def _bare(prf: PRF) -> PRF:
    return prf.model_copy(update={"per_label": {}})


def _summary_scores(summary: VariantSummary) -> dict[str, PRF]:
    scores = {"span": _bare(summary.entity_span), "string": _bare(summary.entity_string)}
    if summary.entity_sam_ner is not None:
        scores["sam_ner"] = _bare(summary.entity_sam_ner)
    return scores


def _variants(report: EvalReport) -> dict[str, tuple[dict[str, PRF], float]]:
    """Each variant of a report: its scores and wall time (the report itself is ``full``)."""
    entity = report.entity
    full = {"sam_ner": _bare(entity.sam_ner), "span": _bare(entity.span)}
    full["string"] = _bare(entity.string)
    out = {"full": (full, report.cost.wall_time_s)}
    for name, summary in (report.ablations or {}).items():
        if name != "full":
            out[name] = (_summary_scores(summary), summary.wall_time_s)
    return out


def combine_reports(
    reports: Mapping[str, EvalReport], paths: Mapping[str, str] | None = None
) -> DomainsReport:
    """One table from one report per dataset (all of the same split and backend).

    Args:
        reports: Dataset name → its report (a sweep's combined report gives every variant).
        paths: Dataset name → where its report was written.

    Raises:
        ConfigError: No report, or reports of different splits or backends.
    """
    if not reports:
        raise ConfigError("no reports to combine")
    splits = {r.run.split for r in reports.values()}
    backends = {r.run.backend for r in reports.values()}
    if len(splits) > 1 or len(backends) > 1:
        raise ConfigError(
            f"reports of different splits {sorted(splits)} or backends {sorted(backends)} "
            "cannot be averaged"
        )
    per_report = {name: _variants(r) for name, r in reports.items()}
    names = list(dict.fromkeys(v for variants in per_report.values() for v in variants))
    variants: dict[str, VariantAcross] = {}
    for variant in names:
        per_dataset: dict[str, dict[str, PRF]] = {}
        wall = 0.0
        for dataset, variants_of in per_report.items():
            if variant in variants_of:
                scores, seconds = variants_of[variant]
                per_dataset[dataset] = scores
                wall += seconds
        mean = {
            protocol: sum(s[protocol].f1 for s in per_dataset.values()) / len(per_dataset)
            for protocol in PROTOCOLS
            if all(protocol in s for s in per_dataset.values())
        }
        variants[variant] = VariantAcross(per_dataset=per_dataset, mean_f1=mean, wall_time_s=wall)
    first = next(iter(reports.values()))
    return DomainsReport(
        split=first.run.split,
        backend=first.run.backend,
        options=first.run.options,
        datasets=list(reports),
        reports=dict(paths or {}),
        variants=variants,
    )


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def render_domains_markdown(report: DomainsReport) -> str:
    """A markdown summary: per-dataset P/R/F1 and the mean F1, per variant."""
    lines = [
        f"# Evaluation over {len(report.datasets)} datasets ({report.split}) — backend "
        f"{report.backend}",
        "",
        "Mean = the mean of the datasets' F1 (SAM-NER's 'Avg.'). Protocols: SAM-NER = the "
        "authors' eval.py (stripped strings, case-sensitive, misc scored); span = CrossNER "
        "(token spans); string = UniNER (normalised strings).",
    ]
    full = report.variants.get("full")
    if full is not None:
        lines += [
            "",
            "## Full pipeline (%)",
            "",
            "| dataset | SAM-NER P | SAM-NER R | SAM-NER F1 | span F1 | string F1 |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for dataset, scores in full.per_dataset.items():
            sam = scores.get("sam_ner")
            lines.append(
                f"| {dataset} | "
                + (f"{_pct(sam.precision)} | {_pct(sam.recall)} | {_pct(sam.f1)}" if sam else "–")
                + f" | {_pct(scores['span'].f1)} | {_pct(scores['string'].f1)} |"
            )
        mean = full.mean_f1
        lines.append(
            f"| **mean** | | | **{_pct(mean.get('sam_ner', 0.0))}** | "
            f"{_pct(mean.get('span', 0.0))} | {_pct(mean.get('string', 0.0))} |"
        )
    if len(report.variants) > 1:
        lines += [
            "",
            "## Variants (SAM-NER F1, %; time summed over the datasets)",
            "",
            "| variant | " + " | ".join(report.datasets) + " | mean | time (s) |",
            "| --- | " + " | ".join("---" for _ in report.datasets) + " | --- | --- |",
        ]
        for name, variant in report.variants.items():
            cells = [
                _pct(variant.per_dataset[d]["sam_ner"].f1)
                if d in variant.per_dataset and "sam_ner" in variant.per_dataset[d]
                else "–"
                for d in report.datasets
            ]
            mean_cell = _pct(variant.mean_f1["sam_ner"]) if "sam_ner" in variant.mean_f1 else "–"
            lines.append(
                f"| {name} | " + " | ".join(cells) + f" | {mean_cell} | {variant.wall_time_s:.1f} |"
            )
    if report.reports:
        lines += ["", "Reports: " + ", ".join(f"`{p}`" for p in report.reports.values())]
    return "\n".join(lines) + "\n"


def write_domains_report(report: DomainsReport, out: Path) -> dict[str, Path]:
    """Write the JSON table and its markdown summary (``out`` and ``out`` with ``.md``)."""
    stem = out.with_suffix("") if out.suffix == ".json" else out
    paths = {"json": stem.with_name(stem.name + ".json"), "md": stem.with_name(stem.name + ".md")}
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    paths["json"].write_text(
        json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    paths["md"].write_text(render_domains_markdown(report), encoding="utf-8")
    return paths


__all__ = [
    "DOMAINS_FORMAT",
    "PROTOCOLS",
    "DomainsReport",
    "VariantAcross",
    "combine_reports",
    "render_domains_markdown",
    "write_domains_report",
]
