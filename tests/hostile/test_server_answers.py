"""Answers a real server sends: truncated, not JSON, no choices, too slow, too deep.

A fake OpenAI-compatible server on 127.0.0.1 (:mod:`fault_server`) answers each request with
the fault a test asks for; the client is samalign's real server backend.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_server import DOMAIN_YAML, FaultServer, fault_server, write_records
from harness import Result, accounted, api_error, cases, each, kind

from samalign.errors import BackendError
from samalign.serving.vllm_server import VllmServerChatModel, vllm_server_models


@pytest.fixture
def server() -> Iterator[FaultServer]:
    faults: dict[str, Any] = {"always": "ok", "first": []}

    def choose(body: dict[str, Any]) -> str:
        if faults["first"]:
            return str(faults["first"].pop(0))
        return str(faults["always"])

    with fault_server(choose=choose, hang_s=3.0, drip_s=0.2) as running:
        running.faults = faults  # type: ignore[attr-defined]
        yield running


def chat(server: FaultServer, **kwargs: Any) -> VllmServerChatModel:
    settings: dict[str, Any] = {"retries": 2, "backoff_s": 0.01, "timeout": 0.6}
    settings.update(kwargs)
    return VllmServerChatModel(
        model="anchor",
        base_url=server.url + "/v1",
        api_key="EMPTY",
        max_retries=0,
        use_responses_api=False,
        **settings,
    )


ALWAYS: list[tuple[str, str, str]] = [
    ("answer body cut off mid-way", "truncated", "RemoteProtocolError"),
    ("answer that is an HTML page", "nonjson", "502 Bad Gateway"),
    ("answer JSON cut off mid-value", "badjson", "not a chat completion"),
    ("answer with an empty choices list", "nochoices", "no choices"),
    ("answer with choices null", "nullchoices", "null value for 'choices'"),
    ("HTTP 500 on every attempt", "500", "500"),
    ("HTTP 503 on every attempt", "503", "503"),
    ("HTTP 429 on every attempt", "429", "429"),
    ("no answer before the deadline", "timeout", "deadline|timed out"),
    ("answer dripping one byte at a time", "drip", "deadline"),
]


@cases("server", "fault, message", ALWAYS)
@pytest.mark.parametrize("mode", ["async", "sync"])
def test_fault_on_every_attempt_is_retried_then_typed(
    server: FaultServer, fault: str, message: str, mode: str
) -> None:
    server.faults["always"] = fault  # type: ignore[attr-defined]
    if mode == "sync":  # the deadline transport vllm_server_models installs for sync calls
        model = vllm_server_models(server.url, stages=["anchor"], timeout=0.6, max_retries=2)
        client: Any = model["anchor"].chat_model
        client.backoff_s = 0.01

        def call() -> Any:
            return client.invoke("Alice met Bob in Paris.")

    else:
        client = chat(server)

        def call() -> Any:
            return asyncio.run(client.ainvoke("Alice met Bob in Paris."))

    started = time.monotonic()
    err = api_error(call, BackendError, "failed 3 attempt")
    assert time.monotonic() - started < 3 * 0.6 + 2.0, "a total deadline per attempt"
    text = str(err)
    assert server.url in text
    assert re.search(message, text) or (mode == "sync" and fault == "drip" and "timed out" in text)
    assert server.count() == 3  # 1 try + 2 retries


@kind("server", "HTTP 400: the request's own fault, never retried")
def test_client_error_is_not_retried(server: FaultServer) -> None:
    import openai

    server.faults["always"] = "400"  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError):  # the stage runner turns it into BackendError
        asyncio.run(chat(server).ainvoke("Alice"))
    assert server.count() == 1


@each(
    "fault",
    "server",
    "one truncated answer then a good one",
    "one 503 then a good one",
    "one answer without choices then a good one",
    "one timeout then a good one",
)
def test_one_fault_then_success(server: FaultServer, fault: str) -> None:
    name = {"truncated": "truncated", "503": "503", "choices": "nochoices", "timeout": "timeout"}
    server.faults["first"] = [next(v for k, v in name.items() if k in fault)]  # type: ignore[attr-defined]
    answer = asyncio.run(chat(server).ainvoke("Alice met Bob in Paris."))
    assert json.loads(str(answer.content)) == {"person": ["Alice", "Bob"], "location": ["Paris"]}
    assert server.count() == 2


@pytest.fixture
def domain(tmp_path: Path) -> Path:
    path = tmp_path / "faults.yaml"
    path.write_text(DOMAIN_YAML, encoding="utf-8")
    return path


def extract_via(
    run: Callable[..., Result],
    source: Path,
    domain: Path,
    url: str,
    *flags: str | Path,
    status: int,
) -> Result:
    """``samalign extract SOURCE --domain DOMAIN --server URL --quiet FLAGS`` (the real backend)."""
    return run(
        "extract", source, "--domain", domain, "--server", url, "--quiet", *flags, status=status
    )


@each(
    "fault", "server", "answer content nested 100,000 levels", "answer content with lone surrogates"
)
def test_odd_answer_content_through_the_cli(
    run: Callable[..., Result], server: FaultServer, domain: Path, tmp_path: Path, fault: str
) -> None:
    server.faults["always"] = "deepjson" if "nested" in fault else "surrogate"  # type: ignore[attr-defined]
    source = write_records(tmp_path / "in.jsonl", ["r0", "r1", "r2"])
    out = tmp_path / "out.jsonl"
    extract_via(run, source, domain, server.url, "--out", out, status=0)
    rows = accounted(out, ["r0", "r1", "r2"])
    assert [r["error"] for r in rows] == [None] * 3  # unusable output: a Diagnostic, not an error
    kinds_seen = {d["kind"] for r in rows for d in r["diagnostics"]}
    if "nested" in fault:
        assert "parse_error" in kinds_seen
        # the stage re-asked once (parse_retries=1) and gave up: bounded
        assert all(r["usage"]["anchor"]["calls"] == 2 for r in rows)


@kind("server", "a server that answers garbage to everything, through the CLI")
def test_garbage_server_through_the_cli(
    run: Callable[..., Result], server: FaultServer, domain: Path, tmp_path: Path
) -> None:
    server.faults["always"] = "nonjson"  # type: ignore[attr-defined]
    source = write_records(tmp_path / "in.jsonl", ["r0", "r1"])
    out = tmp_path / "out.jsonl"
    result = extract_via(run, source, domain, server.url, "--out", out, "--timeout", "2", status=0)
    assert "2 record(s) have an error" in result.err
    rows = accounted(out, ["r0", "r1"])
    for row in rows:
        assert row["error"].startswith("BackendError")
        assert "502 Bad Gateway" in row["error"]  # says what the server sent


@kind("server", "a server that is not there")
def test_no_server(run: Callable[..., Result], domain: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    source = tmp_path / "in.txt"
    source.write_text("Alice\n", encoding="utf-8")
    result = extract_via(run, source, domain, f"http://127.0.0.1:{port}", status=2)
    assert "cannot reach the model server" in result.err


@kind("server", "a server serving none of the adapters")
def test_server_without_adapters(run: Callable[..., Result], domain: Path, tmp_path: Path) -> None:
    with fault_server(adapters=()) as broken:
        broken_url = broken.url
        source = tmp_path / "in.txt"
        source.write_text("Alice\n", encoding="utf-8")
        result = extract_via(run, source, domain, broken_url, status=2)
    assert "does not serve adapter" in result.err


@each(
    "fault",
    "server",
    "model list dripped one byte at a time",
    "model list that is a JSON array",
    "model list nested 100,000 levels",
)
def test_hostile_model_list(fault: str) -> None:
    mode = "drip" if "dripped" in fault else "list" if "array" in fault else "deep"
    with fault_server(models_fault=mode, drip_s=0.5) as broken:
        started = time.monotonic()
        from samalign.serving.vllm_server import served_models

        err = api_error(lambda: served_models(broken.url, timeout=1.5), BackendError)
        assert time.monotonic() - started < 5, "a total deadline"
        assert broken.url in str(err)
