"""Stage models backed by a vLLM OpenAI-compatible server with one LoRA adapter per stage."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from samalign.errors import BackendError, ConfigError
from samalign.serving.models import StageModel, StageModels
from samalign.types import NER_STAGES


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


def vllm_server_models(
    base_url: str,
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
) -> StageModels:
    """Build :class:`StageModels` for a vLLM server, one adapter per stage.

    Every request names an adapter (``model=<adapter>``); by default a stage's adapter is
    served under the stage's own name. The calibrator is expected to be served through an
    *identity* adapter (zero LoRA update), so no request falls back to the bare base model.
    Connection errors, timeouts, 408/409/429 and 5xx answers are retried ``max_retries`` times
    with exponential backoff by the OpenAI client.

    Args:
        base_url: The server URL, e.g. ``http://127.0.0.1:8000`` (``/v1`` optional).
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
            the stages built by this call.

    Returns:
        The stage models; pass them in the graph's ``RunContext``.
    """
    base = api_base(base_url)
    unknown = sorted(set(adapters or {}) - set(stages))
    if unknown:
        raise ConfigError(
            f"adapters given for unconfigured stages {unknown}; stages: {list(stages)}"
        )
    models: dict[str, StageModel] = {}
    for stage in stages:
        adapter = (adapters or {}).get(stage, stage)
        chat = ChatOpenAI(
            model=adapter,
            base_url=base,
            api_key=SecretStr(api_key),
            temperature=temperature,
            timeout=timeout,
            max_retries=max_retries,
            use_responses_api=False,
            seed=seed,
            http_client=http_client,
            http_async_client=http_async_client,
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
        raise BackendError(
            f"cannot reach the model server at {url}: {err}. Start one with `samalign serve` "
            "or pass the right --server URL."
        ) from None
    except ValueError:
        raise BackendError(f"{url} did not answer with JSON; is this a vLLM server?") from None
    return [str(m.get("id")) for m in data.get("data", []) if isinstance(m, dict)]


def check_server(base_url: str, adapters: Iterable[str], *, timeout: float = 10.0) -> None:
    """Fail early unless the server is up and serves every adapter.

    Raises:
        BackendError: Naming the missing adapters and the ones the server has.
    """
    available = served_models(base_url, timeout=timeout)
    missing = sorted(set(adapters) - set(available))
    if missing:
        raise BackendError(
            f"the server at {base_url} does not serve adapter(s) {missing}; it serves "
            f"{sorted(available)}. Start it with those adapters (samalign serve --adapter "
            "NAME=PATH) or map stages to served names in the domain's 'adapters'."
        )


__all__ = [
    "MAX_CONNECTIONS",
    "api_base",
    "async_http_client",
    "check_server",
    "served_models",
    "vllm_server_models",
]
