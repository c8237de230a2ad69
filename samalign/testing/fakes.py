"""Test doubles: scripted chat models that never touch the network.

A :class:`ScriptedChatModel` answers from a script (a string, a list of strings given in turn,
or a function of the messages) and records every call's messages and keyword arguments;
:func:`fake_stage_models` builds one per stage as the :class:`~samalign.serving.StageModels` a
``RunContext`` takes. The graphs, prompts, parsers, grounding and filters then run for real.
``docs/testing.md`` is the full guide; ``examples/scripted_fakes.py`` runs the joint graph so.

What each stage sends (one user message; ``call["messages"][0].content``) and answers:

* ``anchor`` / ``explorer``: JSON ``{"instruction", "schema"/"Schema": [type names],
  "input"/"Input": text}``; answer ``{"type name": ["mention", ...]}``.
* ``archetype``: JSON ``{"instruction", "Schema": [14 archetypes], "Sentence": text}`` with
  every candidate occurrence wrapped in ``<ENT></ENT>``; answer
  ``{"Archetype": ["mention", ...]}`` about the tagged mentions. ``direct_typing`` (no
  calibration): the same prompt with the domain's type names as the schema.
* ``calibrate``: text ending ``Initial Output: {"mention": "Archetype", ...}`` (the
  archetype-typed mentions); answer ``[{"entity": "mention", "type": "type name"}]`` (or
  ``{"mention": "type name"}``).
* ``relations_forward``: JSON ``{"instruction", "schema": [relation records], "input": text}``;
  answer ``[{"subject": ..., "pairs": [{"object": ..., "relation": "relation name"}]}]``;
  ``relations_reverse`` the object-centric mirror.

``kwargs`` hold ``max_tokens`` and the stage's JSON schema as ``response_format``. After an
unusable answer the stage retries with the answer and the error appended to the messages.

They make no model request, so the kill-switch (:func:`samalign.testing.block_model_requests`)
lets them run; only samalign's real backends check it.

Example:
    >>> from samalign import RunContext, build_ner_graph
    >>> models = fake_stage_models({
    ...     "anchor": '{"researcher": ["Sepp Hochreiter"], "algorithm": ["LSTM"]}',
    ...     "explorer": '{"researcher": ["Sepp Hochreiter"], "algorithm": ["LSTM"]}',
    ...     "archetype": '{"Person": ["Sepp Hochreiter"], "Computer_Science": ["LSTM"]}',
    ...     "calibrate": '{"Sepp Hochreiter": "researcher", "LSTM": "algorithm"}',
    ... })
    >>> result = build_ner_graph().invoke(
    ...     {"text": "Sepp Hochreiter invented LSTM ."},
    ...     context=RunContext("crossner_ai", models),
    ... )
    >>> [(e.text, e.label) for e in result["entities"]]
    [('Sepp Hochreiter', 'researcher'), ('LSTM', 'algorithm')]
    >>> "<ENT>LSTM</ENT>" in models["archetype"].chat_model.calls[0]["messages"][0].content
    True
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from samalign.serving.chat_base import InlineChatModel, chat_result, word_count
from samalign.serving.models import StageModel, StageModels

Responder = Callable[[Sequence[BaseMessage]], str]
Script = str | Sequence[str] | Responder


class ScriptedChatModel(InlineChatModel):
    """A chat model that answers from a script and records every call.

    Attributes:
        script: A fixed answer, a list of answers given in turn (the last one repeats), or a
            function of the messages.
        finish_reason: Reported finish reason (set ``"length"`` to simulate truncation).
        wait: An async function of the messages that the async path awaits before answering
            (hold a call on an ``asyncio.Event``, simulate a slow server); the answer is then
            given on the event loop. Without it, async calls answer in an executor thread, so a
            script may block.
        calls: Each call's messages and keyword arguments (e.g. ``response_format``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    script: Any
    finish_reason: str = "stop"
    wait: Callable[[Sequence[BaseMessage]], Awaitable[None]] | None = None
    calls: list[dict[str, Any]] = Field(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "samalign-scripted-fake"

    def _answers_inline(self) -> bool:
        return self.wait is not None

    async def _before_reply(self, messages: list[BaseMessage]) -> None:
        if self.wait is not None:
            await self.wait(messages)

    def _answer(self, messages: Sequence[BaseMessage], index: int) -> str:
        script = self.script
        if callable(script):
            answer: str = str(script(messages))
            return answer
        if isinstance(script, str):
            return script
        answers = [str(a) for a in script]
        return answers[min(index, len(answers) - 1)]

    def _reply(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> ChatResult:
        with self._lock:  # reserve this call's index, then answer outside the lock
            index = len(self.calls)
            self.calls.append({"messages": list(messages), "kwargs": dict(kwargs)})
        text = self._answer(messages, index)
        return chat_result(
            text,
            input_tokens=word_count(messages),
            output_tokens=len(text.split()),
            finish_reason=self.finish_reason,
        )


class ScriptedToolCaller(InlineChatModel):
    """A tool-calling chat model for agent tests: answers with the given messages in turn.

    ``bind_tools`` returns the model itself (recording the tools), so LangGraph's
    ``create_react_agent`` can drive it; each call records the messages it was given, so a
    test can check what the agent received from its tools.

    Attributes:
        replies: The answers, one per call (e.g. an ``AIMessage`` with ``tool_calls``, then a
            final ``AIMessage``); the last one repeats.
        calls: The messages of each call.
        tools: The names of the tools bound.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    replies: list[AIMessage]
    calls: list[list[BaseMessage]] = Field(default_factory=list)
    tools: list[str] = Field(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "samalign-scripted-tool-caller-fake"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedToolCaller:
        """Record the tools' names; the script decides the calls."""
        self.tools = [str(getattr(t, "name", None) or getattr(t, "__name__", t)) for t in tools]
        return self

    def _reply(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> ChatResult:
        with self._lock:
            index = len(self.calls)
            self.calls.append(list(messages))
        reply = self.replies[min(index, len(self.replies) - 1)]
        return ChatResult(generations=[ChatGeneration(message=reply.model_copy())])


def fake_stage_models(
    scripts: Mapping[str, Script], *, structured_output: bool = True
) -> StageModels:
    """Stage models answering from scripts (see :class:`ScriptedChatModel`)."""
    return StageModels(
        {
            stage: StageModel(
                ScriptedChatModel(script=script),
                adapter=stage,
                structured_output=structured_output,
                adapter_kwarg="model",
            )
            for stage, script in scripts.items()
        }
    )


__all__ = ["Responder", "Script", "ScriptedChatModel", "ScriptedToolCaller", "fake_stage_models"]
