"""The shipped examples run."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from samalign import load_domain

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_custom_domain_example_loads() -> None:
    domain = load_domain(EXAMPLES / "custom_domain.yaml")
    assert domain.labels == ["drug", "disease", "gene", "organization"]
    assert "explorer" in domain.prompts


def test_embed_in_agent_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(EXAMPLES / "embed_in_agent.py"), run_name="__main__")
    assert "2 entities; people: ['Sepp Hochreiter']" in capsys.readouterr().out


def test_sentences_example_is_valid_jsonl() -> None:
    from samalign.batch.records import read_records

    records = list(read_records(EXAMPLES / "sentences.jsonl"))
    assert [r.id for r in records] == ["s1", "s2", "s3", "s4", "s5"]
    assert all(r.error is None for r in records)


def test_quickstart_example_has_a_help() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "ner_quickstart.py"), "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "--server" in done.stdout


def test_agent_tool_example_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(EXAMPLES / "agent_tool.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert '"relation":"Work_For"' in out and "agent: John Smith works for IBM." in out
    assert (tmp_path / "agent_tool.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
