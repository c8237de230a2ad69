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

import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fault_server import DOMAIN_YAML, stage_answer
from langchain_core.messages import BaseMessage

from samalign import cli
from samalign.errors import SamalignError
from samalign.serving.models import StageModels
from samalign.testing.fakes import fake_stage_models

KINDS: dict[str, str] = {}
"""Every hostile kind the suite tries: name → area (``extract``, ``domains`` …)."""

AREAS = ("extract", "eval", "domains", "templates", "finetune", "serve", "server", "api")


def kinds(area: str, *names: str) -> list[str]:
    """Register hostile kinds of ``area`` (names must be new); returns the names."""
    assert area in AREAS, area
    for name in names:
        assert name not in KINDS, f"hostile kind {name!r} registered twice"
        KINDS[name] = area
    return list(names)


def kind(area: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: the test is the hostile kind ``name`` of ``area``."""
    kinds(area, name)

    def mark(test: Callable[..., Any]) -> Callable[..., Any]:
        return pytest.mark.hostile_kind(name)(test)

    return mark


@dataclass
class Result:
    """What one ``samalign`` command did."""

    status: int
    out: str
    err: str


TRACEBACK = re.compile(r"Traceback \(most recent call last\)")


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


def api_error(
    call: Callable[[], Any], expected: type[SamalignError] = SamalignError, match: str = ""
) -> SamalignError:
    """Run a Python API call that must fail with a samalign error; return the error."""
    try:
        call()
    except SamalignError as err:
        assert isinstance(err, expected), (type(err), err)
        assert re.search(match, str(err)), str(err)
        assert len(str(err)) < 4000, "an error message must stay short"
        return err
    except BaseException as err:  # the suite's point: nothing else may escape
        raise AssertionError(f"not a SamalignError: {type(err).__name__}: {err}") from err
    raise AssertionError("no error raised")


def out_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL output, each a JSON object (the file is valid JSONL)."""
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), "the output ends with a complete line"
    rows = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    assert all(isinstance(r, dict) for r in rows)
    return rows


def accounted(path: Path, ids: Sequence[str]) -> list[dict[str, Any]]:
    """Assert the output has one line per input record, in input order; return the lines."""
    rows = out_lines(path)
    assert [r["id"] for r in rows] == list(ids)
    for row in rows:
        assert row.get("error") is None or not str(row["error"]).startswith("unexpected"), row
    return rows


def answering(messages: Sequence[BaseMessage], stage: str) -> str:
    return stage_answer(stage, str(messages[0].content))


def fake_models(stages: Sequence[str], script: Callable[..., str] | None = None) -> StageModels:
    """Scripted stage models answering like a model of the ``faults`` domain."""

    def responder(stage: str) -> Callable[[Sequence[BaseMessage]], str]:
        if script is not None:
            return lambda messages: script(messages, stage)
        return lambda messages: answering(messages, stage)

    return fake_stage_models({stage: responder(stage) for stage in stages})


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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hostile_kind(name): the hostile kind a test tries")
