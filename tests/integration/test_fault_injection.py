"""Fault injection: ``samalign extract`` against a misbehaving server, killed and resumed.

500 records at concurrency 64 through the real command (a real process, the real server
backend) against a fake OpenAI-compatible server on 127.0.0.1 (``tests/fault_server.py``) that
answers 5 % of requests with a 5xx, lets 2 % time out, and gives 1 % broken answers (cut off,
HTML, cut-off JSON, no choices, null choices) plus 0.5 % deeply nested answer content. The run
is killed with ``kill -9`` at random moments and resumed until it finishes. Then:

* every input line is accounted once, in input order, with no duplicate;
* after every kill, every complete output line is valid JSON;
* there are no more error records than requests that failed every retry (with 3 retries that
  is about 0);
* the whole test stays within about two minutes on two cores.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fault_server import DOMAIN_YAML, GARBAGE, fault_server, write_records

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RECORDS = 500
RETRIES = 3  # samalign's default: 4 attempts in all
TIMEOUT_S = 3.0  # --timeout; an injected timeout hangs twice as long


class Faults:
    """5 % 5xx, 2 % timeouts, 1 % garbage, 0.5 % nested answers; seeded, thread-safe."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> str:
        with self.lock:
            draw = self.random.random()
            if draw < 0.05:
                return self.random.choice(("500", "503"))
            if draw < 0.07:
                return "timeout"
            if draw < 0.08:
                return self.random.choice(GARBAGE)
            if draw < 0.085:
                return "deepjson"
            return "ok"


def lines_of(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a (possibly interrupted) output; each must be valid JSON."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    return [json.loads(line) for line in complete.splitlines()]


def test_kill_9_and_faults_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    started = time.monotonic()
    domain = tmp_path / "faults.yaml"
    domain.write_text(DOMAIN_YAML, encoding="utf-8")
    ids = [f"r{i:04d}" for i in range(RECORDS)]
    source = write_records(tmp_path / "in.jsonl", ids)
    out = tmp_path / "out.jsonl"
    chooser = random.Random(11)
    kill_at = sorted(chooser.sample(range(100, RECORDS - 100), 3))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = kills = 0
    with fault_server(choose=Faults(seed=7), hang_s=TIMEOUT_S * 2) as server:
        argv = [sys.executable, "-m", "samalign", "extract", str(source), "--domain", str(domain)]
        argv += ["--server", server.url, "--out", str(out), "--quiet", "--concurrency", "64"]
        argv += ["--timeout", str(TIMEOUT_S)]
        while True:
            runs += 1
            assert runs <= 10, "the run never finished"
            process = subprocess.Popen(
                argv, env=env, stderr=subprocess.PIPE, start_new_session=True
            )
            target = kill_at[kills] if kills < len(kill_at) else None
            while process.poll() is None:
                if target is not None and len(lines_of(out)) >= target:
                    time.sleep(chooser.uniform(0.0, 0.3))  # a random moment past the mark
                    os.killpg(process.pid, signal.SIGKILL)
                    kills += 1
                    break
                time.sleep(0.02)
            process.wait(timeout=60)
            assert process.stderr is not None
            stderr = process.stderr.read().decode()
            assert "Traceback" not in stderr, stderr[-3000:]
            written = lines_of(out)  # valid JSONL after every kill
            assert [r["id"] for r in written] == ids[: len(written)]  # in order, no duplicate
            if process.returncode != -signal.SIGKILL:
                assert process.returncode == 0, stderr[-3000:]
                break
        exhausted = server.exhausted(RETRIES + 1, late_s=0.8 * TIMEOUT_S)
        requests = server.count()
        faults = {f: server.count(f) for f in ("500", "503", "timeout", "deepjson", *GARBAGE)}
    rows = lines_of(out)
    assert [r["id"] for r in rows] == ids  # every line accounted once, in input order
    assert kills == 3 and runs == 4
    errors = [r for r in rows if r["error"] is not None]
    assert len(errors) <= exhausted, (len(errors), exhausted, [e["error"] for e in errors][:3])
    assert all(e["error"].startswith("BackendError") for e in errors)
    assert sum(faults[g] for g in GARBAGE) >= 10 and faults["timeout"] >= 20, faults
    assert sum(r["entities"] != [] for r in rows) >= 0.9 * RECORDS  # the answers were used
    elapsed = time.monotonic() - started
    print(
        f"\nfault injection: {RECORDS} records, {requests} requests, faults {faults}, "
        f"{kills} kills, {runs} runs, {len(errors)} error records (≤ {exhausted} requests that "
        f"failed every retry), {elapsed:.1f} s; load {os.getloadavg()[0]:.2f}"
    )
