"""A dynamic micro-batcher: collect concurrent requests, run them together.

Pure asyncio, independent of any model. Requests submitted while a batch runs wait in a
bounded queue; the next batch starts when ``max_batch_size`` requests are waiting, or else
``max_wait_s`` after the later of the oldest request's arrival and the previous batch's end
(and, with an ``incoming`` count, once no request is still being prepared, up to
``max_incoming_wait_s``): the callers a batch answers often send their next requests at once,
and they join the next batch instead of waiting a whole batch longer.
A request whose caller is cancelled while it waits is dropped from the queue;
a batch that fails fails only its own requests (and, with ``isolate_failures``, each request
of a failed batch is retried alone, so one bad request cannot fail the others).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from samalign.errors import BackendError, at_least

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Res = TypeVar("Res")

_TICK = 1e-6
"""Clock slack (s): a wait this close to its end is over (no busy loop on float rounding)."""

BatchFn = Callable[[list[Req]], Awaitable[Sequence[Res | BaseException]]]
"""Runs one batch; returns one result or exception per request, in order."""


@dataclass
class BatchInfo:
    """How a request was served: its wait in the queue and the size of its batch."""

    queue_wait_s: float
    batch_size: int


@dataclass
class BatcherStats:
    """Counters of a :class:`MicroBatcher` (recent queue waits are kept for percentiles)."""

    batches: int = 0
    requests: int = 0
    cancelled: int = 0
    failed_batches: int = 0
    largest_batch: int = 0
    queue_waits_s: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))

    def snapshot(self) -> dict[str, Any]:
        """The counters as a plain dict, with the mean batch size and queue-wait p50/p95."""
        waits = sorted(self.queue_waits_s)

        def pct(q: float) -> float:
            if not waits:
                return 0.0
            return waits[min(len(waits) - 1, round(q * (len(waits) - 1)))]

        return {
            "batches": self.batches,
            "requests": self.requests,
            "cancelled": self.cancelled,
            "failed_batches": self.failed_batches,
            "largest_batch": self.largest_batch,
            "mean_batch_size": self.requests / self.batches if self.batches else 0.0,
            "queue_wait_p50_s": pct(0.50),
            "queue_wait_p95_s": pct(0.95),
            "queue_wait_mean_s": statistics.fmean(waits) if waits else 0.0,
        }


@dataclass(eq=False)
class _Item(Generic[Req, Res]):
    request: Req
    future: asyncio.Future[tuple[Res, BatchInfo]]
    enqueued: float


class MicroBatcher(Generic[Req, Res]):
    """Collects concurrent :meth:`submit` calls into batches for ``run_batch``.

    All methods must be called from one event loop (the loop of the first :meth:`submit`).

    Args:
        run_batch: Coroutine function running a batch; returns one result *or exception* per
            request, in order. If it raises, every request of the batch fails with that error
            (or, with ``isolate_failures``, the requests are retried one by one first).
        max_batch_size: Most requests per batch.
        max_wait_s: Longest a request waits for companions before its batch starts (the
            batch starts earlier when full). While a batch runs, requests simply queue.
        max_queue: Most requests waiting (not yet in a batch). Further submits wait for room
            (backpressure), up to ``queue_timeout_s``.
        queue_timeout_s: How long a submit may wait for room in a full queue before it fails
            with :class:`~samalign.errors.BackendError`; ``None`` waits as long as it takes.
        isolate_failures: Retry each request of a failed batch alone.
        name: For logs and error messages.
        incoming: Requests on their way to :meth:`submit` (e.g. being tokenised); a batch
            that is not full waits for them, up to ``max_incoming_wait_s``.
        max_incoming_wait_s: Longest a batch waits for ``incoming`` requests.
    """

    def __init__(
        self,
        run_batch: BatchFn[Req, Res],
        *,
        max_batch_size: int = 16,
        max_wait_s: float = 0.005,
        max_queue: int = 1024,
        queue_timeout_s: float | None = None,
        isolate_failures: bool = True,
        name: str = "batcher",
        incoming: Callable[[], int] | None = None,
        max_incoming_wait_s: float = 0.05,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = at_least("max_batch_size", max_batch_size)
        self.max_wait_s = at_least("max_wait_s", max_wait_s, 0)
        self.max_queue = at_least("max_queue", max_queue)
        self.queue_timeout_s = queue_timeout_s
        self.isolate_failures = isolate_failures
        self.name = name
        self.incoming = incoming
        self.max_incoming_wait_s = at_least("max_incoming_wait_s", max_incoming_wait_s, 0)
        self.stats = BatcherStats()
        self._free_since = 0.0
        self._queue: deque[_Item[Req, Res]] = deque()
        self._arrived: asyncio.Event | None = None
        self._room: asyncio.Condition | None = None
        self._worker: asyncio.Task[None] | None = None
        self._running: list[_Item[Req, Res]] = []
        self._closed = False

    @property
    def queued(self) -> int:
        """Requests waiting for a batch."""
        return len(self._queue)

    def _start(self) -> None:
        if self._worker is None:
            self._arrived = asyncio.Event()
            self._room = asyncio.Condition()
            self._worker = asyncio.get_running_loop().create_task(
                self._collect(), name=f"{self.name}-collector"
            )

    async def submit(self, request: Req) -> tuple[Res, BatchInfo]:
        """Queue ``request`` and wait for its result.

        Returns:
            The result and how it was batched.

        Raises:
            BackendError: The batcher is closed, or the queue stayed full past
                ``queue_timeout_s``.
            BaseException: Whatever ``run_batch`` reported for this request.
        """
        if self._closed:
            raise BackendError(f"{self.name}: closed; no more requests are accepted")
        self._start()
        assert self._room is not None and self._arrived is not None
        if len(self._queue) >= self.max_queue:
            await self._wait_for_room()
        loop = asyncio.get_running_loop()
        item: _Item[Req, Res] = _Item(request, loop.create_future(), time.perf_counter())
        self._queue.append(item)
        self._arrived.set()
        try:
            return await item.future
        except asyncio.CancelledError:
            if not item.future.done():
                item.future.cancel()
            if item in self._queue:  # still waiting: drop it, nobody wants the answer
                self._queue.remove(item)
                self.stats.cancelled += 1
                await self._notify_room()
            raise

    async def _wait_for_room(self) -> None:
        assert self._room is not None
        async with self._room:
            try:
                await asyncio.wait_for(
                    self._room.wait_for(lambda: len(self._queue) < self.max_queue),
                    self.queue_timeout_s,
                )
            except TimeoutError:
                raise BackendError(
                    f"{self.name}: the queue is full ({self.max_queue} requests waiting) and "
                    f"stayed full for {self.queue_timeout_s} s; lower the concurrency or raise "
                    "max_queue"
                ) from None
        if self._closed:
            raise BackendError(f"{self.name}: closed; no more requests are accepted")

    async def _notify_room(self) -> None:
        assert self._room is not None
        async with self._room:
            self._room.notify_all()

    def _live_count(self) -> int:
        return sum(1 for item in self._queue if not item.future.done())

    async def _collect(self) -> None:
        assert self._arrived is not None
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            await self._gather()
            batch: list[_Item[Req, Res]] = []
            while self._queue and len(batch) < self.max_batch_size:
                item = self._queue.popleft()
                if not item.future.done():  # cancelled callers are dropped
                    batch.append(item)
            await self._notify_room()
            if batch:
                await self._run(batch)

    async def _gather(self) -> None:
        """Wait for companions of the queued requests (see the module docstring)."""
        assert self._arrived is not None
        start = max(self._queue[0].enqueued, self._free_since)
        deadline = start + self.max_wait_s
        longest = deadline + self.max_incoming_wait_s
        while self._live_count() < self.max_batch_size:
            now = time.perf_counter() + _TICK  # a float clock: "due" within a microsecond
            if now >= deadline:
                if self.incoming is None or now >= longest or self.incoming() <= 0:
                    return
                wait = min(longest - now, max(self.max_wait_s, 0.001)) + _TICK  # poll the count
            else:
                wait = deadline - now + _TICK
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), wait)

    async def _run(self, batch: list[_Item[Req, Res]]) -> None:
        start = time.perf_counter()
        infos = [BatchInfo(start - item.enqueued, len(batch)) for item in batch]
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        self.stats.queue_waits_s.extend(info.queue_wait_s for info in infos)
        self._running = batch
        try:
            results = list(await self._run_batch([item.request for item in batch]))
            if len(results) != len(batch):
                raise BackendError(
                    f"{self.name}: a batch of {len(batch)} requests returned {len(results)} results"
                )
        except Exception as exc:
            self.stats.failed_batches += 1
            if self.isolate_failures and len(batch) > 1:
                log.warning(
                    "%s: a batch of %d failed (%s); retrying one by one", self.name, len(batch), exc
                )
                results = [await self._run_alone(item.request) for item in batch]
            else:
                results = [exc] * len(batch)
        finally:
            self._running = []
            self._free_since = time.perf_counter()
        for item, info, result in zip(batch, infos, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result((result, info))

    async def _run_alone(self, request: Req) -> Res | BaseException:
        try:
            (result,) = await self._run_batch([request])
        except Exception as exc:
            return exc
        return result

    async def aclose(self) -> None:
        """Stop accepting requests; fail the waiting and running ones; stop the collector."""
        self._closed = True
        pending = [*self._queue, *self._running]
        self._queue.clear()
        for item in pending:
            if not item.future.done():
                item.future.set_exception(BackendError(f"{self.name}: closed before it ran"))
        if self._room is not None:
            await self._notify_room()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None


__all__ = ["BatchFn", "BatchInfo", "BatcherStats", "MicroBatcher"]
