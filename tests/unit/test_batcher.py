"""The dynamic micro-batcher, with fake batch functions (no model), on a virtual clock.

Every test runs on :class:`VirtualTimeLoop`: an event loop whose clock moves only when nothing
is ready to run, jumping straight to the next timer. The batcher's own clock
(``time.perf_counter``) is that loop clock too, so waits and queue times are exact numbers
(no wall-clock assertion, nothing that depends on the machine's load) and a test of a
5-second wait takes no time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import selectors
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from samalign.errors import BackendError, ConfigError
from samalign.serving import batcher as batcher_module
from samalign.serving.batcher import MicroBatcher


class _VirtualClockSelector(selectors.BaseSelector):
    """A selector that, instead of sleeping until the next timer, moves the clock there."""

    def __init__(self) -> None:
        self._real = selectors.DefaultSelector()
        self.now = 0.0

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if not ready and timeout is not None and timeout > 0:
            self.now += timeout  # nothing to do until the next timer: jump to it
        elif not ready and timeout is None:
            ready = self._real.select(None)  # no timer at all: wait for I/O as usual
        return ready

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time (see the module docs)."""

    def __init__(self) -> None:
        self._clock = _VirtualClockSelector()
        super().__init__(selector=self._clock)

    def time(self) -> float:
        return self._clock.now


def virtual_time(
    test: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., None]:
    """Run an async test on a :class:`VirtualTimeLoop`."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
            runner.run(test(*args, **kwargs))

    del run.__wrapped__  # pytest must see a plain function, not the coroutine function
    return run


@pytest.fixture(autouse=True)
def batcher_on_the_loop_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The batcher reads the running loop's (virtual) clock instead of ``time.perf_counter``."""
    monkeypatch.setattr(
        batcher_module,
        "time",
        SimpleNamespace(perf_counter=lambda: asyncio.get_running_loop().time()),
    )
    yield


def now() -> float:
    return asyncio.get_running_loop().time()


async def settle() -> None:
    """Let every task run until it waits for something (no virtual time passes)."""
    for _ in range(20):
        await asyncio.sleep(0)


class Recorder:
    """A fake batch function: records batches, can be held, fails on 'bad' requests."""

    def __init__(self, delay: float = 0.0, fail_whole_batch: bool = True) -> None:
        self.batches: list[list[str]] = []
        self.started_at: list[float] = []
        self.delay = delay
        self.fail_whole_batch = fail_whole_batch
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()

    async def __call__(self, batch: list[str]) -> Sequence[str | BaseException]:
        self.batches.append(list(batch))
        self.started_at.append(now())
        self.started.set()
        await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if "bad" in batch and self.fail_whole_batch:
            raise RuntimeError("the batch blew up")
        return [ValueError(f"no {r}") if r == "reject" else r.upper() for r in batch]


async def running_batch(
    first: str = "running", **settings: Any
) -> tuple[Recorder, MicroBatcher[str, str], asyncio.Task[Any]]:
    """A batcher whose first batch (``[first]``) is held inside the batch function.

    Returns:
        The recorder (set ``gate`` to let batches finish), the batcher and the first request.
    """
    fake = Recorder()
    fake.gate.clear()
    batcher = MicroBatcher(fake, **settings)
    running = asyncio.create_task(batcher.submit(first))
    await fake.started.wait()
    return fake, batcher, running


@contextlib.asynccontextmanager
async def recording(
    fake: Recorder | None = None, **settings: Any
) -> AsyncIterator[tuple[Recorder, MicroBatcher[str, str]]]:
    """A batcher over ``fake`` (a new :class:`Recorder` by default), closed when the block ends."""
    fake = Recorder() if fake is None else fake
    batcher = MicroBatcher(fake, **settings)
    try:
        yield fake, batcher
    finally:
        await batcher.aclose()


async def _results(batcher: MicroBatcher[str, str], requests: list[str]) -> list[str]:
    answers = await asyncio.gather(*(batcher.submit(r) for r in requests))
    return [result for result, _ in answers]


@virtual_time
async def test_bounded_batch_size_and_order() -> None:
    async with recording(max_batch_size=4, max_wait_s=0.01) as (fake, batcher):
        requests = [f"r{i}" for i in range(10)]
        assert await _results(batcher, requests) == [r.upper() for r in requests]
        assert [len(b) for b in fake.batches] == [4, 4, 2]
        assert [r for b in fake.batches for r in b] == requests
        stats = batcher.stats.snapshot()
        assert stats["batches"] == 3 and stats["requests"] == 10 and stats["largest_batch"] == 4
        assert stats["mean_batch_size"] == pytest.approx(10 / 3)


@virtual_time
async def test_bounded_wait_a_lone_request_waits_at_most_max_wait() -> None:
    async with recording(max_batch_size=8, max_wait_s=0.05) as (fake, batcher):
        start = now()
        solo = asyncio.create_task(batcher.submit("solo"))
        await settle()
        assert fake.batches == [] and not solo.done()  # waiting for companions
        result, info = await solo
        assert result == "SOLO" and info.batch_size == 1
        assert fake.started_at == [pytest.approx(start + 0.05)]  # it ran when max_wait_s was up
        assert info.queue_wait_s == pytest.approx(0.05)
        assert now() == pytest.approx(start + 0.05)  # and not a moment later


@virtual_time
async def test_a_full_batch_starts_without_waiting() -> None:
    async with recording(max_batch_size=2, max_wait_s=5.0) as (fake, batcher):
        start = now()
        answers = await asyncio.gather(batcher.submit("a"), batcher.submit("b"))
        assert [result for result, _ in answers] == ["A", "B"]
        assert fake.started_at == [start]  # no time passed: the full batch did not wait 5 s
        assert [info.queue_wait_s for _, info in answers] == [0.0, 0.0]


@virtual_time
async def test_requests_arriving_during_a_batch_form_the_next_batch() -> None:
    fake, batcher, first = await running_batch("first", max_batch_size=8, max_wait_s=0.0)
    later = [asyncio.create_task(batcher.submit(f"late{i}")) for i in range(5)]
    await settle()
    assert batcher.queued == 5
    fake.gate.set()
    await asyncio.gather(first, *later)
    assert fake.batches == [["first"], [f"late{i}" for i in range(5)]]
    assert [t.result()[1].batch_size for t in later] == [5] * 5
    await batcher.aclose()


@virtual_time
async def test_follow_up_requests_join_the_next_batch() -> None:
    """The callers a batch answers send their next requests at once: they are not left behind.

    Before, the next batch started the moment the previous one ended, with whatever had queued
    meanwhile, and the follow-ups waited a whole batch longer (waves of half-full batches).
    """
    fake = Recorder(delay=1.0)
    async with recording(fake, max_batch_size=8, max_wait_s=0.01) as (_, batcher):

        async def sentence(name: str) -> None:
            await batcher.submit(f"{name}-a")
            await asyncio.sleep(0.002)  # the caller's own work between its requests
            await batcher.submit(f"{name}-b")

        first = [asyncio.create_task(sentence(f"s{i}")) for i in range(3)]
        await fake.started.wait()  # s0..s2 run; three more sentences queue meanwhile
        await asyncio.gather(*first, *(sentence(f"t{i}") for i in range(3)))
        assert [sorted(b) for b in fake.batches] == [
            ["s0-a", "s1-a", "s2-a"],
            ["s0-b", "s1-b", "s2-b", "t0-a", "t1-a", "t2-a"],
            ["t0-b", "t1-b", "t2-b"],
        ]


@virtual_time
async def test_a_batch_waits_for_requests_still_being_prepared_but_not_forever() -> None:
    preparing = 2
    fake = Recorder()
    async with recording(
        fake, max_batch_size=8, max_wait_s=0.01, incoming=lambda: preparing,
        max_incoming_wait_s=0.1,
    ) as (_, batcher):  # fmt: skip
        start = now()
        early = asyncio.create_task(batcher.submit("early"))
        await asyncio.sleep(0.03)  # past max_wait_s, but two requests are being prepared
        assert fake.batches == []
        preparing = 1
        late = asyncio.create_task(batcher.submit("late"))
        await asyncio.gather(early, late)  # the last one never comes: the wait is bounded
        assert fake.batches == [["early", "late"]]
        assert fake.started_at[0] == pytest.approx(start + 0.11, abs=0.011)


@virtual_time
async def test_bounded_queue_backpressure_then_clear_error() -> None:
    fake, batcher, running = await running_batch(max_batch_size=1, max_wait_s=0.0, max_queue=2)
    queued = [asyncio.create_task(batcher.submit(f"q{i}")) for i in range(2)]
    await settle()
    assert batcher.queued == 2
    waiting = asyncio.create_task(batcher.submit("waits-for-room"))
    await asyncio.sleep(3600)  # however long: without room it is not queued
    assert not waiting.done() and batcher.queued == 2  # backpressure: not queued yet
    fake.gate.set()
    assert (await waiting)[0] == "WAITS-FOR-ROOM"
    await asyncio.gather(running, *queued)

    fake.gate.clear()
    impatient = MicroBatcher(fake, max_batch_size=1, max_queue=1, queue_timeout_s=0.02)
    held = asyncio.create_task(impatient.submit("held"))
    await settle()
    one = asyncio.create_task(impatient.submit("one"))
    await settle()
    start = now()
    with pytest.raises(BackendError, match="queue is full"):
        await impatient.submit("too many")
    assert now() == pytest.approx(start + 0.02)  # it waited queue_timeout_s for room
    fake.gate.set()
    await asyncio.gather(held, one)
    await batcher.aclose()
    await impatient.aclose()


@virtual_time
async def test_a_cancelled_caller_is_dropped_from_the_queue() -> None:
    fake, batcher, running = await running_batch(max_batch_size=4, max_wait_s=0.0)
    doomed = asyncio.create_task(batcher.submit("doomed"))
    kept = asyncio.create_task(batcher.submit("kept"))
    await settle()
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert batcher.queued == 1 and batcher.stats.cancelled == 1
    fake.gate.set()
    assert (await kept)[0] == "KEPT" and (await running)[0] == "RUNNING"
    assert ["doomed"] not in fake.batches and all("doomed" not in b for b in fake.batches)
    await batcher.aclose()


@virtual_time
async def test_a_failing_batch_fails_only_its_own_requests() -> None:
    async with recording(max_batch_size=3, max_wait_s=0.01) as (fake, batcher):
        outcomes = await asyncio.gather(
            *(batcher.submit(r) for r in ["a", "bad", "c", "d"]), return_exceptions=True
        )
        assert isinstance(outcomes[1], RuntimeError)
        assert [o[0] for i, o in enumerate(outcomes) if i != 1] == ["A", "C", "D"]  # type: ignore[index]
        # the failed batch [a, bad, c] was retried one by one; [d] was never affected
        assert fake.batches == [["a", "bad", "c"], ["a"], ["bad"], ["c"], ["d"]]
        assert batcher.stats.failed_batches == 1  # retries are not counted as batches


@virtual_time
async def test_without_isolation_the_batch_fails_and_the_next_one_runs() -> None:
    async with recording(max_batch_size=2, max_wait_s=0.01, isolate_failures=False) as (_, batcher):
        outcomes = await asyncio.gather(
            *(batcher.submit(r) for r in ["a", "bad", "c"]), return_exceptions=True
        )
        assert isinstance(outcomes[0], RuntimeError) and isinstance(outcomes[1], RuntimeError)
        assert outcomes[2][0] == "C"  # type: ignore[index]
        assert (await batcher.submit("after"))[0] == "AFTER"


@virtual_time
async def test_per_request_errors_from_the_batch_function() -> None:
    async with recording(max_batch_size=4, max_wait_s=0.01) as (fake, batcher):
        outcomes = await asyncio.gather(
            *(batcher.submit(r) for r in ["ok", "reject"]), return_exceptions=True
        )
        assert outcomes[0][0] == "OK"  # type: ignore[index]
        assert isinstance(outcomes[1], ValueError)
        assert len(fake.batches) == 1  # an error result is not a failed batch


@virtual_time
async def test_a_wrong_number_of_results_is_an_error() -> None:
    async def short(batch: list[str]) -> list[str]:
        return batch[:1]

    batcher = MicroBatcher(short, max_batch_size=2, max_wait_s=0.01, isolate_failures=False)
    outcomes = await asyncio.gather(
        *(batcher.submit(r) for r in ["a", "b"]), return_exceptions=True
    )
    assert len(outcomes) == 2
    assert all(isinstance(o, BackendError) for o in outcomes)
    await batcher.aclose()


@virtual_time
async def test_close_fails_waiting_and_running_requests_and_refuses_new_ones() -> None:
    _, batcher, running = await running_batch(max_batch_size=1, max_wait_s=0.0)
    waiting = asyncio.create_task(batcher.submit("waiting"))
    await settle()
    await batcher.aclose()
    for task in (running, waiting):
        with pytest.raises(BackendError, match="closed"):
            await task
    with pytest.raises(BackendError, match="closed"):
        await batcher.submit("late")


@virtual_time
async def test_queue_wait_percentiles() -> None:
    async with recording(Recorder(delay=0.02), max_batch_size=2, max_wait_s=0.0) as (_, batcher):
        await _results(batcher, [f"r{i}" for i in range(6)])
        stats = batcher.stats.snapshot()
        assert stats["batches"] == 3
        # batches of 0.02 s: the first pair waited for none, the second for one, the last for two
        assert sorted(batcher.stats.queue_waits_s) == pytest.approx([0, 0, 0.02, 0.02, 0.04, 0.04])
        assert 0 <= stats["queue_wait_p50_s"] <= stats["queue_wait_p95_s"]
        assert stats["queue_wait_p50_s"] == pytest.approx(0.02)
        assert stats["queue_wait_p95_s"] == pytest.approx(0.04)
        assert stats["queue_wait_mean_s"] == pytest.approx(0.02)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_wait_s": -1}, "max_wait_s"),
        ({"max_queue": 0}, "max_queue"),
        ({"max_incoming_wait_s": -1}, "max_incoming_wait_s"),
    ],
)
def test_invalid_settings(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MicroBatcher(Recorder(), **kwargs)  # type: ignore[arg-type]
