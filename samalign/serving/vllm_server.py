"""Stage models backed by a vLLM OpenAI-compatible server with one LoRA adapter per stage."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.outputs import ChatResult
from langchain_openai import ChatOpenAI
from pydantic import Field, SecretStr

from samalign.errors import BackendError, ConfigError
from samalign.serving.balancer import BalancedChatModel, ServerPool, server_failure
from samalign.serving.chat_base import AsyncCall, CallChatModel, ChatCall, SyncCall
from samalign.serving.errors import ServerAnswerError, snippet
from samalign.serving.guard import check_model_request
from samalign.serving.models import StageModel, StageModels
from samalign.types import NER_STAGES

log = logging.getLogger(__name__)


def api_base(url: str) -> str:
    """Normalise a server URL to its OpenAI API base (``.../v1``).

    Raises:
        ConfigError: The URL is not http(s), or cannot be parsed (bad host, bad port).
    """
    url = url.strip()
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"server URL {snippet(url, 100)} must start with http:// or https://")
    url = url.rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as err:
        raise ConfigError(
            f"server URL {snippet(url, 100)} is not a valid URL ({err}); write it as "
            "http://HOST:PORT, e.g. http://127.0.0.1:8000 or http://[::1]:8000"
        ) from None
    if not parts.hostname:
        raise ConfigError(
            f"server URL {snippet(url, 100)} has no host; write it as http://HOST:PORT"
        )
    return url if url.endswith("/v1") else url + "/v1"


def _check_timeout(timeout: float) -> float:
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


MAX_CONNECTIONS = 1024
"""Connections the default async HTTP client keeps open to the server (all may stay idle)."""

KEEPALIVE_EXPIRY_S = 2.0
"""Seconds an idle connection is kept for reuse. Below the server's own idle limit (vLLM's
uvicorn closes idle connections after 5 s, the HTTP client's default expiry), so a request
never picks a connection the server is closing at that moment."""


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
    import openai

    kwargs.setdefault(
        "limits",
        _http_module().Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
        ),
    )
    return openai.DefaultAsyncHttpxClient(**kwargs)


def _http_module() -> Any:
    """The HTTP library of the OpenAI client (``httpx2`` for openai ≥ 3, else ``httpx``)."""
    import openai

    try:
        import httpx2

        if issubclass(openai.DefaultHttpxClient, httpx2.Client):
            return httpx2
    except ImportError:  # pragma: no cover - openai < 3 uses httpx
        pass
    return httpx  # pragma: no cover


def deadline_http_client(deadline_s: float) -> Any:
    """A sync HTTP client for the OpenAI client whose every request ends by ``deadline_s``.

    The transport clamps the connect, write and read timeouts of each request to the time left
    before its deadline (also once the headers have arrived, for the body), and stops reading a
    body that is still arriving at the deadline, so a server dripping its answer a byte at a
    time cannot hold a sync request past it. A late answer raises the HTTP library's
    ``ReadTimeout`` (retried like any timeout).

    Args:
        deadline_s: Total seconds per request.
    """
    import openai

    http = _http_module()

    class DeadlineStream(http.SyncByteStream):  # type: ignore[misc, name-defined]
        def __init__(self, inner: Any, deadline: float) -> None:
            self._inner = inner
            self._deadline = deadline

        def __iter__(self) -> Any:
            for chunk in self._inner:
                yield chunk
                if time.monotonic() > self._deadline:
                    raise http.ReadTimeout(f"no complete answer within {deadline_s} s")

        def close(self) -> None:
            self._inner.close()

    class DeadlineTransport(http.BaseTransport):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            self._inner = http.HTTPTransport(
                limits=http.Limits(
                    max_connections=1000,
                    max_keepalive_connections=100,
                    keepalive_expiry=KEEPALIVE_EXPIRY_S,
                )
            )

        @staticmethod
        def _clamp(request: Any, deadline: float) -> None:
            left = max(0.001, deadline - time.monotonic())
            timeouts = dict(request.extensions.get("timeout") or {})
            for name in ("connect", "read", "write", "pool"):
                value = timeouts.get(name)
                timeouts[name] = left if value is None else min(float(value), left)
            request.extensions["timeout"] = timeouts

        def handle_request(self, request: Any) -> Any:
            deadline = time.monotonic() + deadline_s
            self._clamp(request, deadline)
            response = self._inner.handle_request(request)
            self._clamp(request, deadline)  # the body is read after this returns
            return http.Response(
                status_code=response.status_code,
                headers=response.headers,
                stream=DeadlineStream(response.stream, deadline),
                extensions=response.extensions,
            )

        def close(self) -> None:
            self._inner.close()

    return openai.DefaultHttpxClient(transport=DeadlineTransport(), timeout=deadline_s)


def _root_cause(error: BaseException) -> BaseException:
    """The first error in ``error``'s chain (e.g. the HTTP library's, under the OpenAI one)."""
    for _ in range(8):
        cause = error.__cause__ or error.__context__
        if cause is None:
            break
        error = cause
    return error


class VllmServerChatModel(CallChatModel, ChatOpenAI):
    """``ChatOpenAI`` for a vLLM server: a total deadline per request, retries of bad answers.

    * Every request has a total deadline of ``deadline_s`` (default: the client ``timeout``)
      from sending it to the last byte of the answer, so a server that drips its answer a byte
      at a time cannot hold a request past it (async calls: cancelled at the deadline; sync
      calls: through :func:`deadline_http_client`, which :func:`vllm_server_models` installs
      unless it is given its own ``http_client``).
    * An answer that cannot be used — a body cut off mid-way, a body that is not JSON, a
      completion without ``choices`` — is a :class:`~samalign.serving.errors.ServerAnswerError`
      and is retried like a connection error, a timeout, a 408/429 or a 5xx answer: ``retries``
      times, with exponential backoff (``backoff_s`` doubling, at most ``max_wait_s``, with
      jitter). Errors that are the request's own fault (other 4xx answers) are not retried.
      When the retries are spent, a :class:`~samalign.errors.BackendError` says what the server
      sent the last time.

    * Every request (sync, async, streamed) first calls
      :func:`~samalign.serving.guard.check_model_request` while its payload is built, so inside
      ``samalign.testing.block_model_requests()`` (or with ``SAMALIGN_BLOCK_MODEL_REQUESTS=1``)
      it raises :class:`~samalign.errors.ModelRequestBlockedError` and sends nothing.

    The OpenAI client's own retries are off (``max_retries=0``): retrying is this model's job
    (or, with several servers, :class:`~samalign.serving.balancer.BalancedChatModel`'s, whose
    replicas are these models with ``retries=0``).

    Attributes:
        retries: Retries of a failed request (server failures and unusable answers).
        backoff_s: First wait before a retry (doubles each retry).
        max_wait_s: Longest wait before a retry.
        deadline_s: Total seconds one request may take (``None``: the client ``timeout``).
    """

    retries: int = Field(default=3, ge=0)
    backoff_s: float = Field(default=0.5, gt=0)
    max_wait_s: float = Field(default=8.0, gt=0)
    deadline_s: float | None = Field(default=None, gt=0)

    def _get_request_payload(
        self, input_: LanguageModelInput, *, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        # every path (invoke, ainvoke, stream, astream) builds its payload here first
        check_model_request(f"vLLM server {self.openai_api_base}, model {self.model_name!r}")
        payload: dict[str, Any] = super()._get_request_payload(input_, stop=stop, **kwargs)
        return payload

    def _deadline(self) -> float | None:
        if self.deadline_s is not None:
            return self.deadline_s
        timeout = self.request_timeout
        return float(timeout) if isinstance(timeout, int | float) else None

    def _where(self) -> str:
        return f"the server at {self.openai_api_base} (model {self.model_name!r})"

    def _usable(self, result: ChatResult) -> ChatResult:
        if not result.generations:
            raise ServerAnswerError(
                f"{self._where()} answered with no choices (an empty 'choices' list)"
            )
        return result

    def _problem(self, error: Exception) -> Exception:
        """What a failed attempt means: an unusable answer, or the error itself."""
        if isinstance(error, TimeoutError):  # the total deadline (asyncio.timeout)
            return ServerAnswerError(
                f"{self._where()} sent no complete answer within the {self._deadline()} s "
                "deadline per request; raise the timeout (--timeout) or lower the load "
                "(--concurrency)"
            )
        if isinstance(error, UnicodeError):  # the request could not be encoded: its own fault
            return error
        if isinstance(error, ValueError | TypeError | KeyError | IndexError):
            body = ""
            response = getattr(error, "response", None)
            if response is not None:
                try:
                    body = f"; it sent {snippet(str(response.text))}"
                except Exception:  # the body could not be read either
                    body = ""
            reason = str(error).strip() or type(error).__name__
            return ServerAnswerError(
                f"{self._where()} answered with something that is not a chat completion "
                f"({snippet(reason)}){body}"
            )
        return error

    def _retry_delay(self, attempt: int, error: Exception) -> float:
        """Seconds to wait before retrying after ``error`` (attempt ``attempt`` from 0).

        Raises:
            Exception: ``error`` itself when it is not retried (the request's own fault, or
                ``retries=0``), else a :class:`BackendError` once the retries are spent.
        """
        if server_failure(error) is None or self.retries == 0:
            raise error
        if attempt >= self.retries:
            if isinstance(error, ServerAnswerError):
                last = error.message
            else:
                cause = _root_cause(error)
                last = f"{type(error).__name__}: {snippet(str(error), 300)}" + (
                    f" ({type(cause).__name__}: {snippet(str(cause), 200)})"
                    if cause is not error
                    else ""
                )
            status = getattr(error, "status_code", None)
            raise BackendError(
                f"{self._where()} failed {attempt + 1} attempt(s); the last one: {last}. Check "
                "the server (its log, its load) or raise --timeout",
                adapter=self.model_name,
                status_code=status if isinstance(status, int) else None,
            ) from error
        wait = float(min(self.max_wait_s, self.backoff_s * 2**attempt))
        log.info("retrying a request to %s in %.2f s after %s", self._where(), wait, error)
        return wait * random.uniform(0.5, 1.0)

    def _retrying(self, call: ChatCall[Any]) -> _Retry:
        """The retries of ``call``, once its request is built (raising the request's own errors)."""
        self._get_request_payload(call.messages, stop=call.stop, **call.kwargs)
        return _Retry(self)

    def _answer_call(self, call: SyncCall) -> ChatResult:
        retry = self._retrying(call)
        while True:
            with retry:
                return self._usable(call.to(super(CallChatModel, self)._generate))
            time.sleep(retry.delay)

    async def _aanswer_call(self, call: AsyncCall) -> ChatResult:
        retry = self._retrying(call)
        while True:
            with retry:
                async with asyncio.timeout(self._deadline()):
                    result = await call.to(super(CallChatModel, self)._agenerate)
                return self._usable(result)
            await asyncio.sleep(retry.delay)


class _Retry:
    """The attempts of one request to a :class:`VllmServerChatModel`, each inside ``with``.

    A failed attempt's error is swallowed, with :attr:`delay` set to the wait before the next
    attempt, or raised (the request's own fault, or the retries are spent: see
    :meth:`VllmServerChatModel._retry_delay`).
    """

    def __init__(self, model: VllmServerChatModel) -> None:
        self.model = model
        self.attempt = 0
        self.delay = 0.0

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> bool:
        if not isinstance(error, Exception):
            return False
        self.delay = self.model._retry_delay(self.attempt, self.model._problem(error))
        self.attempt += 1
        return True


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
    Each stage model is a :class:`VllmServerChatModel`: ``timeout`` is a total deadline per
    request, and connection errors, timeouts, 408/429 and 5xx answers and unusable answers
    (truncated or non-JSON body, no ``choices``) are retried ``max_retries`` times with
    exponential backoff; then the request fails with a
    :class:`~samalign.errors.BackendError` that says what the server sent.

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
        timeout: Total seconds per request (a deadline, not a per-read timeout).
        max_retries: Retries on connection errors, timeouts, 5xx and unusable answers.
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
        The stage models (:class:`VllmServerChatModel`, a ``ChatOpenAI`` with a total deadline,
        retries of unusable answers and the test kill-switch, per server); pass them in the
        graph's ``RunContext``.

    Raises:
        ConfigError: A bad URL, timeout or retry count, or adapters for unknown stages.
    """
    bases = server_urls(base_url)
    timeout = _check_timeout(timeout)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigError(f"max_retries must be a whole number ≥ 0, got {max_retries!r}")
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
    if http_client is None:  # sync requests: a total deadline each (async: asyncio.timeout)
        http_client = deadline_http_client(timeout)
    if http_async_client is None:
        # a client of this call's own: langchain-openai's default async client is cached per
        # (URL, timeout) for the process, and an httpx client bound to an event loop that has
        # closed fails every request ("Event loop is closed") — e.g. a second asyncio.run()
        http_async_client = async_http_client()
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
                max_retries=0,  # the OpenAI client's retries: off, VllmServerChatModel retries
                # with several servers, retries are the balancer's: fail over at once
                retries=max_retries if pool is None else 0,
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


MAX_MODELS_BYTES = 16 * 1024 * 1024
"""Largest ``GET /v1/models`` answer read."""


def served_models(base_url: str, *, timeout: float = 10.0) -> list[str]:
    """Names the server serves (base model and adapters), from ``GET /v1/models``.

    The whole answer must arrive within ``timeout`` seconds (a total deadline) and be at most
    :data:`MAX_MODELS_BYTES`.

    Raises:
        BackendError: If the server cannot be reached, answers with an error, too slowly, or
            with something that is not a model list.
    """
    url = api_base(base_url) + "/models"
    deadline = time.monotonic() + timeout
    try:
        with httpx.stream("GET", url, timeout=timeout) as response:
            response.raise_for_status()
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout(f"no complete answer within {timeout} s")
                if len(body) > MAX_MODELS_BYTES:
                    raise BackendError(
                        f"{url} answered with more than {MAX_MODELS_BYTES} bytes; is this a "
                        "vLLM server?"
                    )
        data = json.loads(body)
    except httpx.HTTPError as err:
        status = err.response.status_code if isinstance(err, httpx.HTTPStatusError) else None
        raise BackendError(
            f"cannot reach the model server at {url}: {err}. Start one with `samalign serve` "
            "or pass the right --server URL.",
            status_code=status,
        ) from None
    except (ValueError, RecursionError):
        raise BackendError(f"{url} did not answer with JSON; is this a vLLM server?") from None
    models = data.get("data") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise BackendError(
            f"{url} did not answer with a model list ({snippet(body.decode('utf-8', 'replace'))}); "
            "is this a vLLM server?"
        )
    return [str(m.get("id")) for m in models if isinstance(m, dict)]


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
    "deadline_http_client",
    "served_models",
    "server_urls",
    "vllm_server_models",
]
