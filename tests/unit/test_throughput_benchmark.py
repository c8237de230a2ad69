"""``benchmarks/throughput.py`` end to end on an in-memory OpenAI-compatible server.

The "server" is an ``httpx2.MockTransport`` whose chat completions are answered by the scripted
fakes of :mod:`samalign.testing.fakes` (the unit-test pipeline of ``conftest.FakeNer``), so the
benchmark's real code runs unchanged: the graph through ``vllm_server_models`` and its HTTP
hooks, the free and the phase-by-phase replays through the OpenAI client, ``/tokenize``.
No socket is opened (the socket guard of the unit tests stays on); only the model-request
kill-switch is lifted, because the stage models are real ``ChatOpenAI`` models talking to the
mock.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx2
import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from samalign.testing import BLOCK_ENV
from samalign.testing.fakes import ScriptedChatModel

ROOT = Path(__file__).resolve().parents[2]

# Quotes make the JSON-escaped sentence differ from the raw one (the calibrator's "Text:" line).
SENTENCES = [
    ["John", "Smith", ",", "who", "works", "for", "IBM", ",", "said", '"', "no", '"', "."],
    ["Mary", "Jones", "lives", "in", "Boston", "."],
    ["Nothing", "happened", "on", "Tuesday", "."],
    ["Paris", "is", "nice", "."],  # one entity: the relation decoders are not needed
]
GOLD_TYPES = {"Peop": ["John Smith", "Mary Jones"], "Org": ["IBM"], "Loc": ["Boston", "Paris"]}
"""The gold CoNLL04 type of each mention (``FakeNer.gold_of``)."""


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``benchmarks/throughput.py`` as a module (its folder on the path, as when run)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(
        "throughput", ROOT / "benchmarks" / "throughput.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "throughput", module)
    spec.loader.exec_module(module)
    return module


def _data(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "conll04"
    folder.mkdir(parents=True)
    records = [{"tokens": t, "entities": [], "relations": []} for t in SENTENCES]
    (folder / "dev_triples.json").write_text(json.dumps(records), encoding="utf-8")
    return tmp_path / "data"


def _relations(messages: list[BaseMessage]) -> str:
    text = json.loads(str(messages[0].content))["input"]
    if "John Smith" in text and "IBM" in text:
        return json.dumps(
            [{"subject": "John Smith", "pairs": [{"object": "IBM", "relation": "work for"}]}]
        )
    if "Mary Jones" in text:
        return json.dumps(
            [{"subject": "Mary Jones", "pairs": [{"object": "Boston", "relation": "live in"}]}]
        )
    return "[]"


def _reverse(messages: list[BaseMessage]) -> str:
    text = json.loads(str(messages[0].content))["input"]
    if "Mary Jones" in text:
        return json.dumps(
            [{"object": "Boston", "pairs": [{"subject": "Mary Jones", "relation": "live in"}]}]
        )
    return "[]"


class FakeServer:
    """A MockTransport handler answering like a vLLM server with the scripted fakes."""

    def __init__(self, fake_ner: Any) -> None:
        texts = [" ".join(t) for t in SENTENCES]
        self.gold = fake_ner.gold_of("conll04", **GOLD_TYPES)
        table = {t: [m for m in self.gold if m in t] for t in texts}
        ner = fake_ner(anchor=table, explorer=table, gold=self.gold)
        scripts = ner.scripts_by_stage()
        scripts["relations_forward"] = _relations
        scripts["relations_reverse"] = _reverse
        self.chat = {stage: ScriptedChatModel(script=s) for stage, s in scripts.items()}
        self.requests: Counter[str] = Counter()

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        words = [w for m in body["messages"] for w in str(m["content"]).split()]
        if request.url.path.endswith("/tokenize"):
            return httpx2.Response(200, json={"tokens": [hash(w) % 50_000 for w in words]})
        assert request.url.path.endswith("/v1/chat/completions"), request.url
        stage = body["model"]
        self.requests[stage] += 1
        messages: list[BaseMessage] = [
            HumanMessage(m["content"]) if m["role"] == "user" else AIMessage(m["content"])
            for m in body["messages"]
        ]
        answer = str(self.chat[stage].invoke(messages).content)
        completion = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": stage,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": len(words),
                "completion_tokens": len(answer.split()),
                "total_tokens": len(words) + len(answer.split()),
            },
        }
        return httpx2.Response(200, json=completion)


@pytest.mark.parametrize(
    ("graph", "flags"),
    [
        ("joint", []),
        ("joint", ["--constrain-mentions"]),
        ("joint", ["--relation-schedule", "always"]),
        ("joint", ["--relation-schedule", "parallel", "--constrain-mentions"]),
        ("ner", ["--constrain-mentions"]),
        ("document", []),
        ("joint", ["--graph-only", "--relation-schedule", "parallel"]),
    ],
)
async def test_benchmark_runs_every_graph_and_option(
    tmp_path: Path,
    fake_ner: Any,
    monkeypatch: pytest.MonkeyPatch,
    bench: Any,
    graph: str,
    flags: list[str],
) -> None:
    monkeypatch.setenv(BLOCK_ENV, "0")  # ChatOpenAI stage models; the transport is in memory
    fake = FakeServer(fake_ner)
    argv = ["--server", "http://fake:8000", "--graph", graph, "--domain", "conll04"]
    argv += ["--data", str(_data(tmp_path)), "--n", "4", "--concurrency", "1", "3"]
    argv += ["--replay-concurrency", "2", "8", "--compare-pool", *flags]
    args = bench.parser().parse_args(argv)
    server = bench.Server(args.server, transport=httpx2.MockTransport(fake))
    result = await bench.main_async(args, server)
    if graph == "document":
        assert result["sentences"] == 4 and result["errors"] == 0
        assert result["entities"] == len(fake.gold)
        return
    assert result["n"] == 4 and result["errors"] == 0
    assert [r["concurrency"] for r in result["runs"]] == [1, 3]
    assert all(r["at_server_s"] > 0 for r in result["runs"])
    if "--graph-only" in flags:  # warm-up, 2 timed runs, the other pool's run; no replays
        # every sentence asks both decoders; 3 of the 4 have candidates to classify
        assert "replay" not in result and result["calls_per_sentence"]["made"] == 5.5
        assert sum(fake.requests.values()) == 4 * 22
        return
    assert [r["inflight"] for r in result["replay"]] == [2, 8]
    calls = result["calls_per_sentence"]
    recorded = result["requests_recorded"]
    assert recorded == round(4 * calls["made"])  # every request the graph made was recorded
    assert result["requests_by_stage"] == {
        s: round(4 * c) for s, c in calls["made_by_stage"].items()
    }
    # warm-up, 2 timed runs, the other pool's run, 2 free replays, 1 pipelined replay
    assert sum(fake.requests.values()) == 7 * recorded
    assert result["other_pool"]["pool"] == "openai" and result["other_pool"]["requests"] == recorded
    assert result["sentences_with_candidates"] == 3
    assert calls["skipped_by_stage"].get("archetype") == 0.25  # "Nothing happened on Tuesday"
    assert "consensus" not in calls["skipped_by_stage"]  # model-free nodes are not calls
    assert set(result["prefix_share"]) == set(result["requests_by_stage"])
    assert result["graph_vs_capacity"] > 0 and result["graph_vs_pipelined"] > 0
    if graph == "ner":
        assert "relations_forward" not in result["requests_by_stage"]
        return
    schedule = (
        flags[flags.index("--relation-schedule") + 1]
        if "--relation-schedule" in flags
        else "needed"
    )
    assert result["relation_schedule"] == schedule
    if schedule == "needed":  # two sentences have no entity pair a relation admits
        assert calls["made_by_stage"]["relations_forward"] == 0.5
        assert calls["skipped_by_stage"]["relations_forward"] == 0.5
    else:
        assert calls["made_by_stage"]["relations_forward"] == 1.0
        assert "relations_forward" not in calls["skipped_by_stage"]
    assert result["triplets_kept"] == 2


def test_sentence_lookup_finds_raw_and_json_escaped_text(bench: Any) -> None:
    texts = [("a", 'He said "yes" .'), ("b", "yes")]
    keys = bench.sentence_keys(texts)
    calibrate = {"model": "calibrate", "messages": [{"content": 'Text: He said "yes" .\n'}]}
    anchor = {"model": "anchor", "messages": [{"content": json.dumps({"input": texts[0][1]})}]}
    short = {"model": "anchor", "messages": [{"content": json.dumps({"input": "yes"})}]}
    tagged = {"model": "archetype", "messages": [{"content": 'He said \\"<ENT>yes</ENT>\\" .'}]}
    assert bench.sentence_of(calibrate, keys) == "a"
    assert bench.sentence_of(anchor, keys) == "a"
    assert bench.sentence_of(short, keys) == "b"
    assert bench.sentence_of(tagged, keys) == "a"
    with pytest.raises(ValueError, match="cannot tell which sentence a anchor request"):
        bench.sentence_of({"model": "anchor", "messages": [{"content": "no"}]}, keys)
