"""In-process backend plumbing without a model: the engine chat model, the loop thread, and the
vLLM worker client against a fake worker speaking the real protocol (model directories:
test_model_dir.py)."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest
from langchain_core.messages import (
    AIMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from samalign.agents.runner import StageRequest, arun_stage, run_stage
from samalign.errors import BackendError, ConfigError, InputError
from samalign.serving import vllm_engine
from samalign.serving.chat import EngineChatModel, engine_stage_models, schema_of, to_turns
from samalign.serving.engine import ChatTurn, GenerationRequest, GenerationResult, LoopThread
from samalign.serving.rows import length_groups
from samalign.serving.vllm_inprocess import VllmWorkerEngine
from samalign.testing import BLOCK_ENV, allow_model_requests

LIVENESS_S = 60.0
"""How long a test waits for another thread or process before it fails (never a measurement)."""

SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}


class FakeEngine:
    """Records requests; answers with the reversed last message."""

    llm_type = "samalign-fake-engine"

    def __init__(self, adapters: tuple[str, ...] = ("anchor", "explorer", "archetype")) -> None:
        self.adapters = frozenset(adapters)
        self.requests: list[GenerationRequest] = []
        self.closed = 0

    def _answer(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        return GenerationResult(
            text=request.messages[-1].content[::-1],
            token_ids=(7, 8, 1),
            prompt_tokens=11,
            finish_reason="stop",
            queue_wait_s=0.25,
            generation_s=0.5,
            batch_size=3,
        )

    def generate(self, request: GenerationRequest) -> GenerationResult:
        return self._answer(request)

    async def agenerate(self, request: GenerationRequest) -> GenerationResult:
        return self._answer(request)

    def close(self) -> None:
        self.closed += 1


# -- the chat model ----------------------------------------------------------------------------


def test_messages_become_chat_template_turns() -> None:
    turns = to_turns(
        [
            SystemMessage("sys"),
            HumanMessage("hi"),
            AIMessage(content=[{"type": "text", "text": "list content"}]),
            ToolMessage("tool out", tool_call_id="1"),
            ChatMessage(role="critic", content="c"),
        ]
    )
    assert turns == (
        ChatTurn("system", "sys"),
        ChatTurn("user", "hi"),
        ChatTurn("assistant", "list content"),
        ChatTurn("tool", "tool out"),
        ChatTurn("critic", "c"),
    )
    with pytest.raises(ConfigError, match="FunctionMessage"):
        to_turns([FunctionMessage(name="f", content="x")])


@pytest.mark.parametrize(
    ("response_format", "schema"),
    [
        (None, None),
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"type": "object"}),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}, SCHEMA),
    ],
)
def test_response_formats(response_format: Any, schema: Any) -> None:
    assert schema_of(response_format) == schema


@pytest.mark.parametrize(
    "bad", ["json", {"type": "grammar"}, {"type": "json_schema", "json_schema": {"name": "x"}}]
)
def test_unsupported_response_formats(bad: Any) -> None:
    with pytest.raises(ConfigError):
        schema_of(bad)


def test_call_keywords_become_an_engine_request() -> None:
    chat = EngineChatModel(engine=FakeEngine(), adapter="anchor", max_tokens=99)
    messages = [HumanMessage("hello")]
    plain = chat.request(messages, None)
    assert (plain.adapter, plain.max_tokens, plain.schema, plain.stop) == ("anchor", 99, None, ())
    response_format = {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}
    top = chat.request(messages, ["\n\n"], response_format=response_format, max_tokens=5)
    assert (top.schema, top.max_tokens, top.stop) == (SCHEMA, 5, ("\n\n",))
    extra = chat.request(
        messages,
        None,
        extra_body={"response_format": response_format},
        model="explorer",
        max_completion_tokens=7,
        temperature=0,
        seed=0,
    )
    assert (extra.schema, extra.adapter, extra.max_tokens) == (SCHEMA, "explorer", 7)
    vllm_style = chat.request(messages, None, extra_body={"structured_outputs": {"json": SCHEMA}})
    assert vllm_style.schema == SCHEMA
    with pytest.raises(ConfigError, match="greedily"):
        chat.request(messages, None, temperature=0.7)
    with pytest.raises(ConfigError, match=r"\['top_k'\]"):
        chat.request(messages, None, top_k=3)
    with pytest.raises(ConfigError, match=r"\['guided_json'\]"):
        chat.request(messages, None, extra_body={"guided_json": SCHEMA})


async def test_invoke_and_ainvoke_answer_like_an_openai_server() -> None:
    engine = FakeEngine()
    chat = EngineChatModel(engine=engine, adapter="anchor")
    with allow_model_requests():  # an engine model is a real backend for the kill-switch
        answers = (chat.invoke("abc"), await chat.ainvoke("abc"))
    for answer in answers:
        assert answer.content == "cba"
        assert answer.response_metadata["finish_reason"] == "stop"
        assert answer.response_metadata["model_name"] == "anchor"
        assert answer.response_metadata["token_ids"] == [7, 8, 1]
        assert answer.response_metadata["batch_size"] == 3
        assert answer.usage_metadata == {"input_tokens": 11, "output_tokens": 3, "total_tokens": 14}
    assert chat._llm_type == "samalign-fake-engine"


async def test_the_stage_runner_drives_engine_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BLOCK_ENV)
    engine = FakeEngine()
    models = engine_stage_models(engine, stages=["anchor", "explorer"], max_tokens=64)
    model = models["anchor"]
    assert (model.adapter, model.adapter_kwarg, model.structured_output) == (
        "anchor",
        "model",
        True,
    )
    request = StageRequest(
        stage="anchor", messages=[HumanMessage('{"a":"x"}')], schema=SCHEMA, max_tokens=32
    )
    result = run_stage(request, model, str)
    assert result.usage.prompt_tokens == 11 and result.usage.completion_tokens == 3
    other = StageRequest(
        stage="anchor",
        messages=[HumanMessage('{"b":"y"}')],
        schema=None,
        max_tokens=8,
        adapter="archetype",
    )
    await arun_stage(other, model, str)
    first, second = engine.requests
    assert (first.adapter, first.schema, first.max_tokens) == ("anchor", SCHEMA, 32)
    assert (second.adapter, second.schema, second.max_tokens) == ("archetype", None, 8)


def test_stage_models_check_adapters_and_close_engines() -> None:
    engine = FakeEngine()
    with engine_stage_models(
        engine, stages=["anchor", "calibrate"], adapters={"calibrate": "archetype"}
    ) as models:
        assert models["calibrate"].adapter == "archetype"
    assert engine.closed == 2  # once per stage model; engines make close idempotent
    with pytest.raises(ConfigError, match=r"no adapter\(s\) \['calibrate'\].*'anchor'"):
        engine_stage_models(engine, stages=["anchor", "calibrate"])
    with pytest.raises(ConfigError, match="unconfigured stages"):
        engine_stage_models(engine, stages=["anchor"], adapters={"explorer": "anchor"})


@pytest.mark.parametrize(
    ("lengths", "ratio", "groups"),
    [
        ([100, 2400, 120, 190, 2500, 90], 2.0, [[5, 0, 2], [3], [1, 4]]),
        ([100, 2400, 120], float("inf"), [[0, 2, 1]]),
        ([5, 11, 23], 2.0, [[0], [1], [2]]),
        ([], 2.0, []),
    ],
)
def test_batches_are_split_by_prompt_length(
    lengths: list[int], ratio: float, groups: list[list[int]]
) -> None:
    assert length_groups(lengths, ratio) == groups


# -- the loop thread ---------------------------------------------------------------------------


async def test_loop_thread_runs_coroutines_and_passes_cancellation_on() -> None:
    thread = LoopThread("test-loop")
    seen: list[str] = []

    async def where() -> str:
        return threading.current_thread().name

    started, cancelled = threading.Event(), threading.Event()

    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append("cancelled")
            cancelled.set()
            raise

    assert await thread.arun(where()) == "test-loop"
    assert await asyncio.to_thread(thread.run, where()) == "test-loop"
    task = asyncio.create_task(thread.arun(slow()))
    assert await asyncio.to_thread(started.wait, LIVENESS_S)  # it runs in the loop thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(cancelled.wait, LIVENESS_S)  # the cancellation reached it
    assert seen == ["cancelled"]

    async def blocking_call_from_inside() -> None:
        thread.run(where())

    with pytest.raises(BackendError, match="own thread"):
        await thread.arun(blocking_call_from_inside())
    closed: list[bool] = []

    async def final() -> None:
        closed.append(True)

    await asyncio.to_thread(thread.close, final())
    assert closed == [True]
    with pytest.raises(BackendError, match="closed"):
        await thread.arun(where())


# -- the in-process vLLM engine wrapper, with a fake AsyncVllmEngine ---------------------------


class FakeAsyncVllm:
    """Stands in for vllm_engine.AsyncVllmEngine (vLLM is not installed here)."""

    instances: ClassVar[list[FakeAsyncVllm]] = []

    def __init__(self, base: str, adapters: dict[str, str], **options: Any) -> None:
        self.base, self.adapters, self.options = base, adapters, options
        self.threads: set[str] = set()
        self.shut = False
        FakeAsyncVllm.instances.append(self)

    async def generate(self, request: dict[str, Any]) -> dict[str, Any]:
        self.threads.add(threading.current_thread().name)
        text = request["messages"][-1]["content"]
        if text == "long":
            raise vllm_engine.PromptTooLongError("the prompt has 99 tokens")
        if request["adapter"] not in self.adapters:
            raise vllm_engine.UnknownAdapterError(f"adapter {request['adapter']!r} is not loaded")
        if text == "boom":
            raise RuntimeError("engine core died")
        return {"text": text.upper(), "token_ids": [3, 1], "prompt_tokens": 5,
                "finish_reason": "stop", "generation_s": 0.0}  # fmt: skip

    def shutdown(self) -> None:
        self.shut = True


async def test_inprocess_vllm_engine_runs_on_its_own_loop_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from samalign.serving import vllm_inprocess

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "vllm" else real_find_spec(name, *a),
    )
    monkeypatch.setattr(vllm_engine, "AsyncVllmEngine", FakeAsyncVllm)
    engine = vllm_inprocess.VllmInprocessEngine(tmp_path, {"a": tmp_path}, dtype="float32")
    fake = FakeAsyncVllm.instances[-1]
    assert fake.options == {"dtype": "float32"} and fake.adapters == {"a": str(tmp_path)}
    assert (await engine.agenerate(_request("hi"))).text == "HI"
    assert (await asyncio.to_thread(engine.generate, _request("yo"))).text == "YO"
    assert fake.threads == {"samalign-vllm"}
    with pytest.raises(InputError, match="99 tokens"):
        await engine.agenerate(_request("long"))
    with pytest.raises(BackendError, match="'z' is not loaded"):
        await engine.agenerate(_request("x", adapter="z"))
    with pytest.raises(BackendError, match="RuntimeError: engine core died"):
        await engine.agenerate(_request("boom"))
    await asyncio.to_thread(engine.close)
    assert fake.shut


def test_inprocess_vllm_needs_vllm_or_another_python(tmp_path: Path) -> None:
    import importlib.util

    from samalign.serving.vllm_inprocess import VllmInprocessEngine

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(ConfigError, match="pass python=<interpreter"):
        VllmInprocessEngine(tmp_path, {"a": tmp_path})


# -- the vLLM worker client, against a fake worker using the real protocol code ----------------

FAKE_WORKER = """
import asyncio, importlib.util, os, sys
spec = importlib.util.spec_from_file_location("vllm_engine", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)

class Fake:
    max_model_len = 64

    async def start(self):
        if os.environ.get("FAKE_FAIL_START"):
            raise RuntimeError("no accelerator here")

    async def generate(self, request):
        text = request["messages"][-1]["content"]
        if text == "long":
            raise mod.PromptTooLongError("the prompt has 99 tokens")
        if text == "crash":
            os._exit(3)
        if text == "slow":
            print("started slow", file=sys.stderr, flush=True)
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                print("aborted slow", file=sys.stderr, flush=True)
                raise
        if request["adapter"] not in ("a", "b"):
            raise mod.UnknownAdapterError(f"adapter {request['adapter']!r} is not loaded")
        return {"text": text[::-1], "token_ids": [5, 1], "prompt_tokens": len(text),
                "finish_reason": "length" if request["max_tokens"] < 3 else "stop",
                "generation_s": 0.0}

    def shutdown(self):
        print("engine shut down", file=sys.stderr, flush=True)

out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
print("stray stdout noise")
asyncio.run(mod.serve(Fake(), out))
"""


def _request(text: str, adapter: str = "a", max_tokens: int = 8) -> GenerationRequest:
    return GenerationRequest(
        messages=(ChatTurn("user", text),), adapter=adapter, max_tokens=max_tokens
    )


async def _logged(engine: VllmWorkerEngine, line: str) -> None:
    """Wait until the fake worker (another process) has written ``line`` to its log."""
    assert engine.log_path is not None
    for _ in range(int(LIVENESS_S / 0.01)):
        if engine.log_path.is_file() and line in engine.log_path.read_text(encoding="utf-8"):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the fake worker never logged {line!r}")


def _fake_worker(tmp_path: Path, **env: str) -> VllmWorkerEngine:
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    engine = VllmWorkerEngine(
        sys.executable,
        tmp_path,
        {"a": tmp_path, "b": tmp_path},
        env=env,
        log_path=tmp_path / "worker.log",
        startup_timeout_s=60,
    )
    engine.argv = [sys.executable, str(script), vllm_engine.__file__]
    return engine


async def test_worker_client_answers_maps_errors_and_aborts(tmp_path: Path) -> None:
    engine = _fake_worker(tmp_path)
    assert engine.generate(_request("abc")).text == "cba"
    assert engine.max_model_len == 64
    answers = await asyncio.gather(*(engine.agenerate(_request(f"t{i}")) for i in range(8)))
    assert [a.text for a in answers] == [f"{i}t" for i in range(8)]
    assert (await engine.agenerate(_request("xy", max_tokens=2))).finish_reason == "length"
    with pytest.raises(InputError, match="99 tokens"):
        await engine.agenerate(_request("long"))
    with pytest.raises(BackendError, match="'zzz' is not loaded"):
        await engine.agenerate(_request("q", adapter="zzz"))
    slow = asyncio.create_task(engine.agenerate(_request("slow")))
    await _logged(engine, "started slow")  # the worker is running it: the abort must stop it
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert (await engine.agenerate(_request("still works"))).text == "skrow llits"
    engine.close()
    log = (tmp_path / "worker.log").read_text()
    assert "aborted slow" in log and "engine shut down" in log and "stray stdout noise" in log
    with pytest.raises(BackendError, match="closed"):
        engine.generate(_request("after close"))


async def test_worker_crash_fails_pending_requests_with_the_log(tmp_path: Path) -> None:
    engine = _fake_worker(tmp_path)
    waiting = asyncio.create_task(engine.agenerate(_request("slow")))
    await _logged(engine, "started slow")  # pending in the worker when it crashes
    with pytest.raises(BackendError, match=r"worker exited \(status 3\)"):
        await engine.agenerate(_request("crash"))
    with pytest.raises(BackendError, match="worker exited"):
        await waiting
    with pytest.raises(BackendError, match="worker exited"):
        engine.generate(_request("later"))
    engine.close()


def test_worker_start_failure_is_reported(tmp_path: Path) -> None:
    engine = _fake_worker(tmp_path, FAKE_FAIL_START="1")
    # the start failure itself, not the startup timeout ("was not ready in 60 s")
    with pytest.raises(BackendError, match="failed to start: RuntimeError: no accelerator"):
        engine.generate(_request("x"))
    engine.close()


def test_worker_needs_a_real_interpreter(tmp_path: Path) -> None:
    engine = VllmWorkerEngine(
        str(tmp_path / "no-python"), tmp_path, {"a": tmp_path}, log_path=tmp_path / "log"
    )
    with pytest.raises(ConfigError, match="cannot start the vLLM worker"):
        engine.generate(_request("x"))
