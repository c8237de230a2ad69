"""Run a graph over a dataset split and build the evaluation report.

:func:`aevaluate` (and its sync twin :func:`evaluate`) runs the NER or joint graph over every
sentence of a split with bounded concurrency, writes each finished sentence to the resumable
results file at once, then scores all protocols, accounts for cost and explains every
sentence that lost or gained something. Sentences run concurrently through ``ainvoke`` (what
``abatch`` does), so each one is written and timed as soon as it finishes and a sentence can
get its own run context (gold replay needs that for repeated texts).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, Literal

from samalign.errors import ConfigError, SamalignError
from samalign.evaluation.analysis import diff_all
from samalign.evaluation.backends import EvalBackend
from samalign.evaluation.cost import count_diagnostics, summarize_cost
from samalign.evaluation.datasets import Dataset
from samalign.evaluation.report import (
    EvalReport,
    Mismatches,
    RunInfo,
    mismatch_view_records,
    report_paths,
    write_report,
)
from samalign.evaluation.results import ResultsFile, SentenceResult, result_from_state
from samalign.evaluation.scoring import score_entities, score_relations
from samalign.evaluation.sentences import Sentence
from samalign.graphs import PipelineOptions, build_joint_graph, build_ner_graph
from samalign.graphs.context import RunContext
from samalign.prompts.domain import Domain

log = logging.getLogger(__name__)

GraphKind = Literal["ner", "joint"]

NER_ABLATIONS: dict[str, dict[str, bool]] = {
    "full": {},
    "no_anchor": {"use_anchor": False},
    "no_explorer": {"use_explorer": False},
    "no_consensus": {"use_consensus": False},
    "no_calibration": {"use_calibration": False},
}
"""SAM-NER's ablations (Tables 2–3) as option overrides."""

RELATION_ABLATIONS: dict[str, dict[str, bool]] = {
    "no_aggregation": {"aggregate_relations": False},
    "no_constraint": {"anchor_constraint": False},
    "no_aggregation_no_constraint": {"aggregate_relations": False, "anchor_constraint": False},
}
"""AnchorAlign's inference-time ablations (Table 2) as option overrides."""


def build_graph(kind: GraphKind, options: PipelineOptions) -> Any:
    """The compiled ``ner`` or ``joint`` graph.

    Raises:
        ConfigError: Unknown kind.
    """
    if kind == "ner":
        return build_ner_graph(options)
    if kind == "joint":
        return build_joint_graph(options)
    raise ConfigError(f"unknown graph {kind!r}; expected 'ner' or 'joint'")


def graph_stages(kind: GraphKind, options: PipelineOptions) -> list[str]:
    """The stages (stage models) a graph built with ``options`` calls."""
    return list(options.joint_model_stages if kind == "joint" else options.model_stages)


def ablation_variants(kind: GraphKind, *, supervised: bool = False) -> dict[str, dict[str, bool]]:
    """The sweep's variants for a graph kind.

    With supervised NER (``ner_mode="supervised"``) there are no SAM-NER stages to ablate: the
    variants are the full pipeline and, for the joint graph, AnchorAlign's Table 2 rows.
    """
    variants = {"full": {}} if supervised else dict(NER_ABLATIONS)
    if kind == "joint":
        variants.update(RELATION_ABLATIONS)
    return variants


def check_labels(sentences: Sequence[Sentence], domain: Domain, *, relations: bool) -> None:
    """Fail unless every gold label can be predicted with ``domain``.

    With ``relations``, every gold relation label must be a relation type of the domain, and
    every gold triplet's argument types must be allowed by the relation's ``head_types`` and
    ``tail_types`` (the relation stage drops any other triplet).

    Raises:
        ConfigError: Naming the gold labels the domain lacks, or the gold triplets its
            argument types reject (by kind, with a count and an example sentence).
    """
    missing = sorted({e.label for s in sentences for e in s.entities} - set(domain.labels))
    if missing:
        raise ConfigError(
            f"gold entity labels {missing} are not labels of domain {domain.name!r} "
            f"({domain.labels}); they could never be predicted. Use a domain with these labels "
            "(--domain)"
        )
    if relations:
        rel_labels = {r.label for r in domain.relation_types}
        missing_rel = sorted({t.relation for s in sentences for t in s.triplets} - rel_labels)
        if missing_rel:
            raise ConfigError(
                f"gold relation labels {missing_rel} are not relation types of domain "
                f"{domain.name!r} ({sorted(rel_labels)})"
            )
        _check_arguments(sentences, domain)


_SHOWN_VIOLATIONS = 5


def _check_arguments(sentences: Sequence[Sentence], domain: Domain) -> None:
    """Fail if a gold triplet breaks its relation's argument types in ``domain``.

    The relation stage drops every triplet whose head or tail type its relation does not allow
    (``head_types``/``tail_types``), so such a gold triplet could never be predicted.
    """
    by_label = {r.label: r for r in domain.relation_types}
    broken: dict[tuple[str, str, str], list[str]] = {}
    for s in sentences:
        for t in s.triplets:
            constraint = by_label[t.relation]
            head_ok = not constraint.head_types or t.head.label in constraint.head_types
            tail_ok = not constraint.tail_types or t.tail.label in constraint.tail_types
            if not (head_ok and tail_ok):
                broken.setdefault((t.relation, t.head.label, t.tail.label), []).append(s.id)
    if not broken:
        return
    total = sum(len(ids) for ids in broken.values())
    kinds = sorted(broken, key=lambda k: -len(broken[k]))
    parts = []
    for rel, head, tail in kinds[:_SHOWN_VIOLATIONS]:
        allowed = by_label[rel]
        ids = broken[(rel, head, tail)]
        parts.append(
            f"{rel} ({head} -> {tail}; allowed {list(allowed.head_types) or 'any'} -> "
            f"{list(allowed.tail_types) or 'any'}): {len(ids)}, e.g. sentence {ids[0]}"
        )
    if len(kinds) > _SHOWN_VIOLATIONS:
        parts.append(f"and {len(kinds) - _SHOWN_VIOLATIONS} more kinds")
    shown = "; ".join(parts)
    raise ConfigError(
        f"{total} gold triplet(s) break the argument types of domain {domain.name!r} and could "
        f"never be predicted (the relation stage drops them): {shown}. Widen the "
        "relation's head_types/tail_types in the domain (or remove them), or fix the data"
    )


async def run_graph(
    graph: Any,
    sentences: Sequence[Sentence],
    context_for: Callable[[Sentence], RunContext],
    *,
    results: ResultsFile | None = None,
    concurrency: int = 8,
    progress: bool = False,
    desc: str = "eval",
) -> list[SentenceResult]:
    """Run ``graph`` over the sentences not yet in ``results``; return all results in order.

    Every sentence yields exactly one result: a failure becomes its ``error``.

    Args:
        graph: A compiled samalign graph.
        sentences: The sentences.
        context_for: The run context of each sentence.
        results: Where finished results are written (and earlier ones read from).
        concurrency: Sentences in flight.
        progress: Show a progress bar on stderr.
        desc: Progress bar label.
    """
    from tqdm import tqdm

    if concurrency < 1:
        raise ConfigError("concurrency must be at least 1")
    done: dict[str, SentenceResult] = dict(results.results) if results is not None else {}
    pending = [s for s in sentences if s.id not in done]
    slots = asyncio.Semaphore(concurrency)

    async def one(sentence: Sentence) -> SentenceResult:
        async with slots:
            start = time.perf_counter()
            try:
                state = await graph.ainvoke({"text": sentence.text}, context=context_for(sentence))
                return result_from_state(sentence, state, time.perf_counter() - start)
            except SamalignError as err:
                error = f"{type(err).__name__}: {err}"
            except Exception as err:  # one bad sentence must not stop the run
                log.exception("sentence %s failed unexpectedly", sentence.id)
                error = f"unexpected {type(err).__name__}: {err}"
            return SentenceResult(
                id=sentence.id, latency_s=time.perf_counter() - start, error=error
            )

    bar = tqdm(
        total=len(sentences),
        initial=len(sentences) - len(pending),
        desc=desc,
        unit="sent",
        disable=not progress,
        file=sys.stderr,
    )
    tasks = [asyncio.ensure_future(one(s)) for s in pending]
    try:
        for finished in asyncio.as_completed(tasks):
            result = await finished
            done[result.id] = result
            if results is not None:
                results.add(result)
            bar.update(1)
    finally:
        for task in tasks:
            task.cancel()
        bar.close()
    return [done[s.id] for s in sentences]


def _version() -> str:
    from samalign import __version__

    return __version__


async def aevaluate(
    dataset: Dataset,
    domain: Domain,
    backend: EvalBackend,
    *,
    graph: GraphKind = "ner",
    options: PipelineOptions | None = None,
    limit: int | None = None,
    exclude_labels: Collection[str] = (),
    concurrency: int = 8,
    out: Path | None = None,
    fresh: bool = False,
    retry_errors: bool = False,
    progress: bool = False,
    fold: int | None = None,
) -> EvalReport:
    """Evaluate one graph configuration on one dataset split.

    Args:
        dataset: The loaded split.
        domain: The domain the graph runs with (must hold every gold label).
        backend: Where answers come from (:mod:`samalign.evaluation.backends`).
        graph: ``ner`` or ``joint``.
        options: Pipeline options (ablation switches).
        limit: Evaluate only the first ``limit`` sentences.
        exclude_labels: Entity labels left out of the scores.
        concurrency: Sentences in flight.
        out: Report path (``NAME.json``); the markdown, chart and resumable per-sentence
            results are written beside it. ``None``: nothing is written.
        fresh: Discard earlier results at ``out`` instead of resuming.
        retry_errors: When resuming, redo sentences whose result has an error.
        progress: Show a progress bar.
        fold: The ADE fold, for the report.

    Raises:
        ConfigError: Bad configuration, a domain lacking gold labels, or results of another
            configuration at ``out``.
    """
    options = options or PipelineOptions()
    sentences = dataset.sentences[:limit] if limit is not None else list(dataset.sentences)
    relations = graph == "joint"
    if relations and not dataset.relations:
        raise ConfigError(
            f"dataset {dataset.name!r} has no relation annotations for the joint graph"
        )
    check_labels(sentences, domain, relations=relations)
    compiled = build_graph(graph, options)
    run = RunInfo(
        dataset=dataset.name,
        split=dataset.split,
        fold=fold,
        data_file=str(dataset.path),
        domain=domain.name,
        graph=graph,
        options=options.model_dump(mode="json"),
        backend=backend.name,
        backend_settings=backend.settings,
        limit=limit,
        exclude_labels=sorted(set(exclude_labels)),
        concurrency=concurrency,
        samalign_version=_version(),
    )
    # what the per-sentence results depend on (--limit, --concurrency and the scoring switches
    # do not change a sentence's result, so a run can be extended or re-scored)
    config = run.model_dump(
        mode="json", exclude={"concurrency", "exclude_labels", "samalign_version", "limit"}
    )
    results_file = (
        ResultsFile(report_paths(out)["jsonl"], config, fresh=fresh) if out is not None else None
    )
    try:
        if results_file is not None and retry_errors:
            results_file.drop_errors()
        ran_before = len(results_file.results) if results_file is not None else 0
        start = time.perf_counter()
        try:
            results = await run_graph(
                compiled,
                sentences,
                backend.context_for,
                results=results_file,
                concurrency=concurrency,
                progress=progress,
                desc=f"{dataset.name}/{dataset.split}",
            )
        finally:
            if results_file is not None:
                ran = len(results_file.results) - ran_before
                results_file.end_session(time.perf_counter() - start, max(ran, 0))
        wall = time.perf_counter() - start
        sessions = 1
        if results_file is not None:
            wall = sum(s.wall_s for s in results_file.sessions)
            sessions = len(results_file.sessions)
    finally:
        if results_file is not None:
            results_file.close()
    diffs = diff_all(sentences, results)
    report = EvalReport(
        run=run,
        sentences=len(sentences),
        errors=sum(r.error is not None for r in results),
        entity=score_entities(sentences, results, exclude_labels=exclude_labels),
        relation=score_relations(sentences, results) if relations else None,
        cost=summarize_cost(results, wall_time_s=wall, sessions=sessions),
        diagnostics=count_diagnostics(results),
        mismatches=Mismatches.of(diffs),
    )
    if out is not None:
        write_report(report, out, view=mismatch_view_records(diffs, results))
    return report


def evaluate(*args: Any, **kwargs: Any) -> EvalReport:
    """Synchronous :func:`aevaluate` (same arguments)."""
    return asyncio.run(aevaluate(*args, **kwargs))


def variant_path(out: Path, variant: str) -> Path:
    """Where a sweep writes one variant's report."""
    paths = report_paths(out)
    stem = paths["json"].with_suffix("")
    return stem.with_name(f"{stem.name}.{variant}.json")


async def asweep(
    dataset: Dataset,
    domain: Domain,
    make_backend: Callable[[PipelineOptions], EvalBackend],
    *,
    graph: GraphKind = "ner",
    options: PipelineOptions | None = None,
    out: Path | None = None,
    variants: Sequence[str] | None = None,
    **kwargs: Any,
) -> EvalReport:
    """Evaluate the full pipeline and each ablation; return the full report with ``ablations``.

    Each variant is written as ``NAME.<variant>.json`` (+ markdown, chart, results); the
    combined report at ``out`` has the full variant's scores plus one summary per variant and
    a per-ablation chart.

    Args:
        dataset: The loaded split.
        domain: The domain.
        make_backend: Builds the backend for a variant's options.
        graph: ``ner`` or ``joint``.
        options: Base options (each variant overrides its switches).
        out: Combined report path.
        variants: Variant names (default: every ablation of the graph kind).
        **kwargs: Passed to :func:`aevaluate`.
    """
    base = options or PipelineOptions()
    table = ablation_variants(graph, supervised=base.supervised)
    names = list(variants) if variants is not None else list(table)
    unknown = sorted(set(names) - set(table))
    if unknown:
        raise ConfigError(f"unknown ablation(s) {unknown}; known: {list(table)}")
    summaries = {}
    full: EvalReport | None = None
    for name in names:
        try:
            variant_options = base.model_copy(update=table[name])
            variant_options = PipelineOptions(**variant_options.model_dump())
        except (ValueError, ConfigError) as err:
            raise ConfigError(f"ablation {name!r}: {err}") from None
        path = variant_path(out, name) if out is not None else None
        report = await aevaluate(
            dataset,
            domain,
            make_backend(variant_options),
            graph=graph,
            options=variant_options,
            out=path,
            **kwargs,
        )
        summaries[name] = report.summary(str(path) if path else "")
        if name == "full" or full is None:
            full = report
    assert full is not None
    combined = full.model_copy(update={"ablations": summaries})
    if out is not None:
        full_view = report_paths(variant_path(out, "full" if "full" in names else names[0]))
        write_report(combined, out, view=full_view["view"] if full_view["view"].is_file() else None)
    return combined


__all__ = [
    "NER_ABLATIONS",
    "RELATION_ABLATIONS",
    "GraphKind",
    "ablation_variants",
    "aevaluate",
    "asweep",
    "build_graph",
    "check_labels",
    "evaluate",
    "graph_stages",
    "run_graph",
    "variant_path",
]
