"""The review page: look at what the pipeline did, in a browser or a notebook.

``samalign view OUT.jsonl -o view.html`` writes it for an extraction's output;
:func:`visualize` returns it for graph results, as an object a notebook shows inline.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from samalign.batch.jsonl import encodable
from samalign.view.page import MAX_RAW_CHARS, render_page, script_json
from samalign.view.records import (
    ReviewItem,
    ViewRecord,
    read_view_records,
    record_of,
    records_of,
)


class View:
    """The review page of some results (see :func:`visualize`).

    In a notebook the page shows inline (``_repr_html_``, in a sandboxed ``iframe``);
    :meth:`save` writes it as a self-contained HTML file.

    Attributes:
        records: The records shown.
        title: The page title.
    """

    def __init__(self, records: list[ViewRecord], *, title: str = "samalign results") -> None:
        self.records = records
        self.title = title

    @property
    def html(self) -> str:
        """The page as a complete HTML document."""
        return render_page(self.records, title=self.title)

    def save(self, path: str | Path) -> Path:
        """Write the page to ``path`` (UTF-8) and return the path."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(encodable(self.html), encoding="utf-8")  # lone surrogates: escaped
        return out

    def _repr_html_(self) -> str:
        height = 640 if len(self.records) > 1 else 360
        return (
            f'<iframe srcdoc="{html.escape(self.html, quote=True)}" sandbox="allow-scripts" '
            f'style="width:100%;height:{height}px;border:1px solid #ddd" '
            f'title="{html.escape(self.title, quote=True)}"></iframe>'
        )

    def __repr__(self) -> str:
        return f"View({len(self.records)} record(s), title={self.title!r})"


def visualize(results: Any, *, title: str = "samalign results") -> View:
    """The review page of graph results, for a notebook or a file.

    Each text is shown with its entities highlighted and labelled (archetype, sources and
    offsets on hover), its triplets, what CCR dropped and why, the triplets the anchor filter
    removed with the reason, the diagnostics (hallucinated mentions …) and per-stage usage;
    the page filters by label and by diagnostic kind.

    Args:
        results: A graph result (the dict ``invoke`` returns), an output record of
            ``samalign extract``, or a list of them (e.g. what ``batch`` returns).
        title: The page title.

    Returns:
        A :class:`View`: shown inline by notebooks; ``.save(path)`` writes the HTML file.

    Raises:
        InputError: A result of an unsupported kind, or a span that does not match its text.

    Example:
        >>> result = graph.invoke({"text": text}, context=context)
        >>> samalign.visualize(result)  # in a notebook
        >>> samalign.visualize(graph.batch(inputs, context=context)).save("view.html")
    """
    return View(records_of(results), title=title)


__all__ = [
    "MAX_RAW_CHARS",
    "ReviewItem",
    "View",
    "ViewRecord",
    "read_view_records",
    "record_of",
    "records_of",
    "render_page",
    "script_json",
    "visualize",
]
