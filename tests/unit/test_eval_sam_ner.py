"""The SAM-NER authors' metric, the five-domain mean, and gold replay through the reference
profile on one CrossNER test split (the five splits: tests/integration/test_reference_replay.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from samalign.cli import main
from samalign.errors import ConfigError
from samalign.evaluation.analysis import GOLD_REPLAY_REASONS
from samalign.evaluation.backends import gold_backend
from samalign.evaluation.datasets import load_dataset
from samalign.evaluation.domains import combine_reports
from samalign.evaluation.metrics import sam_ner_pairs, string_pairs, string_prf
from samalign.evaluation.report import EvalReport
from samalign.evaluation.results import PredEntity, SentenceResult
from samalign.evaluation.runner import aevaluate
from samalign.evaluation.scoring import score_entities
from samalign.evaluation.sentences import Sentence, make_entity, token_offsets
from samalign.graphs import PipelineOptions
from samalign.prompts import load_domain


def test_sam_ner_pairs_strip_only_and_are_case_sensitive() -> None:
    pairs = [(" The Beatles ", "band "), ("The Beatles", "band"), ("the beatles", "band")]
    assert sam_ner_pairs(pairs) == {("The Beatles", "band"), ("the beatles", "band")}
    # UniNER: mentions normalised (case, articles), labels as they are
    assert string_pairs(pairs) == {("beatles", "band "), ("beatles", "band")}
    gold = [sam_ner_pairs([("The Beatles", "band"), ("Abbey Road", "album")])]
    pred = [sam_ner_pairs([("the Beatles", "band"), ("Abbey Road ", "album"), ("EMI", "misc")])]
    prf = string_prf(gold, pred)
    assert (prf.tp, prf.pred, prf.gold) == (1, 3, 2)
    assert prf.per_label["album"].f1 == 1.0 and prf.per_label["band"].f1 == 0.0


def _sentence(sid: str, tokens: list[str], entities: list[tuple[int, int, str]]) -> Sentence:
    text = " ".join(tokens)
    offsets = token_offsets(tokens)
    ents = [make_entity(text, offsets, s, e, label) for s, e, label in entities]
    return Sentence(id=sid, tokens=tuple(tokens), text=text, entities=tuple(ents))


def test_report_scores_the_authors_protocol_next_to_span_and_string() -> None:
    tokens = ["the", "Beatles", "recorded", "Abbey", "Road", "at", "Abbey", "Road", "Studios"]
    s = _sentence("m-0", tokens, [(0, 2, "band"), (3, 5, "album")])

    def pred(start: int, end: int, text: str, label: str, tok: tuple[int, int]) -> PredEntity:
        return PredEntity(start=start, end=end, text=text, label=label, tokens=tok)

    result = SentenceResult(
        id="m-0",
        entities=[
            pred(4, 11, "Beatles", "band", (1, 2)),  # span wrong; UniNER drops the article
            pred(21, 31, "Abbey Road", "album", (3, 4)),  # span wrong (tokens), strings right
        ],
    )
    scores = score_entities([s], [result])
    assert scores.sam_ner.tp == 1 and scores.sam_ner.pred == 2  # "Beatles" ≠ "the Beatles"
    assert scores.string.tp == 2  # normalised: "beatles" == "beatles"
    assert scores.span.tp == 0


def _report(shared: Path, name: str, profile: str, limit: int | None = None) -> EvalReport:
    import asyncio

    dataset = load_dataset(name, "test", data_dir_path=shared)
    domain = load_domain(name)
    return asyncio.run(
        aevaluate(
            dataset,
            domain,
            gold_backend(dataset.sentences, domain, prompt_profile=profile),
            options=PipelineOptions(prompt_profile=profile),  # type: ignore[arg-type]
            limit=limit,
            concurrency=32,
        )
    )


def test_combine_reports_means_the_domains_f1(shared_data: Path) -> None:
    reports = {
        name: _report(shared_data, name, "reference", limit=12)
        for name in ("crossner_ai", "crossner_music")
    }
    table = combine_reports(reports)
    full = table.variants["full"]
    for protocol in ("sam_ner", "span", "string"):
        f1 = [getattr(r.entity, protocol).f1 for r in reports.values()]
        assert full.mean_f1[protocol] == pytest.approx(sum(f1) / 2)
    assert full.per_dataset["crossner_ai"]["sam_ner"].tp == reports["crossner_ai"].entity.sam_ner.tp
    other = _report(shared_data, "crossner_ai", "default", limit=3).model_copy(
        update={"run": reports["crossner_ai"].run.model_copy(update={"split": "dev"})}
    )
    with pytest.raises(ConfigError, match="different splits"):
        combine_reports({"a": reports["crossner_ai"], "b": other})


def test_cli_eval_crossner_runs_the_five_domains_and_their_mean(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "table1.json"
    argv = ["eval", "crossner", "--backend", "gold", "--prompt-profile", "reference"]
    argv += ["--data-dir", str(shared_data), "--limit", "6", "--quiet", "--out", str(out)]
    assert main([*argv, "--sweep"]) == 0
    printed = capsys.readouterr().out
    assert "mean F1 over the five domains: SAM-NER 100.00" in printed
    table = json.loads(out.read_text(encoding="utf-8"))
    assert table["format"] == "samalign-eval-domains"
    assert table["options"]["prompt_profile"] == "reference"
    names = [f"crossner_{d}" for d in ("ai", "literature", "music", "politics", "science")]
    assert table["datasets"] == names
    assert set(table["variants"]) == {
        "full",
        "no_anchor",
        "no_explorer",
        "no_consensus",
        "no_calibration",
    }
    for name in names:
        report = json.loads(Path(table["reports"][name]).read_text(encoding="utf-8"))
        assert report["run"]["backend_settings"]["prompt_profile"] == "reference"
        assert (
            report["entity"]["sam_ner"]["f1"]
            == table["variants"]["full"]["per_dataset"][name]["sam_ner"]["f1"]
        )
    markdown = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "| **mean** |" in markdown and "| no_calibration |" in markdown
    assert main([*argv, "--domain", "crossner_ai"]) != 0
    assert "drop --domain" in capsys.readouterr().err


async def test_gold_replay_through_the_reference_profile_one_split(shared_data: Path) -> None:
    """The five CrossNER test splits: tests/integration/test_reference_replay.py."""
    name = "crossner_politics"
    dataset = load_dataset(name, "test", data_dir_path=shared_data)
    domain = load_domain(name)
    report = await aevaluate(
        dataset,
        domain,
        gold_backend(dataset.sentences, domain, prompt_profile="reference"),
        options=PipelineOptions(prompt_profile="reference"),
        concurrency=32,
    )
    assert report.errors == 0
    assert report.entity.sam_ner.f1 >= 0.998
    assert report.entity.span.f1 >= 0.998
    assert set(report.mismatches.reasons) <= GOLD_REPLAY_REASONS, report.mismatches.reasons
    # misc is not in the authors' extractor schema: its mentions come back out of schema
    assert set(report.diagnostics.by_kind) <= {"subsumed", "label_out_of_schema"}
    assert set(report.diagnostics.by_stage.get("archetype", {})) <= {"subsumed"}
    assert "calibrate" not in report.diagnostics.by_stage
    with_entities = sum(bool(s.entities) for s in dataset.sentences)
    assert report.cost.total["calls"] == 2 * len(dataset.sentences) + 2 * with_entities
