"""Gold replay through the ``reference`` prompt profile on the five CrossNER test splits.

Every stage is answered in the SAM-NER authors' formats (the classifier's
``[{"mention": "archetype"}]``, the calibrator's ``final answer: @@ … @@``) and read back by
the profile's parsers, through the real NER graph; scored with the authors' metric
(``entity.sam_ner``). One command runs the five domains and writes their mean, as Table 1
reports it. About a minute on two CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from samalign.cli import main
from samalign.evaluation.analysis import GOLD_REPLAY_REASONS

pytestmark = pytest.mark.integration

DOMAINS = [f"crossner_{d}" for d in ("ai", "literature", "music", "politics", "science")]


def test_reference_profile_replays_every_crossner_test_split(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "table1.json"
    argv = ["eval", "crossner", "--split", "test", "--backend", "gold"]
    argv += ["--prompt-profile", "reference", "--data-dir", str(shared_data)]
    assert main([*argv, "--concurrency", "32", "--quiet", "--out", str(out)]) == 0
    table = json.loads(out.read_text(encoding="utf-8"))
    full = table["variants"]["full"]
    assert list(full["per_dataset"]) == DOMAINS
    for name in DOMAINS:
        assert full["per_dataset"][name]["sam_ner"]["f1"] >= 0.998, name
        report = json.loads(Path(table["reports"][name]).read_text(encoding="utf-8"))
        assert report["errors"] == 0
        assert report["run"]["options"]["prompt_profile"] == "reference"
        assert set(report["mismatches"]["reasons"]) <= GOLD_REPLAY_REASONS, name
        assert set(report["diagnostics"]["by_kind"]) <= {"subsumed", "label_out_of_schema"}
    assert full["mean_f1"]["sam_ner"] >= 0.998
    assert "crossner/test: mean F1 over the five domains: SAM-NER" in capsys.readouterr().out
