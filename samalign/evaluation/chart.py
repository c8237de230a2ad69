"""The report chart (PNG): per-label F1 bars, or per-ablation bars for a sweep.

matplotlib is optional (``pip install 'samalign[eval]'``) and imported only here, when a chart
is drawn; without it the chart is skipped and the JSON and markdown reports are still
written. The skip is logged once per process, or said by the caller that claimed it with
:func:`missing_matplotlib` (``samalign eval`` prints one line).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from samalign.evaluation.report import EvalReport

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'samalign[eval]'"
"""How to get matplotlib, the chart's one dependency."""

_missing_said = False
"""Whether the skip has been logged or claimed by a caller (it is said once per process)."""


def _import_pyplot() -> Any | None:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def missing_matplotlib() -> str | None:
    """A one-line note saying the chart will be skipped, or ``None`` when it can be drawn.

    The caller shows the note itself; the chart writer then does not log the skip again.
    """
    global _missing_said
    if _import_pyplot() is not None:
        return None
    _missing_said = True
    return f"chart skipped: matplotlib is not installed; {INSTALL_HINT} (JSON and markdown written)"


def _pyplot() -> Any | None:
    global _missing_said
    plt = _import_pyplot()
    if plt is None and not _missing_said:
        _missing_said = True
        log.warning("matplotlib is not installed: no chart written (%s)", INSTALL_HINT)
    return plt


def chart_title(report: EvalReport) -> str:
    """The chart's title: the dataset and split, the domain, the graph and the backend.

    The domain is named only when it is not the dataset's own (a built-in dataset runs with
    the domain of the same name), so each name appears once.
    """
    run = report.run
    fold = f" fold {run.fold}" if run.fold is not None else ""
    data = f"{run.dataset} {run.split}{fold}"
    if run.domain != run.dataset:
        data += f", domain {run.domain}"
    what = f"{run.graph} graph, {run.backend} backend"
    if report.ablations:
        what += ", ablations"
    return f"{data} — {what}"


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
    ax.set_title(chart_title(report), fontsize=10)
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
    ax.set_title(chart_title(report), fontsize=10)
    return fig


__all__ = ["INSTALL_HINT", "chart_title", "missing_matplotlib", "write_chart"]
