"""`samalign eval` end to end against the tiny model on a real vLLM server.

A random model scores near zero; what is checked is that the report is complete, every
sentence is accounted for, and the cost of every stage is recorded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

FAST = ("--constrain-mentions", "--max-tokens", "64", "--concurrency", "8", "--quiet")


def _eval(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "samalign", "eval", *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _ids(path: Path) -> list[str]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [line["id"] for line in lines if "id" in line]


@pytest.mark.parametrize(
    ("dataset", "graph", "limit", "stages"),
    [
        ("crossner_ai", "ner", 8, {"anchor", "explorer"}),
        ("conll04", "joint", 4, {"anchor", "explorer", "relations_forward", "relations_reverse"}),
    ],
)
def test_eval_against_a_real_server(
    vllm_server: str,
    shared_data: Path,
    tmp_path: Path,
    dataset: str,
    graph: str,
    limit: int,
    stages: set[str],
) -> None:
    out = tmp_path / f"{dataset}.json"
    done = _eval(
        dataset,
        "--split",
        "dev",
        "--graph",
        graph,
        "--limit",
        str(limit),
        "--server",
        vllm_server,
        "--data-dir",
        str(shared_data),
        "--out",
        str(out),
        *FAST,
        # the tiny random model rarely finds two entities; the default schedule would skip
        # the relation decoders, whose cost this test checks
        *(("--relation-schedule", "always") if graph == "joint" else ()),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["sentences"] == limit
    assert report["run"]["backend"] == "server"
    assert report["run"]["backend_settings"]["server"] == vllm_server
    for key in ("precision", "recall", "f1"):
        assert 0.0 <= report["entity"]["span"][key] <= 1.0
        assert 0.0 <= report["entity"]["string"][key] <= 1.0
    gold = report["entity"]["span"]["gold"]
    assert gold > 0
    if graph == "joint":
        assert report["relation"]["strict"]["gold"] > 0
        assert 0.0 <= report["relation"]["boundary"]["f1"] <= 1.0
    else:
        assert report["relation"] is None
    cost = report["cost"]
    assert stages <= set(cost["stages"])
    for stage in stages:
        assert cost["stages"][stage]["calls"] >= limit - report["errors"]
        assert cost["stages"][stage]["prompt_tokens"] > 0  # the server's own token counts
        assert cost["stages"][stage]["latency_s"]["p50"] > 0
    assert cost["sentences_per_s"] > 0
    # every sentence is accounted for: a result line each, and each miss has a reason
    ids = _ids(tmp_path / f"{dataset}.sentences.jsonl")
    assert len(ids) == len(set(ids)) == limit
    missed = sum(len(item["missed"]) for item in report["mismatches"]["items"])
    assert missed == gold - report["entity"]["span"]["tp"]
    assert all(d["reason"] for item in report["mismatches"]["items"] for d in item["missed"])
    for suffix in (".md", ".png"):
        assert (tmp_path / f"{dataset}{suffix}").is_file()
