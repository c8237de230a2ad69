"""What an in-process generation engine offers the chat models built on it.

The transformers backend and the in-process vLLM backend both implement :class:`Engine`:
one engine holds one base model and every stage's adapter; one chat model per stage
(:class:`~samalign.serving.chat.EngineChatModel`) sends it :class:`GenerationRequest` objects.
Engines run their own event loop on a background thread (:class:`LoopThread`), so chat models
can be called from any thread or event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from samalign.errors import BackendError

T = TypeVar("T")
log = logging.getLogger(__name__)

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class ChatTurn:
    """One chat message as the chat template sees it."""

    role: str
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    """One completion request for an engine.

    Attributes:
        messages: The conversation; rendered with the base model's chat template with the
            generation prompt added (as vLLM's chat endpoint does).
        adapter: The LoRA adapter (by name) that answers.
        max_tokens: Completion budget (tokens, counting the end-of-sequence token).
        schema: JSON schema the answer must follow (constrained decoding), or ``None``.
        stop: Stop strings; the answer ends before the first one.
    """

    messages: tuple[ChatTurn, ...]
    adapter: str
    max_tokens: int
    schema: Mapping[str, Any] | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationResult:
    """An engine's answer to one :class:`GenerationRequest`.

    Attributes:
        text: The completion text (special tokens and stop strings removed).
        token_ids: The completion tokens (with the end-of-sequence token when it ended so).
        prompt_tokens: Tokens in the rendered prompt.
        finish_reason: ``"stop"`` (end of sequence or stop string) or ``"length"``.
        queue_wait_s: Seconds the request waited for its batch.
        generation_s: Seconds its batch took to generate.
        batch_size: Requests generated together with it (itself included).
    """

    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    finish_reason: FinishReason
    queue_wait_s: float = 0.0
    generation_s: float = 0.0
    batch_size: int = 1
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def completion_tokens(self) -> int:
        """Tokens generated (the end-of-sequence token included, as vLLM counts them)."""
        return len(self.token_ids)


@runtime_checkable
class Engine(Protocol):
    """A generation engine serving named adapters of one base model."""

    @property
    def llm_type(self) -> str:
        """LangChain ``_llm_type`` of the chat models built on this engine."""
        ...

    @property
    def adapters(self) -> frozenset[str]:
        """The adapter names this engine serves."""
        ...

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Answer one request, blocking the calling thread."""
        ...

    async def agenerate(self, request: GenerationRequest) -> GenerationResult:
        """Answer one request; cancelling the caller drops the request."""
        ...

    def close(self) -> None:
        """Release the model and threads; later requests fail."""
        ...


class LoopThread:
    """An asyncio event loop running on its own daemon thread, started on first use.

    Args:
        name: Thread name.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop (the thread starts if it has not yet)."""
        with self._lock:
            if self._closed:
                raise BackendError(f"{self.name}: the engine is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=run, name=self.name, daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def in_loop(self) -> bool:
        """Whether the calling thread is this loop's thread."""
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; cancelling the returned future cancels it."""
        try:
            loop = self.loop
        except BaseException:
            coro.close()
            raise
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and block until it is done (not from the loop thread)."""
        if self.in_loop():
            coro.close()
            raise BackendError(f"{self.name}: a blocking call from the engine's own thread")
        return self.submit(coro).result()

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the loop from any event loop; cancellation is passed on."""
        if self.in_loop():
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def close(self, final: Coroutine[Any, Any, Any] | None = None, timeout: float = 60) -> None:
        """Run ``final`` (if given) on the loop, then stop the loop and join the thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._closed = True
        if loop is None or thread is None:
            if final is not None:
                final.close()
            return
        if final is not None:
            try:
                asyncio.run_coroutine_threadsafe(final, loop).result(timeout)
            except Exception:  # closing must not raise; the loop stops anyway
                log.warning("%s: error while closing", self.name, exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()


__all__ = [
    "ChatTurn",
    "Engine",
    "FinishReason",
    "GenerationRequest",
    "GenerationResult",
    "LoopThread",
]
