"""Hostile outputs, resumes and flags for ``samalign extract``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fault_server import record_text, write_records
from harness import Result, accounted, cases, each, kind, kinds, out_lines

from samalign.batch.outputs import manifest_path

IDS = [f"r{i}" for i in range(6)]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_records(tmp_path / "in.jsonl", IDS)


@pytest.fixture
def out(extract: Callable[..., Result], source: Path, tmp_path: Path) -> Path:
    """``tmp_path/out.jsonl`` after a complete first run over ``source``."""
    path = tmp_path / "out.jsonl"
    extract(source, "--out", path, status=0)
    return path


# ---------------------------------------------------------------------------------------------
# outputs that would destroy or loop on the input
# ---------------------------------------------------------------------------------------------


@kind("extract", "--out is the JSONL input itself")
def test_out_is_the_input(extract: Callable[..., Result], source: Path) -> None:
    before = source.read_bytes()
    result = extract(source, "--out", source, status=2)
    assert "is the input" in result.err
    assert source.read_bytes() == before


@kind("extract", "--out is the plain-text input itself")
def test_out_is_the_text_input(extract: Callable[..., Result], tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("Alice met Bob.\n", encoding="utf-8")
    result = extract(source, "--out", source, status=2)
    assert "is the input" in result.err
    assert source.read_text(encoding="utf-8") == "Alice met Bob.\n"


@kind("extract", "--out is a hard link to the input")
def test_out_is_a_hard_link(extract: Callable[..., Result], source: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.jsonl"
    os.link(source, link)
    assert "is the input" in extract(source, "--out", link, status=2).err


@kind("extract", "--out is a symlink to the input")
def test_out_is_a_symlink(extract: Callable[..., Result], source: Path, tmp_path: Path) -> None:
    link = tmp_path / "sym.jsonl"
    link.symlink_to(source)
    assert "is the input" in extract(source, "--out", link, status=2).err
    assert "is the input" in extract(link, "--out", source, status=2).err


@each("device", "extract", "--out /dev/zero", "--out /dev/null")
def test_out_is_a_device(extract: Callable[..., Result], source: Path, device: str) -> None:
    result = extract(source, "--out", device.split()[-1], status=2)
    assert "is a device" in result.err and "regular file" in result.err


@kind("extract", "--out is a FIFO")
def test_out_is_a_fifo(extract: Callable[..., Result], source: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    assert "pipe" in extract(source, "--out", fifo, status=2).err


@kind("extract", "--out is a folder")
def test_out_is_a_folder(extract: Callable[..., Result], source: Path, tmp_path: Path) -> None:
    assert "is a folder" in extract(source, "--out", tmp_path, status=2).err


@kind("extract", "--out under a regular file")
def test_out_under_a_file(extract: Callable[..., Result], source: Path) -> None:
    result = extract(source, "--out", source / "out.jsonl", status=2)
    assert "cannot" in result.err


@kind("extract", "input is a folder")
def test_input_is_a_folder(extract: Callable[..., Result], tmp_path: Path) -> None:
    assert "is a folder" in extract(tmp_path, status=2).err


@kind("extract", "input is a device")
def test_input_is_a_device(extract: Callable[..., Result]) -> None:
    assert "not a regular file" in extract("/dev/zero", status=2).err


@kind("extract", "input does not exist")
def test_input_missing(extract: Callable[..., Result], tmp_path: Path) -> None:
    assert "not found" in extract(tmp_path / "absent.jsonl", status=2).err


@kind("extract", "input is a FIFO (process substitution)")
def test_input_is_a_fifo(extract: Callable[..., Result], tmp_path: Path) -> None:
    import threading

    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "w", encoding="utf-8") as handle:
            handle.write(json.dumps({"id": "p", "text": record_text(0)}) + "\n")

    writer = threading.Thread(target=feed)
    writer.start()
    out = tmp_path / "out.jsonl"
    extract(fifo, "--out", out, "--format", "jsonl", status=0)
    writer.join()
    accounted(out, ["p"])


@kind("extract", "several inputs with the local engine")
def test_several_inputs(
    run: Callable[..., Result], backend: dict[str, Any], domain_file: Path, source: Path
) -> None:
    argv = ["extract", source, source, "--domain", domain_file, "--server", "http://h:1"]
    assert "--engine ray" in run(*argv, status=2).err


# ---------------------------------------------------------------------------------------------
# resumes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [["--no-explorer"], ["--graph", "document"], ["--max-chars", "100"], ["--domain", "conll04"]],
    ids=kinds(
        "extract",
        "resume with an ablation flag added",
        "resume with another graph",
        "resume with another option",
        "resume with another domain",
    ),
)
def test_resume_with_another_configuration_is_refused(
    extract: Callable[..., Result], source: Path, out: Path, flags: list[str]
) -> None:
    before = out.read_bytes()
    result = extract(source, "--out", out, *flags, status=2)
    assert "another configuration" in result.err and "--fresh" in result.err
    assert out.read_bytes() == before
    extract(source, "--out", out, *flags, "--fresh", status=0)
    accounted(out, IDS)


@kind("extract", "output without its manifest")
def test_output_without_manifest(
    extract: Callable[..., Result], source: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "r0", "text": "from somewhere else"}\n', encoding="utf-8")
    assert "--fresh" in extract(source, "--out", out, status=2).err
    extract(source, "--out", out, "--fresh", status=0)
    accounted(out, IDS)


@kind("extract", "damaged manifest")
def test_damaged_manifest(extract: Callable[..., Result], source: Path, out: Path) -> None:
    manifest_path(out).write_bytes(b"[" * 100_000)
    assert "--fresh" in extract(source, "--out", out, status=2).err


@kind("extract", "interrupted write (partial last line)")
def test_partial_last_line(extract: Callable[..., Result], source: Path, out: Path) -> None:
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:3]) + lines[3][: len(lines[3]) // 2])
    extract(source, "--out", out, status=0)
    accounted(out, IDS)


@kind("extract", "damaged line in the middle of the output")
def test_damaged_middle_line(
    extract: Callable[..., Result], source: Path, tmp_path: Path, out: Path
) -> None:
    lines = out.read_bytes().splitlines(keepends=True)
    lines[2] = b'{"id": "r2", "te\xff\n'
    out.write_bytes(b"".join(lines))
    extract(source, "--out", out, status=0)
    rows = accounted(out, IDS)
    assert all(r["error"] is None for r in rows)
    assert not (tmp_path / "out.jsonl.partial").exists()


@kind("extract", "output of other input records")
def test_output_of_other_input(extract: Callable[..., Result], source: Path, out: Path) -> None:
    write_records(source, ["x0", *IDS[1:]])
    assert "input changed" in extract(source, "--out", out, status=2).err


@kind("extract", "input shorter than its output")
def test_input_shrank(extract: Callable[..., Result], source: Path, out: Path) -> None:
    write_records(source, IDS[:3])
    assert "input changed" in extract(source, "--out", out, status=2).err


@kind("extract", "input grown since the first run")
def test_input_grew(extract: Callable[..., Result], source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    write_records(source, IDS[:3])
    extract(source, "--out", out, status=0)
    write_records(source, IDS)
    extract(source, "--out", out, status=0)
    accounted(out, IDS)


@kind("extract", "concurrent runs on one --out")
def test_concurrent_runs(extract: Callable[..., Result], source: Path, out: Path) -> None:
    from samalign.batch.local_job import local_manifest  # noqa: F401 - the manifest's owner
    from samalign.batch.outputs import claim_output

    manifest = json.loads(manifest_path(out).read_text(encoding="utf-8"))
    wanted = {k: v for k, v in manifest.items() if k != "samalign_job"}
    with claim_output(manifest_path(out), wanted, label=str(out), has_output=lambda: True):
        result = extract(source, "--out", out, status=2)  # the first run still holds the lock
    assert "another samalign run is writing" in result.err
    accounted(out, IDS)


@kind("extract", "--fresh without --out")
def test_fresh_without_out(extract: Callable[..., Result], source: Path) -> None:
    assert "--fresh" in extract(source, "--fresh", status=2).err


@kind("extract", "duplicate ids across a resume with --retry-errors")
def test_duplicate_ids_resume(
    extract: Callable[..., Result], backend: dict[str, Any], tmp_path: Path
) -> None:
    source = write_records(tmp_path / "in.jsonl", ["a", "b", "a", "c", "a"])
    out = tmp_path / "out.jsonl"
    extract(source, "--out", out, status=0)
    rows = accounted(out, ["a", "b", "a", "c", "a"])
    assert rows[0]["error"] is None and "duplicate id" in rows[2]["error"]
    assert [e["text"] for e in rows[0]["entities"]] != []  # the real result is kept
    extract(source, "--out", out, "--retry-errors", status=0)
    again = accounted(out, ["a", "b", "a", "c", "a"])
    assert again[0] == rows[0]  # never replaced by the duplicate's error record


@kind("extract", "backend failures redone with --retry-errors, then killed mid-rebuild")
def test_retry_errors_rebuild(
    extract: Callable[..., Result], backend: dict[str, Any], source: Path, tmp_path: Path
) -> None:
    from fault_server import stage_answer

    from samalign.errors import BackendError

    def flaky(messages: Any, stage: str) -> str:
        prompt = str(messages[0].content)
        if stage == "anchor" and ("Report 1:" in prompt or "Report 4:" in prompt):
            raise BackendError("injected: the server went away")
        return stage_answer(stage, prompt)

    backend["script"] = flaky
    out = tmp_path / "out.jsonl"
    extract(source, "--out", out, status=0)
    rows = accounted(out, IDS)
    assert [r["id"] for r in rows if r["error"]] == ["r1", "r4"]
    # a rebuild killed after two lines: OUT.partial holds them; the rerun finishes it
    partial = tmp_path / "out.jsonl.partial"
    partial.write_bytes(b"".join(out.read_bytes().splitlines(keepends=True)[:1]))
    backend["script"] = None
    extract(source, "--out", out, "--retry-errors", status=0)
    rows = accounted(out, IDS)
    assert all(r["error"] is None for r in rows)
    assert not partial.exists()


@kind("extract", "output to stdout with poison lines")
def test_stdout_output(extract: Callable[..., Result], tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"id": "a", "text": "Alice"}\n{"id": "b", "text": "\\ud800"}\n[\n')
    result = extract(source, status=0)
    rows = [json.loads(line) for line in result.out.splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "line-3"]


# ---------------------------------------------------------------------------------------------
# flags
# ---------------------------------------------------------------------------------------------

FLAGS: list[tuple[str, list[str], str]] = [
    ("--timeout 0", ["--timeout", "0"], "--timeout must be greater than 0"),
    ("--timeout negative", ["--timeout", "-5"], "--timeout must be greater than 0"),
    ("--timeout NaN", ["--timeout", "nan"], "--timeout"),
    ("--timeout inf", ["--timeout", "inf"], "--timeout"),
    ("--concurrency 0", ["--concurrency", "0"], "--concurrency must be at least 1"),
    ("--concurrency negative", ["--concurrency", "-3"], "--concurrency"),
    ("--max-chars 0", ["--max-chars", "0"], "--max-chars"),
    ("--max-tokens negative", ["--max-tokens", "-1"], "--max-tokens"),
    ("--anchor-schema-chunk 0", ["--anchor-schema-chunk", "0"], "--anchor-schema-chunk"),
    (
        "--batch-size 0 (ray)",
        ["--engine", "ray", "--out", "o", "--batch-size", "0"],
        "--batch-size",
    ),
    ("--actor-cpus NaN (ray)", ["--engine", "ray", "--out", "o", "--actor-cpus", "nan"], "--actor"),
    ("--concurrency not a number", ["--concurrency", "many"], "invalid int value"),
    ("--server 'http://[::1'", ["--server", "http://[::1"], "not a valid URL"),
    ("--server with a bad port", ["--server", "http://127.0.0.1:99999"], "not a valid URL"),
    ("--server ftp://", ["--server", "ftp://127.0.0.1"], "http://"),
    ("--server without a host", ["--server", "http://"], "host"),
    ("--server listed twice", ["--server", "http://h:1", "--server", "http://h:1/v1"], "twice"),
    ("--adapter without =", ["--adapter", "anchor"], "NAME=VALUE"),
    ("--adapter for an unknown stage", ["--adapter", "nope=x"], "does not run"),
    ("--format unknown", ["--format", "xml"], "invalid choice"),
    ("joint-only flag on the ner graph", ["--no-aggregation"], "--graph joint"),
    ("every extractor disabled", ["--no-anchor", "--no-explorer"], "at least one extractor"),
]


@cases("extract", "flags, message", FLAGS)
def test_bad_flags(
    run: Callable[..., Result],
    backend: dict[str, Any],
    domain_file: Path,
    source: Path,
    tmp_path: Path,
    flags: list[str],
    message: str,
) -> None:
    argv: list[str | Path] = ["extract", source, "--domain", domain_file, "--quiet"]
    if not any(f.startswith("--server") for f in flags):
        argv += ["--server", "http://127.0.0.1:9"]
    out = tmp_path / "out.jsonl"
    if "--out" not in flags:
        argv += ["--out", out]
    result = run(*argv, *flags)
    assert result.status == 2
    assert message in result.err, result.err
    assert not out.exists() or out_lines(out) == []


@kind("extract", "samalign view -o is its input")
def test_view_out_is_input(
    extract: Callable[..., Result], run: Callable[..., Result], source: Path, out: Path
) -> None:
    before = out.read_bytes()
    assert "is the input" in run("view", out, "-o", out, status=2).err
    assert out.read_bytes() == before


@kind("extract", "samalign view of hostile output lines")
def test_view_of_hostile_lines(
    extract: Callable[..., Result], run: Callable[..., Result], tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        b'{"id": "a", "text": "Alice met Bob."}\n{"id": "b\\ud800", "text": "x"}\n[[[\n'
    )
    out = tmp_path / "out.jsonl"
    extract(source, "--out", out, status=0)
    with open(out, "ab") as handle:
        handle.write(b"[" * 100_000 + b"\n")
    run("view", out, status=0)
    assert (tmp_path / "out.html").read_text(encoding="utf-8").startswith("<!")
