"""A LangChain chat model over an in-process :class:`~samalign.serving.engine.Engine`.

It accepts the keyword arguments samalign's stage runner sends to an OpenAI-compatible server
(``max_tokens``, ``response_format`` — top-level or inside ``extra_body`` —, ``model`` to pick
another adapter, ``stop``) and answers like ``ChatOpenAI`` against vLLM: an ``AIMessage`` with
``response_metadata["finish_reason"]`` and ``usage_metadata``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatResult
from pydantic import ConfigDict, Field

from samalign.errors import ConfigError, at_least
from samalign.serving.chat_base import AsyncCall, CallChatModel, ChatCall, SyncCall, chat_result
from samalign.serving.engine import ChatTurn, Engine, GenerationRequest, GenerationResult
from samalign.serving.guard import check_model_request
from samalign.serving.models import StageModel, StageModels

# Keywords an OpenAI-style caller may send that do not change a greedy local answer.
_IGNORED_KWARGS = frozenset({"seed", "n", "stream", "logprobs", "top_logprobs", "user"})


def to_turns(messages: Sequence[BaseMessage]) -> tuple[ChatTurn, ...]:
    """Convert LangChain messages to chat-template turns (roles as OpenAI names them).

    Raises:
        ConfigError: For a message type or content a text chat template cannot take.
    """
    turns: list[ChatTurn] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            role = "system"
        elif isinstance(message, HumanMessage):
            role = "user"
        elif isinstance(message, AIMessage):
            role = "assistant"
        elif isinstance(message, ToolMessage):
            role = "tool"
        elif isinstance(message, ChatMessage):
            role = message.role
        else:
            raise ConfigError(
                f"local chat models take system, human, AI, tool and chat messages, "
                f"not {type(message).__name__}"
            )
        content = message.content if isinstance(message.content, str) else message.text
        turns.append(ChatTurn(role=role, content=content))
    return tuple(turns)


def schema_of(response_format: Any) -> Mapping[str, Any] | None:
    """The JSON schema of an OpenAI-style ``response_format`` (``None`` for plain text).

    Raises:
        ConfigError: For a ``response_format`` this backend cannot honour.
    """
    if response_format is None:
        return None
    if not isinstance(response_format, Mapping):
        raise ConfigError(
            "response_format must be a dict like {'type': 'json_schema', 'json_schema': "
            f"{{'name': ..., 'schema': {{...}}}}}}, got {type(response_format).__name__}"
        )
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if isinstance(schema, Mapping):
            return schema
        raise ConfigError("response_format json_schema needs json_schema.schema (a dict)")
    raise ConfigError(f"unsupported response_format type {kind!r}")


class EngineChatModel(CallChatModel):
    """One stage's chat model on a shared in-process engine.

    Every request honours the test kill-switch (:mod:`samalign.serving.guard`).

    Attributes:
        engine: The engine (shared by every stage of a backend).
        adapter: The adapter answering by default; a call may pick another with ``model=``.
        max_tokens: Completion budget when a call does not set ``max_tokens``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Any = Field(exclude=True)
    adapter: str
    max_tokens: int = 512

    @property
    def _llm_type(self) -> str:
        return str(self.engine.llm_type)

    @property
    def _identifying_params(self) -> dict[str, Any]:
        model_dir = getattr(self.engine, "model_dir", None)
        source = getattr(self.engine, "source", None) or getattr(model_dir, "root", None)
        return {"adapter": self.adapter, "engine": self._llm_type, "source": str(source or "")}

    def close(self) -> None:
        """Close the engine (shared: every stage model of the backend stops working)."""
        self.engine.close()

    def request(
        self, messages: Sequence[BaseMessage], stop: Sequence[str] | None, **kwargs: Any
    ) -> GenerationRequest:
        """Build the engine request for a call (see module docs for the keywords).

        Raises:
            ConfigError: For keywords or values this backend does not support.
        """
        kwargs = dict(kwargs)
        extra = dict(kwargs.pop("extra_body", None) or {})
        response_format = kwargs.pop("response_format", None) or extra.pop("response_format", None)
        structured = extra.pop("structured_outputs", None)
        schema = schema_of(response_format)
        if schema is None and isinstance(structured, Mapping) and "json" in structured:
            json_spec = structured["json"]
            if not isinstance(json_spec, Mapping):
                raise ConfigError("structured_outputs.json must be a JSON schema dict")
            schema = json_spec
        adapter = kwargs.pop("model", None) or self.adapter
        max_tokens = kwargs.pop("max_tokens", None)
        max_completion_tokens = kwargs.pop("max_completion_tokens", None)
        temperature = kwargs.pop("temperature", None)
        if temperature not in (None, 0, 0.0):
            raise ConfigError(
                "local chat models decode greedily per call; set the engine's temperature "
                "instead of passing temperature per call"
            )
        unknown = sorted(k for k in {*kwargs, *extra} if k not in _IGNORED_KWARGS)
        if unknown:
            raise ConfigError(f"{self._llm_type} does not support the keyword(s) {unknown}")
        budget = at_least("max_tokens", int(max_tokens or max_completion_tokens or self.max_tokens))
        return GenerationRequest(
            messages=to_turns(messages),
            adapter=str(adapter),
            max_tokens=budget,
            schema=schema,
            stop=tuple(stop or ()),
        )

    @staticmethod
    def _result(result: GenerationResult, adapter: str) -> ChatResult:
        return chat_result(
            result.text,
            input_tokens=result.prompt_tokens,
            output_tokens=result.completion_tokens,
            finish_reason=result.finish_reason,
            model_name=adapter,
            token_ids=list(result.token_ids),
            queue_wait_s=result.queue_wait_s,
            generation_s=result.generation_s,
            batch_size=result.batch_size,
            **result.extra,
        )

    def _checked_request(self, call: ChatCall[Any]) -> GenerationRequest:
        request = self.request(call.messages, call.stop, **call.kwargs)
        check_model_request(f"{self._llm_type} adapter {request.adapter!r}")
        return request

    def _answer_call(self, call: SyncCall) -> ChatResult:
        request = self._checked_request(call)
        return self._result(self.engine.generate(request), request.adapter)

    async def _aanswer_call(self, call: AsyncCall) -> ChatResult:
        request = self._checked_request(call)
        return self._result(await self.engine.agenerate(request), request.adapter)


def choose_adapters(
    stages: Sequence[str], adapters: Mapping[str, str] | None, available: frozenset[str]
) -> dict[str, str]:
    """Each stage's adapter: the override, else the adapter named like the stage.

    Raises:
        ConfigError: If an override names an unconfigured stage or a chosen adapter is not
            available (naming the missing and the available ones).
    """
    unknown = sorted(set(adapters or {}) - set(stages))
    if unknown:
        raise ConfigError(
            f"adapters given for unconfigured stages {unknown}; stages: {list(stages)}"
        )
    chosen = {stage: (adapters or {}).get(stage, stage) for stage in stages}
    missing = sorted({a for a in chosen.values() if a not in available})
    if missing:
        raise ConfigError(
            f"the model directory has no adapter(s) {missing}; it has {sorted(available)}. "
            "Add adapters/<name>/ folders or map stages to existing adapters "
            "(adapters={stage: name}, or --adapter STAGE=NAME)."
        )
    return chosen


def engine_stage_models(
    engine: Engine,
    *,
    stages: Sequence[str],
    adapters: Mapping[str, str] | None = None,
    max_tokens: int = 512,
) -> StageModels:
    """One :class:`EngineChatModel` per stage, all sharing ``engine``.

    Args:
        engine: The engine.
        stages: Stages to configure.
        adapters: Stage → adapter overrides (default: the adapter named like the stage).
        max_tokens: Default completion budget per call.

    Raises:
        ConfigError: If an override names an unconfigured stage or a stage's adapter is not
            served by the engine (naming the ones it serves).
    """
    chosen = choose_adapters(stages, adapters, engine.adapters)
    return StageModels(
        {
            stage: StageModel(
                EngineChatModel(engine=engine, adapter=adapter, max_tokens=max_tokens),
                adapter=adapter,
                structured_output=True,
                adapter_kwarg="model",
                schema_in_extra_body=False,
            )
            for stage, adapter in chosen.items()
        }
    )


__all__ = [
    "EngineChatModel",
    "choose_adapters",
    "engine_stage_models",
    "schema_of",
    "to_turns",
]
