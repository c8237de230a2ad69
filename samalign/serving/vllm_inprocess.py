"""The in-process vLLM backend: ``AsyncLLM`` with one ``LoRARequest`` per stage, no server.

For batch jobs on GPU machines: vLLM's continuous batching and paged attention, without an
HTTP hop. :func:`vllm_inprocess_models` builds :class:`~samalign.serving.models.StageModels`
on one engine (:mod:`samalign.serving.vllm_engine`), created lazily on the first request and
shut down by ``StageModels.close()``.

vLLM pins its own torch and transformers, so it often lives in another environment. Pass
``python=`` (that environment's interpreter) and the same engine runs in a child process
started with it, spoken to over pipes (JSON lines) — still no server and no port. Without
``python=``, vLLM must be importable here and the engine runs in this process, on a
background thread with its own event loop; vLLM then starts its engine core as a child
process, so scripts need the ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import itertools
import json
import logging
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from samalign.errors import BackendError, ConfigError, InputError, SamalignError
from samalign.serving import vllm_engine
from samalign.serving.chat import choose_adapters, engine_stage_models
from samalign.serving.engine import GenerationRequest, GenerationResult, LoopThread
from samalign.serving.launcher import vllm_cpu_env
from samalign.serving.model_dir import ModelDir, load_model_dir
from samalign.serving.models import StageModels
from samalign.types import NER_STAGES

log = logging.getLogger(__name__)

LLM_TYPE = "samalign-vllm-inprocess"


def _payload(request: GenerationRequest) -> dict[str, Any]:
    return {
        "messages": [{"role": t.role, "content": t.content} for t in request.messages],
        "adapter": request.adapter,
        "max_tokens": request.max_tokens,
        "schema": dict(request.schema) if request.schema is not None else None,
        "stop": list(request.stop),
    }


def _result(reply: Mapping[str, Any], waited: float) -> GenerationResult:
    return GenerationResult(
        text=str(reply["text"]),
        token_ids=tuple(int(t) for t in reply["token_ids"]),
        prompt_tokens=int(reply["prompt_tokens"]),
        finish_reason="length" if reply["finish_reason"] == "length" else "stop",
        queue_wait_s=waited,
        generation_s=float(reply.get("generation_s", 0.0)),
        batch_size=0,  # vLLM batches continuously; there is no fixed batch to report
    )


def _error(kind: str, message: str) -> SamalignError:
    if kind == "input":
        return InputError(message)
    return BackendError(f"in-process vLLM: {message}")


class VllmInprocessEngine:
    """The vLLM engine in this process (vLLM must be importable here).

    Args:
        base: Base model folder.
        adapters: Adapter name → folder.
        **options: :class:`~samalign.serving.vllm_engine.EngineSettings` fields.
    """

    llm_type = LLM_TYPE

    def __init__(self, base: Path, adapters: Mapping[str, Path], **options: Any) -> None:
        self.source = str(base)  # what the models are, for stage-cache keys
        if importlib.util.find_spec("vllm") is None:
            raise ConfigError(
                "vLLM is not installed in this environment: pip install 'samalign[vllm]', or "
                "pass python=<interpreter of an environment with vLLM> to run the engine in a "
                "worker process"
            )
        self._engine = vllm_engine.AsyncVllmEngine(
            str(base), {k: str(v) for k, v in adapters.items()}, **options
        )
        self._adapters = frozenset(adapters)
        self._thread = LoopThread("samalign-vllm")

    @property
    def adapters(self) -> frozenset[str]:
        """The adapter names this engine serves."""
        return self._adapters

    async def _answer(self, request: GenerationRequest) -> GenerationResult:
        start = time.perf_counter()
        try:
            reply = await self._engine.generate(_payload(request))
        except vllm_engine.PromptTooLongError as err:
            raise InputError(str(err.args[0])) from None
        except vllm_engine.UnknownAdapterError as err:
            raise _error("adapter", str(err.args[0])) from None
        except SamalignError:
            raise
        except Exception as err:
            raise _error("backend", f"{type(err).__name__}: {err}") from err
        waited = time.perf_counter() - start - float(reply.get("generation_s", 0.0))
        return _result(reply, max(waited, 0.0))

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Answer one request, blocking the calling thread."""
        return self._thread.run(self._answer(request))

    async def agenerate(self, request: GenerationRequest) -> GenerationResult:
        """Answer one request; cancelling the caller aborts it in vLLM."""
        return await self._thread.arun(self._answer(request))

    def close(self) -> None:
        """Shut vLLM down (idempotent)."""

        async def shutdown() -> None:
            self._engine.shutdown()

        self._thread.close(shutdown())


class VllmWorkerEngine:
    """The vLLM engine in a child process started with another environment's interpreter.

    The process starts on the first request (or :meth:`start`) and stops on :meth:`close`.

    Args:
        python: Interpreter of an environment with vLLM (and transformers).
        base: Base model folder.
        adapters: Adapter name → folder.
        settings: How the engine runs (default: the
            :class:`~samalign.serving.vllm_engine.EngineSettings` defaults).
        env: Extra environment variables for the worker (default: what the ``vllm-cpu``
            build needs when ``python``'s environment is one).
        startup_timeout_s: Seconds to wait for the engine to be ready.
        log_path: Where the worker's stderr (vLLM's log) goes (default: a temporary file,
            removed on a clean close).
    """

    llm_type = LLM_TYPE

    def __init__(
        self,
        python: str,
        base: Path,
        adapters: Mapping[str, Path],
        settings: vllm_engine.EngineSettings | None = None,
        *,
        env: Mapping[str, str] | None = None,
        startup_timeout_s: float = 900.0,
        log_path: str | Path | None = None,
    ) -> None:
        self.python = python
        self.source = str(base)  # what the models are, for stage-cache keys
        self._adapters = frozenset(adapters)
        self.argv = [
            python,
            "-P",  # do not put samalign/serving on sys.path (its modules would shadow others)
            vllm_engine.__file__,
            "--base",
            str(base),
            *itertools.chain.from_iterable(("--adapter", f"{n}={p}") for n, p in adapters.items()),
            *(settings or vllm_engine.EngineSettings()).argv(),
        ]
        self.env = dict(vllm_cpu_env(python) if env is None else env)
        self.startup_timeout_s = startup_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self.max_model_len = 0
        self._proc: subprocess.Popen[str] | None = None
        self._stdin: IO[str] | None = None
        self._pending: dict[str, concurrent.futures.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._ready = threading.Event()
        self._failure: SamalignError | None = None
        self._own_log = False
        self._closed = False

    @property
    def adapters(self) -> frozenset[str]:
        """The adapter names this engine serves."""
        return self._adapters

    def _log_tail(self, chars: int = 3000) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return self.log_path.read_text("utf-8", errors="replace")[-chars:]

    def start(self) -> None:
        """Start the worker and wait until vLLM is ready (idempotent, thread-safe).

        Raises:
            BackendError: The worker failed to start (with the tail of its log).
        """
        with self._lock:
            if self._closed:
                raise BackendError("the in-process vLLM engine is closed")
            if self._proc is None:
                self._launch()
        if not self._ready.wait(self.startup_timeout_s):
            self._fail(BackendError(f"vLLM was not ready in {self.startup_timeout_s} s"))
        if self._failure is not None:
            raise self._failure

    def _launch(self) -> None:
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="samalign-vllm-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
            self._own_log = True
        env = {**os.environ, **self.env}
        with open(self.log_path, "w", encoding="utf-8") as log_file:
            try:
                self._proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log_file,
                    env=env,
                    text=True,
                    encoding="utf-8",
                    bufsize=1,
                    start_new_session=True,
                )
            except OSError as err:
                raise ConfigError(
                    f"cannot start the vLLM worker with {self.python}: {err.strerror or err}"
                ) from None
        self._stdin = self._proc.stdin
        threading.Thread(target=self._read, name="samalign-vllm-reader", daemon=True).start()

    def _read(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        for line in proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                log.debug("vLLM worker: %s", line.rstrip())
                continue
            if message.get("event") == "ready":
                self.max_model_len = int(message.get("max_model_len") or 0)
                self._ready.set()
            elif message.get("event") == "failed":
                error = message.get("error", {})
                self._fail(
                    BackendError(
                        f"vLLM failed to start: {error.get('message')}\n{self._log_tail()}"
                    )
                )
            elif "id" in message:
                future = self._pending.pop(str(message["id"]), None)
                if future is None or future.done():
                    continue
                if "result" in message:
                    future.set_result(message["result"])
                else:
                    error = message.get("error", {})
                    future.set_exception(_error(str(error.get("kind")), str(error.get("message"))))
        code = proc.wait()
        if not self._closed:
            self._fail(
                BackendError(
                    f"the vLLM worker exited (status {code}); its log ends with:\n"
                    f"{self._log_tail()}"
                )
            )

    def _fail(self, error: SamalignError) -> None:
        self._failure = self._failure or error
        self._ready.set()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    def _send(self, message: Mapping[str, Any]) -> None:
        with self._write_lock:
            if self._stdin is None or self._stdin.closed:
                raise BackendError("the in-process vLLM engine is closed")
            try:
                self._stdin.write(json.dumps(message) + "\n")
                self._stdin.flush()
            except OSError as err:
                raise BackendError(f"cannot reach the vLLM worker: {err}") from None

    def _submit(self, request: GenerationRequest) -> tuple[str, concurrent.futures.Future[Any]]:
        self.start()
        rid = str(next(self._ids))
        future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        self._pending[rid] = future
        if self._failure is not None:
            self._pending.pop(rid, None)
            raise self._failure
        self._send({"op": "generate", "id": rid, "request": _payload(request)})
        return rid, future

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Answer one request, blocking the calling thread."""
        start = time.perf_counter()
        _, future = self._submit(request)
        reply = future.result()
        waited = time.perf_counter() - start - float(reply.get("generation_s", 0.0))
        return _result(reply, max(waited, 0.0))

    async def agenerate(self, request: GenerationRequest) -> GenerationResult:
        """Answer one request; cancelling the caller aborts it in the worker."""
        if not self._ready.is_set():
            await asyncio.to_thread(self.start)
        start = time.perf_counter()
        rid, future = self._submit(request)
        try:
            reply = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self._pending.pop(rid, None)
            with contextlib.suppress(BackendError):
                self._send({"op": "abort", "id": rid})
            raise
        waited = time.perf_counter() - start - float(reply.get("generation_s", 0.0))
        return _result(reply, max(waited, 0.0))

    def close(self, timeout: float = 60.0) -> None:
        """Shut vLLM down: close the worker's stdin, wait, then terminate (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            proc = self._proc
        if proc is None:
            return
        with self._write_lock:
            if self._stdin is not None and not self._stdin.closed:
                with contextlib.suppress(OSError):
                    self._stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("the vLLM worker did not stop in %s s; terminating it", timeout)
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._fail(BackendError("the in-process vLLM engine is closed"))
        if self._own_log and proc.returncode == 0 and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)  # a temporary log of a clean run


def vllm_inprocess_models(
    model_dir: str | Path,
    *,
    stages: Sequence[str] = NER_STAGES,
    adapters: Mapping[str, str] | None = None,
    python: str | None = None,
    max_tokens: int = 512,
    max_model_len: int | None = None,
    dtype: str = "auto",
    compact_json: bool = True,
    engine_args: Mapping[str, Any] | None = None,
    allow_outside: bool = False,
    **worker_options: Any,
) -> StageModels:
    """Build :class:`StageModels` on one in-process vLLM engine (no server).

    Every adapter of the model directory is registered as a ``LoRARequest``
    (``max_loras`` = their number, so no stage waits for an adapter slot); identity adapters
    are served as LoRAs too, so every request names an adapter. vLLM starts on the first
    request; close the models (or use ``with``) to shut it down.

    Args:
        model_dir: Model directory (``base/`` + ``adapters/<name>/`` + optional manifest).
        stages: Stages to configure.
        adapters: Stage → adapter name overrides.
        python: Interpreter of another environment with vLLM: run the engine there, in a
            child process. Default: vLLM in this process.
        max_tokens: Completion budget of a call that does not set ``max_tokens``.
        max_model_len: Context length (default: the model's).
        dtype: vLLM ``dtype`` (``"float32"`` for token-exact comparisons on CPU).
        compact_json: No free whitespace in constrained JSON (as ``samalign serve``).
        engine_args: More ``AsyncEngineArgs`` fields (``gpu_memory_utilization``, ...).
        allow_outside: Follow manifest paths and links that lead outside the directory.
        **worker_options: With ``python``: :class:`VllmWorkerEngine` options (``env``,
            ``startup_timeout_s``, ``log_path``).

    Raises:
        ConfigError: Bad model directory, an adapter missing or not matching the base model,
            vLLM not available.
    """
    directory: ModelDir = load_model_dir(model_dir, allow_outside=allow_outside)
    choose_adapters(stages, adapters, frozenset(directory.adapters))
    options: dict[str, Any] = {
        "max_lora_rank": directory.max_lora_rank,
        "max_model_len": max_model_len,
        "dtype": dtype,
        "compact_json": compact_json,
        "engine_args": dict(engine_args or {}),
    }
    engine: VllmInprocessEngine | VllmWorkerEngine
    if python is None:
        if worker_options:
            raise ConfigError(f"{sorted(worker_options)} only apply with python=...")
        engine = VllmInprocessEngine(directory.base, directory.adapters, **options)
    else:
        settings = vllm_engine.EngineSettings(**options)
        engine = VllmWorkerEngine(
            python, directory.base, directory.adapters, settings, **worker_options
        )
    return engine_stage_models(engine, stages=stages, adapters=adapters, max_tokens=max_tokens)


__all__ = ["VllmInprocessEngine", "VllmWorkerEngine", "vllm_inprocess_models"]
