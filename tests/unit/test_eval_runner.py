"""`samalign eval`: report layout, markdown, chart, resume, errors, sweeps, diffs and cost."""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage

from samalign.cli import main
from samalign.errors import BackendError, ConfigError
from samalign.evaluation import chart
from samalign.evaluation.analysis import diff_sentence
from samalign.evaluation.backends import EvalBackend, gold_backend
from samalign.evaluation.chart import chart_title
from samalign.evaluation.cost import Percentiles, summarize_cost
from samalign.evaluation.datasets import Dataset, load_dataset
from samalign.evaluation.gold import GoldOracle, oracle_stage_models
from samalign.evaluation.report import EvalReport, report_paths, write_report
from samalign.evaluation.results import PredEntity, PredTriplet, SentenceResult
from samalign.evaluation.runner import aevaluate, check_labels
from samalign.evaluation.sentences import GoldTriplet, Sentence, make_entity, token_offsets
from samalign.graphs import PipelineOptions, RunContext, build_joint_graph
from samalign.prompts import load_domain
from samalign.testing.fakes import fake_stage_models
from samalign.types import StageUsage


def run_cli(*args: str) -> int:
    return main(["eval", *args, "--quiet"])


@pytest.fixture
def data_args(shared_data: Path) -> tuple[str, ...]:
    return ("--data-dir", str(shared_data))


def test_one_command_writes_report_markdown_chart_and_results(
    tmp_path: Path, data_args: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs" / "ai.json"
    args = ("crossner_ai", "--split", "dev", "--backend", "gold", "--limit", "25")
    assert run_cli(*args, "--out", str(out), *data_args) == 0
    paths = report_paths(out)
    for kind in ("json", "md", "png", "jsonl"):
        assert paths[kind].is_file(), kind
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(out.read_text())
    assert report["format"] == "samalign-eval-report"
    assert report["sentences"] == 25 and report["errors"] == 0
    for protocol in ("span", "string", "boundary", "candidates"):
        assert set(report["entity"][protocol]) >= {
            "precision",
            "recall",
            "f1",
            "tp",
            "pred",
            "gold",
        }
    assert report["entity"]["span"]["per_label"]["algorithm"]["f1"] == 1.0
    assert report["entity"]["without_misc"]["span"]["gold"] < report["entity"]["span"]["gold"]
    assert report["relation"] is None
    assert report["run"]["options"]["use_consensus"] is True
    cost = report["cost"]
    assert set(cost["stages"]) >= {"anchor", "explorer", "consensus", "archetype", "calibrate"}
    assert cost["stages"]["anchor"]["calls"] == 25
    assert set(cost["stages"]["anchor"]["latency_s"]) == {
        "total",
        "mean",
        "p50",
        "p90",
        "p99",
        "max",
    }
    assert cost["sentences_per_s"] > 0 and cost["wall_time_s"] > 0
    assert set(report["diagnostics"]) == {"by_kind", "by_stage"}
    assert set(report["mismatches"]) == {"sentences", "reasons", "items"}
    markdown = paths["md"].read_text()
    assert "## Scores (%)" in markdown and "| algorithm |" in markdown and "## Cost" in markdown
    assert "entity span F1" in capsys.readouterr().out
    lines = paths["jsonl"].read_text().splitlines()
    assert "config" in json.loads(lines[0])
    ids = {json.loads(line)["id"] for line in lines[1:] if "id" in json.loads(line)}
    assert len(ids) == 25


def test_interrupted_run_resumes_from_partial_results(
    tmp_path: Path, data_args: tuple[str, ...]
) -> None:
    out = tmp_path / "music.json"
    args = ("crossner_music", "--split", "dev", "--backend", "gold", "--limit", "20")
    args += ("--out", str(out), *data_args)
    assert run_cli(*args) == 0
    first = json.loads(out.read_text())
    results = report_paths(out)["jsonl"]
    lines = results.read_text().splitlines(keepends=True)
    # keep the config line and 6 results, then half a line (an interrupted write)
    results.write_text("".join(lines[:7]) + lines[7][: len(lines[7]) // 2])
    assert run_cli(*args) == 0
    again = json.loads(out.read_text())
    assert again["entity"] == first["entity"]
    assert again["sentences"] == 20
    records = [json.loads(line) for line in results.read_text().splitlines()]
    # the killed session never wrote its session line; the resumed one ran the 14 missing
    assert [r["session"]["sentences"] for r in records if "session" in r] == [14]
    assert again["cost"]["sessions"] == 1
    assert len({r["id"] for r in records if "id" in r}) == 20
    # a larger --limit extends the run; another configuration is refused, --fresh starts over
    longer = tuple("25" if a == "20" else a for a in args)
    assert run_cli(*longer) == 0
    assert json.loads(out.read_text())["sentences"] == 25
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["session"]["sentences"] for r in records if "session" in r] == [14, 5]
    assert run_cli(*args, "--no-consensus") == 2
    assert run_cli(*args, "--no-consensus", "--fresh") == 0
    assert json.loads(out.read_text())["run"]["options"]["use_consensus"] is False


def test_sweep_writes_one_report_per_ablation(tmp_path: Path, data_args: tuple[str, ...]) -> None:
    out = tmp_path / "sweep.json"
    args = ("conll04", "--graph", "joint", "--backend", "simulated", "--limit", "12", "--sweep")
    assert run_cli(*args, "--out", str(out), *data_args) == 0
    report = json.loads(out.read_text())
    assert list(report["ablations"]) == [
        "full",
        "no_anchor",
        "no_explorer",
        "no_consensus",
        "no_calibration",
        "no_aggregation",
        "no_constraint",
        "no_aggregation_no_constraint",
    ]
    for name, summary in report["ablations"].items():
        assert Path(summary["report"]).is_file(), name
        assert summary["relation_strict"] is not None
    assert report["ablations"]["no_aggregation"]["options"]["aggregate_relations"] is False
    assert report["run"]["options"]["relation_arguments"] == "all"  # conll04's convention
    assert report["relation"]["strict"]["gold"] > 0
    assert (tmp_path / "sweep.png").is_file()
    assert "## Ablations (%)" in (tmp_path / "sweep.md").read_text()
    title = chart_title(EvalReport.model_validate(report))
    assert title == "conll04 test — joint graph, simulated backend, ablations"


def test_relation_schedule_flag(tmp_path: Path, data_args: tuple[str, ...]) -> None:
    args = ("conll04", "--graph", "joint", "--backend", "simulated", "--limit", "12")
    reports = {}
    for schedule in ("needed", "parallel"):
        out = tmp_path / f"{schedule}.json"
        assert run_cli(*args, "--relation-schedule", schedule, "--out", str(out), *data_args) == 0
        reports[schedule] = json.loads(out.read_text())
        assert reports[schedule]["run"]["options"]["relation_schedule"] == schedule
    assert reports["needed"]["relation"] == reports["parallel"]["relation"]  # the same triplets


def test_exclude_label(tmp_path: Path, data_args: tuple[str, ...]) -> None:
    out = tmp_path / "r.json"
    args = ("crossner_ai", "--split", "dev", "--backend", "gold", "--limit", "10")
    assert run_cli(*args, "--exclude-label", "misc", "--out", str(out), *data_args) == 0
    report = json.loads(out.read_text())
    assert "misc" not in report["entity"]["span"]["per_label"]
    assert report["entity"]["excluded_labels"] == ["misc"]
    assert report["entity"]["without_misc"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("crossner_ai",), "choose a backend"),
        (("crossner_ai", "--backend", "server"), "needs --server"),
        (("crossner_ai", "--backend", "gold", "--server", "http://x:9"), "only for the server"),
        (("crossner_ai", "--backend", "simulated", "--noise", "typo=0.1"), "unknown rate 'typo'"),
        (("crossner_ai", "--backend", "simulated", "--noise", "anchor_miss=2"), "--noise"),
        (("crossner_ai", "--backend", "gold", "--no-constraint"), "options of --graph joint"),
        (("crossner_ai", "--backend", "gold", "--relation-schedule", "always"), "--graph joint"),
        (("crossner_ai", "--backend", "gold", "--graph", "joint"), "no relation annotations"),
        (("crossner_ai", "--backend", "gold", "--domain", "crossner_music"), "not labels of"),
        (("no_such_data", "--backend", "gold"), "unknown dataset"),
        (("crossner_ai", "--backend", "gold", "--split", "validation"), "no split 'validation'"),
    ],
)  # fmt: skip
def test_bad_arguments_are_clear_errors(
    tmp_path: Path,
    data_args: tuple[str, ...],
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    message: str,
) -> None:
    assert run_cli(*args, "--out", str(tmp_path / "x.json"), *data_args) == 2
    assert message in capsys.readouterr().err


def test_unreachable_server_fails_before_running(
    tmp_path: Path,
    data_args: tuple[str, ...],
    capsys: pytest.CaptureFixture[str],
    network_guard: Any,
) -> None:
    network_guard.refuse("127.0.0.1", 9)
    args = ("crossner_ai", "--server", "http://127.0.0.1:9", "--out", str(tmp_path / "x.json"))
    assert run_cli(*args, *data_args) == 2
    assert "cannot reach the model server" in capsys.readouterr().err


def test_check_labels_for_relations(shared_data: Path) -> None:
    dataset = load_dataset("conll04", "test", data_dir_path=shared_data)
    check_labels(dataset.sentences, load_domain("conll04"), relations=True)
    no_relations = load_domain("conll04").model_copy(update={"relation_types": ()})
    with pytest.raises(ConfigError, match="gold relation labels"):
        check_labels(dataset.sentences, no_relations, relations=True)


# ------------------------------------------------------------------------------ failures


async def test_failed_sentences_are_counted_and_explained(shared_data: Path) -> None:
    full = load_dataset("crossner_ai", "dev", data_dir_path=shared_data)
    dataset = Dataset("crossner_ai", "dev", full.path, full.sentences[:8], False, "crossner_ai")
    domain = load_domain("crossner_ai")
    oracle = GoldOracle(dataset.sentences, domain)
    good = oracle_stage_models(oracle)
    broken_texts = {dataset.sentences[2].text, dataset.sentences[5].text}

    def explode(messages: Sequence[BaseMessage]) -> str:
        raise BackendError("server went away")

    broken = fake_stage_models({stage: explode for stage in good})

    def context_for(sentence: Sentence) -> RunContext:
        return RunContext(domain, broken if sentence.text in broken_texts else good)

    report = await aevaluate(dataset, domain, EvalBackend("custom", context_for))
    assert report.sentences == 8 and report.errors == 2
    failed = {d.id: d for d in report.mismatches.items if d.error}
    assert set(failed) == {dataset.sentences[2].id, dataset.sentences[5].id}
    for diff in failed.values():
        assert "server went away" in (diff.error or "")
        assert {m.reason for m in diff.missed} <= {"error"}
    assert report.entity.span.recall < 1.0  # a failed sentence's gold counts as missed


# ------------------------------------------------------------------------------ diffs


def words(text: str) -> list[str]:
    return text.split()


def _sentence(tokens: list[str], entities: list[tuple[int, int, str]]) -> Sentence:
    text = " ".join(tokens)
    offsets = token_offsets(tokens)
    return Sentence(
        id="x",
        tokens=tuple(tokens),
        text=text,
        entities=tuple(make_entity(text, offsets, s, e, lab) for s, e, lab in entities),
    )


def _pred(sentence: Sentence, start: int, end: int, label: str | None) -> PredEntity:
    offsets = token_offsets(sentence.tokens)
    return PredEntity(
        start=offsets[start][0],
        end=offsets[end - 1][1],
        text=" ".join(sentence.tokens[start:end]),
        label=label,
        tokens=(start, end),
    )


def test_diff_reasons() -> None:
    s = _sentence(
        words("Ada met Bob in Paris and Paris Hilton at ACME Corp today"),
        [(0, 1, "person"), (2, 3, "person"), (4, 5, "location"), (6, 8, "person"), (9, 11, "org")],
    )
    unaligned = PredEntity(start=0, end=2, text="Ad", label="person", tokens=None)
    result = SentenceResult(
        id="x",
        entities=[
            _pred(s, 0, 1, "person"),  # right
            _pred(s, 2, 3, "org"),  # wrong label
            _pred(s, 6, 7, "location"),  # unannotated occurrence of "Paris"
            _pred(s, 10, 11, "org"),  # boundary ("Corp" inside "ACME Corp")
            _pred(s, 11, 12, "date"),  # not gold
            unaligned,
        ],
        candidates=[_pred(s, 4, 5, None)],
        noise=["Paris"],
    )
    diff = diff_sentence(s, result)
    assert diff is not None
    missed = {d.text: d.reason for d in diff.missed}
    spurious = {d.text: d.reason for d in diff.spurious}
    assert missed == {
        "Bob": "wrong_label",
        "Paris": "dropped_by_ccr",
        "Paris Hilton": "unannotated_occurrence",
        "ACME Corp": "boundary",
    }
    assert spurious == {
        "Bob": "wrong_label",
        "Paris": "unannotated_occurrence",
        "Corp": "boundary",
        "today": "not_gold",
        "Ad": "unaligned",
    }
    perfect = [_pred(s, e.token_start, e.token_end, e.label) for e in s.entities]
    assert diff_sentence(s, SentenceResult(id="x", entities=perfect)) is None


def test_triplet_diff_reasons() -> None:
    s = _sentence(
        words("John works for IBM in Armonk and John left"),
        [(0, 1, "Peop"), (3, 4, "Org"), (5, 6, "Loc"), (7, 8, "Peop")],
    )
    john, ibm, armonk, _ = s.entities
    s = s.model_copy(
        update={
            "triplets": (
                GoldTriplet(head=john, relation="Work_For", tail=ibm),
                GoldTriplet(head=ibm, relation="OrgBased_In", tail=armonk),
                GoldTriplet(head=john, relation="Live_In", tail=armonk),
            )
        }
    )
    ents = {
        e.text + str(e.token_start): _pred(s, e.token_start, e.token_end, e.label)
        for e in s.entities
    }

    def t(head: str, relation: str, tail: str) -> PredTriplet:
        return PredTriplet(head=ents[head], relation=relation, tail=ents[tail])

    result = SentenceResult(
        id="x",
        entities=list(ents.values()),
        triplets=[
            t("John7", "Work_For", "IBM3"),  # other occurrence of John
            t("Armonk5", "OrgBased_In", "IBM3"),  # reversed
            t("John0", "Work_For", "Armonk5"),  # wrong relation
        ],
    )
    diff = diff_sentence(s, result)
    assert diff is not None
    assert {(m.head, m.relation, m.reason) for m in diff.missed_triplets} == {
        ("John", "Work_For", "other_occurrence"),
        ("IBM", "OrgBased_In", "reversed"),
        ("John", "Live_In", "wrong_relation"),
    }
    assert {(m.head, m.relation, m.reason) for m in diff.spurious_triplets} == {
        ("John", "Work_For", "other_occurrence"),
        ("Armonk", "OrgBased_In", "reversed"),
        ("John", "Work_For", "wrong_relation"),
    }


# ------------------------------------------------------------------------------ cost, chart


def test_percentiles_and_cost() -> None:
    p = Percentiles.of([float(x) for x in range(1, 101)])
    assert (p.p50, p.p90, p.p99, p.max, p.total) == (50.0, 90.0, 99.0, 100.0, 5050.0)
    assert Percentiles.of([]).p99 == 0.0
    results = [
        SentenceResult(
            id=str(i),
            usage={
                "anchor": StageUsage(
                    calls=1, prompt_tokens=10, completion_tokens=2, latency_s=0.1 * i
                ),
                "consensus": StageUsage(),
            },
            latency_s=0.2 * i,
        )
        for i in range(1, 5)
    ]
    cost = summarize_cost(results, wall_time_s=2.0)
    assert cost.sentences_per_s == 2.0
    assert cost.stages["anchor"].calls == 4 and cost.stages["anchor"].prompt_tokens == 40
    assert cost.stages["anchor"].latency_s.max == pytest.approx(0.4)
    assert cost.stages["consensus"].latency_s.total == 0.0
    assert cost.per_sentence["calls"] == 1.0


@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import matplotlib`` fails, as without the ``eval`` extra (the skip not said yet)."""
    real_import = builtins.__import__

    def refuse(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    monkeypatch.setattr(chart, "_missing_said", False)


async def _few_sentences_report(shared_data: Path, name: str = "crossner_ai") -> EvalReport:
    full = load_dataset("crossner_ai", "dev", data_dir_path=shared_data)
    domain = load_domain("crossner_ai")
    builtin = name == "crossner_ai"
    dataset = Dataset(name, "dev", full.path, full.sentences[:3], False, name if builtin else None)
    return await aevaluate(dataset, domain, gold_backend(dataset.sentences, domain))


def test_report_without_matplotlib_still_writes_json_and_markdown(
    tmp_path: Path,
    shared_data: Path,
    no_matplotlib: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio

    report: EvalReport = asyncio.run(_few_sentences_report(shared_data))
    written = write_report(report, tmp_path / "r.json")
    assert set(written) == {"json", "md"}
    assert "matplotlib is not installed" in caplog.text
    assert "pip install 'samalign[eval]'" in caplog.text
    write_report(report, tmp_path / "again.json")
    assert caplog.text.count("matplotlib is not installed") == 1  # said once, not per chart


def test_eval_without_matplotlib_says_how_to_get_the_chart(
    tmp_path: Path,
    data_args: tuple[str, ...],
    no_matplotlib: None,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "runs" / "sweep.json"
    out.parent.mkdir()
    report_paths(out)["png"].write_bytes(b"an old chart")  # must not be listed as this run's
    args = ("crossner_ai", "--split", "dev", "--backend", "simulated", "--limit", "4", "--sweep")
    assert run_cli(*args, "--out", str(out), *data_args) == 0
    printed = capsys.readouterr()
    note = "samalign: chart skipped: matplotlib is not installed; pip install 'samalign[eval]'"
    assert printed.err.count(note) == 1  # one line for the whole sweep, not one per chart
    assert "matplotlib" not in caplog.text  # and not said twice
    assert f"report: {out} (+ sweep.md)" in printed.out
    paths = report_paths(out)
    assert paths["json"].is_file() and paths["md"].is_file()
    assert paths["png"].read_bytes() == b"an old chart"
    assert not (tmp_path / "runs" / "sweep.full.png").exists()
    assert (tmp_path / "runs" / "sweep.full.md").is_file()


async def test_chart_title_names_the_dataset_and_the_domain_once(shared_data: Path) -> None:
    builtin = await _few_sentences_report(shared_data)
    assert chart_title(builtin) == "crossner_ai dev — ner graph, gold backend"
    mine = await _few_sentences_report(shared_data, name="ai")  # a path: its own name
    assert chart_title(mine) == "ai dev, domain crossner_ai — ner graph, gold backend"


def test_relation_arguments_all_links_every_occurrence(fake_ner: Any) -> None:
    text = "IBM hired John Smith . Later , John Smith moved to Boston ."
    gold = fake_ner.gold_of("conll04", Org=["IBM"], Peop=["John Smith"], Loc=["Boston"])
    ner = fake_ner(anchor={text: list(gold)}, explorer={text: list(gold)}, gold=gold)
    scripts = ner.scripts_by_stage()
    scripts["relations_forward"] = json.dumps(
        [{"subject": "John Smith", "pairs": [{"object": "Boston", "relation": "live in"}]}]
    )
    scripts["relations_reverse"] = "[]"
    context = RunContext(domain=load_domain("conll04"), models=fake_stage_models(scripts))
    closest = build_joint_graph().invoke({"text": text}, context=context)
    every = build_joint_graph(PipelineOptions(relation_arguments="all")).invoke(
        {"text": text}, context=context
    )
    assert [t.head.start for t in closest["triplets"]] == [text.rindex("John Smith")]
    assert sorted(t.head.start for t in every["triplets"]) == [
        text.index("John Smith"),
        text.rindex("John Smith"),
    ]
