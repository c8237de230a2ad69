"""Hostile input lines for ``samalign extract``: each becomes one record, the batch goes on."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fault_server import record_text
from harness import Result, accounted, cases, kinds, out_lines

GOOD_BEFORE = json.dumps({"id": "first", "text": record_text(1)}).encode()
GOOD_AFTER = json.dumps({"id": "last", "text": record_text(2)}).encode()


def jl(value: Any) -> bytes:
    return json.dumps(value).encode()


DEEP = b'{"id": "deep", "text": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"

# (kind, the hostile line, the id its output line has, what its error says; None: no error)
LINES: list[tuple[str, bytes, str, str | None]] = [
    ("lone surrogate in text", b'{"id": "s", "text": "bad \\ud800 text"}', "s", "lone surrogate"),
    ("lone low surrogate in text", b'{"id": "s", "text": "x \\udfff"}', "s", "lone surrogate"),
    ("lone surrogate in id", b'{"id": "bad\\ud800id", "text": "Alice"}', "bad\\ud800id", "id is"),
    ("200,000-level nested JSON", DEEP, "line-2", "nested too deeply"),
    ("line of unbalanced brackets", b"[" * 100_000, "line-2", "nested too deeply"),
    ("invalid JSON", b'{"id": "x", "text": ', "line-2", "invalid JSON"),
    ("JSON array instead of object", jl(["Alice", "Paris"]), "line-2", "object"),
    ("JSON string instead of object", jl("Alice in Paris"), "line-2", "object"),
    ("JSON number instead of object", b"42", "line-2", "object"),
    ("JSON null line", b"null", "line-2", "object"),
    ("record without text", jl({"id": "t"}), "t", "'text'"),
    ("text is a number", jl({"id": "t", "text": 7}), "t", "'text'"),
    ("text is null", jl({"id": "t", "text": None}), "t", "'text'"),
    ("text is a list", jl({"id": "t", "text": ["Alice"]}), "t", "'text'"),
    ("id is a float", jl({"id": 1.5, "text": "Alice"}), "line-2", "1.5"),
    ("id is a boolean", jl({"id": True, "text": "Alice"}), "line-2", "boolean"),
    ("id is an object", jl({"id": {"k": 1}, "text": "Alice"}), "line-2", "object"),
    ("id is a list", jl({"id": [1, 2], "text": "Alice"}), "line-2", "list"),
    ("id of 5,000 characters", jl({"id": "i" * 5000, "text": "Alice"}), "line-2", "5000"),
    ("integer of 5,000 digits", b'{"id": ' + b"9" * 5000 + b', "text": "x"}', "line-2", "JSON"),
    ("NaN literal", b'{"id": "n", "text": NaN}', "n", "'text'"),
    ("not UTF-8 (Latin-1 bytes)", b'{"id": "l", "text": "caf\xe9"}', "line-2", "UTF-8"),
    ("CESU-8 encoded surrogate", b'{"id": "c", "text": "\xed\xa0\x80"}', "line-2", "UTF-8"),
    ("NUL bytes in text", jl({"id": "z", "text": "Alice\x00in\x00Paris"}), "z", None),
    ("empty text", jl({"id": "e", "text": ""}), "e", "empty"),
    ("whitespace-only text", jl({"id": "w", "text": " \t\u3000 "}), "w", "empty"),
    ("text over --max-chars", jl({"id": "h", "text": "Alice " * 2000}), "h", "characters"),
    ("integer id (kept as a string)", jl({"id": 7, "text": record_text(7)}), "7", None),
    ("null id (named line-N)", jl({"id": None, "text": record_text(3)}), "line-2", None),
    ("duplicate id", jl({"id": "first", "text": record_text(4)}), "first", "duplicate id"),
    ("id that looks like a fallback", jl({"id": "line-3", "text": "Alice"}), "line-3", None),
    ("control characters in id", jl({"id": "a\nb\tc\x1b", "text": "Alice"}), "a\nb\tc\x1b", None),
    ("right-to-left and zero-width text", jl({"id": "r", "text": "\u202eAlice\u200b"}), "r", None),
    ("emoji and astral characters", jl({"id": "😀", "text": "Alice 😀 in 𝒫aris"}), "😀", None),
    ("raw carriage return in a string", b'{"id": "cr", "text": "A\rB"}', "line-2", "invalid JSON"),
]


@cases("extract", "line, rid, error", LINES)
def test_hostile_line_is_one_record_and_the_batch_goes_on(
    extract: Callable[..., Result], tmp_path: Path, line: bytes, rid: str, error: str | None
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(GOOD_BEFORE + b"\n" + line + b"\n" + GOOD_AFTER + b"\n")
    out = tmp_path / "out.jsonl"
    extract(source, "--out", out, status=0)
    rows = accounted(out, ["first", rid, "last"])
    assert rows[0]["error"] is None and rows[2]["error"] is None
    assert {e["text"] for e in rows[0]["entities"]} >= {"Bob", "Carol", "Lima"}
    if error is None:
        assert rows[1]["error"] is None, rows[1]["error"]
    else:
        assert error in (rows[1]["error"] or ""), rows[1]["error"]
        assert len(rows[1]["error"]) < 1000
    before = out.read_bytes()
    extract(source, "--out", out, status=0)  # also on rerun: nothing redone, nothing lost
    assert out.read_bytes() == before
    extract(source, "--out", out, "--retry-errors", status=0)  # and when retrying errors
    accounted(out, ["first", rid, "last"])


FILES: list[tuple[str, bytes, str, list[str]]] = [
    (
        "UTF-8 BOM before JSONL",
        b"\xef\xbb\xbf" + GOOD_BEFORE + b"\n" + GOOD_AFTER,
        "jsonl",
        ["first", "last"],
    ),
    (
        "UTF-8 BOM before text",
        b"\xef\xbb\xbfAlice met Bob.\nCarol in Lima.\n",
        "txt",
        ["line-1", "line-2"],
    ),
    ("BOM and JSONL lines in a .txt", b"\xef\xbb\xbf" + GOOD_BEFORE + b"\n", "txt", ["first"]),
    ("CRLF line endings", GOOD_BEFORE + b"\r\n" + GOOD_AFTER + b"\r\n", "jsonl", ["first", "last"]),
    ("no newline at the end", GOOD_BEFORE + b"\n" + GOOD_AFTER, "jsonl", ["first", "last"]),
    ("blank and whitespace lines", b"\n \n\t\n" + GOOD_BEFORE + b"\n\n", "jsonl", ["first"]),
    ("empty input file", b"", "jsonl", []),
    ("only blank lines", b"\n\n\n", "txt", []),
    ("UTF-16 file", "Alice met Bob.\n".encode("utf-16"), "txt", ["line-1", "line-2"]),
]


@cases("extract", "kind, data, suffix, ids", FILES)
def test_hostile_file_is_read_line_by_line(
    extract: Callable[..., Result],
    tmp_path: Path,
    kind: str,
    data: bytes,
    suffix: str,
    ids: list[str],
) -> None:
    source = tmp_path / f"in.{suffix}"
    source.write_bytes(data)
    out = tmp_path / "out.jsonl"
    extract(source, "--out", out, status=0)
    rows = accounted(out, ids)
    if kind.startswith("UTF-16"):
        assert "UTF-16" in rows[0]["error"] and "UTF-8" in rows[0]["error"]
    elif ids:
        assert all(r["error"] is None for r in rows), rows


kinds("extract", "line longer than the line limit")


def test_huge_line_is_skipped_without_reading_it_whole(
    extract: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("samalign.batch.records.MAX_LINE_BYTES", 4096)
    source = tmp_path / "in.jsonl"
    huge = b'{"id": "huge", "text": "' + b"A" * 50_000 + b'"}'
    source.write_bytes(GOOD_BEFORE + b"\n" + huge + b"\n" + GOOD_AFTER + b"\n")
    out = tmp_path / "out.jsonl"
    extract(source, "--out", out, status=0)
    rows = accounted(out, ["first", "line-2", "last"])
    assert "longer than 4096 bytes" in rows[1]["error"]


kinds("extract", "plain text with JSON-looking and odd lines")


def test_plain_text_lines_are_documents(extract: Callable[..., Result], tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(b"Alice met Bob in Paris.\n{not json\n\xff\xfe bad bytes\n[1, 2]\n")
    out = tmp_path / "out.jsonl"
    extract(source, "--out", out, "--format", "text", status=0)
    rows = accounted(out, ["line-1", "line-2", "line-3", "line-4"])
    assert rows[0]["error"] is None and "UTF-8" in rows[2]["error"]


kinds("extract", "stdin input with a BOM and poison")


def test_stdin_input(
    extract: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import sys

    data = b"\xef\xbb\xbf" + GOOD_BEFORE + b'\n{"id": "s", "text": "\\ud800"}\n'
    stdin = io.TextIOWrapper(io.BytesIO(data))
    monkeypatch.setattr(sys, "stdin", stdin)
    out = tmp_path / "out.jsonl"
    extract("-", "--out", out, "--format", "jsonl", status=0)
    rows = accounted(out, ["first", "s"])
    assert "lone surrogate" in rows[1]["error"]


kinds("extract", "model answers with lone surrogates and deep nesting")


def test_model_answers_that_cannot_be_written_plainly(
    extract: Callable[..., Result], backend: dict[str, Any], tmp_path: Path
) -> None:
    def script(messages: Any, stage: str) -> str:
        if stage == "anchor":
            return '{"person": ["Alice"]} \ud800 junk'
        if stage == "explorer":
            return "[" * 100_000
        from fault_server import stage_answer

        return stage_answer(stage, str(messages[0].content))

    backend["script"] = script
    source = tmp_path / "in.jsonl"
    source.write_bytes(GOOD_BEFORE + b"\n" + GOOD_AFTER + b"\n")
    out = tmp_path / "out.jsonl"
    extract(source, "--out", out, status=0)
    rows = accounted(out, ["first", "last"])
    assert all(r["error"] is None for r in rows)
    kinds_seen = {d["kind"] for r in rows for d in r["diagnostics"]}
    assert "parse_error" in kinds_seen  # the nested answer: a Diagnostic, not a crash
    assert any("\ud800" in (d.get("raw") or "") for r in rows for d in r["diagnostics"])
    assert b"\\ud800" in out.read_bytes()  # written as its JSON escape: valid UTF-8


def test_every_output_line_is_valid_json_after_hostile_lines(
    extract: Callable[..., Result], tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(line for _, line, _, _ in LINES) + b"\n")
    out = tmp_path / "out.jsonl"
    extract(source, "--out", out, status=0)
    rows = out_lines(out)
    assert len(rows) == len(LINES)  # one line per input line, whatever it held


kinds("extract", "Ray rows and shards of records with lone surrogates")


def test_ray_rows_and_shards_stay_valid_utf8(tmp_path: Path) -> None:
    from samalign.batch.ray_job import read_shard, write_shard
    from samalign.batch.records import OutputRecord
    from samalign.types import Diagnostic

    raw = '{"person": ["Alice"]} \ud800'
    records = [
        OutputRecord(id="bad\\ud800id", text="", error="the id is not valid Unicode"),
        OutputRecord(
            id="ok",
            text="Alice",
            diagnostics=[Diagnostic(stage="anchor", kind="parse_error", message="m", raw=raw)],
        ),
    ]
    for fmt in ("parquet", "jsonl"):
        path = tmp_path / f"part-00000.{fmt}"
        write_shard(path, records, fmt)  # type: ignore[arg-type]
        back = read_shard(path)
        assert [r.id for r in back] == ["bad\\ud800id", "ok"]
        assert back[1].diagnostics[0].raw == raw  # the JSON escape reads back the same
