"""The shipped examples run."""

from __future__ import annotations

import doctest
import json
import re
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from samalign import RunContext, build_joint_graph, load_domain
from samalign.prompts import archetype_table
from samalign.types import Archetype

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_custom_domain_example_loads() -> None:
    domain = load_domain(EXAMPLES / "custom_domain.yaml")
    assert domain.labels == ["drug", "disease", "gene", "organization", "trial"]
    assert domain.names == ["drug", "disease", "gene or protein", "organization", "clinical trial"]
    assert domain.entity_type("gene").archetype is Archetype.MEDICINE
    assert domain.entity_type("trial").archetype is None
    assert "explorer" in domain.prompts
    assert dict(domain.adapters) == {"anchor": "anchor", "explorer": "explorer"}
    develops = domain.relation_for_name("develops")
    assert develops is not None
    assert (develops.head_types, develops.tail_types) == (("organization",), ("drug", "trial"))
    related = domain.relation_for_name("related to")
    assert related is not None and related.label == "related_to"
    assert (related.head_types, related.tail_types) == ((), ())


def test_custom_domain_example_runs_through_the_joint_graph(fake_ner: Any) -> None:
    domain = load_domain(EXAMPLES / "custom_domain.yaml")
    text = "Pfizer developed Paxlovid , which treats COVID-19 ."
    gold = fake_ner.gold_of(
        domain, organization=["Pfizer"], drug=["Paxlovid"], disease=["COVID-19"]
    )
    forward = [
        {"subject": "Pfizer", "pairs": [{"object": "Paxlovid", "relation": "develops"}]},
        {"subject": "Paxlovid", "pairs": [{"object": "COVID-19", "relation": "treats"}]},
        # a disease cannot be what a drug targets (tail_types: [gene]): dropped
        {"subject": "Paxlovid", "pairs": [{"object": "COVID-19", "relation": "targets"}]},
    ]
    fakes = fake_ner(
        anchor={text: list(gold)},
        explorer={text: list(gold)},
        gold=gold,
        scripts={"relations_forward": json.dumps(forward), "relations_reverse": "[]"},
    )
    models = fakes.models()
    result = build_joint_graph().invoke({"text": text}, context=RunContext(domain, models))
    assert {(e.text, e.label) for e in result["entities"]} == {
        ("Pfizer", "organization"),
        ("Paxlovid", "drug"),
        ("COVID-19", "disease"),
    }
    assert [(t.head.text, t.relation, t.tail.text) for t in result["triplets"]] == [
        ("Pfizer", "develops", "Paxlovid"),
        ("Paxlovid", "treats", "COVID-19"),
    ]
    assert [d.kind for d in result["diagnostics"]] == ["argument_type"]
    explorer_prompt = json.loads(models["explorer"].chat_model.calls[0]["messages"][0].content)
    assert explorer_prompt["instruction"].endswith("The input is from a biomedical abstract.")
    relation_prompt = json.loads(
        models["relations_forward"].chat_model.calls[0]["messages"][0].content
    )
    assert relation_prompt["schema"][2] == {
        "relation": "develops",
        "definition": domain.relation_types[2].definition,
        "subject types": ["organization"],
        "object types": ["drug", "clinical trial"],
    }


def _quoted_block(doc: Path, marker: str) -> str:
    """The fenced block that follows ``<!-- marker -->`` in a markdown file."""
    text = doc.read_text(encoding="utf-8")
    after = text.split(f"<!-- {marker} -->\n", 1)[1]
    fence, rest = after.split("\n", 1)
    assert fence.startswith("```")
    return rest.split("\n```\n", 1)[0] + "\n"


def test_domains_doc_quotes_the_example_file_verbatim() -> None:
    quoted = _quoted_block(DOCS / "domains.md", "examples/custom_domain.yaml")
    assert quoted == (EXAMPLES / "custom_domain.yaml").read_text(encoding="utf-8")


def test_domains_doc_lists_the_14_archetypes_with_their_definitions() -> None:
    text = (DOCS / "domains.md").read_text(encoding="utf-8")
    table = text.split("| archetype | definition (SAM-NER Table 5) |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (.+?) \| .+ \|$", table, flags=re.MULTILINE)
    assert rows == [(a.name.value, a.definition) for a in archetype_table().archetypes]
    assert len(rows) == 14


def test_scripted_fakes_example_runs_and_the_doc_shows_its_output(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runpy.run_path(str(EXAMPLES / "scripted_fakes.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "triplet 'John Smith' Work_For 'IBM'" in printed
    assert "noise 'works'" in printed
    text = (DOCS / "testing.md").read_text(encoding="utf-8")
    shown = text.split("python examples/scripted_fakes.py\n```\n\n```text\n", 1)[1]
    assert shown.split("```", 1)[0] == printed


def test_fakes_module_example_runs() -> None:
    from samalign.testing import fakes

    failed, attempted = doctest.testmod(fakes, raise_on_error=False)
    assert attempted >= 4
    assert failed == 0


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


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.DOTALL)


def test_readme_and_docs_python_blocks_parse_and_import_what_exists() -> None:
    import ast
    import importlib

    paths = [DOCS.parent / "README.md", *sorted(DOCS.glob("*.md"))]
    checked = 0
    for path in paths:
        for block in _python_blocks(path):
            tree = ast.parse(block, filename=str(path))  # a SyntaxError names the doc
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("samalign"):
                    module = importlib.import_module(str(node.module))
                    for alias in node.names:
                        assert hasattr(module, alias.name) or importlib.util.find_spec(
                            f"{node.module}.{alias.name}"
                        ), f"{path.name}: {node.module} has no {alias.name}"
                        checked += 1
    assert checked > 20
