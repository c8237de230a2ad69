"""Batch records (reading, resuming, running in order) and the command line."""

from __future__ import annotations

import asyncio
import io
import json
import random
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage

from samalign import cli
from samalign.batch.records import (
    InputRecord,
    JsonlWriter,
    OutputRecord,
    completed_ids,
    read_records,
)
from samalign.batch.run import run_records, to_output
from samalign.errors import ConfigError, InputError
from samalign.graphs import RunContext, build_ner_graph
from samalign.prompts import builtin_domains, load_domain
from samalign.serving.model_dir import VLLM_LORA_RANKS, lora_rank_bucket
from samalign.serving.models import StageModel, StageModels
from samalign.testing.fakes import ScriptedChatModel
from samalign.types import Entity, Span

GOLD = {
    "Sepp Hochreiter": ("Person", "researcher"),
    "Munich": ("Location", "location"),
    "LSTM": ("Computer_Science", "algorithm"),
}


def records_of(data: bytes, **kwargs: Any) -> list[InputRecord]:
    return list(read_records(io.BytesIO(data), **kwargs))


# ---------------------------------------------------------------------------------------------
# read_records
# ---------------------------------------------------------------------------------------------


def test_jsonl_with_ids(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"id": "a", "text": "LSTM rocks ."}\n{"id": 7, "text": "Jürgen 東京"}\n', encoding="utf-8"
    )
    got = list(read_records(path))
    assert [(r.id, r.text, r.line, r.error) for r in got] == [
        ("a", "LSTM rocks .", 1, None),
        ("7", "Jürgen 東京", 2, None),
    ]


def test_jsonl_missing_id_uses_line_number() -> None:
    got = records_of(b'{"text": "one"}\n\n{"text": "three", "id": null}\n{"text": "x", "id": ""}\n')
    assert [(r.id, r.line) for r in got] == [("line-1", 1), ("line-3", 3), ("line-4", 4)]
    assert all(r.error is None for r in got)


def test_jsonl_bad_lines_become_error_records() -> None:
    data = (
        b'{"id": "ok1", "text": "fine"}\n'
        b"{bad json\n"
        b'\xff\xfe{"text": "latin"}\n'
        b"[1, 2]\n"
        b'"a string"\n'
        b'{"id": "notext"}\n'
        b'{"id": "numtext", "text": 5}\n'
        b'{"id": "ok2", "text": "also fine"}\n'
    )
    got = records_of(data, fmt="jsonl")
    assert len(got) == 8  # one record per non-blank line, nothing dropped
    by_id = {r.id: r for r in got}
    assert by_id["ok1"].error is None
    assert by_id["ok2"].error is None
    assert "invalid JSON" in (by_id["line-2"].error or "")
    assert "UTF-8" in (by_id["line-3"].error or "")
    assert "object" in (by_id["line-4"].error or "")
    assert "object" in (by_id["line-5"].error or "")
    assert "text" in (by_id["notext"].error or "")
    assert "text" in (by_id["numtext"].error or "")
    assert [r.line for r in got] == list(range(1, 9))


def test_duplicate_ids_get_an_error() -> None:
    got = records_of(
        b'{"id": "x", "text": "a"}\n{"id": "x", "text": "b"}\n{"id": "y", "text": "c"}\n'
    )
    assert [(r.id, r.text) for r in got] == [("x", "a"), ("x", "b"), ("y", "c")]
    assert got[0].error is None
    assert "duplicate id 'x'" in (got[1].error or "")
    assert got[2].error is None


def test_plain_text_with_blank_lines_and_crlf() -> None:
    got = records_of(b"First document .\r\n\n   \nSecond one .\nThird\n", fmt="text")
    assert [(r.id, r.text) for r in got] == [
        ("line-1", "First document ."),
        ("line-4", "Second one ."),
        ("line-5", "Third"),
    ]


@pytest.mark.parametrize(
    ("name", "content", "fmt", "expected"),
    [
        ("in.jsonl", b'{"text": "a"}\n', "auto", "a"),
        ("in.txt", b'  {"text": "a"}\n', "auto", "a"),
        ("in.txt", b"\n\nplain words\n", "auto", "plain words"),
        ("in.txt", b'{"text": "a"}\n', "text", '{"text": "a"}'),
        ("in.jsonl", b"plain words\n", "text", "plain words"),
    ],
)
def test_format_detection(
    tmp_path: Path, name: str, content: bytes, fmt: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    got = list(read_records(path, fmt=fmt))  # type: ignore[arg-type]
    assert [r.text for r in got] == [expected]


def test_missing_input_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open"):
        list(read_records(tmp_path / "absent.jsonl"))


def test_read_records_closes_its_file_but_not_a_callers_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import samalign.batch.records as records_module

    opened: list[Any] = []

    def tracking_open(*args: Any, **kwargs: Any) -> Any:
        handle = open(*args, **kwargs)  # noqa: SIM115
        opened.append(handle)
        return handle

    monkeypatch.setattr(records_module, "open", tracking_open, raising=False)
    path = tmp_path / "in.txt"
    path.write_text("a\nb\n")
    assert [r.text for r in read_records(path)] == ["a", "b"]
    reader = read_records(path)
    next(reader)
    reader.close()  # stopped early
    assert len(opened) == 2
    assert all(h.closed for h in opened)
    stream = io.BytesIO(b"a\n")
    assert len(list(read_records(stream))) == 1
    assert not stream.closed


# ---------------------------------------------------------------------------------------------
# completed_ids / JsonlWriter
# ---------------------------------------------------------------------------------------------


def test_completed_ids_missing_file(tmp_path: Path) -> None:
    assert completed_ids(tmp_path / "none.jsonl") == set()


def test_completed_ids_truncates_partial_last_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    good = b'{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}\n'
    path.write_bytes(good + b'{"id": "c", "te')
    assert completed_ids(path) == {"a", "b"}
    assert path.read_bytes() == good
    # appending after the cut gives a valid JSONL file
    with open(path, "a", encoding="utf-8") as handle:
        JsonlWriter(handle).write(OutputRecord(id="c", text="z"))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "b", "c"]


def test_completed_ids_complete_line_without_newline_is_redone(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b"}')
    assert completed_ids(path) == {"a"}
    assert path.read_bytes() == b'{"id": "a"}\n'


def test_completed_ids_keeps_valid_records_after_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    content = b'{"id": "a"}\n{"id": "b"\n{"id": "c"}\n'
    path.write_bytes(content)
    done = completed_ids(path)
    assert "c" in done
    assert b'{"id": "c"}' in path.read_bytes()


def test_jsonl_writer_writes_one_line_per_record(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        writer = JsonlWriter(handle)
        writer.write(OutputRecord(id="1", text="Jürgen"))
        writer.write(OutputRecord(id="2", text="b", error="InputError: empty"))
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["1", "2"]
    assert rows[0]["text"] == "Jürgen"
    assert rows[1]["error"] == "InputError: empty"
    assert set(rows[0]) == {
        "id",
        "text",
        "entities",
        "triplets",
        "dropped_triplets",
        "sentence_errors",
        "diagnostics",
        "usage",
        "error",
    }


def test_jsonl_writer_accepts_streams_without_fileno() -> None:
    handle = io.StringIO()
    JsonlWriter(handle).write(OutputRecord(id="1", text="x"))
    assert json.loads(handle.getvalue())["id"] == "1"


def test_to_output_rejects_ungrounded_spans() -> None:
    record = InputRecord(id="r", text="LSTM rocks", line=1)
    good = Entity(span=Span(start=0, end=4, text="LSTM"), label="algorithm")
    out = to_output(record, {"entities": [good]})
    assert out.entities[0].model_dump() == {
        "start": 0,
        "end": 4,
        "text": "LSTM",
        "label": "algorithm",
        "archetype": None,
        "sources": [],
    }
    bad = Entity(span=Span(start=5, end=9, text="LSTM"), label="algorithm")
    with pytest.raises(InputError):
        to_output(record, {"entities": [bad]})


# ---------------------------------------------------------------------------------------------
# run_records
# ---------------------------------------------------------------------------------------------


def slow_wait(tracker: dict[str, Any]) -> Any:
    """An async wait of a pseudo-random time (answers finish out of order) that counts the
    calls in flight in ``tracker``."""

    async def wait(messages: Sequence[BaseMessage]) -> None:
        tracker["now"] = tracker.get("now", 0) + 1
        tracker["max"] = max(tracker.get("max", 0), tracker["now"])
        try:
            if "together" in tracker:  # (event, n): the first calls wait until n are inside
                together, n = tracker["together"]
                if tracker["now"] >= n:
                    together.set()
                await asyncio.wait_for(together.wait(), 60)  # a liveness bound only
            seed = str(messages[0].content)
            await asyncio.sleep(random.Random(seed).uniform(0.0, 0.03))
        finally:
            tracker["now"] -= 1

    return wait


def slow_models(scripts: dict[str, Any], tracker: dict[str, Any]) -> StageModels:
    return StageModels(
        {
            stage: StageModel(
                ScriptedChatModel(script=script, wait=slow_wait(tracker)),
                adapter=stage,
                structured_output=True,
                adapter_kwarg="model",
            )
            for stage, script in scripts.items()
        }
    )


def texts_for(n: int) -> list[str]:
    return [f"Sepp Hochreiter built Project Alpha{i} in Munich ." for i in range(n)]


async def collect(
    graph: Any, context: RunContext, records: list[InputRecord], **kw: Any
) -> list[OutputRecord]:
    return [r async for r in run_records(graph, context, records, **kw)]


async def test_run_records_keeps_input_order_under_concurrency(fake_ner: Any) -> None:
    texts = texts_for(16)
    fakes = fake_ner(
        anchor={t: ["Sepp Hochreiter", "Munich"] for t in texts},
        explorer={t: [f"Project Alpha{i}"] for i, t in enumerate(texts)},
        gold=GOLD,
    )
    # no call answers before three are in flight at once: proof that records run concurrently
    tracker: dict[str, Any] = {"together": (asyncio.Event(), 3)}
    context = RunContext("crossner_ai", slow_models(fakes.scripts_by_stage(), tracker))
    records = [InputRecord(id=f"r{i}", text=t, line=i + 1) for i, t in enumerate(texts)]
    out = await collect(build_ner_graph(), context, records, concurrency=6)
    assert [r.id for r in out] == [r.id for r in records]
    assert tracker["max"] >= 3, "records did not actually run concurrently"
    for i, result in enumerate(out):
        assert result.error is None
        assert result.text == texts[i]
        got = {(e.text, e.label) for e in result.entities}
        assert got == {
            ("Sepp Hochreiter", "researcher"),
            ("Munich", "location"),
            (f"Project Alpha{i}", "misc"),
        }
        for e in result.entities:
            assert result.text[e.start : e.end] == e.text


async def test_run_records_one_failure_does_not_stop_the_batch(fake_ner: Any) -> None:
    texts = texts_for(5)
    texts[2] = "BOOM Sepp Hochreiter ."
    fakes = fake_ner(anchor={t: ["Sepp Hochreiter"] for t in texts}, explorer={}, gold=GOLD)
    scripts = fakes.scripts_by_stage()
    good_anchor = scripts["anchor"]

    def anchor(messages: Sequence[BaseMessage]) -> str:
        if "BOOM" in str(messages[0].content):
            raise RuntimeError("GPU on fire")
        answer: str = good_anchor(messages)
        return answer

    scripts["anchor"] = anchor
    context = RunContext("crossner_ai", slow_models(scripts, {}))
    records = [InputRecord(id=f"r{i}", text=t, line=i + 1) for i, t in enumerate(texts)]
    records.append(InputRecord(id="bad-line", text="", line=99, error="invalid JSON: x"))
    records.append(InputRecord(id="empty", text="   ", line=100))
    out = await collect(build_ner_graph(), context, records, concurrency=3)
    assert [r.id for r in out] == [r.id for r in records]
    errors = {r.id: r.error for r in out}
    assert errors["r2"] is not None
    assert errors["r2"].startswith("BackendError")
    assert "GPU on fire" in errors["r2"]
    assert errors["bad-line"] == "invalid JSON: x"
    assert errors["empty"] is not None and errors["empty"].startswith("InputError")
    for rid in ("r0", "r1", "r3", "r4"):
        assert errors[rid] is None
        assert [e.text for e in out[int(rid[1])].entities] == ["Sepp Hochreiter"]


async def test_run_records_rejects_bad_concurrency(fake_ner: Any) -> None:
    context = RunContext("crossner_ai", fake_ner().models())
    with pytest.raises(ConfigError, match="concurrency"):
        await collect(build_ner_graph(), context, [], concurrency=0)


async def test_run_records_reads_lazily(fake_ner: Any) -> None:
    texts = texts_for(200)
    fakes = fake_ner(anchor={t: ["Munich"] for t in texts}, gold=GOLD)
    context = RunContext("crossner_ai", fakes.models())
    pulled: list[int] = []

    def source() -> Any:
        for i, t in enumerate(texts):
            pulled.append(i)
            yield InputRecord(id=str(i), text=t, line=i + 1)

    gen = run_records(build_ner_graph(), context, source(), concurrency=2)
    first = await gen.__anext__()
    await gen.aclose()
    assert first.id == "0"
    assert len(pulled) < 100, "records are pulled lazily (bounded reorder window)"


# ---------------------------------------------------------------------------------------------
# command line: domains
# ---------------------------------------------------------------------------------------------


def test_cli_domains_lists_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["domains"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines
    assert len(lines) == len(builtin_domains())
    for name, line in zip(builtin_domains(), lines, strict=True):
        domain = load_domain(name)
        assert line.startswith(name)
        assert f"{len(domain.entity_types)} entity types" in line


def test_cli_domains_shows_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["domains", "crossner_ai"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("crossner_ai:")
    for t in load_domain("crossner_ai").entity_types:
        assert t.label in out
    assert "[Computer_Science]" in out


def test_cli_domains_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["domains", "crossner_biology"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("samalign: error: unknown domain 'crossner_biology'")


# ---------------------------------------------------------------------------------------------
# command line: extract
# ---------------------------------------------------------------------------------------------


def test_cli_extract_unreachable_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], network_guard: Any
) -> None:
    network_guard.refuse("127.0.0.1", 9)
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "text": "LSTM rocks ."}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    status = cli.main(
        [
            "extract",
            str(source),
            "--domain",
            "crossner_ai",
            "--server",
            "http://127.0.0.1:9",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("samalign: error: ")
    assert "cannot reach the model server" in err
    assert "http://127.0.0.1:9/v1/models" in err
    assert "samalign serve" in err  # says how to fix it
    assert not out.exists()
    assert ("127.0.0.1", 9) in [a[:2] for a in network_guard.attempts if isinstance(a, tuple)]


def test_cli_extract_missing_adapters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "samalign.serving.vllm_server.served_models",
        lambda url, timeout=10.0: ["base-model", "anchor", "explorer"],
    )
    source = tmp_path / "in.txt"
    source.write_text("LSTM rocks .\n", encoding="utf-8")
    status = cli.main(
        ["extract", str(source), "--domain", "crossner_ai", "--server", "http://127.0.0.1:9"]
    )
    assert status == 2
    err = capsys.readouterr().err
    assert "does not serve adapter(s) ['archetype', 'calibrate']" in err
    assert "anchor" in err  # lists what the server has


@pytest.fixture
def fake_cli_backend(monkeypatch: pytest.MonkeyPatch, fake_ner: Any) -> dict[str, Any]:
    """Replace the vLLM server with fake stage models inside ``samalign extract``."""
    texts = ["Sepp Hochreiter invented LSTM .", "Munich is in Bavaria .", "Nothing here ."]
    fakes = fake_ner(
        anchor={texts[0]: ["Sepp Hochreiter", "LSTM"], texts[1]: ["Munich"], texts[2]: []},
        explorer={},
        gold=GOLD,
    )
    seen: dict[str, Any] = {"texts": texts}

    def check_server(base_url: str, adapters: Any, **kwargs: Any) -> None:
        seen["checked"] = (base_url, sorted(adapters))

    def vllm_server_models(base_url: str, **kwargs: Any) -> StageModels:
        seen["models_kwargs"] = kwargs
        return fakes.models()

    monkeypatch.setattr("samalign.serving.vllm_server.check_server", check_server)
    monkeypatch.setattr("samalign.serving.vllm_server.vllm_server_models", vllm_server_models)
    return seen


def test_cli_extract_writes_records_in_order_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_cli_backend: dict[str, Any]
) -> None:
    texts = fake_cli_backend["texts"]
    source = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": f"d{i}", "text": t}) for i, t in enumerate(texts)]
    lines.insert(1, "{broken")
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    argv = [
        "extract",
        str(source),
        "--domain",
        "crossner_ai",
        "--server",
        "http://127.0.0.1:8000",
        "--out",
        str(out),
        "--quiet",
        "--concurrency",
        "2",
    ]
    assert cli.main(argv) == 0
    assert fake_cli_backend["checked"] == (
        "http://127.0.0.1:8000",
        ["anchor", "archetype", "calibrate", "explorer"],
    )
    assert "1 record(s) have an error" in capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["d0", "line-2", "d1", "d2"]
    assert "invalid JSON" in rows[1]["error"]
    assert {(e["text"], e["label"]) for e in rows[0]["entities"]} == {
        ("Sepp Hochreiter", "researcher"),
        ("LSTM", "algorithm"),
    }
    assert [(e["text"], e["label"]) for e in rows[2]["entities"]] == [("Munich", "location")]
    assert rows[3]["entities"] == []
    before = out.read_bytes()
    # resume: everything is done, nothing is appended
    assert cli.main(argv) == 0
    assert out.read_bytes() == before


def test_cli_extract_ablation_flags_choose_stages(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], fake_cli_backend: dict[str, Any]
) -> None:
    source = tmp_path / "in.txt"
    source.write_text(fake_cli_backend["texts"][0] + "\n", encoding="utf-8")
    argv = ["extract", str(source), "--domain", "crossner_ai", "--server", "http://h:1"]
    argv += ["--no-explorer", "--no-calibration", "--quiet", "--adapter", "anchor=iepile"]
    assert cli.main(argv) == 0
    assert sorted(fake_cli_backend["checked"][1]) == ["direct_typing", "iepile"]
    assert fake_cli_backend["models_kwargs"]["stages"] == ["anchor", "direct_typing"]
    assert fake_cli_backend["models_kwargs"]["adapters"] == {
        "anchor": "iepile",
        "direct_typing": "direct_typing",
    }
    row = json.loads(capfd.readouterr().out)  # no --out: one JSON line on stdout
    assert row["id"] == "line-1"
    assert {e["text"] for e in row["entities"]} == {"Sepp Hochreiter", "LSTM"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--concurrency", "0"], "--concurrency"),
        (["--adapter", "anchor"], "NAME=VALUE"),
        (["--domain", "nope"], "unknown domain"),
    ],
)
def test_cli_extract_bad_arguments(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fake_cli_backend: dict[str, Any],
    extra: list[str],
    message: str,
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("x\n", encoding="utf-8")
    argv = ["extract", str(source), "--domain", "crossner_ai", "--server", "http://h:1", *extra]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# command line: serve
# ---------------------------------------------------------------------------------------------


def make_model_dir(root: Path, ranks: dict[str, Any]) -> Path:
    (root / "base").mkdir(parents=True)
    (root / "base" / "config.json").write_text("{}")
    for name, config in ranks.items():
        folder = root / "adapters" / name
        folder.mkdir(parents=True)
        body = config if isinstance(config, dict) else {"r": config}
        (folder / "adapter_config.json").write_text(json.dumps(body))
        header = b'{"__metadata__":{}}'
        weights = len(header).to_bytes(8, "little") + header
        (folder / "adapter_model.safetensors").write_bytes(weights)
    return root


def serve_argv(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert cli.main(["serve", *args]) == 0
    line = capsys.readouterr().out.strip()
    argv = shlex.split(line)
    while argv and "=" in argv[0] and not argv[0].startswith("/"):
        argv.pop(0)  # environment assignments (vllm-cpu), if any
    return argv


def test_cli_serve_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stages = ["anchor", "archetype", "calibrate", "explorer"]
    root = make_model_dir(tmp_path / "model", dict.fromkeys(stages, 8))
    argv = serve_argv(capsys, "--model-dir", str(root), "--dry-run")
    assert argv[0] == sys.executable
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert "--enable-lora" in argv
    assert argv[argv.index("--max-loras") + 1] == "4"
    assert argv[argv.index("--max-lora-rank") + 1] == "8"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "8000"
    assert argv[argv.index("--model") + 1] == str((root / "base").resolve())
    start = argv.index("--lora-modules") + 1
    modules = argv[start : start + len(stages)]
    assert modules == [f"{s}={(root / 'adapters' / s).resolve()}" for s in stages]


def test_cli_serve_python_and_extra_args(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_model_dir(tmp_path / "m", {"anchor": 8})
    argv = serve_argv(
        capsys,
        "--no-identity",
        "--model-dir",
        str(root),
        "--python",
        "/some/env/bin/python",
        "--host",
        "0.0.0.0",
        "--port",
        "9001",
        "--max-model-len",
        "4096",
        "--dry-run",
        "--",
        "--gpu-memory-utilization",
        "0.5",
    )
    assert argv[0] == "/some/env/bin/python"
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert argv[argv.index("--port") + 1] == "9001"
    assert argv[argv.index("--max-model-len") + 1] == "4096"
    assert argv[-2:] == ["--gpu-memory-utilization", "0.5"]
    assert argv[argv.index("--max-loras") + 1] == "1"


@pytest.mark.parametrize(
    ("ranks", "bucket"),
    [
        ({"a": 8, "b": 9}, "16"),
        ({"a": {"r": 8, "rank_pattern": {"q_proj": 64}}}, "64"),
        ({"a": 320}, "320"),
        ({"a": 1}, "1"),
    ],
)
def test_cli_serve_rank_bucket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ranks: dict[str, Any], bucket: str
) -> None:
    root = make_model_dir(tmp_path / "m", ranks)
    argv = serve_argv(capsys, "--model-dir", str(root), "--dry-run")
    assert argv[argv.index("--max-lora-rank") + 1] == bucket


def test_cli_serve_base_with_adapters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_model_dir(tmp_path / "m", {"x": 8})
    argv = serve_argv(
        capsys,
        "--base",
        str(root / "base"),
        "--adapter",
        f"anchor={root / 'adapters' / 'x'}",
        "--dry-run",
    )
    start = argv.index("--lora-modules") + 1
    assert argv[start] == f"anchor={(root / 'adapters' / 'x').resolve()}"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("empty", "not a samalign model directory"),
        ("no_adapters", "no adapters found"),
        ("no_config", "adapter_config.json"),
        ("rank_too_big", "exceeds"),
    ],
)
def test_cli_serve_bad_model_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str, message: str
) -> None:
    root = tmp_path / "m"
    root.mkdir()
    if setup != "empty":
        (root / "base").mkdir()
        (root / "base" / "config.json").write_text("{}")
    if setup == "no_config":
        (root / "adapters" / "anchor").mkdir(parents=True)
    if setup == "rank_too_big":
        make_model_dir(tmp_path / "big", {"anchor": 600})
        root = tmp_path / "big"
    assert cli.main(["serve", "--model-dir", str(root), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "samalign: error: " in err
    assert message in err


def test_cli_serve_base_without_adapters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["serve", "--base", str(tmp_path), "--dry-run"]) == 2
    assert "at least one adapter" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("rank", "bucket"),
    [
        (1, 1),
        (2, 8),
        (8, 8),
        (9, 16),
        (16, 16),
        (33, 64),
        (256, 256),
        (257, 320),
        (320, 320),
        (512, 512),
    ],
)
def test_lora_rank_bucket(rank: int, bucket: int) -> None:
    assert lora_rank_bucket(rank) == bucket


@pytest.mark.parametrize("rank", [513, 600, 4096])
def test_lora_rank_bucket_too_big(rank: int) -> None:
    with pytest.raises(ConfigError, match=str(rank)):
        lora_rank_bucket(rank)


def test_vllm_rank_values() -> None:
    assert VLLM_LORA_RANKS == (1, 8, 16, 32, 64, 128, 256, 320, 512)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--server", "http://127.0.0.1:9"], 64),  # a server runs many sequences at once
        (["--model", "DIR"], 16),
        (["--server", "http://127.0.0.1:9", "--concurrency", "3"], 3),
        (["--model", "DIR", "--concurrency", "40"], 40),
    ],
)
def test_extract_concurrency_defaults_to_more_for_a_server(flags: list[str], expected: int) -> None:
    from samalign.cli.extract import _job

    args = cli.build_parser().parse_args(["extract", "in.txt", "--domain", "conll04", *flags])
    assert _job(args).concurrency == expected
