"""The real command in a real process: no traceback on stderr, and ``kill -9`` loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fault_server import DOMAIN_YAML, fault_server, write_records
from harness import TRACEBACK, accounted, alias_bomb, kind

REPO = Path(__file__).resolve().parents[2]

HOSTILE_LINES = [
    b'{"id": "s", "text": "bad \\ud800 text"}',
    b'{"id": "deep", "text": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
    b'{"id": ' + b"9" * 5000 + b', "text": "x"}',
    b'{"id": 1.5, "text": "Alice"}',
    b'{"id": "l", "text": "caf\xe9"}',
    b"[" * 100_000,
    b'{"id": "ok", "text": "Alice met Bob in Paris."}',
    b'{"id": "ok", "text": "Carol met Dave in Lima."}',
]


def samalign(*argv: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "samalign", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@kind("extract", "every hostile kind of input line at once, in a real process")
def test_real_process_prints_no_traceback(tmp_path: Path) -> None:
    domain = tmp_path / "faults.yaml"
    domain.write_text(DOMAIN_YAML, encoding="utf-8")
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(HOSTILE_LINES) + b"\n")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb(), encoding="utf-8")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    report = tmp_path / "r.json"
    with fault_server() as server:
        url = server.url
        runs = [
            samalign(
                "extract", source, "--domain", domain, "--server", url, "--out", out, "--quiet"
            ),
            samalign("domains", bomb),
            samalign("eval", deep, "--domain", domain, "--backend", "gold", "--out", report),
            samalign("extract", source, "--domain", domain, "--server", "http://[::1", "--quiet"),
        ]
    for done in runs:
        assert not TRACEBACK.search(done.stderr), done.stderr[-3000:]
    assert [r.returncode for r in runs] == [0, 2, 2, 2], [r.stderr[-500:] for r in runs]
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(HOSTILE_LINES)


@kind("extract", "kill -9 in the middle of a run, then resume")
def test_kill_and_resume(tmp_path: Path) -> None:
    domain = tmp_path / "faults.yaml"
    domain.write_text(DOMAIN_YAML, encoding="utf-8")
    ids = [f"r{i}" for i in range(40)]
    source = write_records(tmp_path / "in.jsonl", ids)
    out = tmp_path / "out.jsonl"

    def slow(body: dict[str, Any]) -> str:
        time.sleep(0.02)
        return "ok"

    with fault_server(choose=slow) as server:
        argv = [sys.executable, "-m", "samalign", "extract", str(source), "--domain"]
        argv += [str(domain), "--server", server.url, "--out", str(out), "--quiet"]
        argv += ["--concurrency", "2"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") >= 5:
                break
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        assert process.stderr is not None
        assert not TRACEBACK.search(process.stderr.read().decode())
        written = out.read_bytes()
        assert 5 <= written.count(b"\n") < len(ids), "killed in the middle"
        for line in written.splitlines(keepends=True)[:-1]:
            json.loads(line)  # every complete line is valid
        done = samalign(
            "extract", source, "--domain", domain, "--server", server.url, "--out", out, "--quiet"
        )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = accounted(out, ids)
    assert all(r["error"] is None for r in rows)
