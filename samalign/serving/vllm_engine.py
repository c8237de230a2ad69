"""vLLM's ``AsyncLLM`` with one ``LoRARequest`` per adapter: the in-process vLLM engine.

This module imports only the standard library at import time (vLLM and transformers are
imported when the engine starts) and nothing from samalign, so that it also runs as a worker
script inside a separate vLLM environment, which usually cannot install samalign's other
dependencies (vLLM pins its own torch and transformers)::

    VLLM_PY -m samalign.serving.vllm_engine ...   # if samalign is installed there
    VLLM_PY /path/to/samalign/serving/vllm_engine.py --base BASE --adapter NAME=PATH ...

The worker speaks JSON lines: on stdin ``{"op": "generate", "id": ..., "request": {...}}`` and
``{"op": "abort", "id": ...}``; on stdout ``{"event": "ready", ...}`` once, then
``{"id": ..., "result": {...}}`` or ``{"id": ..., "error": {"kind": ..., "message": ...}}``.
EOF on stdin shuts the engine down. vLLM's own log lines go to stderr.

Prompts are rendered with the base tokenizer's chat template (generation prompt added) and
tokenised without extra special tokens, as vLLM's chat endpoint does; structured output uses
vLLM's ``StructuredOutputsParams(json=schema)`` with the xgrammar backend and no free
whitespace, as ``samalign serve`` configures the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, TextIO

COMPACT_STRUCTURED_OUTPUTS = {"backend": "xgrammar", "disable_any_whitespace": True}
"""vLLM structured-output settings matching ``samalign serve`` (compact JSON)."""

_DEFAULT_PENALTIES = ("repetition_penalty", "presence_penalty", "frequency_penalty")


class PromptTooLongError(ValueError):
    """The rendered prompt leaves no room in the model's context."""


class UnknownAdapterError(KeyError):
    """The request names an adapter the engine was not started with."""


class EngineSettings(NamedTuple):
    """How the vLLM engine runs, besides its base model and adapters.

    The worker process gets them as command-line options: :meth:`argv` writes them,
    :meth:`add_arguments` and :meth:`from_args` read them back.

    Attributes:
        max_lora_rank: vLLM's ``max_lora_rank`` (one of 1, 8, 16, 32, 64, ...).
        max_model_len: Context length (default: the model's).
        dtype: vLLM ``dtype`` (``"auto"``: bfloat16 on GPUs, the checkpoint's or bfloat16 on
            CPU; tests use ``"float32"``).
        compact_json: No free whitespace in constrained JSON (xgrammar backend).
        engine_args: More ``AsyncEngineArgs`` fields (e.g. ``gpu_memory_utilization``).
    """

    max_lora_rank: int = 16
    max_model_len: int | None = None
    dtype: str = "auto"
    compact_json: bool = True
    engine_args: Mapping[str, Any] | None = None

    def argv(self) -> list[str]:
        """These settings as the worker's command-line options (see :func:`main`)."""
        argv = ["--max-lora-rank", str(self.max_lora_rank), "--dtype", self.dtype]
        argv += ["--engine-args", json.dumps(dict(self.engine_args or {}))]
        if self.max_model_len:
            argv += ["--max-model-len", str(self.max_model_len)]
        if not self.compact_json:
            argv.append("--allow-json-whitespace")
        return argv

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Add the options :meth:`argv` writes to ``parser``."""
        parser.add_argument("--max-lora-rank", type=int, default=16)
        parser.add_argument("--max-model-len", type=int)
        parser.add_argument("--dtype", default="auto")
        parser.add_argument("--allow-json-whitespace", action="store_true")
        parser.add_argument("--engine-args", default="{}", help="JSON object of AsyncEngineArgs")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EngineSettings:
        """The settings parsed by a parser given :meth:`add_arguments`."""
        return cls(
            max_lora_rank=args.max_lora_rank,
            max_model_len=args.max_model_len,
            dtype=args.dtype,
            compact_json=not args.allow_json_whitespace,
            engine_args=json.loads(args.engine_args),
        )


class AsyncVllmEngine:
    """An ``AsyncLLM`` serving named LoRA adapters of one base model, created on first use.

    Must be used from one event loop (the loop of the first :meth:`start` or
    :meth:`generate`). On CPU and GPU alike vLLM starts its engine core in a child process,
    so a script creating this engine needs the ``if __name__ == "__main__":`` guard.

    Args:
        base: Base model folder.
        adapters: Adapter name → folder; every request names one.
        **options: How the engine runs: :class:`EngineSettings` fields.
    """

    def __init__(self, base: str, adapters: Mapping[str, str], **options: Any) -> None:
        if not adapters:
            raise ValueError("the vLLM engine needs at least one adapter")
        self.base = base
        self.adapter_paths = dict(adapters)
        self.settings = EngineSettings(**options)
        self.max_model_len = 0
        self._llm: Any = None
        self._tokenizer: Any = None
        self._loras: dict[str, Any] = {}
        self._defaults: dict[str, Any] = {}
        self._starting: asyncio.Lock | None = None

    @property
    def started(self) -> bool:
        """Whether the engine has been created."""
        return self._llm is not None

    async def start(self) -> None:
        """Create the engine (once; concurrent callers wait for the same start)."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._llm is None:
                self._create()

    def _create(self) -> None:
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.lora.request import LoRARequest

        try:
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError:  # pragma: no cover - older layouts
            from vllm import AsyncLLMEngine as AsyncLLM

        options: dict[str, Any] = {
            "model": self.base,
            "enable_lora": True,
            "max_loras": len(self.adapter_paths),
            "max_cpu_loras": len(self.adapter_paths),
            "max_lora_rank": self.settings.max_lora_rank,
            "dtype": self.settings.dtype,
            "disable_log_stats": True,
        }
        if self.settings.max_model_len:
            options["max_model_len"] = self.settings.max_model_len
        if self.settings.compact_json:
            options["structured_outputs_config"] = dict(COMPACT_STRUCTURED_OUTPUTS)
        options.update(self.settings.engine_args or {})
        self._tokenizer = AutoTokenizer.from_pretrained(self.base)
        llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**options))
        model_config = getattr(llm, "model_config", None)
        self.max_model_len = int(getattr(model_config, "max_model_len", 0) or 0)
        get_defaults = getattr(model_config, "get_diff_sampling_param", None)
        defaults = get_defaults() if callable(get_defaults) else {}
        # What a vLLM server applies from generation_config.json unless a request overrides
        # it; temperature/top-p/top-k do not matter to greedy decoding.
        self._defaults = {k: v for k, v in defaults.items() if k in _DEFAULT_PENALTIES}
        self._loras = {
            name: LoRARequest(name, index, path)
            for index, (name, path) in enumerate(self.adapter_paths.items(), start=1)
        }
        self._llm = llm

    def render(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """Prompt tokens: the chat template with the generation prompt, no extra BOS."""
        text = self._tokenizer.apply_chat_template(
            [dict(m) for m in messages], add_generation_prompt=True, tokenize=False
        )
        ids: list[int] = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    async def generate(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Answer one request (cancelling the caller aborts it in vLLM).

        Args:
            request: ``messages`` (list of ``{"role", "content"}``), ``adapter``,
                ``max_tokens``, optional ``schema`` (JSON schema) and ``stop`` (strings).

        Returns:
            ``text``, ``token_ids``, ``prompt_tokens``, ``finish_reason``, ``generation_s``.

        Raises:
            UnknownAdapterError: The adapter is not one of the engine's.
            PromptTooLongError: The prompt leaves no room in the context.
        """
        await self.start()
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        adapter = str(request["adapter"])
        lora = self._loras.get(adapter)
        if lora is None:
            raise UnknownAdapterError(
                f"adapter {adapter!r} is not loaded; loaded: {sorted(self._loras)}"
            )
        ids = self.render(request["messages"])
        if self.max_model_len and len(ids) >= self.max_model_len:
            raise PromptTooLongError(
                f"the prompt for adapter {adapter!r} has {len(ids)} tokens, which leaves no "
                f"room in the model's context of {self.max_model_len} tokens; shorten the "
                "text (e.g. split it into sentences)"
            )
        budget = int(request["max_tokens"])
        if self.max_model_len:
            budget = min(budget, self.max_model_len - len(ids))
        structured = None
        if request.get("schema") is not None:
            from vllm.sampling_params import StructuredOutputsParams

            structured = StructuredOutputsParams(json=request["schema"])
        params = SamplingParams(
            **self._defaults,
            temperature=0.0,
            max_tokens=budget,
            stop=list(request.get("stop") or []) or None,
            structured_outputs=structured,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        start = time.perf_counter()
        final: Any = None
        async for output in self._llm.generate(
            TokensPrompt(prompt_token_ids=ids),
            params,
            request_id=f"samalign-{uuid.uuid4().hex}",
            lora_request=lora,
        ):
            final = output
        if final is None or not final.outputs:
            raise RuntimeError("vLLM returned no output")
        completion = final.outputs[0]
        finish = completion.finish_reason
        return {
            "text": completion.text,
            "token_ids": list(completion.token_ids),
            "prompt_tokens": len(ids),
            "finish_reason": "length" if finish == "length" else "stop",
            "generation_s": time.perf_counter() - start,
        }

    def shutdown(self) -> None:
        """Shut the engine (and its engine-core process) down."""
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.shutdown()
            del llm
            gc.collect()  # let AsyncLLM.__del__ run now, not during interpreter teardown


# -- worker ------------------------------------------------------------------------------------


def _error(exc: BaseException) -> dict[str, str]:
    if isinstance(exc, PromptTooLongError):
        kind = "input"
    elif isinstance(exc, UnknownAdapterError):
        kind = "adapter"
    else:
        kind = "backend"
    message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    if kind == "backend":
        message = f"{type(exc).__name__}: {message}"
    return {"kind": kind, "message": message}


async def serve(engine: AsyncVllmEngine, out: TextIO) -> None:
    """Run the JSON-lines protocol (see module docs) until stdin closes."""
    loop = asyncio.get_running_loop()

    def send(message: Mapping[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    try:
        await engine.start()
    except Exception as exc:
        send({"event": "failed", "error": _error(exc)})
        return
    send({"event": "ready", "max_model_len": engine.max_model_len, "pid": os.getpid()})
    tasks: dict[str, asyncio.Task[None]] = {}

    async def answer(rid: str, request: Mapping[str, Any]) -> None:
        try:
            result = await engine.generate(request)
        except asyncio.CancelledError:
            send({"id": rid, "error": {"kind": "cancelled", "message": "aborted"}})
            return
        except Exception as exc:
            send({"id": rid, "error": _error(exc)})
        else:
            send({"id": rid, "result": result})
        finally:
            tasks.pop(rid, None)

    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            try:
                message = json.loads(line)
                rid = str(message["id"])
                op = message.get("op", "generate")
            except (ValueError, KeyError, TypeError):
                continue
            if op == "generate":
                tasks[rid] = loop.create_task(answer(rid, message["request"]))
            elif op == "abort" and rid in tasks:
                tasks[rid].cancel()
    finally:
        for task in list(tasks.values()):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        engine.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    """Worker entry point (see module docs)."""
    parser = argparse.ArgumentParser(description="samalign's vLLM engine worker (JSON lines)")
    parser.add_argument("--base", required=True)
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH")
    EngineSettings.add_arguments(parser)
    args = parser.parse_args(argv)
    adapters = dict(a.split("=", 1) for a in args.adapter)
    # The protocol owns the real stdout; anything else printing to stdout (vLLM's logging
    # handler among others) goes to stderr.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    engine = AsyncVllmEngine(args.base, adapters, **EngineSettings.from_args(args)._asdict())
    asyncio.run(serve(engine, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
