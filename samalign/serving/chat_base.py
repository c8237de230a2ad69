"""What samalign's own chat models share: the result they return, and answering inline.

Every chat model samalign ships (the in-process engines'
:class:`~samalign.serving.chat.EngineChatModel`, the replay models of ``samalign eval --backend
gold``, the scripted fakes of :mod:`samalign.testing.fakes`) answers like ``ChatOpenAI``
against vLLM: one ``AIMessage`` with ``response_metadata["finish_reason"]`` and
``usage_metadata``. :func:`chat_result` builds it;
:class:`InlineChatModel` writes LangChain's ``_generate``/``_agenerate`` pair once for models
that compute their answer without I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult


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


class InlineChatModel(BaseChatModel):
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

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._reply(messages, kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self._answers_inline():
            await self._before_reply(messages)
            return self._reply(messages, kwargs)
        return await super()._agenerate(messages, stop=stop, run_manager=run_manager, **kwargs)
