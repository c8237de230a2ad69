"""The unit-test kill-switch really blocks model requests and network access."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import pytest

from samalign.errors import BackendError, ModelRequestBlockedError
from samalign.graphs import RunContext, build_ner_graph
from samalign.serving import vllm_server_models
from samalign.testing import BLOCK_ENV


def test_block_env_is_set() -> None:
    assert os.environ.get(BLOCK_ENV) == "1"


def test_socket_connect_is_blocked(network_guard: Any) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(network_guard.error_type, match="must not open network"):
            sock.connect(("127.0.0.1", 9))
        with pytest.raises(network_guard.error_type):
            sock.connect_ex(("10.255.255.1", 80))
    assert ("127.0.0.1", 9) in network_guard.attempts


def test_create_connection_is_blocked(network_guard: Any) -> None:
    with pytest.raises(network_guard.error_type):
        socket.create_connection(("127.0.0.1", 8000), timeout=1)


def test_dns_is_blocked(network_guard: Any) -> None:
    with pytest.raises(network_guard.error_type, match="resolve host names"):
        socket.getaddrinfo("example.com", 80)
    # numeric addresses and localhost need no DNS and stay usable
    assert socket.getaddrinfo("127.0.0.1", 80)


async def test_asyncio_connect_is_blocked(network_guard: Any) -> None:
    with pytest.raises(network_guard.error_type):
        await asyncio.open_connection("127.0.0.1", 9)


def test_refused_address_is_simulated(network_guard: Any) -> None:
    network_guard.refuse("127.0.0.1", 9)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", 9)):
        pass


def test_real_stage_model_in_graph_is_blocked() -> None:
    models = vllm_server_models("http://127.0.0.1:9", max_retries=0)
    context = RunContext(domain="crossner_ai", models=models)
    graph = build_ner_graph()
    with pytest.raises(ModelRequestBlockedError, match=BLOCK_ENV):
        graph.invoke({"text": "LSTM was proposed by Sepp Hochreiter ."}, context=context)


async def test_real_stage_model_in_graph_is_blocked_async() -> None:
    models = vllm_server_models("http://127.0.0.1:9", max_retries=0)
    context = RunContext(domain="crossner_ai", models=models)
    graph = build_ner_graph()
    with pytest.raises(ModelRequestBlockedError):
        await graph.ainvoke({"text": "LSTM was proposed by Sepp Hochreiter ."}, context=context)


def test_socket_guard_holds_even_without_block_env(
    monkeypatch: pytest.MonkeyPatch,
    network_guard: Any,
) -> None:
    """Second line of defence: with the env switch off, the socket guard still stops the call."""
    monkeypatch.delenv(BLOCK_ENV)
    models = vllm_server_models("http://127.0.0.1:9", max_retries=0, timeout=5)
    context = RunContext(domain="crossner_ai", models=models)
    graph = build_ner_graph()
    with pytest.raises(BackendError) as info:
        graph.invoke({"text": "LSTM was proposed by Sepp Hochreiter ."}, context=context)
    chain: list[BaseException] = []
    exc: BaseException | None = info.value
    while exc is not None and len(chain) < 20:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert any(isinstance(e, network_guard.error_type) for e in chain), chain
    assert network_guard.attempts, "no connection was even attempted"
