"""The review page: one self-contained HTML file (inline CSS and JavaScript, no network).

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
from typing import Any

from samalign.view.records import ViewRecord

MAX_RAW_CHARS = 2000
"""Raw model text kept per diagnostic on the page (the rest is cut, to bound the file)."""

_CSS = """
:root{--fg:#1d1d1f;--muted:#6e6e73;--line:#d8d8dc;--bg:#fff;--soft:#f5f5f7;--bad:#b3261e}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg)}
header{position:sticky;top:0;z-index:2;background:var(--soft);border-bottom:1px solid var(--line);
padding:8px 16px}
header h1{font-size:16px;margin:0 0 6px}
.controls{display:flex;flex-wrap:wrap;gap:8px;align-items:center}
.controls label{color:var(--muted)}
.controls select,.controls input,.controls button{font:inherit;padding:2px 6px}
.count{color:var(--muted);margin-left:auto}
main{padding:8px 16px}
.summary{margin:8px 0 16px}
.summary table,.rec table{border-collapse:collapse;font-size:13px}
.summary td,.summary th,.rec td,.rec th{border:1px solid var(--line);padding:2px 6px;
text-align:left;vertical-align:top}
.rec{border:1px solid var(--line);border-radius:6px;padding:8px 12px;margin:0 0 12px}
.rec .id{font-weight:600;color:var(--muted);font-size:12px}
.rec .text{font-size:15px;line-height:2.1;white-space:pre-wrap;word-wrap:break-word;margin:4px 0}
mark.ent{border-radius:3px;padding:1px 0;color:inherit;background:var(--c,#ddd);
box-shadow:inset 0 -2px 0 rgba(0,0,0,.15)}
mark.ent::after{content:attr(data-label);font-size:10px;font-weight:600;
margin-left:2px;padding:0 3px;border-radius:3px;background:rgba(255,255,255,.7);
vertical-align:super;line-height:1}
mark.ent.dim{background:#eee;box-shadow:none}
mark.ent.dim::after{opacity:.4}
.sec{margin:6px 0 0}
.sec>summary{cursor:pointer;color:var(--muted);font-size:13px}
.tag{display:inline-block;font-size:11px;padding:0 5px;border-radius:8px;background:var(--soft);
border:1px solid var(--line);margin-right:4px}
.kind-hallucination,.kind-stage_failed,.kind-parse_error,.err{color:var(--bad)}
pre.raw{white-space:pre-wrap;background:var(--soft);padding:4px;margin:2px 0;font-size:12px;
max-height:12em;overflow:auto}
.pager{display:flex;gap:8px;align-items:center;margin:8px 0}
.empty{color:var(--muted);padding:24px 0}
"""

_JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("samalign-data").textContent);
  var records = data.records;
  var $ = function (id) { return document.getElementById(id); };
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function hue(label) {
    var h = 0, s = String(label);
    for (var i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) % 360;
    return "hsl(" + h + ",75%,82%)";
  }
  // what each record offers to the filters
  var labelCount = {}, kindCount = {};
  records.forEach(function (r) {
    var labels = {}, kinds = {};
    (r.entities || []).forEach(function (e) { labels[e.label === null ? "(untyped)" : e.label] = 1; });
    (r.diagnostics || []).forEach(function (d) { kinds[d.kind] = 1; });
    if ((r.noise || []).length) kinds["ccr:dropped"] = 1;
    if ((r.dropped_triplets || []).length) kinds["anchor_filter:dropped"] = 1;
    if (r.error || (r.sentence_errors || []).length) kinds["error"] = 1;
    (r.review || []).forEach(function (v) { kinds["review:" + v.kind] = 1; });
    r._labels = labels; r._kinds = kinds;
    r._search = String(r.text).toLowerCase() + " " + String(r.id).toLowerCase();
    Object.keys(labels).forEach(function (l) { labelCount[l] = (labelCount[l] || 0) + 1; });
    Object.keys(kinds).forEach(function (k) { kindCount[k] = (kindCount[k] || 0) + 1; });
  });
  function fillSelect(select, counts, all) {
    select.appendChild(new Option(all, ""));
    Object.keys(counts).sort().forEach(function (k) {
      select.appendChild(new Option(k + " (" + counts[k] + ")", k));
    });
  }
  fillSelect($("f-label"), labelCount, "every label");
  fillSelect($("f-kind"), kindCount, "every record");

  var state = { label: "", kind: "", query: "", page: 0, size: 25 };
  var shown = records;

  function renderText(r) {
    var cps = Array.from(r.text);
    var root = el("div", "text");
    var ents = (r.entities || []).map(function (e, i) { return { e: e, i: i }; });
    ents.sort(function (a, b) { return a.e.start - b.e.start || b.e.end - a.e.end || a.i - b.i; });
    var stack = [], cur = 0, crossing = [];
    function container() { return stack.length ? stack[stack.length - 1].node : root; }
    function emit(to) {
      if (to > cur) { container().appendChild(document.createTextNode(cps.slice(cur, to).join(""))); cur = to; }
    }
    function close() { var top = stack[stack.length - 1]; emit(top.end); stack.pop(); }
    ents.forEach(function (x) {
      var e = x.e;
      if (!(e.start >= 0 && e.end <= cps.length && e.end > e.start)) { crossing.push(e); return; }
      while (stack.length && stack[stack.length - 1].end <= e.start) close();
      if (stack.length && e.end > stack[stack.length - 1].end) { crossing.push(e); return; }
      emit(e.start);
      var label = e.label === null ? "(untyped)" : e.label;
      var m = el("mark", "ent");
      m.setAttribute("data-start", e.start);
      m.setAttribute("data-end", e.end);
      m.setAttribute("data-label", label);
      m.style.setProperty("--c", hue(label));
      if (state.label && state.label !== label) m.classList.add("dim");
      m.title = label + (e.archetype ? " \u00b7 archetype " + e.archetype : "") +
        ((e.sources || []).length ? " \u00b7 from " + e.sources.join(" + ") : "") +
        " \u00b7 [" + e.start + ", " + e.end + ")";
      container().appendChild(m);
      stack.push({ node: m, end: e.end });
    });
    while (stack.length) close();
    emit(cps.length);
    return { node: root, crossing: crossing };
  }
  function table(head, rows) {
    var t = el("table"), tr = el("tr");
    head.forEach(function (h) { tr.appendChild(el("th", null, h)); });
    t.appendChild(tr);
    rows.forEach(function (row) {
      var r = el("tr");
      row.forEach(function (c) { r.appendChild(el("td", null, c)); });
      t.appendChild(r);
    });
    return t;
  }
  function arg(a) { return a.text + " [" + a.start + "," + a.end + ")" + (a.label ? " " + a.label : ""); }
  function section(title, body, open) {
    var d = el("details", "sec");
    if (open) d.open = true;
    d.appendChild(el("summary", null, title));
    d.appendChild(body);
    return d;
  }
  function renderRecord(r) {
    var box = el("article", "rec");
    box.setAttribute("data-id", r.id);
    box.appendChild(el("div", "id", r.id));
    var t = renderText(r);
    box.appendChild(t.node);
    if (r.error) box.appendChild(el("div", "err", "error: " + r.error));
    (r.sentence_errors || []).forEach(function (s) { box.appendChild(el("div", "err", "sentence error: " + s)); });
    if (t.crossing.length) {
      box.appendChild(section("overlapping entities not drawn (" + t.crossing.length + ")",
        table(["text", "label", "archetype", "span"], t.crossing.map(function (e) {
          return [e.text, e.label, e.archetype || "", "[" + e.start + ", " + e.end + ")"]; })), true));
    }
    var trips = r.triplets || [];
    if (trips.length) {
      box.appendChild(section("triplets (" + trips.length + ")", table(["head", "relation", "tail", "from"],
        trips.map(function (x) { return [arg(x.head), x.relation, arg(x.tail), (x.sources || []).join(" + ")]; })), true));
    }
    var dropped = r.dropped_triplets || [];
    if (dropped.length) {
      box.appendChild(section("removed by the anchor filter (" + dropped.length + ")",
        table(["head", "relation", "tail", "reason"], dropped.map(function (x) {
          return [arg(x.head), x.relation, arg(x.tail), x.reason]; })), state.kind === "anchor_filter:dropped"));
    }
    var noise = r.noise || [];
    if (noise.length) {
      box.appendChild(section("dropped by CCR (" + noise.length + ")", table(["mention", "reason"],
        noise.map(function (n) { return [n.mention, n.reason]; })), state.kind === "ccr:dropped"));
    }
    var review = r.review || [];
    if (review.length) {
      box.appendChild(section("review (" + review.length + ")", table(["kind", "text", "label", "reason", "detail"],
        review.map(function (v) { return [v.kind, v.text, v.label || "", v.reason, v.detail]; })), true));
    }
    var diags = r.diagnostics || [];
    if (diags.length) {
      var list = el("div");
      diags.forEach(function (d) {
        var row = el("div");
        row.appendChild(el("span", "tag kind-" + d.kind, d.kind));
        row.appendChild(el("span", "tag", d.stage));
        row.appendChild(el("span", null, d.message));
        if (d.raw) row.appendChild(el("pre", "raw", d.raw));
        list.appendChild(row);
      });
      var kinds = {};
      diags.forEach(function (d) { kinds[d.kind] = (kinds[d.kind] || 0) + 1; });
      var what = Object.keys(kinds).sort().map(function (k) { return k + " " + kinds[k]; }).join(", ");
      box.appendChild(section("diagnostics (" + diags.length + "): " + what, list,
        state.kind !== "" && state.kind.indexOf(":") < 0 && state.kind !== "error"));
    }
    var usage = r.usage || {}, stages = Object.keys(usage);
    if (stages.length) {
      box.appendChild(section("usage", table(["stage", "calls", "prompt tokens", "completion tokens", "latency (s)"],
        stages.map(function (s) { var u = usage[s];
          return [s, u.calls, u.prompt_tokens, u.completion_tokens, Number(u.latency_s).toFixed(3)]; })), false));
    }
    return box;
  }
  function renderSummary() {
    var totals = {};
    records.forEach(function (r) {
      var usage = r.usage || {};
      Object.keys(usage).forEach(function (s) {
        var t = totals[s] || (totals[s] = { calls: 0, p: 0, c: 0, l: 0 }), u = usage[s];
        t.calls += u.calls; t.p += u.prompt_tokens; t.c += u.completion_tokens; t.l += u.latency_s;
      });
    });
    var box = $("summary");
    box.textContent = "";
    var stages = Object.keys(totals);
    if (stages.length) {
      box.appendChild(section("usage per stage, all " + records.length + " records",
        table(["stage", "calls", "prompt tokens", "completion tokens", "latency (s)"],
          stages.map(function (s) { var t = totals[s]; return [s, t.calls, t.p, t.c, t.l.toFixed(3)]; })), false));
    }
  }
  function applyFilters() {
    var q = state.query.toLowerCase();
    shown = records.filter(function (r) {
      return (!state.label || r._labels[state.label]) && (!state.kind || r._kinds[state.kind]) &&
        (!q || r._search.indexOf(q) >= 0);
    });
    state.page = 0;
    render();
  }
  function render() {
    var pages = Math.max(1, Math.ceil(shown.length / state.size));
    state.page = Math.min(state.page, pages - 1);
    var list = $("records");
    list.textContent = "";
    var start = state.page * state.size;
    var frag = document.createDocumentFragment();
    shown.slice(start, start + state.size).forEach(function (r) { frag.appendChild(renderRecord(r)); });
    list.appendChild(frag);
    if (!shown.length) list.appendChild(el("div", "empty", "no record matches the filters"));
    $("count").textContent = shown.length + " of " + records.length + " records";
    $("page").textContent = "page " + (state.page + 1) + " / " + pages;
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
    document.body.setAttribute("data-rendered", String(Date.now()));
  }
  $("f-label").addEventListener("change", function (ev) { state.label = ev.target.value; applyFilters(); });
  $("f-kind").addEventListener("change", function (ev) { state.kind = ev.target.value; applyFilters(); });
  var timer = null;
  $("f-text").addEventListener("input", function (ev) {
    clearTimeout(timer);
    timer = setTimeout(function () { state.query = ev.target.value; applyFilters(); }, 150);
  });
  $("f-size").addEventListener("change", function (ev) { state.size = Number(ev.target.value); state.page = 0; render(); });
  $("prev").addEventListener("click", function () { state.page -= 1; render(); window.scrollTo(0, 0); });
  $("next").addEventListener("click", function () { state.page += 1; render(); window.scrollTo(0, 0); });
  renderSummary();
  render();
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>@@TITLE@@</title><style>@@CSS@@</style></head>
<body>
<header><h1>@@TITLE@@</h1>
<div class="controls">
<label for="f-label">label</label><select id="f-label"></select>
<label for="f-kind">diagnostic</label><select id="f-kind"></select>
<label for="f-text">text</label><input id="f-text" type="search" placeholder="search text or id">
<label for="f-size">per page</label><select id="f-size"><option>10</option><option selected>25</option><option>50</option><option>100</option></select>
<span class="count" id="count"></span>
</div></header>
<main><div class="summary" id="summary"></div>
<div id="records"></div>
<div class="pager"><button id="prev" type="button">&larr; previous</button><span id="page"></span><button id="next" type="button">next &rarr;</button></div>
</main>
<script type="application/json" id="samalign-data">@@DATA@@</script>
<script>@@JS@@</script>
</body></html>
"""


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
    head, tail = _PAGE.split("@@DATA@@")
    head = head.replace("@@TITLE@@", html.escape(title)).replace("@@CSS@@", _CSS)
    return head + script_json(payload) + tail.replace("@@JS@@", _JS)


__all__ = ["MAX_RAW_CHARS", "render_page", "script_json"]
