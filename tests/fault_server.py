"""A fake OpenAI-compatible server on 127.0.0.1 that answers stage prompts and injects faults.

It serves ``GET /v1/models`` and ``POST /v1/chat/completions`` (stdlib ``http.server``, one
thread per connection, HTTP/1.1 keep-alive) and, per request, answers normally or injects one
of :data:`FAULTS`, chosen by a function of the request. Every request is logged (stage, a key
of its body — identical retries share it —, the fault), so a test can tell how many requests
failed every retry.

The answers come from :func:`stage_answer`: a tiny "model" that finds the names of
:data:`PEOPLE` and :data:`PLACES` in the prompt, so every stage of the NER graph has work.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FAULTS = (
    "ok",
    "500",  # HTTP 500 with an error body
    "503",  # HTTP 503
    "429",  # rate limited
    "400",  # the request's own fault: never retried
    "timeout",  # no answer until long after the client's deadline
    "drip",  # the answer one byte at a time, slower than the deadline allows
    "truncated",  # Content-Length says more than the server sends, then it hangs up
    "nonjson",  # HTTP 200 with an HTML page
    "badjson",  # HTTP 200, application/json, a body cut off mid-value
    "nochoices",  # a completion with "choices": []
    "nullchoices",  # a completion with "choices": null
    "deepjson",  # a valid completion whose content is 100,000 nested brackets
    "surrogate",  # a valid completion whose content holds a lone surrogate escape
)
"""Every behaviour the server can put on a request."""

GARBAGE = ("truncated", "nonjson", "badjson", "nochoices", "nullchoices")
"""Faults that are broken answers (retried like a 5xx)."""

PEOPLE = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank")
PLACES = ("Paris", "Lima", "Oslo", "Kyoto", "Cairo", "Quito")

DOMAIN_YAML = """\
name: faults
description: people and places (fault-injection tests)
entity_types:
  - label: person
    definition: a human being named in the text
    archetype: Person
  - label: location
    definition: a city or country named in the text
    archetype: Location
"""
"""The domain :func:`stage_answer` answers for."""

_ENT = re.compile(r"<ENT>(.*?)</ENT>")
_INITIAL = re.compile(r"Initial Output:\s*(\{.*\})", re.DOTALL)
_ARCHETYPE = {"person": "Person", "location": "Location"}


def record_text(i: int) -> str:
    """The text of record ``i`` (two people and a place)."""
    return f"Report {i}: {PEOPLE[i % 6]} met {PEOPLE[(i + 1) % 6]} in {PLACES[i % 6]} on day {i}."


def write_records(path: Path, ids: Sequence[str]) -> Path:
    """Write a JSONL input of the records ``ids`` (record ``i`` reads :func:`record_text`)."""
    path.write_text(
        "".join(
            json.dumps({"id": rid, "text": record_text(i)}) + "\n" for i, rid in enumerate(ids)
        ),
        encoding="utf-8",
    )
    return path


def _found(prompt: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for label, names in (("person", PEOPLE), ("location", PLACES)):
        hits = [n for n in names if n in prompt]
        if hits:
            out[label] = hits
    return out


def stage_answer(stage: str, prompt: str) -> str:
    """What a well-behaved model answers a stage prompt of the :data:`DOMAIN_YAML` domain."""
    if stage in ("anchor", "explorer"):
        return json.dumps(_found(prompt))
    if stage == "archetype":
        out: dict[str, list[str]] = {}
        for mention in dict.fromkeys(_ENT.findall(prompt)):
            label = "person" if mention in PEOPLE else "location"
            out.setdefault(_ARCHETYPE[label], []).append(mention)
        return json.dumps(out)
    if stage == "calibrate":
        match = _INITIAL.search(prompt)
        initial: dict[str, str] = json.loads(match.group(1)) if match else {}
        return json.dumps({m: "person" if m in PEOPLE else "location" for m in initial})
    return "{}"


def completion(content: str, model: str) -> dict[str, Any]:
    """An OpenAI chat completion body."""
    return {
        "id": "cmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


@dataclass
class Request:
    """One logged chat request (``seconds``: how long the server took to answer it)."""

    stage: str
    key: str
    fault: str
    at: float
    seconds: float = 0.0


@dataclass
class FaultServer:
    """The server (see the module docs); use :func:`fault_server` to run one.

    Attributes:
        choose: Request body → fault name (default: always ``ok``).
        answer: (stage, prompt) → the completion's content.
        adapters: Names ``GET /v1/models`` lists.
        hang_s: How long a ``timeout`` fault waits before hanging up.
        drip_s: Seconds between the bytes of a ``drip`` answer.
    """

    choose: Callable[[dict[str, Any]], str] = lambda body: "ok"
    answer: Callable[[str, str], str] = stage_answer
    adapters: Sequence[str] = ("anchor", "explorer", "archetype", "calibrate", "base")
    hang_s: float = 5.0
    drip_s: float = 0.5
    models_fault: str = "ok"
    requests: list[Request] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def log(self, stage: str, key: str, fault: str) -> Request:
        request = Request(stage, key, fault, time.monotonic())
        with self._lock:
            self.requests.append(request)
        return request

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def drip(self, body: bytes, ctype: str | None = None) -> None:
                """Send ``body`` one byte every ``drip_s`` seconds (a client may hang up)."""
                self.send_response(200)
                if ctype is not None:
                    self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    for i in range(len(body)):
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(server.drip_s)
                except OSError:  # the client gave up: fine
                    self.close_connection = True

            def do_GET(self) -> None:
                if self.path.rstrip("/") != "/v1/models":
                    self.send(404, b'{"error": "not found"}')
                    return
                data = [{"id": name, "object": "model"} for name in server.adapters]
                listing = json.dumps({"object": "list", "data": data}).encode()
                if server.models_fault == "drip":
                    self.drip(listing)
                elif server.models_fault == "list":
                    self.send(200, b"[1, 2, 3]")
                elif server.models_fault == "deep":
                    self.send(200, b"[" * 100_000)
                else:
                    self.send(200, listing)

            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(size)
                try:
                    body = json.loads(raw)
                except ValueError:
                    self.send(400, b'{"error": "bad request"}')
                    return
                fault = server.choose(body)
                stage = str(body.get("model", ""))
                key = hashlib.sha256(raw).hexdigest()[:16]
                logged = server.log(stage, key, fault)
                prompt = "".join(str(m.get("content", "")) for m in body.get("messages", [])[:1])
                try:
                    self.fault(fault, stage, prompt)
                finally:
                    logged.seconds = time.monotonic() - logged.at

            def hang_up(self) -> None:
                self.close_connection = True
                try:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def fault(self, fault: str, stage: str, prompt: str) -> None:
                ok = json.dumps(completion(server.answer(stage, prompt), stage)).encode()
                if fault == "ok":
                    self.send(200, ok)
                elif fault in ("500", "503", "429", "400"):
                    error = {"error": {"message": f"injected {fault}", "code": int(fault)}}
                    self.send(int(fault), json.dumps(error).encode())
                elif fault == "timeout":
                    time.sleep(server.hang_s)
                    self.hang_up()
                elif fault == "drip":
                    self.drip(ok, "application/json")
                elif fault == "truncated":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(ok)))
                    self.end_headers()
                    self.wfile.write(ok[: len(ok) // 2])
                    self.hang_up()
                elif fault == "nonjson":
                    self.send(
                        200, b"<html><body>502 Bad Gateway (proxy)</body></html>", "text/html"
                    )
                elif fault == "badjson":
                    self.send(200, ok[: len(ok) // 2])
                elif fault == "nochoices":
                    self.send(200, json.dumps({**completion("", stage), "choices": []}).encode())
                elif fault == "nullchoices":
                    self.send(200, json.dumps({**completion("", stage), "choices": None}).encode())
                elif fault == "deepjson":
                    self.send(200, json.dumps(completion("[" * 100_000, stage)).encode())
                elif fault == "surrogate":  # \\ud800 in JSON text: a lone surrogate once decoded
                    body = json.dumps(completion("@@", stage))
                    lone = '"{\\"person\\": [\\"Alice\\"]} \\ud800 \\udfff"'
                    self.send(200, body.replace('"@@"', lone).encode())
                else:  # pragma: no cover - a test asked for an unknown fault
                    raise ValueError(f"unknown fault {fault!r}")

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up (its deadline passed): expected here

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def count(self, fault: str | None = None) -> int:
        with self._lock:
            return sum(fault is None or r.fault == fault for r in self.requests)

    def exhausted(self, attempts: int, late_s: float | None = None) -> int:
        """Request bodies whose ``attempts`` consecutive tries all failed.

        A try failed when it got a fault, or (with ``late_s``) when the server took longer
        than ``late_s`` to answer it: under load an ``ok`` answer can miss the client's deadline.
        """
        with self._lock:
            runs: dict[str, int] = {}
            worst: dict[str, int] = {}
            for r in self.requests:
                failed = r.fault != "ok" or (late_s is not None and r.seconds > late_s)
                runs[r.key] = runs.get(r.key, 0) + 1 if failed else 0
                worst[r.key] = max(worst.get(r.key, 0), runs[r.key])
        return sum(n >= attempts for n in worst.values())


@contextmanager
def fault_server(**kwargs: Any) -> Iterator[FaultServer]:
    """Run a :class:`FaultServer` for the ``with`` block."""
    server = FaultServer(**kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()
