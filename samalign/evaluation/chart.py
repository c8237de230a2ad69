"""The report chart (PNG): per-label F1 bars, or per-ablation bars for a sweep.

matplotlib is optional (``pip install samalign[eval]``) and imported only here, when a chart
is drawn; without it the chart is skipped with a warning and the JSON and markdown reports are
still written.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from samalign.evaluation.report import EvalReport

log = logging.getLogger(__name__)


def _pyplot() -> Any | None:
    try:
        import matplotlib
    except ImportError:
        log.warning("matplotlib is not installed: no chart written (pip install 'samalign[eval]')")
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _title(report: EvalReport) -> str:
    run = report.run
    fold = f" fold {run.fold}" if run.fold is not None else ""
    return f"{run.dataset} {run.split}{fold} — {run.graph} graph, {run.backend} backend"


def write_chart(report: EvalReport, path: Path) -> bool:
    """Draw the report's chart to ``path``.

    Returns:
        Whether a chart was written (``False`` without matplotlib).
    """
    plt = _pyplot()
    if plt is None:
        return False
    fig = _ablation_chart(plt, report) if report.ablations else _label_chart(plt, report)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _label_chart(plt: Any, report: EvalReport) -> Any:
    per_label = report.entity.span.per_label
    labels = list(per_label)
    f1 = [100 * per_label[lab].f1 for lab in labels]
    rows: list[tuple[str, float]] = list(zip(labels, f1, strict=True))
    if report.relation is not None:
        rows += [
            (f"rel: {lab}", 100 * prf.f1) for lab, prf in report.relation.strict.per_label.items()
        ]
    height = max(3.0, 0.32 * len(rows) + 1.5)
    fig, ax = plt.subplots(figsize=(7.5, height))
    names = [r[0] for r in rows]
    values = [r[1] for r in rows]
    colors = ["#55A868" if name.startswith("rel: ") else "#4C72B0" for name, _ in rows]
    ax.barh(range(len(rows)), values, color=colors)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.axvline(100 * report.entity.span.f1, color="#C44E52", linestyle="--", linewidth=1)
    ax.set_xlabel(f"F1 (%) — span protocol; dashed: micro F1 {100 * report.entity.span.f1:.1f}")
    for i, v in enumerate(values):
        inside = v > 85  # write the value inside long bars, after short ones
        ax.text(
            v - 1 if inside else v + 1,
            i,
            f"{v:.1f}",
            va="center",
            ha="right" if inside else "left",
            color="white" if inside else "black",
            fontsize=8,
        )
    ax.set_title(_title(report), fontsize=10)
    return fig


def _ablation_chart(plt: Any, report: EvalReport) -> Any:
    assert report.ablations is not None
    names = list(report.ablations)
    series: dict[str, list[float]] = {
        "entity F1": [100 * v.entity_span.f1 for v in report.ablations.values()],
        "candidate P": [100 * v.candidates.precision for v in report.ablations.values()],
    }
    if any(v.relation_strict for v in report.ablations.values()):
        series["relation strict P"] = [
            100 * v.relation_strict.precision if v.relation_strict else 0.0
            for v in report.ablations.values()
        ]
        series["relation strict R"] = [
            100 * v.relation_strict.recall if v.relation_strict else 0.0
            for v in report.ablations.values()
        ]
        series["relation strict F1"] = [
            100 * v.relation_strict.f1 if v.relation_strict else 0.0
            for v in report.ablations.values()
        ]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(names) + 2), 4.5))
    for k, (label, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(names))]
        ax.bar(xs, values, width=width, label=label)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, ha="right")
    ax.set_ylim(0, 122)  # headroom for the legend above the bars
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("%")
    ax.legend(fontsize=8, loc="upper center", ncol=len(series), frameon=False)
    ax.set_title(_title(report) + " — ablations", fontsize=10)
    return fig


__all__ = ["write_chart"]
