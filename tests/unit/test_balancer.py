"""Client-side balancing and failover over several servers (fakes; no network)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from samalign.batch.records import InputRecord
from samalign.batch.run import run_records
from samalign.errors import BackendError, ConfigError
from samalign.graphs import RunContext, build_ner_graph
from samalign.serving import vllm_server_models
from samalign.serving.balancer import BalancedChatModel, ServerPool, server_failure
from samalign.serving.models import StageModel, StageModels
from samalign.testing.fakes import ScriptedChatModel

HI = [HumanMessage(content="hi")]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Server:
    """A scripted server: answers ``name``, or raises ``error`` while it is set."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.error: BaseException | None = None
        self.model = ScriptedChatModel(script=self._answer)

    def _answer(self, messages: Sequence[BaseMessage]) -> str:
        if self.error is not None:
            raise self.error
        return self.name

    @property
    def calls(self) -> int:
        return len(self.model.calls)


def balanced(
    *servers: Server, clock: Clock | None = None, **pool_kwargs: Any
) -> tuple[BalancedChatModel, ServerPool]:
    pool = ServerPool(
        [s.name for s in servers], clock=clock or Clock(), cooldown_s=1.0, **pool_kwargs
    )
    model = BalancedChatModel(
        replicas=[s.model for s in servers],
        pool=pool,
        max_retries=2,
        backoff_s=0.001,
        max_wait_s=0.001,
    )
    return model, pool


def connection_error(url: str = "http://127.0.0.1:9/v1/chat/completions") -> Exception:
    return openai.APIConnectionError(request=httpx.Request("POST", url))


def status_error(code: int) -> Exception:
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    response = httpx.Response(code, request=request, json={"error": "x"})
    cls = {500: openai.InternalServerError, 404: openai.NotFoundError, 400: openai.BadRequestError}
    return cls.get(code, openai.APIStatusError)(f"HTTP {code}", response=response, body=None)


# ---------------------------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------------------------


def test_server_failure_classification() -> None:
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/x")
    assert server_failure(connection_error()) == "hard"
    assert server_failure(openai.APITimeoutError(request=request)) == "soft"
    assert server_failure(status_error(500)) == "soft"
    assert server_failure(status_error(503)) == "soft"
    assert server_failure(status_error(429)) == "soft"
    assert server_failure(status_error(404)) is None  # unknown adapter: the request's fault
    assert server_failure(status_error(400)) is None
    assert server_failure(ConnectionRefusedError()) == "hard"
    assert server_failure(httpx.ConnectError("refused")) == "hard"
    assert server_failure(httpx.ReadTimeout("slow")) == "soft"
    assert server_failure(TimeoutError()) == "soft"
    assert server_failure(ValueError("parse")) is None
    assert server_failure(asyncio.CancelledError()) is None


def caused_by(cause: BaseException) -> Exception:
    """An OpenAI connection error raised from ``cause``, as the OpenAI client raises it."""
    try:
        raise connection_error() from cause
    except openai.APIConnectionError as err:
        return err


def test_a_connection_that_broke_mid_request_is_soft_one_that_never_opened_is_hard() -> None:
    import httpx2

    # the server closed a kept-alive connection as it was reused, or reset it mid-answer:
    # the server may well be up, so one such failure must not take it out
    for broken in (
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx2.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("reset"),
        httpx2.ReadError("reset"),
        httpx2.WriteError("broken pipe"),
        ConnectionResetError(),
    ):
        assert server_failure(caused_by(broken)) == "soft", broken
    assert server_failure(httpx2.RemoteProtocolError("closed")) == "soft"
    assert server_failure(ConnectionResetError()) == "soft"
    for refused in (httpx.ConnectError("refused"), httpx2.ConnectError("refused")):
        assert server_failure(caused_by(refused)) == "hard", refused
    assert server_failure(connection_error()) == "hard"  # no cause: as the client says


# ---------------------------------------------------------------------------------------------
# balancing
# ---------------------------------------------------------------------------------------------


def test_requests_are_spread_evenly_and_keep_their_keywords() -> None:
    a, b = Server("a"), Server("b")
    model, _ = balanced(a, b)
    answers = [model.invoke(HI, model="my-adapter").content for _ in range(10)]
    assert sorted(answers) == ["a"] * 5 + ["b"] * 5
    assert a.calls == b.calls == 5
    for call in a.model.calls + b.model.calls:  # every request still names its adapter
        assert call["kwargs"]["model"] == "my-adapter"


async def test_least_loaded_server_gets_the_next_request() -> None:
    answer_now = asyncio.Event()
    answer_now.set()
    slow_release = asyncio.Event()
    # a server busy until the test says otherwise, and one that answers at once
    slow = ScriptedChatModel(script="slow", wait=lambda _: slow_release.wait())
    fast = ScriptedChatModel(script="fast", wait=lambda _: answer_now.wait())
    pool = ServerPool(["slow", "fast"])
    model = BalancedChatModel(replicas=[slow, fast], pool=pool)
    tasks = []
    for _ in range(12):  # requests arriving one after another
        tasks.append(asyncio.create_task(model.ainvoke(HI)))
        for _ in range(20):  # let it be dispatched (and the fast server answer): no time passes
            await asyncio.sleep(0)
    slow_release.set()
    answers = [m.content for m in await asyncio.gather(*tasks)]
    # the slow server holds its first request while the fast one answers the rest
    assert answers.count("slow") == 1
    assert answers.count("fast") == 11
    assert all(h.in_flight == 0 for h in pool.health())


# ---------------------------------------------------------------------------------------------
# failover and the circuit breaker
# ---------------------------------------------------------------------------------------------


def test_a_dead_server_is_taken_out_and_its_requests_go_to_the_other() -> None:
    a, b = Server("a"), Server("b")
    clock = Clock()
    model, pool = balanced(a, b, clock=clock)
    a.error = connection_error()
    answers = [model.invoke(HI).content for _ in range(8)]
    assert answers == ["b"] * 8  # nothing lost: the failed attempt went to b at once
    assert a.calls == 1  # one hard failure opened the breaker; no request since
    assert [h.state for h in pool.health()] == ["open", "closed"]
    assert "APIConnectionError" in pool.health()[0].last_error


def test_an_open_server_is_reprobed_after_its_cooldown_and_rejoins() -> None:
    a, b = Server("a"), Server("b")
    clock = Clock()
    model, pool = balanced(a, b, clock=clock)
    a.error = connection_error()
    model.invoke(HI)
    model.invoke(HI)
    assert a.calls == 1
    clock.now += 0.5  # still cooling down
    model.invoke(HI)
    assert a.calls == 1
    a.error = None  # the server is back
    clock.now += 1.0
    # b is healthy, so a is only re-probed once nothing healthy is left for a request: take
    # b out too and the next request probes a
    b.error = connection_error()
    assert model.invoke(HI).content == "a"
    assert pool.health()[0].state == "closed"


def test_a_failed_reprobe_doubles_the_cooldown() -> None:
    a = Server("a")
    clock = Clock()
    model, pool = balanced(a, clock=clock, max_cooldown_s=3.0)
    a.error = connection_error()
    with pytest.raises(BackendError):
        model.invoke(HI)
    assert (pool.health()[0].state, pool.health()[0].cooldown_s) == ("open", 1.0)
    calls = a.calls
    clock.now += 1.5  # cooldown over: the next request is the re-probe, which fails
    with pytest.raises(BackendError):
        model.invoke(HI)
    assert a.calls == calls + 1
    assert (pool.health()[0].state, pool.health()[0].cooldown_s) == ("open", 2.0)
    clock.now += 2.5
    with pytest.raises(BackendError):
        model.invoke(HI)
    assert pool.health()[0].cooldown_s == 3.0  # doubled, capped at max_cooldown_s


def test_soft_failures_fail_over_but_take_a_server_out_only_in_a_row() -> None:
    a, b = Server("a"), Server("b")
    model, pool = balanced(a, b, failure_threshold=3)
    a.error = status_error(503)
    for _ in range(2):
        assert model.invoke(HI).content == "b"  # each tried a first, then failed over
    assert (pool.health()[0].state, pool.health()[0].failures) == ("closed", 2)
    a.error = None
    assert {model.invoke(HI).content for _ in range(4)} == {"a", "b"}
    assert pool.health()[0].failures == 0  # a success resets the count
    a.error = status_error(500)
    for _ in range(3):
        assert model.invoke(HI).content == "b"
    assert pool.health()[0].state == "open"  # three in a row
    calls = a.calls
    for _ in range(3):
        assert model.invoke(HI).content == "b"
    assert a.calls == calls


def test_every_server_down_raises_a_backend_error_naming_each() -> None:
    a, b = Server("a"), Server("b")
    model, _ = balanced(a, b)
    a.error = connection_error()
    b.error = status_error(502)
    with pytest.raises(BackendError, match="every server failed") as info:
        model.invoke(HI)
    assert "a: APIConnectionError" in str(info.value)
    assert "b: " in str(info.value)


def test_a_request_error_is_raised_as_is_and_not_failed_over() -> None:
    a, b = Server("a"), Server("b")
    model, pool = balanced(a, b)
    a.error = status_error(404)  # e.g. the adapter is not served
    b.error = status_error(404)
    with pytest.raises(openai.NotFoundError):
        model.invoke(HI)
    assert a.calls + b.calls == 1
    assert [h.state for h in pool.health()] == ["closed", "closed"]
    assert all(h.in_flight == 0 for h in pool.health())


async def test_async_failover_under_concurrency_loses_nothing() -> None:
    a, b, c = Server("a"), Server("b"), Server("c")
    model, pool = balanced(a, b, c)
    a.error = connection_error()
    answers = await asyncio.gather(*(model.ainvoke(HI) for _ in range(30)))
    assert len(answers) == 30
    assert {m.content for m in answers} == {"b", "c"}
    assert all(h.in_flight == 0 for h in pool.health())


async def test_requests_wait_for_a_reprobe_without_spending_their_attempts() -> None:
    # the one server left was taken out; once its cooldown is over one request re-probes it
    # and every other request waits for that answer (they must not give up meanwhile)
    clock = Clock()
    b = Server("b")
    model, pool = balanced(b, clock=clock)
    b.error = connection_error()
    with pytest.raises(BackendError):
        await model.ainvoke(HI)
    assert [h.state for h in pool.health()] == ["open"]
    clock.now += 5  # the cooldown is over
    b.error = None

    async def slow(messages: Sequence[BaseMessage]) -> None:
        await asyncio.sleep(0.3)  # the re-probe takes longer than every retry budget

    b.model.wait = slow
    answers = await asyncio.gather(*(model.ainvoke(HI) for _ in range(20)))
    assert [m.content for m in answers] == ["b"] * 20
    assert [h.state for h in pool.health()] == ["closed"]
    assert all(h.in_flight == 0 for h in pool.health())


def test_pool_and_model_validate_their_arguments() -> None:
    with pytest.raises(ConfigError):
        ServerPool([])
    with pytest.raises(ConfigError, match="twice"):
        ServerPool(["a", "a"])
    with pytest.raises(ConfigError, match="replica"):
        BalancedChatModel(replicas=[Server("a").model], pool=ServerPool(["a", "b"]))


def test_real_openai_client_refused_connection_fails_over(network_guard: Any) -> None:
    network_guard.refuse("127.0.0.1", 9)
    dead = ChatOpenAI(
        model="anchor",
        base_url="http://127.0.0.1:9/v1",
        api_key=SecretStr("EMPTY"),
        max_retries=0,
        use_responses_api=False,
    )
    alive = Server("alive")
    pool = ServerPool(["http://127.0.0.1:9/v1", "alive"])
    model = BalancedChatModel(replicas=[dead, alive.model], pool=pool, backoff_s=0.001)
    assert [model.invoke(HI).content for _ in range(3)] == ["alive"] * 3
    assert pool.health()[0].state == "open"


# ---------------------------------------------------------------------------------------------
# vllm_server_models with several URLs, and a whole graph run
# ---------------------------------------------------------------------------------------------


def test_vllm_server_models_with_several_urls_share_one_pool() -> None:
    models = vllm_server_models(
        ["http://127.0.0.1:8001", "http://127.0.0.1:8002/v1"],
        stages=["anchor", "explorer"],
        adapters={"anchor": "ad-anchor"},
    )
    pools = set()
    for stage, adapter in (("anchor", "ad-anchor"), ("explorer", "explorer")):
        chat = models[stage].chat_model
        assert isinstance(chat, BalancedChatModel)
        assert models[stage].adapter == adapter
        assert models[stage].adapter_kwarg == "model"
        pools.add(id(chat.pool))
        assert chat.pool.names == ["http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"]
        for replica in chat.replicas:
            assert isinstance(replica, ChatOpenAI)
            assert replica.model_name == adapter
            assert replica.max_retries == 0  # the balancer retries, across servers
    assert len(pools) == 1
    single = vllm_server_models("http://127.0.0.1:8001", stages=["anchor"])
    assert isinstance(single["anchor"].chat_model, ChatOpenAI)  # one URL: as before
    with pytest.raises(ConfigError, match="twice"):
        vllm_server_models(["http://a:1", "http://a:1/v1"])


async def test_graph_over_balanced_fakes_survives_a_server_dying(fake_ner: Any) -> None:
    texts = [f"Sepp Hochreiter built Alpha{i} in Munich ." for i in range(12)]
    fakes = fake_ner(
        anchor={t: ["Sepp Hochreiter", "Munich"] for t in texts},
        explorer={t: ["Sepp Hochreiter", "Munich"] for t in texts},
        gold={"Sepp Hochreiter": ("Person", "researcher"), "Munich": ("Location", "location")},
    )
    scripts = fakes.scripts_by_stage()
    pool = ServerPool(["s1", "s2"])
    down = {"s1": False}
    calls = {"s1": 0, "s2": 0}

    def replica(server: str, script: Any) -> ScriptedChatModel:
        def answer(messages: Sequence[BaseMessage]) -> str:
            calls[server] += 1
            if server == "s1" and down["s1"]:
                raise ConnectionResetError("server killed")
            if server == "s1" and calls["s1"] >= 6:
                down["s1"] = True  # dies mid-run
            return str(script(messages))

        return ScriptedChatModel(script=answer)

    models = StageModels(
        {
            stage: StageModel(
                BalancedChatModel(
                    replicas=[replica("s1", script), replica("s2", script)],
                    pool=pool,
                    backoff_s=0.001,
                ),
                adapter=stage,
                adapter_kwarg="model",
            )
            for stage, script in scripts.items()
        }
    )
    records = [InputRecord(id=f"r{i}", text=t, line=i + 1) for i, t in enumerate(texts)]
    out = [
        r
        async for r in run_records(
            build_ner_graph(), RunContext("crossner_ai", models), records, concurrency=4
        )
    ]
    assert [r.id for r in out] == [r.id for r in records]
    assert all(r.error is None for r in out)
    assert [sorted(e.text for e in r.entities) for r in out] == [["Munich", "Sepp Hochreiter"]] * 12
    assert down["s1"] and calls["s2"] > calls["s1"]
    assert pool.health()[0].state == "open"
