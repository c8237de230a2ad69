"""The shared stage-call helper: structured output, retries, truncation, usage, errors."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatResult

from samalign.agents import runner as runner_module
from samalign.agents.runner import StageRequest, StageResult, arun_stage, run_stage
from samalign.errors import BackendError, ConfigError, ModelRequestBlockedError
from samalign.prompts.formats import ParsedTypedMentions
from samalign.prompts.specs import EXTRACTION_FORMAT
from samalign.serving.chat_base import InlineChatModel, chat_result
from samalign.serving.models import StageModel
from samalign.serving.vllm_server import vllm_server_models
from samalign.testing.fakes import ScriptedChatModel
from samalign.types import StageUsage

SCHEMA: dict[str, Any] = EXTRACTION_FORMAT.schema(["person"])
GOOD = '{"person": ["Ada Lovelace"]}'
BAD = "Sorry, I cannot do that."


def parse(raw: str) -> ParsedTypedMentions:
    return EXTRACTION_FORMAT.parse(raw, ["person"])


def request(*, schema: dict[str, Any] | None = SCHEMA, adapter: str | None = None) -> StageRequest:
    return StageRequest(
        stage="anchor",
        messages=[HumanMessage(content="Find people in: Ada Lovelace wrote notes .")],
        schema=schema,
        max_tokens=64,
        adapter=adapter,
    )


def model(
    script: Any,
    *,
    structured: bool = True,
    finish_reason: str = "stop",
    adapter: str = "anchor",
    adapter_kwarg: str | None = "model",
) -> StageModel:
    chat = ScriptedChatModel(script=script, finish_reason=finish_reason)
    return StageModel(
        chat, adapter=adapter, structured_output=structured, adapter_kwarg=adapter_kwarg
    )


def calls(stage_model: StageModel) -> list[dict[str, Any]]:
    chat = stage_model.chat_model
    assert isinstance(chat, ScriptedChatModel)
    return chat.calls


def fake_tokens(messages: Sequence[BaseMessage]) -> int:
    return sum(len(str(m.content).split()) for m in messages)


async def run_either(mode: str, req: StageRequest, m: StageModel, **kw: Any) -> StageResult[Any]:
    if mode == "sync":
        return run_stage(req, m, parse, **kw)
    return await arun_stage(req, m, parse, **kw)


MODES = pytest.mark.parametrize("mode", ["sync", "async"])


# ---------------------------------------------------------------------------------------------
# structured output and adapters
# ---------------------------------------------------------------------------------------------


@MODES
async def test_response_format_sent_with_structured_output(mode: str) -> None:
    m = model(GOOD, structured=True)
    result = await run_either(mode, request(), m)
    assert result.value is not None
    assert result.value.pairs == (("person", "Ada Lovelace"),)
    kwargs = calls(m)[0]["kwargs"]
    assert kwargs["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "anchor_answer", "schema": SCHEMA},
    }
    assert kwargs["max_tokens"] == 64
    assert "model" not in kwargs


@MODES
async def test_no_response_format_without_structured_output(mode: str) -> None:
    m = model(GOOD, structured=False)
    result = await run_either(mode, request(), m)
    assert result.value is not None
    assert "response_format" not in calls(m)[0]["kwargs"]


def test_schema_in_extra_body() -> None:
    chat = ScriptedChatModel(script=GOOD)
    m = StageModel(chat, adapter="anchor", structured_output=True, schema_in_extra_body=True)
    result = run_stage(request(), m, parse)
    assert result.value is not None
    kwargs = chat.calls[0]["kwargs"]
    assert "response_format" not in kwargs
    assert kwargs["extra_body"] == {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "anchor_answer", "schema": SCHEMA},
        }
    }
    assert kwargs["max_tokens"] == 64


async def test_no_response_format_without_schema() -> None:
    m = model(GOOD, structured=True)
    run_stage(request(schema=None), m, parse)
    assert "response_format" not in calls(m)[0]["kwargs"]


@MODES
@pytest.mark.parametrize(
    ("stage_adapter", "requested", "adapter_kwarg", "expected"),
    [
        ("anchor", None, "model", None),
        ("anchor", "anchor", "model", None),
        ("anchor", "iepile-anchor", "model", "iepile-anchor"),
        ("anchor", "iepile-anchor", None, None),
    ],
)
async def test_adapter_override_passes_model_only_when_different(
    mode: str, stage_adapter: str, requested: str | None, adapter_kwarg: str | None, expected: Any
) -> None:
    m = model(GOOD, adapter=stage_adapter, adapter_kwarg=adapter_kwarg)
    await run_either(mode, request(adapter=requested), m)
    kwargs = calls(m)[0]["kwargs"]
    if expected is None:
        assert "model" not in kwargs
    else:
        assert kwargs["model"] == expected


# ---------------------------------------------------------------------------------------------
# parse failures and retries
# ---------------------------------------------------------------------------------------------


@MODES
async def test_parse_failure_is_retried_with_error_fed_back(mode: str) -> None:
    m = model([BAD, GOOD])
    result = await run_either(mode, request(), m, retries=1)
    assert result.value is not None
    assert result.value.pairs == (("person", "Ada Lovelace"),)
    assert result.raw == GOOD
    recorded = calls(m)
    assert len(recorded) == 2
    first, second = recorded[0]["messages"], recorded[1]["messages"]
    assert len(first) == 1
    assert second[0] == first[0]
    assert isinstance(second[1], AIMessage)
    assert second[1].content == BAD
    assert isinstance(second[2], HumanMessage)
    assert "could not be used" in second[2].content
    assert "no JSON" in second[2].content  # the parse error itself
    # the retry keeps the structured-output settings
    assert recorded[1]["kwargs"] == recorded[0]["kwargs"]
    assert [d.kind for d in result.diagnostics] == ["parse_error"]
    assert "retrying" in result.diagnostics[0].message
    assert result.diagnostics[0].raw == BAD
    assert result.diagnostics[0].stage == "anchor"


@MODES
async def test_retries_exhausted_gives_none_and_diagnostic(mode: str) -> None:
    m = model(BAD)
    result = await run_either(mode, request(), m, retries=2)
    assert result.value is None
    assert len(calls(m)) == 3
    assert [d.kind for d in result.diagnostics] == ["parse_error"] * 3
    assert "giving up" in result.diagnostics[-1].message
    assert "3/3" in result.diagnostics[-1].message
    assert result.diagnostics[-1].raw == BAD
    assert result.raw == BAD
    assert result.usage.calls == 3


async def test_zero_retries_makes_one_call() -> None:
    m = model(BAD)
    result = run_stage(request(), m, parse, retries=0)
    assert result.value is None
    assert len(calls(m)) == 1
    assert len(result.diagnostics) == 1


@MODES
async def test_truncated_repairable_answer_keeps_value(mode: str) -> None:
    m = model('{"person": ["Ada Lovelace", "Charles Bab', finish_reason="length")
    result = await run_either(mode, request(), m)
    assert result.value is not None
    assert result.value.pairs == (("person", "Ada Lovelace"),)
    assert result.value.repaired is True
    assert [d.kind for d in result.diagnostics] == ["truncated"]
    assert "max_tokens" in result.diagnostics[0].message
    assert len(calls(m)) == 1


@MODES
async def test_truncated_unparseable_answer_is_retried(mode: str) -> None:
    m = model("Let me think step by step about", finish_reason="length")
    result = await run_either(mode, request(), m, retries=1)
    assert result.value is None
    assert len(calls(m)) == 2
    assert [d.kind for d in result.diagnostics] == ["truncated", "truncated"]
    assert "max_tokens" in result.diagnostics[0].message


# ---------------------------------------------------------------------------------------------
# usage
# ---------------------------------------------------------------------------------------------


@MODES
async def test_usage_accumulates_over_calls(mode: str) -> None:
    m = model([BAD, GOOD])
    result = await run_either(mode, request(), m, retries=1)
    recorded = calls(m)
    assert result.usage.calls == 2
    assert result.usage.prompt_tokens == sum(fake_tokens(c["messages"]) for c in recorded)
    assert result.usage.completion_tokens == len(BAD.split()) + len(GOOD.split())
    assert result.usage.latency_s >= 0.0
    assert result.usage.prompt_tokens > 0


class FakeClock:
    """Stands in for the runner's ``time`` module: time moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


@MODES
async def test_usage_latency_is_the_time_spent_in_the_model_call(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(runner_module, "time", clock)

    steps = iter([(0.25, BAD), (0.5, GOOD)])

    def script(messages: Sequence[BaseMessage]) -> str:
        seconds, text = next(steps)
        clock.now += seconds  # the model "takes" this long
        return text

    result = await run_either(mode, request(), model(script), retries=1)
    assert result.value is not None
    assert result.usage.calls == 2
    assert result.usage.latency_s == pytest.approx(0.75)  # both calls, nothing else


def test_stage_usage_addition() -> None:
    total = StageUsage(calls=1, prompt_tokens=2, completion_tokens=3, latency_s=0.5) + StageUsage(
        calls=2, prompt_tokens=3, completion_tokens=4, latency_s=0.25
    )
    assert total == StageUsage(calls=3, prompt_tokens=5, completion_tokens=7, latency_s=0.75)


# ---------------------------------------------------------------------------------------------
# backend errors and the kill-switch
# ---------------------------------------------------------------------------------------------


def _raise(exc: BaseException) -> Any:
    def script(messages: Sequence[BaseMessage]) -> str:
        raise exc

    return script


@MODES
async def test_chat_model_exception_becomes_backend_error(mode: str) -> None:
    with pytest.raises(BackendError) as info:
        await run_either(mode, request(), model(_raise(ValueError("kaboom"))))
    message = str(info.value)
    assert "'anchor'" in message
    assert "kaboom" in message
    assert isinstance(info.value.__cause__, ValueError)


@MODES
async def test_backend_error_names_requested_adapter(mode: str) -> None:
    with pytest.raises(BackendError, match="iepile-anchor"):
        await run_either(mode, request(adapter="iepile-anchor"), model(_raise(RuntimeError("x"))))


def test_connection_error_explains_the_server() -> None:
    exc = openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:9/v1"))
    with pytest.raises(BackendError, match="cannot reach the model server"):
        run_stage(request(), model(_raise(exc)), parse)


def test_unknown_adapter_404_explains_the_fix() -> None:
    req = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    exc = openai.NotFoundError(
        "model not found", response=httpx.Response(404, request=req), body=None
    )
    with pytest.raises(BackendError) as info:
        run_stage(request(adapter="missing-lora"), model(_raise(exc)), parse)
    assert "missing-lora" in str(info.value)
    assert "404" in str(info.value)


def test_samalign_errors_from_the_model_pass_through() -> None:
    with pytest.raises(ConfigError, match="custom"):
        run_stage(request(), model(_raise(ConfigError("custom problem"))), parse)


class _RealLookingChatModel(InlineChatModel):
    """A third-party chat model: the runner calls it whatever its type name says."""

    called: bool = False

    @property
    def _llm_type(self) -> str:
        return "openai-chat"

    def _reply(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> ChatResult:
        self.called = True
        return chat_result(GOOD, input_tokens=0, output_tokens=0)


@MODES
async def test_block_env_stops_real_server_models(mode: str, network_guard: Any) -> None:
    server = vllm_server_models("http://127.0.0.1:9", stages=["anchor"], max_retries=0)
    with pytest.raises(ModelRequestBlockedError, match="SAMALIGN_BLOCK_MODEL_REQUESTS"):
        await run_either(mode, request(), server["anchor"])
    assert network_guard.attempts == []  # blocked before any connection


def test_block_env_off_lets_other_models_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMALIGN_BLOCK_MODEL_REQUESTS", "0")
    chat = _RealLookingChatModel()
    result = run_stage(request(), StageModel(chat, adapter="anchor"), parse)
    assert chat.called is True
    assert result.value is not None


def test_the_runner_does_not_judge_models_by_their_type_name() -> None:
    chat = _RealLookingChatModel()  # no kill-switch of its own: the socket guard is the net
    result = run_stage(request(), StageModel(chat, adapter="anchor"), parse)
    assert chat.called is True
    assert result.value is not None


# ---------------------------------------------------------------------------------------------
# the scripted fake itself
# ---------------------------------------------------------------------------------------------


def test_scripted_model_list_script_repeats_last() -> None:
    chat = ScriptedChatModel(script=["a", "b"])
    answers = [chat.invoke("hi").content for _ in range(4)]
    assert answers == ["a", "b", "b", "b"]
    assert len(chat.calls) == 4


def test_scripted_model_records_kwargs_and_finish_reason() -> None:
    chat = ScriptedChatModel(script="x", finish_reason="length")
    message = chat.invoke("hi", max_tokens=5)
    assert message.response_metadata["finish_reason"] == "length"
    assert chat.calls[0]["kwargs"] == {"max_tokens": 5}


def test_scripted_model_calls_can_overlap() -> None:
    # Each answer waits at a barrier until all four calls are inside the script at once: if the
    # fake serialised its calls, the first would wait alone and the barrier would break.
    inside = threading.Barrier(4, timeout=60)  # a liveness bound, not a measurement

    def meet(messages: Sequence[BaseMessage]) -> str:
        inside.wait()
        return "ok"

    chat = ScriptedChatModel(script=meet)
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = [f.result() for f in [pool.submit(chat.invoke, "hi") for _ in range(4)]]
    assert [a.content for a in answers] == ["ok"] * 4
    assert len(chat.calls) == 4


async def test_scripted_model_async_path() -> None:
    chat = ScriptedChatModel(script=lambda messages: f"echo {len(messages)}")
    answers = await asyncio.gather(*(chat.ainvoke("hi") for _ in range(3)))
    assert [a.content for a in answers] == ["echo 1"] * 3
