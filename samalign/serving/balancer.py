"""Client-side balancing and failover over several OpenAI-compatible servers.

:class:`ServerPool` keeps the health of a set of servers that every stage shares: each request
goes to the healthy server with the fewest requests in flight (ties in turn), and a server that
stops answering is taken out by a circuit breaker:

* a *hard* failure (connection refused or reset: the server is gone) opens its breaker at once;
  ``failure_threshold`` *soft* failures in a row (timeouts, 5xx, 429) open it too;
* an open breaker keeps the server out for ``cooldown_s``, doubled after each failed re-probe
  (at most ``max_cooldown_s``); then one request at a time is let through as the re-probe
  (*half-open*): a success puts the server back, a failure opens the breaker again.

:class:`BalancedChatModel` is a LangChain chat model over one replica per server (for a vLLM
fleet: one ``ChatOpenAI`` per server, each naming the stage's adapter, so every request still
names its adapter). A request that fails on one server is sent at once to another healthy one;
when every server failed it backs off and tries again, ``max_retries`` times more at most, and
then raises :class:`~samalign.errors.BackendError` naming each server's last error. Errors that
are the request's own fault (4xx: unknown adapter, bad request) are raised as they are, never
failed over.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.outputs import ChatResult
from pydantic import ConfigDict, Field

from samalign.errors import BackendError, ConfigError
from samalign.serving.chat_base import AsyncCall, CallChatModel, SyncCall

log = logging.getLogger(__name__)

Failure = Literal["hard", "soft"]
"""How a failed request counts against its server: ``hard`` opens the breaker at once."""

Classifier = Callable[[BaseException], Failure | None]
"""Tells a server failure (``hard``/``soft``) from the request's own error (``None``)."""

BreakerState = Literal["closed", "open", "half_open"]


def server_failure(error: BaseException) -> Failure | None:
    """Classify an error raised by a request to one server.

    Connections that cannot be opened (refused, unreachable, DNS) are ``hard``; connections
    that broke mid-request (reset, closed by the server), timeouts, 5xx and 429 answers and
    unusable answers (:class:`~samalign.serving.errors.ServerAnswerError`: a truncated or
    non-JSON body, no ``choices``, past the deadline) are ``soft``; anything else (a 4xx
    answer, cancellation) is the request's own error (``None``) and is not failed over.
    """
    if not isinstance(error, Exception):
        return None  # cancellation, KeyboardInterrupt: never failed over
    import httpx
    import openai

    from samalign.serving.errors import ServerAnswerError

    if isinstance(error, ServerAnswerError):
        return "soft"

    if isinstance(error, openai.APITimeoutError):
        return "soft"
    if isinstance(error, openai.APIConnectionError):
        return "soft" if _broken_connection(error) else "hard"
    if isinstance(error, openai.InternalServerError | openai.RateLimitError):
        return "soft"
    if isinstance(error, openai.APIStatusError):
        return "soft" if error.status_code >= 500 or error.status_code in (408, 429) else None
    if isinstance(error, httpx.TimeoutException | TimeoutError):
        return "soft"
    if isinstance(error, httpx.TransportError | ConnectionError):
        return "soft" if _broken_connection(error) else "hard"
    try:
        import httpx2

        if isinstance(error, httpx2.TimeoutException):
            return "soft"
        if isinstance(error, httpx2.TransportError):
            return "soft" if _broken_connection(error) else "hard"
    except ImportError:  # pragma: no cover - httpx2 comes with openai >= 3
        pass
    return None


def _broken_connection(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is an open connection that broke mid-request.

    A kept-alive connection the server closed just as it was reused, or a reset mid-answer,
    says little about the server (it may be busy, or have closed an idle connection), so it
    counts as a *soft* failure; a connection that could not be opened at all (refused,
    unreachable) is *hard*.
    """
    import httpx

    broken: tuple[type[BaseException], ...] = (
        httpx.RemoteProtocolError,
        httpx.ReadError,
        httpx.WriteError,
        ConnectionResetError,
        BrokenPipeError,
    )
    try:
        import httpx2

        broken += (httpx2.RemoteProtocolError, httpx2.ReadError, httpx2.WriteError)
    except ImportError:  # pragma: no cover - httpx2 comes with openai >= 3
        pass
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, broken):
            return True
        current = current.__cause__ or current.__context__
    return False


@dataclass
class ServerHealth:
    """What the pool knows about one server (a snapshot; see :meth:`ServerPool.health`).

    Attributes:
        name: The server's name (its URL).
        state: ``closed`` (in use), ``open`` (taken out) or ``half_open`` (re-probing).
        in_flight: Requests running on it now.
        failures: Failures in a row.
        requests: Requests sent to it so far.
        open_until: Monotonic time at which an open breaker allows a re-probe.
        cooldown_s: The breaker's current cooldown.
        last_error: The last failure, for error messages.
    """

    name: str
    state: BreakerState = "closed"
    in_flight: int = 0
    failures: int = 0
    requests: int = 0
    open_until: float = 0.0
    cooldown_s: float = 0.0
    last_error: str = ""


class ServerPool:
    """The shared health of a set of servers: least-loaded choice and a circuit breaker each.

    Thread-safe; one pool is shared by every stage model of a run, so a server taken out by
    one stage's request is out for all stages.

    Args:
        servers: Server names (URLs), at least one.
        failure_threshold: Soft failures in a row that take a server out.
        cooldown_s: How long a server stays out before the first re-probe.
        max_cooldown_s: Longest cooldown (it doubles after each failed re-probe).
        clock: Monotonic clock (tests pass a fake one).

    Raises:
        ConfigError: No server, a duplicate, or a non-positive setting.
    """

    def __init__(
        self,
        servers: Sequence[str],
        *,
        failure_threshold: int = 3,
        cooldown_s: float = 2.0,
        max_cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not servers:
            raise ConfigError("a server pool needs at least one server")
        if len(set(servers)) != len(servers):
            raise ConfigError(f"servers are listed twice: {list(servers)}")
        if failure_threshold < 1 or cooldown_s <= 0 or max_cooldown_s < cooldown_s:
            raise ConfigError("failure_threshold must be ≥ 1 and 0 < cooldown_s ≤ max_cooldown_s")
        self._servers = [ServerHealth(name) for name in servers]
        self._threshold = failure_threshold
        self._cooldown = cooldown_s
        self._max_cooldown = max_cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._turn = 0

    @property
    def names(self) -> list[str]:
        """The servers' names, in pool order."""
        return [s.name for s in self._servers]

    def __len__(self) -> int:
        return len(self._servers)

    def health(self) -> list[ServerHealth]:
        """A snapshot of every server's state."""
        with self._lock:
            return [ServerHealth(**vars(s)) for s in self._servers]

    def acquire(self, exclude: Collection[int] = ()) -> int | None:
        """Pick a server for one request and count it in flight.

        The healthy server with the fewest requests in flight (ties in turn); else an open
        server whose cooldown is over, as its one re-probe. ``None`` when no server can take
        the request now (every one is out, re-probing, or excluded).

        Args:
            exclude: Servers (indices) not to use, e.g. those this request already failed on.
        """
        with self._lock:
            now = self._clock()
            n = len(self._servers)
            order = [(self._turn + k) % n for k in range(n)]
            healthy = [i for i in order if i not in exclude and self._servers[i].state == "closed"]
            if healthy:
                index = min(healthy, key=lambda i: self._servers[i].in_flight)
            else:
                ready = [
                    i
                    for i in order
                    if i not in exclude
                    and self._servers[i].state == "open"
                    and self._servers[i].open_until <= now
                ]
                if not ready:
                    return None
                index = ready[0]
                self._servers[index].state = "half_open"
                log.info("re-probing server %s", self._servers[index].name)
            self._turn = (index + 1) % n
            server = self._servers[index]
            server.in_flight += 1
            server.requests += 1
            return index

    def release(self, index: int, failure: Failure | None = None, *, error: str = "") -> None:
        """Record how a request on server ``index`` ended.

        Args:
            index: The server :meth:`acquire` returned.
            failure: ``None`` (it answered), ``"soft"`` or ``"hard"`` (see :func:`server_failure`).
            error: The failure, for logs and error messages.
        """
        with self._lock:
            server = self._servers[index]
            server.in_flight -= 1
            if failure is None:
                if server.state != "closed":
                    log.warning("server %s answers again; back in the pool", server.name)
                server.state = "closed"
                server.failures = 0
                server.cooldown_s = 0.0
                return
            server.failures += 1
            server.last_error = error
            trip = server.state == "half_open" or failure == "hard"
            if trip or server.failures >= self._threshold:
                if server.state == "open":
                    return  # already out (another request failed on it first)
                server.cooldown_s = min(
                    self._max_cooldown,
                    server.cooldown_s * 2 if server.cooldown_s else self._cooldown,
                )
                server.open_until = self._clock() + server.cooldown_s
                server.state = "open"
                log.warning(
                    "server %s taken out for %.1f s after %s failure(s): %s",
                    server.name,
                    server.cooldown_s,
                    server.failures,
                    error,
                )

    def forget(self, index: int) -> None:
        """Uncount a request that ended without telling anything about the server."""
        with self._lock:
            server = self._servers[index]
            server.in_flight -= 1
            if server.state == "half_open":
                server.state = "open"  # the re-probe did not conclude; allow another one

    def probing(self) -> bool:
        """Whether a re-probe is in flight (its answer decides whether a server is back)."""
        with self._lock:
            return any(s.state == "half_open" for s in self._servers)

    def wait_s(self) -> float:
        """Seconds until an open server may be re-probed (``0.0`` if one may be now)."""
        with self._lock:
            now = self._clock()
            waits = [max(0.0, s.open_until - now) for s in self._servers if s.state == "open"]
            return min(waits) if waits else 0.0

    def describe_failures(self) -> str:
        """Each server's last error, for an error message."""
        with self._lock:
            return "; ".join(
                f"{s.name}: {s.last_error or 'no answer'} ({s.state})" for s in self._servers
            )


class BalancedChatModel(CallChatModel):
    """A chat model that spreads requests over replicas, one per server, with failover.

    Attributes:
        replicas: One chat model per server of ``pool``, in pool order (each names the same
            adapter, e.g. ``ChatOpenAI(model=adapter, base_url=server)`` with ``max_retries=0``:
            retries are this model's job).
        pool: The servers' shared health.
        max_retries: Rounds of retries after every available server failed a request.
        backoff_s: First wait between rounds (doubles each round); a wait is at least until the
            first server may be re-probed, and at most ``max_wait_s``.
        max_wait_s: Longest wait between rounds.
        classify: Tells server failures from the request's own errors.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    replicas: list[BaseChatModel]
    pool: ServerPool
    max_retries: int = Field(default=3, ge=0)
    backoff_s: float = Field(default=0.5, gt=0)
    max_wait_s: float = Field(default=8.0, gt=0)
    classify: Classifier = server_failure

    def model_post_init(self, context: Any, /) -> None:
        """Check that there is one replica per server."""
        if len(self.replicas) != len(self.pool):
            raise ConfigError(
                f"{len(self.replicas)} replica(s) for {len(self.pool)} server(s): give one "
                "chat model per server, in the pool's order"
            )

    @property
    def _llm_type(self) -> str:
        return "samalign-balanced"

    def _answer_call(self, call: SyncCall) -> ChatResult:
        attempts = _Attempts(self)
        while True:
            index, delay = attempts.next()
            if index is None:
                time.sleep(delay)
                continue
            with attempts.trying(index):
                return call.to(self.replicas[index]._generate)

    async def _aanswer_call(self, call: AsyncCall) -> ChatResult:
        attempts = _Attempts(self)
        while True:
            index, delay = attempts.next()
            if index is None:
                await asyncio.sleep(delay)
                continue
            with attempts.trying(index):
                return await call.to(self.replicas[index]._agenerate)


_PROBE_POLL_S = 0.05
"""How often a request waiting for a re-probe's answer looks again."""


class _Attempts:
    """The attempts of one request: which server next, when to wait, when to give up.

    A request tries each available server at most once per round; when no server is left in
    the round it waits (backoff, or until a server may be re-probed) and starts a new round.
    Failures and waits together are bounded by ``max_retries`` plus the number of servers; a
    wait for a re-probe in flight is not counted (the probe itself is bounded by its timeout).
    """

    def __init__(self, model: BalancedChatModel) -> None:
        self.model = model
        self.pool = model.pool
        self.budget = model.max_retries + len(model.pool)
        self.attempt = 0
        self.tried: set[int] = set()

    def next(self) -> tuple[int | None, float]:
        """The server to try now, or ``(None, seconds to wait)``.

        Raises:
            BackendError: The request failed on every server, ``budget`` times in all.
        """
        if self.attempt >= self.budget:
            raise BackendError(
                f"every server failed this request ({self.attempt} attempt(s)): "
                f"{self.pool.describe_failures()}. Check that the servers are up "
                "(samalign serve) or lower the load (--concurrency)."
            )
        index = self.pool.acquire(exclude=self.tried)
        if index is not None:
            return index, 0.0
        if self.pool.probing():
            # a re-probe is in flight: wait for its answer without spending an attempt (when
            # the one server left was taken out, every request but the probe waits here)
            return None, _PROBE_POLL_S
        rounds = max(0, self.attempt - len(self.pool))
        delay = max(self.model.backoff_s * 2**rounds, self.pool.wait_s())
        self.attempt += 1
        self.tried.clear()
        return None, min(delay, self.model.max_wait_s)

    @contextmanager
    def trying(self, index: int) -> Iterator[None]:
        """Around one attempt on server ``index``: release the server after its answer.

        A failure is recorded (:meth:`failed`); its error is swallowed when the request should
        go to another server (the caller asks :meth:`next` again), else raised.
        """
        try:
            yield
        except BaseException as err:
            if self.failed(index, err):
                return
            raise
        self.pool.release(index)

    def failed(self, index: int, error: BaseException) -> bool:
        """Record a failed attempt; True if the request should go to another server."""
        if not isinstance(error, Exception):
            self.pool.forget(index)  # cancelled: says nothing about the server
            return False
        failure = self.model.classify(error)
        if failure is None:
            self.pool.release(index)  # the server answered; the request itself was wrong
            return False
        self.pool.release(index, failure, error=f"{type(error).__name__}: {error}")
        self.attempt += 1
        self.tried.add(index)
        return True


__all__ = [
    "BalancedChatModel",
    "BreakerState",
    "Classifier",
    "Failure",
    "ServerHealth",
    "ServerPool",
    "server_failure",
]
