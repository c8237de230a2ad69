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
