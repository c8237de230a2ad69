"""The review page: one self-contained HTML file (inline CSS and JavaScript, no network).

The page's template, style sheet and script are ``page.html``, ``page.css`` and ``page.js``
beside this module; they are inlined into every page.

The records travel inside the page as JSON in a ``<script type="application/json">`` element
(``<``, ``>`` and ``&`` written as JSON escapes, so no text can close the element), and the
page's script builds every element from them with ``textContent`` and DOM calls only: no
record text is ever parsed as HTML. Records are shown a page at a time, so ten thousand
records load and filter at once.

Offsets in the records are Python ``str`` indices (code points); the script slices texts by
code point, so highlights sit on ``text[start:end]`` for any script, emoji included.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from importlib import resources
from typing import Any

from samalign.view.records import ViewRecord

MAX_RAW_CHARS = 2000
"""Raw model text kept per diagnostic on the page (the rest is cut, to bound the file)."""

_HERE = resources.files("samalign.view")


def _asset(name: str) -> str:
    return (_HERE / name).read_text(encoding="utf-8")


def _record_json(record: ViewRecord, keep_raw: bool) -> dict[str, Any]:
    data = record.model_dump(mode="json")
    for diagnostic in data["diagnostics"]:
        raw = diagnostic.get("raw")
        if raw and (not keep_raw or len(raw) > MAX_RAW_CHARS):
            diagnostic["raw"] = raw[:MAX_RAW_CHARS] + " …" if keep_raw else None
    return data


def script_json(value: Any) -> str:
    """``value`` as JSON that is safe inside a ``<script>`` element (no ``<``, ``>``, ``&``)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def render_page(
    records: Iterable[ViewRecord], *, title: str = "samalign results", keep_raw: bool = True
) -> str:
    """The review page of ``records``: one self-contained HTML document.

    Args:
        records: The records to show, in order.
        title: The page title (escaped).
        keep_raw: Keep the raw model text of diagnostics (cut to ``MAX_RAW_CHARS`` each).

    Returns:
        The HTML text (no external resource: it opens offline, from a file).
    """
    payload = {"records": [_record_json(r, keep_raw) for r in records]}
    head, tail = _asset("page.html").split("@@DATA@@")
    head = head.replace("@@TITLE@@", html.escape(title)).replace("@@CSS@@", _asset("page.css"))
    return head + script_json(payload) + tail.replace("@@JS@@", _asset("page.js"))


__all__ = ["MAX_RAW_CHARS", "render_page", "script_json"]
