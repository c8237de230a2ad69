"""Stage models backed by a vLLM OpenAI-compatible server with one LoRA adapter per stage."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any

import httpx
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from samalign.errors import BackendError, ConfigError
from samalign.serving.balancer import BalancedChatModel, ServerPool
from samalign.serving.guard import check_model_request
from samalign.serving.models import StageModel, StageModels
from samalign.types import NER_STAGES

log = logging.getLogger(__name__)


def api_base(url: str) -> str:
    """Normalise a server URL to its OpenAI API base (``.../v1``)."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"server URL {url!r} must start with http:// or https://")
    return url if url.endswith("/v1") else url + "/v1"


MAX_CONNECTIONS = 1024
"""Connections the default async HTTP client keeps open to the server (all may stay idle)."""


def async_http_client(*, max_connections: int = MAX_CONNECTIONS, **kwargs: Any) -> Any:
    """Openai's native async HTTP client with a connection pool sized for many requests.

    openai's default pool keeps at most 100 idle connections: with more requests in flight
    (a graph with many sentences in flight sends several requests per sentence), each further
    request opens a connection and closes it after its answer, which costs client and server
    CPU. This client keeps up to ``max_connections`` open.

    Args:
        max_connections: Most open (and most idle) connections.
        **kwargs: Passed to ``openai.DefaultAsyncHttpxClient`` (``event_hooks``, ``transport``,
            ``timeout`` ...).
    """
    import importlib

    import openai

    try:  # what openai >= 3 is built on; openai 2 is built on httpx
        openai_httpx: Any = importlib.import_module("httpx2")
    except ImportError:  # pragma: no cover
        openai_httpx = httpx
    kwargs.setdefault(
        "limits",
        openai_httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
    )
    return openai.DefaultAsyncHttpxClient(**kwargs)


class VllmServerChatModel(ChatOpenAI):
    """``ChatOpenAI`` for a vLLM server that honours the test kill-switch.

    Every request first calls :func:`~samalign.serving.guard.check_model_request`, so inside
    ``samalign.testing.block_model_requests()`` (or with ``SAMALIGN_BLOCK_MODEL_REQUESTS=1``)
    it raises :class:`~samalign.errors.ModelRequestBlockedError` and sends nothing.
    """

    def _check(self) -> None:
        check_model_request(f"vLLM server {self.openai_api_base}, model {self.model_name!r}")

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._check()
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._check()
        return await super()._agenerate(messages, stop=stop, run_manager=run_manager, **kwargs)

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        self._check()
        return super()._stream(*args, **kwargs)

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        self._check()
        async for chunk in super()._astream(*args, **kwargs):
            yield chunk


def server_urls(base_url: str | Sequence[str]) -> list[str]:
    """One server URL or several, as a list of normalised OpenAI API bases (``.../v1``).

    Raises:
        ConfigError: No URL, a URL that is not http(s), or one listed twice.
    """
    urls = [base_url] if isinstance(base_url, str) else list(base_url)
    if not urls:
        raise ConfigError("no server URL given; pass --server URL (repeatable)")
    bases = [api_base(u) for u in urls]
    if len(set(bases)) != len(bases):
        raise ConfigError(f"a server URL is listed twice: {urls}")
    return bases


def vllm_server_models(
    base_url: str | Sequence[str],
    *,
    stages: Sequence[str] = NER_STAGES,
    adapters: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    max_retries: int = 3,
    temperature: float = 0.0,
    api_key: str = "EMPTY",
    seed: int | None = 0,
    http_client: Any | None = None,
    http_async_client: Any | None = None,
    pool: ServerPool | None = None,
) -> StageModels:
    """Build :class:`StageModels` for a vLLM server (or several), one adapter per stage.

    Every request names an adapter (``model=<adapter>``); by default a stage's adapter is
    served under the stage's own name. The calibrator is expected to be served through an
    *identity* adapter (zero LoRA update), so no request falls back to the bare base model.
    Connection errors, timeouts, 408/409/429 and 5xx answers are retried ``max_retries`` times
    with exponential backoff by the OpenAI client.

    With several server URLs, each stage is a
    :class:`~samalign.serving.balancer.BalancedChatModel` over one ``ChatOpenAI``
    (:class:`VllmServerChatModel`) per server,
    all naming the stage's adapter, sharing one :class:`~samalign.serving.balancer.ServerPool`:
    requests go to the least-loaded healthy server, a server that stops answering is taken out
    (and re-probed later) and its requests go to the others; ``max_retries`` then counts rounds
    over the servers. Behind a router (one URL in front of many servers) pass just that URL.

    Args:
        base_url: The server URL, e.g. ``http://127.0.0.1:8000`` (``/v1`` optional), or a list
            of server URLs serving the same adapters.
        stages: Stages to configure.
        adapters: Stage → adapter name overrides.
        timeout: Seconds per request.
        max_retries: Retries on connection errors, timeouts and 5xx.
        temperature: Sampling temperature (0 = greedy).
        api_key: Sent as bearer token (vLLM ignores it unless started with ``--api-key``).
        seed: Sampling seed sent with each request.
        http_client: Custom HTTP client for sync calls (proxies, auth, hooks); prefer
            ``openai.DefaultHttpxClient(...)`` (openai's native client keeps its pool
            defaults; a plain ``httpx.Client`` goes through a slower compatibility path).
        http_async_client: Custom HTTP client for async calls, e.g.
            ``openai.DefaultAsyncHttpxClient(event_hooks=...)``. One client is shared by all
            the stages built by this call (with one server only).
        pool: The servers' shared health, with several URLs (default: a new
            :class:`~samalign.serving.balancer.ServerPool` over them with default settings).

    Returns:
        The stage models (:class:`VllmServerChatModel`, a ``ChatOpenAI`` that honours the test
        kill-switch, per server); pass them in the graph's ``RunContext``.
    """
    bases = server_urls(base_url)
    if len(bases) > 1 and (http_client is not None or http_async_client is not None):
        raise ConfigError("custom HTTP clients are supported with one server URL only")
    if pool is not None and pool.names != bases:
        raise ConfigError(f"the pool's servers {pool.names} are not the URLs given {bases}")
    if len(bases) > 1 and pool is None:
        pool = ServerPool(bases)
    unknown = sorted(set(adapters or {}) - set(stages))
    if unknown:
        raise ConfigError(
            f"adapters given for unconfigured stages {unknown}; stages: {list(stages)}"
        )
    models: dict[str, StageModel] = {}
    for stage in stages:
        adapter = (adapters or {}).get(stage, stage)
        replicas = [
            VllmServerChatModel(
                model=adapter,
                base_url=base,
                api_key=SecretStr(api_key),
                temperature=temperature,
                timeout=timeout,
                # with several servers, retries are the balancer's: fail over at once
                max_retries=max_retries if pool is None else 0,
                use_responses_api=False,
                seed=seed,
                http_client=http_client,
                http_async_client=http_async_client,
            )
            for base in bases
        ]
        chat: BaseChatModel = (
            replicas[0]
            if pool is None
            else BalancedChatModel(
                replicas=list[BaseChatModel](replicas), pool=pool, max_retries=max_retries
            )
        )
        models[stage] = StageModel(
            chat,
            adapter=adapter,
            structured_output=True,
            adapter_kwarg="model",
            schema_in_extra_body=True,
        )
    return StageModels(models)


def served_models(base_url: str, *, timeout: float = 10.0) -> list[str]:
    """Names the server serves (base model and adapters), from ``GET /v1/models``.

    Raises:
        BackendError: If the server cannot be reached or answers with an error.
    """
    url = api_base(base_url) + "/models"
    try:
        response = httpx.get(url, timeout=timeout)
        response.raise_for_status()
        data = response.json()
    except httpx.HTTPError as err:
        status = err.response.status_code if isinstance(err, httpx.HTTPStatusError) else None
        raise BackendError(
            f"cannot reach the model server at {url}: {err}. Start one with `samalign serve` "
            "or pass the right --server URL.",
            status_code=status,
        ) from None
    except ValueError:
        raise BackendError(f"{url} did not answer with JSON; is this a vLLM server?") from None
    return [str(m.get("id")) for m in data.get("data", []) if isinstance(m, dict)]


def check_server(base_url: str, adapters: Iterable[str], *, timeout: float = 10.0) -> None:
    """Fail early unless the server is up and serves every adapter.

    Raises:
        BackendError: Naming the missing adapters and the ones the server has.
    """
    _require_adapters(base_url, adapters, served_models(base_url, timeout=timeout))


def _require_adapters(base_url: str, adapters: Iterable[str], available: list[str]) -> None:
    missing = sorted(set(adapters) - set(available))
    if missing:
        raise BackendError(
            f"the server at {base_url} does not serve adapter(s) {missing}; it serves "
            f"{sorted(available)}. Start it with those adapters (samalign serve --adapter "
            "NAME=PATH) or map stages to served names in the domain's 'adapters'."
        )


def check_servers(
    base_urls: str | Sequence[str], adapters: Iterable[str], *, timeout: float = 10.0
) -> list[str]:
    """Fail early unless a server is up and every server that is up serves every adapter.

    Returns the servers that answered.

    A server that does not answer is only logged (the pool re-probes it later, so it may join
    once it is up); a server that answers without an adapter is a configuration error.

    Raises:
        BackendError: No server answers, or one lacks an adapter.
    """
    wanted = list(adapters)
    urls = server_urls(base_urls)
    if len(urls) == 1:  # one server: it must answer
        check_server(
            base_urls if isinstance(base_urls, str) else base_urls[0], wanted, timeout=timeout
        )
        return urls
    up: list[str] = []
    down: list[str] = []
    for url in urls:
        try:
            available = served_models(url, timeout=timeout)
        except BackendError as err:
            down.append(str(err))
            continue
        _require_adapters(url, wanted, available)
        up.append(url)
    if not up:
        raise BackendError("no server answers: " + " | ".join(down))
    for problem in down:
        log.warning("%s (it will be re-probed)", problem)
    return up


__all__ = [
    "MAX_CONNECTIONS",
    "VllmServerChatModel",
    "api_base",
    "async_http_client",
    "check_server",
    "check_servers",
    "served_models",
    "server_urls",
    "vllm_server_models",
]
