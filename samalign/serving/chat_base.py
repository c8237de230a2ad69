"""What samalign's own chat models share: the result they return, and one call's hooks.

Every chat model samalign ships (the in-process engines'
:class:`~samalign.serving.chat.EngineChatModel`, the replay models of ``samalign eval --backend
gold``, the scripted fakes of :mod:`samalign.testing.fakes`) answers like ``ChatOpenAI``
against vLLM: one ``AIMessage`` with ``response_metadata["finish_reason"]`` and
``usage_metadata``. :func:`chat_result` builds it.

:class:`CallChatModel` writes LangChain's ``_generate``/``_agenerate`` signatures once: a
subclass answers one :class:`ChatCall` in :meth:`~CallChatModel._answer_call` (sync) and
:meth:`~CallChatModel._aanswer_call` (async). :class:`InlineChatModel` is one for models that
compute their answer without I/O.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

M = TypeVar("M", CallbackManagerForLLMRun, AsyncCallbackManagerForLLMRun)
R = TypeVar("R")


def chat_result(
    text: str,
    *,
    input_tokens: int,
    output_tokens: int,
    finish_reason: str = "stop",
    **metadata: Any,
) -> ChatResult:
    """One generation: an ``AIMessage`` with its finish reason, metadata and token usage.

    Args:
        text: The answer.
        input_tokens: Prompt tokens (``usage_metadata["input_tokens"]``).
        output_tokens: Completion tokens.
        finish_reason: ``"stop"``, or ``"length"`` for an answer cut at the token budget.
        **metadata: More ``response_metadata`` (e.g. ``model_name``).
    """
    message = AIMessage(
        content=text,
        response_metadata={"finish_reason": finish_reason, **metadata},
        usage_metadata={
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    )
    return ChatResult(generations=[ChatGeneration(message=message)])


def word_count(messages: Sequence[BaseMessage]) -> int:
    """Whitespace-separated words in the messages: the token count of models without a tokenizer."""
    return sum(len(str(m.content).split()) for m in messages)


@dataclass(frozen=True)
class ChatCall(Generic[M]):
    """One call of a chat model: what LangChain passed to ``_generate`` or ``_agenerate``.

    Attributes:
        messages: The prompt.
        stop: Stop sequences, if any.
        run_manager: LangChain's callbacks of the run (sync or async, like the call).
        kwargs: What the caller passed besides (e.g. ``model``, ``max_tokens``).
    """

    messages: list[BaseMessage]
    stop: list[str] | None
    run_manager: M | None
    kwargs: dict[str, Any]

    def to(self, generate: Callable[..., R]) -> R:
        """Pass this call on to another model's ``_generate`` (or ``_agenerate``: await it)."""
        return generate(self.messages, stop=self.stop, run_manager=self.run_manager, **self.kwargs)


SyncCall = ChatCall[CallbackManagerForLLMRun]
"""A call of ``_generate``."""

AsyncCall = ChatCall[AsyncCallbackManagerForLLMRun]
"""A call of ``_agenerate``."""


class CallChatModel(BaseChatModel):
    """A chat model that answers one :class:`ChatCall`; subclasses write :meth:`_answer_call`.

    The async path, :meth:`_aanswer_call`, defaults to the next class's ``_agenerate`` (LangChain's:
    :meth:`_answer_call` in its default executor thread). A subclass that also derives from
    another chat model (``class M(CallChatModel, ChatOpenAI)``) reaches that model's own
    methods through ``super(CallChatModel, self)``.
    """

    @abstractmethod
    def _answer_call(self, call: SyncCall) -> ChatResult:
        """The answer to a sync call."""

    async def _aanswer_call(self, call: AsyncCall) -> ChatResult:
        """The answer to an async call (default: :meth:`_apass_on`)."""
        return await self._apass_on(call)

    async def _apass_on(self, call: AsyncCall) -> ChatResult:
        """The next class's ``_agenerate`` answer to ``call``."""
        return await call.to(super()._agenerate)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._answer_call(ChatCall(messages, stop, run_manager, kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await self._aanswer_call(ChatCall(messages, stop, run_manager, kwargs))


class InlineChatModel(CallChatModel):
    """A chat model that computes its answer without I/O; subclasses write :meth:`_reply`.

    The sync path calls :meth:`_reply`. The async path awaits :meth:`_before_reply` and calls
    :meth:`_reply` inline on the event loop when :meth:`_answers_inline` says so (nothing to wait
    for, so no thread hop), else in LangChain's default executor thread (for answers that may
    block, e.g. a test script waiting on a threading event).
    """

    answer_async_inline: ClassVar[bool] = True

    def _answers_inline(self) -> bool:
        """Whether the async path answers on the event loop (default: ``answer_async_inline``)."""
        return self.answer_async_inline

    async def _before_reply(self, messages: list[BaseMessage]) -> None:
        """Awaited on the async path before an inline answer (default: nothing)."""

    def _reply(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> ChatResult:
        """The answer to ``messages`` (``kwargs``: what the caller passed, e.g. ``model``)."""
        raise NotImplementedError

    def _answer_call(self, call: SyncCall) -> ChatResult:
        return self._reply(call.messages, call.kwargs)

    async def _aanswer_call(self, call: AsyncCall) -> ChatResult:
        if self._answers_inline():
            await self._before_reply(call.messages)
            return self._reply(call.messages, call.kwargs)
        return await self._apass_on(call)
