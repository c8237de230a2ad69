"""The review page: records from every kind of result, escaping, the CLI, eval's link to it."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from support import JOHN_SMITH_RELATIONS

import samalign
from samalign.batch.records import OutputRecord
from samalign.cli import main
from samalign.errors import InputError
from samalign.evaluation.report import report_paths
from samalign.graphs import RunContext, build_joint_graph
from samalign.prompts import load_domain
from samalign.testing.fakes import fake_stage_models
from samalign.view import View, ViewRecord, read_view_records, records_of, render_page
from samalign.view.page import script_json

TEXT = "John Smith 😀 works for IBM in Armonk . <script>window.__pwned=1</script>"

SCRIPTS = {
    "anchor": '{"person": ["John Smith"], "organization": ["IBM"]}',
    "explorer": '{"person": ["John Smith"], "organization": ["IBM", "Armonk", "Mars"]}',
    "archetype": '{"Person": ["John Smith"], "Organization": ["IBM"]}',
    "calibrate": '{"John Smith": "person", "IBM": "organization"}',
    "relations_forward": JOHN_SMITH_RELATIONS,
    "relations_reverse": "[]",
}


def joint_result(text: str = TEXT) -> dict[str, Any]:
    context = RunContext(domain=load_domain("conll04"), models=fake_stage_models(SCRIPTS))
    result: dict[str, Any] = build_joint_graph().invoke({"text": text}, context=context)
    return result


def page_data(page: str) -> dict[str, Any]:
    match = re.search(
        r'<script type="application/json" id="samalign-data">(.*?)</script>', page, re.DOTALL
    )
    assert match is not None
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def test_graph_result_becomes_a_record_with_every_section() -> None:
    result = joint_result()
    [record] = records_of(result)
    assert record.text == TEXT
    assert [(e.text, e.label) for e in record.entities] == [("John Smith", "Peop"), ("IBM", "Org")]
    for e in record.entities:  # code-point offsets, past the emoji
        assert TEXT[e.start : e.end] == e.text
    assert [(t.head.text, t.relation, t.tail.text) for t in record.triplets] == [
        ("John Smith", "Work_For", "IBM")
    ]
    assert [d.tail.text for d in record.dropped_triplets] == ["Armonk"]
    assert "Armonk" in record.dropped_triplets[0].reason
    assert [n.mention for n in record.noise] == ["Armonk"]
    assert "hallucination" in {d.kind for d in record.diagnostics}
    assert record.usage["anchor"].calls == 1


def test_server_json_and_output_records_give_the_same_record() -> None:
    result = joint_result()
    typed = records_of(result)[0]
    dumped = {
        k: v for k, v in typed.model_dump(mode="json").items() if k not in ("review", "noise")
    }
    # what a LangGraph server answers: the state with every model as a plain dict
    from pydantic import TypeAdapter

    server_state = TypeAdapter(dict[str, Any]).dump_python(result, mode="json")
    assert isinstance(server_state["entities"][0], dict)
    assert records_of(server_state)[0].model_dump(mode="json")["entities"] == dumped["entities"]
    output = OutputRecord.model_validate(dumped)
    # an output line has no CCR noise: the rest is the same
    assert records_of([output])[0].model_dump(mode="json", exclude={"review", "noise"}) == dumped


def test_records_get_numbered_ids_and_bad_values_are_refused() -> None:
    records = records_of([joint_result(), joint_result("IBM hired John Smith .")])
    assert [r.id for r in records] == ["0", "1"]
    with pytest.raises(InputError, match="cannot show"):
        records_of(42)
    with pytest.raises(InputError, match="cannot show"):
        records_of(["not a result"])


def test_a_span_off_its_text_is_refused() -> None:
    result = joint_result()
    bad = {**result, "text": "x" + result["text"]}
    with pytest.raises(InputError, match="does not match"):
        records_of(bad)


def test_script_json_cannot_close_the_script_element() -> None:
    value = {"t": "</script><script>alert(1)</script> & \u2028 <!--"}
    text = script_json(value)
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == value


def test_page_is_self_contained_and_holds_the_records_as_data() -> None:
    page = render_page(records_of(joint_result()), title="<b>t</b>")
    assert "<title>&lt;b&gt;t&lt;/b&gt;</title>" in page
    # only the page's own two script elements; the record's <script> is data
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page), "no network resource"
    assert "default-src 'none'" in page
    data = page_data(page)
    assert data["records"][0]["text"] == TEXT


def test_view_repr_html_is_an_escaped_sandboxed_iframe(tmp_path: Path) -> None:
    view = samalign.visualize(joint_result())
    assert isinstance(view, View) and len(view.records) == 1
    inline = view._repr_html_()
    assert inline.startswith("<iframe srcdoc=") and 'sandbox="allow-scripts"' in inline
    srcdoc = inline.split('srcdoc="', 1)[1].split('" sandbox', 1)[0]
    assert "<" not in srcdoc and html.unescape(srcdoc) == view.html
    path = view.save(tmp_path / "sub" / "v.html")
    assert path.read_text(encoding="utf-8") == view.html


def test_raw_model_text_is_bounded_on_the_page() -> None:
    record = records_of(joint_result())[0]
    long_raw = record.diagnostics[0].model_copy(update={"raw": "x" * 10_000})
    record = record.model_copy(update={"diagnostics": [long_raw]})
    data = page_data(render_page([record]))
    assert len(data["records"][0]["diagnostics"][0]["raw"]) < 2100
    data = page_data(render_page([record], keep_raw=False))
    assert data["records"][0]["diagnostics"][0]["raw"] is None


def write_extract_output(path: Path, results: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for i, record in enumerate(records_of(results)):
            out = OutputRecord(**{**dict(record), "id": f"r{i}"})
            handle.write(out.model_dump_json() + "\n")


def test_cli_view_writes_the_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "out.jsonl"
    write_extract_output(src, [joint_result(), joint_result("IBM hired John Smith .")])
    assert main(["view", str(src), "-o", str(tmp_path / "v.html"), "--title", "mine"]) == 0
    data = page_data((tmp_path / "v.html").read_text(encoding="utf-8"))
    assert [r["id"] for r in data["records"]] == ["r0", "r1"]
    assert "wrote" in capsys.readouterr().err
    assert main(["view", str(src)]) == 0  # default: beside the input
    assert (tmp_path / "out.html").is_file()


def test_view_reads_without_repairing_the_file(tmp_path: Path) -> None:
    src = tmp_path / "out.jsonl"
    write_extract_output(src, [joint_result()])
    with open(src, "a", encoding="utf-8") as handle:
        handle.write('{"id": "partial", "te')  # an extraction still writing
    before = src.read_bytes()
    assert [r.id for r in read_view_records(src)] == ["r0"]
    assert src.read_bytes() == before


def test_cli_view_errors_name_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["view", str(tmp_path / "missing.jsonl")]) == 2
    assert "not found" in capsys.readouterr().err
    results = tmp_path / "r.sentences.jsonl"
    results.write_text('{"config": {}}\n{"id": "s1", "entities": []}\n')
    assert main(["view", str(results)]) == 2
    assert ".view.html" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    assert main(["view", str(bad)]) == 2
    assert "line 1" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["view", str(empty)]) == 2
    assert "no record" in capsys.readouterr().err


def test_eval_report_links_to_the_review_page_of_its_mismatches(
    tmp_path: Path, shared_data: Path
) -> None:
    out = tmp_path / "sim.json"
    args = ["crossner_ai", "--split", "dev", "--backend", "simulated", "--limit", "20"]
    assert main(["eval", *args, "--out", str(out), "--data-dir", str(shared_data), "--quiet"]) == 0
    paths = report_paths(out)
    report = json.loads(out.read_text())
    assert report["mismatches"]["sentences"] > 0
    markdown = paths["md"].read_text()
    assert f"[{paths['view'].name}]({paths['view'].name})" in markdown
    data = page_data(paths["view"].read_text(encoding="utf-8"))
    ids = [item["id"] for item in report["mismatches"]["items"]]
    assert [r["id"] for r in data["records"]] == ids
    for record, item in zip(data["records"], report["mismatches"]["items"], strict=True):
        kinds = [v["kind"] for v in record["review"]]
        assert kinds.count("missed") == len(item["missed"])
        assert kinds.count("spurious") == len(item["spurious"])
        for e in record["entities"]:
            assert record["text"][e["start"] : e["end"]] == e["text"]


def test_sweep_report_links_to_the_full_variants_page(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "sweep.json"
    args = ["crossner_ai", "--split", "dev", "--backend", "simulated", "--limit", "8", "--sweep"]
    assert main(["eval", *args, "--out", str(out), "--data-dir", str(shared_data), "--quiet"]) == 0
    markdown = report_paths(out)["md"].read_text()
    assert "(sweep.full.view.html)" in markdown
    assert (tmp_path / "sweep.full.view.html").is_file()


def test_view_record_keeps_review_notes() -> None:
    record = ViewRecord(id="a", text="IBM", review=[{"kind": "missed", "text": "IBM"}])  # type: ignore[list-item]
    assert records_of([record])[0].review[0].kind == "missed"
