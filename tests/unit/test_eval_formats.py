"""`samalign eval` on data in the forms users bring: tag-first BIO, CrossRE, broken SpERT.

Gold replay (``--backend gold``) is the harness's self-test: on sentences a string answer can
express, every protocol scores 1.0, so a file read wrongly (swapped columns, shifted ends) shows
up as a lower score.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from samalign.cli import main
from samalign.evaluation.datasets import load_dataset

CROSSRE_DOMAIN = {
    "name": "crossre_ai_sample",
    "description": "A few CrossRE AI relation types, for tests",
    "entity_types": [
        {"label": "organisation", "name": "organization", "definition": "A named organization."},
        {"label": "conference", "definition": "A named scientific conference."},
        {"label": "algorithm", "definition": "A named algorithm or model family."},
        {"label": "metrics", "definition": "A named evaluation measure."},
    ],
    "relation_types": [
        {
            "label": "role",
            "definition": "The subject has a role in the object (organises, runs, works for it).",
            "head_types": ["organisation"],
        },
        {
            "label": "named",
            "definition": "The subject is another name of the object.",
            "head_types": ["conference"],
            "tail_types": ["conference"],
        },
        {
            "label": "compare",
            "definition": "The subject is compared with the object.",
            "head_types": ["algorithm"],
            "tail_types": ["algorithm"],
        },
    ],
}


Records = list[dict[str, Any]]
Writer = Callable[[Path, Records], Path]


def run_eval(*args: str) -> int:
    return main(["eval", *args, "--backend", "gold", "--quiet"])


def _report(out: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(out.read_text(encoding="utf-8"))
    return data


def _domain(tmp_path: Path, domain: dict[str, Any]) -> Path:
    path = tmp_path / "domain.yaml"
    path.write_text(yaml.safe_dump(domain), encoding="utf-8")
    return path


def test_a_tag_first_bio_file_scores_without_conversion(
    shared_data: Path,
    tmp_path: Path,
    swap_bio_columns: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = swap_bio_columns(shared_data / "crossner" / "ai" / "train.txt", tmp_path / "mine.txt")
    out = tmp_path / "mine.json"
    assert run_eval(str(path), "--domain", "crossner_ai", "--limit", "30", "--out", str(out)) == 0
    report = _report(out)
    span = report["entity"]["span"]  # type: ignore[index]
    assert span["f1"] == 1.0 and span["gold"] > 100  # type: ignore[index]
    assert report["sentences"] == 30 and report["errors"] == 0
    assert report["run"]["data_file"] == str(path)  # type: ignore[index]
    assert "entity span F1 100.00" in capsys.readouterr().out
    # the same numbers as the CrossNER file itself
    original = tmp_path / "original.json"
    args = ("crossner_ai", "--split", "train", "--data-dir", str(shared_data), "--limit", "30")
    assert run_eval(*args, "--out", str(original)) == 0
    assert _report(original)["entity"] == report["entity"]
    # an explicit column order the file contradicts is refused, not scored
    args = (str(path), "--domain", "crossner_ai", "--bio-columns", "token-tag")
    assert run_eval(*args, "--out", str(tmp_path / "x.json")) == 2
    err = capsys.readouterr().err
    assert "the columns look swapped" in err and "--bio-columns tag-token" in err


def test_a_crossre_file_scores_entities_and_relations(
    tmp_path: Path, crossre_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = crossre_path
    domain = _domain(tmp_path, CROSSRE_DOMAIN)
    out = tmp_path / "crossre.json"
    args = (str(path), "--graph", "joint", "--domain", str(domain), "--out", str(out))
    assert run_eval(*args) == 0
    report = _report(out)
    assert report["sentences"] == 3 and report["errors"] == 0
    assert report["entity"]["span"]["f1"] == 1.0  # type: ignore[index]
    assert report["entity"]["span"]["gold"] == 8  # type: ignore[index]
    strict = report["relation"]["strict"]  # type: ignore[index]
    assert strict["f1"] == 1.0 and strict["gold"] == 4  # type: ignore[index]
    assert "relation strict F1 100.00" in capsys.readouterr().out


def test_spert_records_keyed_ner_are_refused_not_scored_zero(
    ner_keyed_spert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = ner_keyed_spert
    status = run_eval(str(path), "--domain", "conll04", "--out", str(tmp_path / "x.json"))
    assert status == 2
    err = capsys.readouterr().err
    assert f"{path} record 0 (orig_id" in err
    assert "field 'entities' is missing and the record has 'ner' instead" in err
    assert "--format crossre" in err
    assert not (tmp_path / "x.json").exists()


def test_joint_evaluation_needs_every_record_to_list_relations(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = json.loads((shared_data / "conll04" / "dev_triples.json").read_text())[:5]
    del records[3]["relations"]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    args = (str(path), "--domain", "conll04", "--out", str(tmp_path / "x.json"))
    assert run_eval(*args, "--graph", "joint") == 2
    assert "record 3 (orig_id" in capsys.readouterr().err
    assert run_eval(*args) == 0  # NER scoring does not need them


def test_instruction_formats_are_refused_by_eval_with_the_reason(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = shared_data / "uniner_format" / "CrossNER_AI.json"
    assert run_eval(str(path), "--domain", "crossner_ai", "--out", str(tmp_path / "x.json")) == 2
    assert "mention strings without offsets" in capsys.readouterr().err
    # and --format only offers the tokenised formats
    with pytest.raises(SystemExit):
        run_eval(str(path), "--format", "uniner", "--out", str(tmp_path / "x.json"))


def test_gold_triplets_the_domain_rejects_are_reported_up_front(
    tmp_path: Path, crossre_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = crossre_path
    strict = json.loads(json.dumps(CROSSRE_DOMAIN))
    strict["relation_types"][0]["tail_types"] = ["organisation"]  # role: ELRA -> LREC breaks it
    domain = _domain(tmp_path, strict)
    out = tmp_path / "x.json"
    args = (str(path), "--graph", "joint", "--domain", str(domain), "--out", str(out))
    assert run_eval(*args) == 2
    err = capsys.readouterr().err
    assert "1 gold triplet(s) break the argument types of domain 'crossre_ai_sample'" in err
    assert "role (organisation -> conference; allowed ['organisation'] -> ['organisation'])" in err
    assert "e.g. sentence ai-test-0" in err and "head_types/tail_types" in err
    assert not out.exists()


def test_load_dataset_reads_crossre_from_a_folder(
    tmp_path: Path, crossre_records: Records, write_crossre: Writer
) -> None:
    write_crossre(tmp_path / "test.jsonl", crossre_records)
    dataset = load_dataset(tmp_path, "test")
    assert dataset.relations and dataset.sentences[0].id == f"{tmp_path.name}-test-0"
    assert sum(len(s.triplets) for s in dataset.sentences) == 4
