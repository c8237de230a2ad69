"""The evaluation report: a JSON document (layout below), a markdown summary and a chart.

JSON layout (``format: "samalign-eval-report"``, ``version: 1``)::

    run            what ran: dataset, split, fold, data_file, domain, graph, options (the
                   PipelineOptions), backend, backend_settings, limit, exclude_labels,
                   concurrency, samalign_version
    sentences      sentences evaluated (every one is accounted for)
    errors         sentences whose graph run failed (they predict nothing)
    entity
      span         strict span micro P/R/F1: precision, recall, f1, tp, pred, gold,
                   per_label {label: {precision, recall, f1, tp, pred, gold}}
      string       UniNER string-set protocol, same fields
      sam_ner      the SAM-NER authors' protocol (stripped, case-sensitive strings), same fields
      boundary     spans only (labels ignored)
      candidates   candidate spans before typing vs gold spans (labels ignored)
      excluded_labels
      without_misc {span, string} with misc also excluded (CrossNER data only), or null
    relation       null for the NER graph; else
      strict       AnchorAlign relation strict P/R/F1 (per_label by relation type)
      boundary     AnchorAlign relation boundary P/R/F1
    cost
      wall_time_s, sentences_per_s, sessions
      sentence_latency_s   {total, mean, p50, p90, p99, max}
      stages       {stage: {calls, prompt_tokens, completion_tokens, cached,
                            latency_s: {total, mean, p50, p90, p99, max}}}
      total        {calls, prompt_tokens, completion_tokens, cached} (cached: answers the
                   stage cache replayed, with no model call)
      per_sentence the same per sentence
    diagnostics    {by_kind: {kind: n}, by_stage: {stage: {kind: n}}}
    mismatches
      sentences    how many sentences lost or gained something
      reasons      {reason: n} (see samalign.evaluation.analysis)
      items        [{id, text, origin, error, missed, spurious, missed_triplets,
                     spurious_triplets}], each entry with a reason
    ablations      only for --sweep: {variant: summary}

Files written next to each other for ``--out DIR/NAME.json``: ``NAME.json``, ``NAME.md``,
``NAME.png`` (needs matplotlib), the resumable ``NAME.sentences.jsonl`` and ``NAME.view.html``,
the review page (:mod:`samalign.view`) of the sentences that lost or gained something, which
the markdown links to.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from samalign.batch.jsonl import encodable
from samalign.batch.records import EntityRecord, TripletRecord
from samalign.evaluation.analysis import SentenceDiff
from samalign.evaluation.cost import Cost, DiagnosticCounts
from samalign.evaluation.metrics import PRF
from samalign.evaluation.results import PredEntity, PredTriplet, SentenceResult
from samalign.evaluation.scoring import EntityScores, RelationScores
from samalign.types import NoiseRecord
from samalign.view import ReviewItem, View, ViewRecord

REPORT_FORMAT = "samalign-eval-report"
REPORT_VERSION = 1


class RunInfo(BaseModel):
    """What ran."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    split: str
    fold: int | None
    data_file: str
    domain: str
    graph: str
    options: dict[str, Any]
    backend: str
    backend_settings: dict[str, Any]
    limit: int | None
    exclude_labels: list[str]
    concurrency: int
    samalign_version: str


class Mismatches(BaseModel):
    """Sentences that lost or gained something, with reasons."""

    model_config = ConfigDict(frozen=True)

    sentences: int
    reasons: dict[str, int]
    items: list[SentenceDiff]

    @classmethod
    def of(cls, diffs: Sequence[SentenceDiff]) -> Mismatches:
        """Summarise per-sentence differences."""
        reasons: Counter[str] = Counter()
        for d in diffs:
            reasons.update(d.reasons())
        return cls(sentences=len(diffs), reasons=dict(reasons.most_common()), items=list(diffs))


class VariantSummary(BaseModel):
    """One ablation variant of a sweep."""

    model_config = ConfigDict(frozen=True)

    options: dict[str, Any]
    report: str
    entity_span: PRF
    entity_string: PRF
    entity_sam_ner: PRF | None = None
    candidates: PRF
    relation_strict: PRF | None = None
    relation_boundary: PRF | None = None
    wall_time_s: float
    calls_per_sentence: float


class EvalReport(BaseModel):
    """The evaluation report (see the module docs for the layout)."""

    model_config = ConfigDict(frozen=True)

    format: Literal["samalign-eval-report"] = "samalign-eval-report"
    version: int = REPORT_VERSION
    run: RunInfo
    sentences: int
    errors: int
    entity: EntityScores
    relation: RelationScores | None = None
    cost: Cost
    diagnostics: DiagnosticCounts
    mismatches: Mismatches
    ablations: dict[str, VariantSummary] | None = None

    def summary(self, report_path: str = "") -> VariantSummary:
        """This report as one row of a sweep."""
        return VariantSummary(
            options=self.run.options,
            report=report_path,
            entity_span=self.entity.span.model_copy(update={"per_label": {}}),
            entity_string=self.entity.string.model_copy(update={"per_label": {}}),
            entity_sam_ner=self.entity.sam_ner.model_copy(update={"per_label": {}}),
            candidates=self.entity.candidates,
            relation_strict=(
                self.relation.strict.model_copy(update={"per_label": {}}) if self.relation else None
            ),
            relation_boundary=(
                self.relation.boundary.model_copy(update={"per_label": {}})
                if self.relation
                else None
            ),
            wall_time_s=self.cost.wall_time_s,
            calls_per_sentence=self.cost.per_sentence.get("calls", 0.0),
        )


def report_paths(out: Path) -> dict[str, Path]:
    """The files of a report written to ``out`` (``json``, ``md``, ``png``, ``jsonl``, ``view``)."""
    stem = out.with_suffix("") if out.suffix == ".json" else out
    return {
        "json": stem.with_name(stem.name + ".json"),
        "md": stem.with_name(stem.name + ".md"),
        "png": stem.with_name(stem.name + ".png"),
        "jsonl": stem.with_name(stem.name + ".sentences.jsonl"),
        "view": stem.with_name(stem.name + ".view.html"),
    }


def _entity_record(e: PredEntity) -> EntityRecord:
    return EntityRecord(
        start=e.start,
        end=e.end,
        text=e.text,
        label=e.label,
        archetype=None,
        sources=list(e.sources),
    )


def _triplet_record(t: PredTriplet) -> TripletRecord:
    return TripletRecord(
        head=_entity_record(t.head),
        relation=t.relation,
        tail=_entity_record(t.tail),
        sources=list(t.sources),
    )


def mismatch_view_records(
    diffs: Sequence[SentenceDiff], results: Sequence[SentenceResult]
) -> list[ViewRecord]:
    """The review-page records of the sentences that lost or gained something.

    Each shows the prediction (entities, triplets, CCR noise, diagnostics, usage) and, as
    review notes, every missed and spurious entity and triplet with its reason.
    """
    by_id = {r.id: r for r in results}
    records = []
    for diff in diffs:
        result = by_id.get(diff.id) or SentenceResult(id=diff.id)
        review = [
            ReviewItem(kind=kind, text=d.text, label=d.label, reason=d.reason, detail=d.detail)
            for kind, items in (("missed", diff.missed), ("spurious", diff.spurious))
            for d in items
        ] + [
            ReviewItem(kind=kind, text=f"{t.head} —{t.relation}→ {t.tail}", reason=t.reason)
            for kind, triplets in (
                ("missed_triplet", diff.missed_triplets),
                ("spurious_triplet", diff.spurious_triplets),
            )
            for t in triplets
        ]
        records.append(
            ViewRecord(
                id=diff.id,
                text=diff.text,
                entities=[_entity_record(e) for e in result.entities],
                triplets=[_triplet_record(t) for t in result.triplets],
                noise=[
                    NoiseRecord(mention=m, reason="explorer mention not corroborated (CCR)")
                    for m in result.noise
                ],
                diagnostics=result.diagnostics,
                usage=result.usage,
                error=diff.error,
                review=review,
            )
        )
    return records


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _prf_row(name: str, prf: PRF | None) -> str:
    if prf is None:
        return f"| {name} | – | – | – | – | – | – |"
    return (
        f"| {name} | {_pct(prf.precision)} | {_pct(prf.recall)} | {_pct(prf.f1)} | "
        f"{prf.tp} | {prf.pred} | {prf.gold} |"
    )


_PRF_HEAD = "| | P | R | F1 | tp | pred | gold |\n| --- | --- | --- | --- | --- | --- | --- |"


def render_markdown(
    report: EvalReport, *, max_mismatches: int = 50, view: str | None = None
) -> str:
    """A markdown summary of a report (``view``: the review page to link to, if any)."""
    run = report.run
    lines = [
        f"# Evaluation: {run.dataset} ({run.split}"
        + (f", fold {run.fold}" if run.fold is not None else "")
        + f") — graph {run.graph}, backend {run.backend}",
        "",
        f"- data: `{run.data_file}`; domain `{run.domain}`; samalign {run.samalign_version}",
        f"- sentences: {report.sentences}; errors: {report.errors}",
        "- options: "
        + ", ".join(
            f"{k}={v}"
            for k, v in run.options.items()
            if k.startswith(("use_", "agg", "anch", "ground"))
        ),
    ]
    if run.exclude_labels:
        lines.append(f"- excluded labels: {', '.join(run.exclude_labels)}")
    if run.backend in ("gold", "simulated"):
        lines.append(
            "- "
            + (
                "gold replay: every stage answered with its gold answer (the harness's self-test)"
                if run.backend == "gold"
                else "simulated noise: verifies the mechanics, not model quality"
            )
        )
    lines += ["", "## Scores (%)", "", _PRF_HEAD]
    entity = report.entity
    lines.append(_prf_row("entity span (strict)", entity.span))
    lines.append(_prf_row("entity string (UniNER)", entity.string))
    lines.append(_prf_row("entity SAM-NER (authors' eval.py)", entity.sam_ner))
    if entity.without_misc:
        lines.append(_prf_row("entity span w/o misc", entity.without_misc["span"]))
        lines.append(_prf_row("entity string w/o misc", entity.without_misc["string"]))
    lines.append(_prf_row("entity boundary (unlabeled)", entity.boundary))
    lines.append(_prf_row("candidates (unlabeled)", entity.candidates))
    if report.relation is not None:
        lines.append(_prf_row("relation strict", report.relation.strict))
        lines.append(_prf_row("relation boundary", report.relation.boundary))
    if report.ablations:
        lines += ["", "## Ablations (%)", ""]
        has_rel = any(v.relation_strict for v in report.ablations.values())
        head = (
            "| variant | entity P | entity R | entity F1 | SAM-NER F1 | candidate P | candidate R |"
        )
        sep = "| --- | --- | --- | --- | --- | --- | --- |"
        if has_rel:
            head += " rel. strict P | rel. strict R | rel. strict F1 | rel. boundary F1 |"
            sep += " --- | --- | --- | --- |"
        lines += [head + " calls/sent. |", sep + " --- |"]
        for name, v in report.ablations.items():
            sam_ner = _pct(v.entity_sam_ner.f1) if v.entity_sam_ner is not None else "–"
            row = (
                f"| {name} | {_pct(v.entity_span.precision)} | {_pct(v.entity_span.recall)} | "
                f"{_pct(v.entity_span.f1)} | {sam_ner} | {_pct(v.candidates.precision)} | "
                f"{_pct(v.candidates.recall)} |"
            )
            if has_rel:
                strict, boundary = v.relation_strict, v.relation_boundary
                row += (
                    f" {_pct(strict.precision)} | {_pct(strict.recall)} | {_pct(strict.f1)} | "
                    f"{_pct(boundary.f1)} |"
                    if strict is not None and boundary is not None
                    else " – | – | – | – |"
                )
            lines.append(row + f" {v.calls_per_sentence:.2f} |")
    lines += ["", "## Per label (span protocol, %)", "", _PRF_HEAD]
    for label, prf in entity.span.per_label.items():
        lines.append(_prf_row(label, prf))
    if report.relation is not None:
        lines += ["", "## Per relation (strict, %)", "", _PRF_HEAD]
        for label, prf in report.relation.strict.per_label.items():
            lines.append(_prf_row(label, prf))
    cost = report.cost
    lines += [
        "",
        "## Cost",
        "",
        f"- wall time {cost.wall_time_s:.1f} s ({cost.sessions} session(s)); "
        f"{cost.sentences_per_s:.2f} sentences/s",
        f"- sentence latency: p50 {cost.sentence_latency_s.p50:.3f} s, "
        f"p90 {cost.sentence_latency_s.p90:.3f} s, p99 {cost.sentence_latency_s.p99:.3f} s",
        f"- per sentence: {cost.per_sentence.get('calls', 0):.2f} calls"
        + (
            f" (+ {cost.per_sentence['cached']:.2f} answers from the stage cache)"
            if cost.per_sentence.get("cached")
            else ""
        )
        + ", "
        f"{cost.per_sentence.get('prompt_tokens', 0):.0f} prompt tokens, "
        f"{cost.per_sentence.get('completion_tokens', 0):.0f} completion tokens",
        "",
        "| stage | calls | prompt tokens | completion tokens | latency p50 (s) | p90 | p99 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for stage, c in cost.stages.items():
        lat = c.latency_s
        lines.append(
            f"| {stage} | {c.calls} | {c.prompt_tokens} | {c.completion_tokens} | "
            f"{lat.p50:.3f} | {lat.p90:.3f} | {lat.p99:.3f} |"
        )
    lines += ["", "## Diagnostics", ""]
    if report.diagnostics.by_kind:
        for stage, kinds in report.diagnostics.by_stage.items():
            lines.append(f"- {stage}: " + ", ".join(f"{k} {n}" for k, n in kinds.items()))
    else:
        lines.append("- none")
    mm = report.mismatches
    lines += ["", f"## Sentences that lost or gained something: {mm.sentences}", ""]
    if view is not None and mm.sentences:
        lines += [f"Review them in the browser: [{view}]({view})", ""]
    if mm.reasons:
        lines.append("Reasons: " + ", ".join(f"{r} {n}" for r, n in mm.reasons.items()))
        lines.append("")
    for item in mm.items[:max_mismatches]:
        lines.append(f"- `{item.id}` ({item.origin}): {item.text[:160]}")
        if item.error:
            lines.append(f"  - error: {item.error}")
        for d in item.missed:
            lines.append(f"  - missed {d.text!r} {d.label}: {d.reason} {d.detail}".rstrip())
        for d in item.spurious:
            lines.append(f"  - spurious {d.text!r} {d.label}: {d.reason} {d.detail}".rstrip())
        for t in item.missed_triplets:
            lines.append(f"  - missed ({t.head!r}, {t.relation}, {t.tail!r}): {t.reason}")
        for t in item.spurious_triplets:
            lines.append(f"  - spurious ({t.head!r}, {t.relation}, {t.tail!r}): {t.reason}")
    if len(mm.items) > max_mismatches:
        lines.append(f"- … {len(mm.items) - max_mismatches} more in the JSON report")
    return "\n".join(lines) + "\n"


def write_report(
    report: EvalReport,
    out: Path,
    *,
    chart: bool = True,
    view: Sequence[ViewRecord] | Path | None = None,
) -> dict[str, Path]:
    """Write the JSON report, its markdown summary and (if matplotlib is there) the chart.

    Args:
        report: The report.
        out: The report path (``NAME.json``).
        chart: Write the chart.
        view: The review-page records of the mismatching sentences (written to
            ``NAME.view.html``; see :func:`mismatch_view_records`), or the path of a review
            page written already (e.g. a sweep's full variant's), to link to from the markdown.

    Returns:
        The paths written, by kind.
    """
    from samalign.evaluation.chart import write_chart  # local: matplotlib is optional

    paths = report_paths(out)
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    # encodable: a sentence whose text is not valid Unicode (an error result) is written escaped
    paths["json"].write_text(
        encodable(json.dumps(report.model_dump(mode="json"), indent=2, ensure_ascii=False)) + "\n",
        encoding="utf-8",
    )
    written: dict[str, Path] = {}
    link: str | None = None
    if isinstance(view, Path):
        link = os.path.relpath(view, paths["md"].parent)
    elif view is not None:
        run = report.run
        title = (
            f"{run.dataset}/{run.split} ({run.graph}, {run.backend}): sentences that lost or "
            "gained something"
        )
        written["view"] = View(list(view), title=title).save(paths["view"])
        link = paths["view"].name
    paths["md"].write_text(encodable(render_markdown(report, view=link)), encoding="utf-8")
    written = {"json": paths["json"], "md": paths["md"], **written}
    if chart and write_chart(report, paths["png"]):
        written["png"] = paths["png"]
    return written


__all__ = [
    "REPORT_FORMAT",
    "REPORT_VERSION",
    "EvalReport",
    "Mismatches",
    "RunInfo",
    "VariantSummary",
    "mismatch_view_records",
    "render_markdown",
    "report_paths",
    "write_report",
]
