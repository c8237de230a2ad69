"""Start a vLLM OpenAI-compatible server for a model directory and wait until it answers.

:func:`running_vllm_server` is what the demo and the integration tests use (and what a script
wants): the same command ``samalign serve`` runs (:mod:`samalign.serving.launcher`), started in
its own process group with its output in a log file, awaited until ``GET /v1/models``
answers, and stopped — the whole process group, vLLM's engine processes included — when the
``with`` block ends. A server that exits early or does not come up in time raises a
:class:`~samalign.errors.BackendError` that names the log file and quotes its last lines.

Example:
    >>> with running_vllm_server("runs/tiny-model", python=VLLM_PY) as server:
    ...     models = vllm_server_models(server.url)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from samalign.errors import BackendError, ConfigError
from samalign.serving.launcher import build_serve_command, serve_target

READY_PATH = "/v1/models"
"""The endpoint that answers 200 once an OpenAI-compatible server is ready."""

_TAIL_CHARS = 4000


@dataclass(frozen=True)
class ServerProcess:
    """A running server, as :func:`running_server` and :func:`running_vllm_server` yield it.

    Attributes:
        url: Where it answers (``http://127.0.0.1:PORT``), for ``vllm_server_models(url)``.
        process: The process (the leader of its own process group).
        log_path: The file its stdout and stderr go to.
    """

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, chars: int = _TAIL_CHARS) -> str:
    """The last ``chars`` characters of a log file ('' if it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - chars))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _client_url(host: str, port: int) -> str:
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _stop(proc: subprocess.Popen[bytes], stop_timeout: float) -> None:
    """SIGTERM the process group, wait, then SIGKILL whatever of the group is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(stop_timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _wait_ready(
    proc: subprocess.Popen[bytes],
    url: str,
    log: Path,
    timeout: float,
    name: str,
    ready_path: str = READY_PATH,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            raise BackendError(
                f"the {name} exited with code {code} before it answered {url}{ready_path}; "
                f"its log is {log}; last lines:\n{log_tail(log)}"
            )
        try:
            if httpx.get(url + ready_path, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise BackendError(
                f"the {name} did not answer {url}{ready_path} within {timeout:g} s (stopped "
                f"it); its log is {log}; last lines:\n{log_tail(log)}"
            )
        time.sleep(0.5)


@contextlib.contextmanager
def running_server(
    argv: Sequence[str],
    *,
    url: str,
    env: Mapping[str, str] | None = None,
    log_path: str | Path | None = None,
    timeout: float = 900.0,
    stop_timeout: float = 60.0,
    name: str = "server",
    ready_path: str = READY_PATH,
    cwd: str | Path | None = None,
) -> Iterator[ServerProcess]:
    """Run a server command until the ``with`` block ends.

    Args:
        argv: The command.
        url: Where it answers (``http://host:port``, no path).
        env: The whole environment of the command (default: this process's).
        log_path: File for its stdout and stderr (default: a temporary file, removed after a
            clean run and kept — named in the error — when the server fails).
        timeout: Seconds to wait until ``GET {url}/v1/models`` answers 200.
        stop_timeout: Seconds between SIGTERM and SIGKILL of the process group on exit.
        name: What to call it in messages.
        ready_path: The path that answers 200 once it is ready (default: an OpenAI-compatible
            server's ``/v1/models``; e.g. ``/ok`` for LangGraph's server).
        cwd: Its working folder (default: this process's).

    Yields:
        The server, once it answers.

    Raises:
        ConfigError: If the command cannot be started.
        BackendError: If it exits before it answers, or does not answer in time (it is
            stopped); the message names the log file and quotes its end.
    """
    own_log = log_path is None
    if log_path is None:
        descriptor, log_path = tempfile.mkstemp(prefix="samalign-server-", suffix=".log")
        os.close(descriptor)
    log = Path(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(os.environ if env is None else env),
                start_new_session=True,
                cwd=cwd,
            )
        except OSError as err:
            raise ConfigError(
                f"cannot run {argv[0]}: {err.strerror or err}; give the interpreter of the "
                "environment vLLM is installed in (python=..., --python, --vllm-python)"
            ) from None
    clean = False
    try:
        _wait_ready(proc, url, log, timeout, name, ready_path)
        yield ServerProcess(url=url, process=proc, log_path=log)
        clean = True
    finally:
        _stop(proc, stop_timeout)
        if clean and own_log:
            log.unlink(missing_ok=True)


@contextlib.contextmanager
def running_vllm_server(
    model_dir: str | Path | None = None,
    *,
    base: str | Path | None = None,
    adapters: Mapping[str, str | Path] | None = None,
    python: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    log_path: str | Path | None = None,
    timeout: float = 900.0,
    stop_timeout: float = 60.0,
    max_model_len: int | None = None,
    served_model_name: str | None = None,
    identity: bool = True,
    allow_outside: bool = False,
    compact_json: bool = True,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[ServerProcess]:
    """Serve a model directory (or a base + adapters) with vLLM until the block ends.

    The command is the one ``samalign serve`` runs for the same arguments (manifest honoured,
    adapters checked, an identity ``calibrate`` added unless ``identity=False``).

    Args:
        model_dir: A model directory; or give ``base`` and ``adapters``.
        base: A base model folder (with ``adapters``).
        adapters: Served name → adapter folder (added to the directory's).
        python: Interpreter of the environment vLLM is installed in (default: this one).
        host: Bind address (loopback by default).
        port: Port (default: a free one).
        log_path: The server's log file (default: a temporary file, see :func:`running_server`).
        timeout: Seconds to wait until the server answers.
        stop_timeout: Seconds between SIGTERM and SIGKILL of its process group on exit.
        max_model_len: Context length limit.
        served_model_name: Name of the base model in ``/v1/models``.
        identity: Add an identity ``calibrate`` adapter when there is none.
        allow_outside: Let the directory's manifest and links point outside it.
        compact_json: No free whitespace in constrained JSON (see ``samalign serve``).
        extra_args: More vLLM arguments.
        env: Extra environment variables for the server.

    Yields:
        The server once it answers: ``.url`` (``http://127.0.0.1:PORT``, for
        ``vllm_server_models``), ``.process``, ``.log_path``.

    Raises:
        ConfigError: A bad model directory or adapter, or an interpreter that cannot be run.
        BackendError: The server exits before it answers or does not answer within
            ``timeout`` (the message names the log and quotes its end).
    """
    model, _ = serve_target(
        model_dir, base=base, adapters=adapters, identity=identity, allow_outside=allow_outside
    )
    if not port:
        port = free_port("127.0.0.1" if host in ("", "0.0.0.0", "::") else host)
    command = build_serve_command(
        model,
        python=python,
        host=host,
        port=port,
        max_model_len=max_model_len,
        served_model_name=served_model_name,
        compact_json=compact_json,
        extra_args=extra_args,
    )
    full_env = {**command.env, **os.environ, **(env or {})}
    with running_server(
        command.argv,
        url=_client_url(host, port),
        env=full_env,
        log_path=log_path,
        timeout=timeout,
        stop_timeout=stop_timeout,
        name="vLLM server",
    ) as server:
        yield server


__all__ = [
    "READY_PATH",
    "ServerProcess",
    "free_port",
    "log_tail",
    "running_server",
    "running_vllm_server",
]
