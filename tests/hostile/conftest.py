"""The hostile-input suite: bad input as a hostile or a clumsy user would give it.

Every test here is one or more *kinds* of bad input (registered with :func:`kinds`, counted in
docs/reliability.md). The harness holds every test to the same rules:

* a command ends with status 0 (the bad input became error records) or 2 with
  ``samalign: error: …`` (a :class:`~samalign.errors.SamalignError`) or an argparse usage error
  — never with another exception escaping ``samalign.cli.main``;
* no ``Traceback`` on stderr and no exception logged with its traceback (checked after every
  test by :func:`no_tracebacks`);
* a Python API call raises a :class:`~samalign.errors.SamalignError` subclass, never anything
  else (:func:`api_error`);
* a batch output accounts for every input line once, in input order (:func:`accounted`).

Models are scripted fakes answering like a model of the ``faults`` domain
(:mod:`fault_server`), so the suite runs in seconds; the server-answer cases run a fake
OpenAI-compatible server on 127.0.0.1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fault_server import DOMAIN_YAML
from harness import TRACEBACK, Result, fake_models

from samalign import cli
from samalign.serving.models import StageModels


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """``run(*argv)``: ``samalign.cli.main`` in this process, checked by the harness rules."""

    def call(*argv: str | Path, status: int | None = None) -> Result:
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as exit_:  # argparse: a usage error (status 2) or --help
            code = int(exit_.code or 0)
            captured = capsys.readouterr()
            assert code == 2 and "error:" in captured.err, captured.err
            return Result(code, captured.out, captured.err)
        captured = capsys.readouterr()
        assert not TRACEBACK.search(captured.err), captured.err
        assert code in (0, 2), (code, captured.err)
        if code == 2:
            assert captured.err.startswith("samalign: error: "), captured.err
            assert len(captured.err) < 4000, "an error message must stay short"
        if status is not None:
            assert code == status, captured.err
        return Result(code, captured.out, captured.err)

    return call


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail a test that logged an exception with its traceback (an unexpected crash)."""
    caplog.set_level(logging.WARNING)
    yield
    crashed = [r for r in caplog.records if r.exc_info]
    assert not crashed, [r.getMessage() for r in crashed]


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replace the vLLM server inside the CLI with fake stage models (``--server`` works).

    Set ``backend["script"] = fn(messages, stage) -> str`` to change the answers.
    """
    state: dict[str, Any] = {"script": None, "built": 0}

    def check_servers(urls: Any, adapters: Any, **kwargs: Any) -> list[str]:
        return list(urls) if not isinstance(urls, str) else [urls]

    def vllm_server_models(base_url: Any, *, stages: Sequence[str], **kwargs: Any) -> StageModels:
        state["built"] += 1
        return fake_models(stages, state["script"])

    monkeypatch.setattr("samalign.serving.vllm_server.check_servers", check_servers)
    monkeypatch.setattr("samalign.serving.vllm_server.vllm_server_models", vllm_server_models)
    return state


@pytest.fixture
def domain_file(tmp_path: Path) -> Path:
    """The ``faults`` domain as a YAML file."""
    path = tmp_path / "faults.yaml"
    path.write_text(DOMAIN_YAML, encoding="utf-8")
    return path


@pytest.fixture
def extract(
    run: Callable[..., Result], backend: dict[str, Any], domain_file: Path
) -> Callable[..., Result]:
    """``extract(input, *flags)``: ``samalign extract`` on the fake backend, faults domain."""

    def call(source: str | Path, *flags: str | Path, status: int | None = None) -> Result:
        argv: list[str | Path] = ["extract", source, "--server", "http://127.0.0.1:9", "--quiet"]
        if "--domain" not in flags:
            argv += ["--domain", domain_file]
        return run(*argv, *flags, status=status)

    return call


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``hostile`` (``pytest -m hostile`` runs the suite alone)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.hostile)
