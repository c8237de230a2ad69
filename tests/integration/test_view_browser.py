"""The review page in a real headless Chromium (Debian's package, driven by Playwright).

Checks: no console error, every highlight sits exactly on ``text[start:end]`` (measured in the
DOM, by code point), record text is never run as HTML, the filters and the pager work, ten
thousand records build and stay responsive; a screenshot goes to the artifacts folder
(``$SAMALIGN_ARTIFACTS``, default ``runs/artifacts``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import JOHN_SMITH_RELATIONS

from samalign.graphs import RunContext, build_joint_graph
from samalign.prompts import load_domain
from samalign.testing.fakes import fake_stage_models
from samalign.types import Diagnostic, NoiseRecord, StageUsage
from samalign.view import ViewRecord, records_of, render_page

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("SAMALIGN_ARTIFACTS") or REPO / "runs" / "artifacts")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOSTILE = 'Evil <script>window.__pwned = 1</script> <img src=x onerror="window.__pwned=2"> Inc'


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "Chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    executable = chromium()
    with playwright_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1200, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


class Page:
    """A page with its console errors and the network requests it tried."""

    def __init__(self, context: Any, path: Path) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        start = time.perf_counter()
        self.page.goto(path.as_uri())
        self.page.wait_for_selector("body[data-rendered]", timeout=60_000)
        self.load_s = time.perf_counter() - start

    def count(self) -> str:
        text: str = self.page.text_content("#count") or ""
        return text

    def select(self, selector: str, value: str) -> float:
        """Choose an option and return the seconds the page took to re-render (in the page)."""
        seconds: float = self.page.evaluate(
            """([selector, value]) => {
                const s = document.querySelector(selector);
                const t0 = performance.now();
                s.value = value;
                s.dispatchEvent(new Event("change"));
                return (performance.now() - t0) / 1000;
            }""",
            [selector, value],
        )
        return seconds

    def marks(self) -> list[dict[str, Any]]:
        """Each drawn highlight: its record, offsets, where it sits in the text, its text."""
        found: list[dict[str, Any]] = self.page.evaluate(
            """() => {
                const out = [];
                document.querySelectorAll("article.rec").forEach((rec) => {
                    const text = rec.querySelector(".text");
                    rec.querySelectorAll("mark.ent").forEach((m) => {
                        const range = document.createRange();
                        range.setStart(text, 0);
                        range.setEndBefore(m);
                        out.push({
                            id: rec.dataset.id,
                            start: Number(m.dataset.start),
                            end: Number(m.dataset.end),
                            label: m.dataset.label,
                            at: Array.from(range.toString()).length,
                            text: m.textContent,
                        });
                    });
                });
                return out;
            }"""
        )
        return found

    def shown_ids(self) -> list[str]:
        ids: list[str] = self.page.eval_on_selector_all(
            "article.rec", "els => els.map(e => e.dataset.id)"
        )
        return ids


def sample_records() -> list[ViewRecord]:
    """Real graph results (fake models) plus hand-made records for the hard cases."""
    scripts = {
        "anchor": '{"person": ["John Smith", "Zoë Ångström"], "organization": ["IBM"]}',
        "explorer": (
            '{"person": ["John Smith", "Zoë Ångström"], "organization": ["IBM", "Armonk", '
            '"Mars Corp"]}'
        ),
        "archetype": '{"Person": ["John Smith", "Zoë Ångström"], "Organization": ["IBM"]}',
        "calibrate": '{"John Smith": "person", "Zoë Ångström": "person", "IBM": "organization"}',
        "relations_forward": JOHN_SMITH_RELATIONS,
        "relations_reverse": "[]",
    }
    context = RunContext(domain=load_domain("conll04"), models=fake_stage_models(scripts))
    texts = [
        "John Smith 😀 works for IBM in Armonk .",
        "Zoë Ångström 🇸🇪 met John Smith of IBM near Armonk 東京 .",
        f"John Smith left IBM for {HOSTILE} .",
    ]
    results = build_joint_graph().batch([{"text": t} for t in texts], context=context)
    records = [r.model_copy(update={"id": f"graph-{i}"}) for i, r in enumerate(records_of(results))]
    city = "New York City is big; New York is a state ."

    def ent(text: str, start: int, end: int, label: str) -> dict[str, Any]:
        return {
            "start": start,
            "end": end,
            "text": text[start:end],
            "label": label,
            "archetype": "Location",
            "sources": ["anchor"],
        }

    records.append(
        ViewRecord(
            id="nested",
            text=city,
            entities=[  # nested, and one crossing the other
                ent(city, 0, 13, "city"),
                ent(city, 0, 8, "state"),
                ent(city, 22, 30, "state"),
                ent(city, 9, 18, "<b>odd label</b>"),
            ],
            noise=[NoiseRecord(mention="big", reason="single-token explorer mention")],
            diagnostics=[
                Diagnostic(
                    stage="explorer",
                    kind="hallucination",
                    message="mentions not found in the text, dropped: ['</script>']",
                    raw='{"x": ["</script><script>window.__pwned=3</script>"]}',
                )
            ],
            usage={"anchor": StageUsage(calls=1, prompt_tokens=10, completion_tokens=3)},
        )
    )
    return records


def test_page_renders_highlights_exactly_and_filters_work(browser: Any, tmp_path: Path) -> None:
    records = sample_records()
    path = tmp_path / "view.html"
    path.write_text(render_page(records, title="review <test>"), encoding="utf-8")
    page = Page(browser, path)
    assert page.errors == []
    assert [u for u in page.requests if not u.startswith("file:")] == [], "no network"
    assert page.page.evaluate("window.__pwned") is None, "record text ran as code"
    assert page.page.title() == "review <test>"
    assert page.count() == f"{len(records)} of {len(records)} records"

    by_id = {r.id: r for r in records}
    marks = page.marks()
    drawn = {(m["id"], m["start"], m["end"]) for m in marks}
    for m in marks:  # exactly on text[start:end], at its offset (code points)
        text = by_id[m["id"]].text
        assert m["text"] == text[m["start"] : m["end"]]
        assert m["at"] == m["start"]
    for r in records:  # every entity is drawn, except one crossing another
        for e in r.entities:
            if (r.id, e.start, e.end) not in drawn:
                assert r.id == "nested" and e.label == "<b>odd label</b>"
    assert page.page.locator("article[data-id=nested] details > summary").first.text_content() == (
        "overlapping entities not drawn (1)"
    )
    hostile = page.page.locator("article[data-id=graph-2] .text").text_content()
    assert hostile is not None and HOSTILE in hostile
    assert page.page.locator("article img").count() == 0

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.page.screenshot(path=str(ARTIFACTS / "view.png"), full_page=True)
    assert (ARTIFACTS / "view.png").stat().st_size > 10_000

    # label filter: only records with an Org entity; other labels are dimmed
    with_org = [r.id for r in records if any(e.label == "Org" for e in r.entities)]
    page.select("#f-label", "Org")
    assert page.shown_ids() == with_org
    assert page.page.locator("mark.ent:not(.dim)[data-label=Org]").count() >= len(with_org)
    assert page.page.locator("mark.ent:not(.dim):not([data-label=Org])").count() == 0
    page.select("#f-label", "")
    # diagnostic-kind filters, including CCR noise and anchor-filter drops
    for kind, wanted in [
        (
            "hallucination",
            [r.id for r in records if any(d.kind == "hallucination" for d in r.diagnostics)],
        ),
        ("ccr:dropped", [r.id for r in records if r.noise]),
        ("anchor_filter:dropped", [r.id for r in records if r.dropped_triplets]),
    ]:
        page.select("#f-kind", kind)
        assert wanted and page.shown_ids() == wanted, kind
    page.select("#f-kind", "anchor_filter:dropped")
    assert page.page.locator("details[open] >> text=removed by the anchor filter").count() >= 1
    page.select("#f-kind", "")
    page.page.fill("#f-text", "ångström")
    page.page.locator("#count", has_text=f"1 of {len(records)} records").wait_for()
    assert page.shown_ids() == ["graph-1"]
    assert page.errors == []


def synthetic(n: int) -> list[ViewRecord]:
    labels = ["person", "organization", "location", "product", "event", "work"]
    kinds = ["hallucination", "truncated", "label_out_of_schema", "parse_error"]
    out = []
    for i in range(n):
        words = [f"w{i}", "Alice", "met", "Bob", "at", "Acme", "in", "Paris", "😀", "today", "."]
        text = " ".join(words)
        spans = [(text.index("Alice"), 5), (text.index("Acme"), 4), (text.index("Paris"), 5)]
        entities = [
            {
                "start": s,
                "end": s + n_,
                "text": text[s : s + n_],
                "label": labels[(i + k) % len(labels)],
                "archetype": "Person",
                "sources": ["anchor", "explorer"],
            }
            for k, (s, n_) in enumerate(spans)
        ]
        out.append(
            ViewRecord(
                id=f"r{i}",
                text=text,
                entities=entities,  # type: ignore[arg-type]
                noise=[NoiseRecord(mention="today", reason="uncorroborated")] if i % 3 == 0 else [],
                diagnostics=[
                    Diagnostic(stage="explorer", kind=kinds[i % len(kinds)], message="m", raw="r")  # type: ignore[arg-type]
                ]
                if i % 2 == 0
                else [],
                usage={"anchor": StageUsage(calls=1, prompt_tokens=50, completion_tokens=9)},
            )
        )
    return out


def test_ten_thousand_records_build_fast_and_stay_responsive(browser: Any, tmp_path: Path) -> None:
    records = synthetic(10_000)
    start = time.perf_counter()
    page_html = render_page(records)
    build_s = time.perf_counter() - start
    path = tmp_path / "big.html"
    path.write_text(page_html, encoding="utf-8")
    page = Page(browser, path)
    filter_s = page.select("#f-label", "person")
    wanted = sum(any(e.label == "person" for e in r.entities) for r in records)
    assert page.count() == f"{wanted} of 10000 records"
    kind_s = page.select("#f-kind", "ccr:dropped")
    both = sum(any(e.label == "person" for e in r.entities) and bool(r.noise) for r in records)
    assert page.count() == f"{both} of 10000 records"
    next_s = page.page.evaluate(
        """() => { const t0 = performance.now(); document.getElementById("next").click();
                   return (performance.now() - t0) / 1000; }"""
    )
    assert page.page.text_content("#page") is not None
    assert "page 2 /" in (page.page.text_content("#page") or "")
    assert len(page.shown_ids()) == 25  # one page in the DOM, not ten thousand
    assert page.errors == []
    size_mb = path.stat().st_size / 1e6
    print(
        f"\n10k records: page {size_mb:.1f} MB built in {build_s:.2f} s; browser load "
        f"{page.load_s:.2f} s; label filter {filter_s * 1000:.0f} ms; kind filter "
        f"{kind_s * 1000:.0f} ms; next page {next_s * 1000:.0f} ms; load {os.getloadavg()}"
    )
    # generous bounds (2 shared cores): a broken page takes far longer, or never renders
    assert build_s < 30 and page.load_s < 30
    assert filter_s < 3 and kind_s < 3 and next_s < 3
