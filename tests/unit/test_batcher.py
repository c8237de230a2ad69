"""The dynamic micro-batcher, with fake batch functions (no model)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from samalign.errors import BackendError, ConfigError
from samalign.serving.batcher import MicroBatcher


class Recorder:
    """A fake batch function: records batches, can be held, fails on 'bad' requests."""

    def __init__(self, delay: float = 0.0, fail_whole_batch: bool = True) -> None:
        self.batches: list[list[str]] = []
        self.delay = delay
        self.fail_whole_batch = fail_whole_batch
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()

    async def __call__(self, batch: list[str]) -> Sequence[str | BaseException]:
        self.batches.append(list(batch))
        self.started.set()
        await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if "bad" in batch and self.fail_whole_batch:
            raise RuntimeError("the batch blew up")
        return [ValueError(f"no {r}") if r == "reject" else r.upper() for r in batch]


async def _results(batcher: MicroBatcher[str, str], requests: list[str]) -> list[str]:
    answers = await asyncio.gather(*(batcher.submit(r) for r in requests))
    return [result for result, _ in answers]


async def test_bounded_batch_size_and_order() -> None:
    fake = Recorder()
    batcher = MicroBatcher(fake, max_batch_size=4, max_wait_s=0.01)
    requests = [f"r{i}" for i in range(10)]
    assert await _results(batcher, requests) == [r.upper() for r in requests]
    assert [len(b) for b in fake.batches] == [4, 4, 2]
    assert [r for b in fake.batches for r in b] == requests
    stats = batcher.stats.snapshot()
    assert stats["batches"] == 3 and stats["requests"] == 10 and stats["largest_batch"] == 4
    assert stats["mean_batch_size"] == pytest.approx(10 / 3)
    await batcher.aclose()


async def test_bounded_wait_a_lone_request_waits_at_most_max_wait() -> None:
    fake = Recorder()
    batcher = MicroBatcher(fake, max_batch_size=8, max_wait_s=0.05)
    start = time.perf_counter()
    result, info = await batcher.submit("solo")
    elapsed = time.perf_counter() - start
    assert result == "SOLO" and info.batch_size == 1
    assert 0.04 <= info.queue_wait_s <= elapsed < 1.0
    await batcher.aclose()


async def test_a_full_batch_starts_without_waiting() -> None:
    fake = Recorder()
    batcher = MicroBatcher(fake, max_batch_size=2, max_wait_s=5.0)
    start = time.perf_counter()
    assert await _results(batcher, ["a", "b"]) == ["A", "B"]
    assert time.perf_counter() - start < 1.0
    await batcher.aclose()


async def test_requests_arriving_during_a_batch_form_the_next_batch() -> None:
    fake = Recorder()
    fake.gate.clear()
    batcher = MicroBatcher(fake, max_batch_size=8, max_wait_s=0.0)
    first = asyncio.create_task(batcher.submit("first"))
    await fake.started.wait()
    later = [asyncio.create_task(batcher.submit(f"late{i}")) for i in range(5)]
    await asyncio.sleep(0.01)
    assert batcher.queued == 5
    fake.gate.set()
    await asyncio.gather(first, *later)
    assert fake.batches == [["first"], [f"late{i}" for i in range(5)]]
    assert [t.result()[1].batch_size for t in later] == [5] * 5
    await batcher.aclose()


async def test_bounded_queue_backpressure_then_clear_error() -> None:
    fake = Recorder()
    fake.gate.clear()
    batcher = MicroBatcher(fake, max_batch_size=1, max_wait_s=0.0, max_queue=2)
    running = asyncio.create_task(batcher.submit("running"))
    await fake.started.wait()
    queued = [asyncio.create_task(batcher.submit(f"q{i}")) for i in range(2)]
    await asyncio.sleep(0.01)
    assert batcher.queued == 2
    waiting = asyncio.create_task(batcher.submit("waits-for-room"))
    await asyncio.sleep(0.02)
    assert not waiting.done() and batcher.queued == 2  # backpressure: not queued yet
    fake.gate.set()
    assert (await waiting)[0] == "WAITS-FOR-ROOM"
    await asyncio.gather(running, *queued)

    fake.gate.clear()
    impatient = MicroBatcher(fake, max_batch_size=1, max_queue=1, queue_timeout_s=0.02)
    held = asyncio.create_task(impatient.submit("held"))
    await asyncio.sleep(0.01)
    one = asyncio.create_task(impatient.submit("one"))
    await asyncio.sleep(0.01)
    with pytest.raises(BackendError, match="queue is full"):
        await impatient.submit("too many")
    fake.gate.set()
    await asyncio.gather(held, one)
    await batcher.aclose()
    await impatient.aclose()


async def test_a_cancelled_caller_is_dropped_from_the_queue() -> None:
    fake = Recorder()
    fake.gate.clear()
    batcher = MicroBatcher(fake, max_batch_size=4, max_wait_s=0.0)
    running = asyncio.create_task(batcher.submit("running"))
    await fake.started.wait()
    doomed = asyncio.create_task(batcher.submit("doomed"))
    kept = asyncio.create_task(batcher.submit("kept"))
    await asyncio.sleep(0.01)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert batcher.queued == 1 and batcher.stats.cancelled == 1
    fake.gate.set()
    assert (await kept)[0] == "KEPT" and (await running)[0] == "RUNNING"
    assert ["doomed"] not in fake.batches and all("doomed" not in b for b in fake.batches)
    await batcher.aclose()


async def test_a_failing_batch_fails_only_its_own_requests() -> None:
    fake = Recorder()
    batcher = MicroBatcher(fake, max_batch_size=3, max_wait_s=0.01)
    outcomes = await asyncio.gather(
        *(batcher.submit(r) for r in ["a", "bad", "c", "d"]), return_exceptions=True
    )
    assert isinstance(outcomes[1], RuntimeError)
    assert [o[0] for i, o in enumerate(outcomes) if i != 1] == ["A", "C", "D"]  # type: ignore[index]
    # the failed batch [a, bad, c] was retried one by one; [d] was never affected
    assert fake.batches == [["a", "bad", "c"], ["a"], ["bad"], ["c"], ["d"]]
    assert batcher.stats.failed_batches == 1  # retries are not counted as batches
    await batcher.aclose()


async def test_without_isolation_the_batch_fails_and_the_next_one_runs() -> None:
    fake = Recorder()
    batcher = MicroBatcher(fake, max_batch_size=2, max_wait_s=0.01, isolate_failures=False)
    outcomes = await asyncio.gather(
        *(batcher.submit(r) for r in ["a", "bad", "c"]), return_exceptions=True
    )
    assert isinstance(outcomes[0], RuntimeError) and isinstance(outcomes[1], RuntimeError)
    assert outcomes[2][0] == "C"  # type: ignore[index]
    assert (await batcher.submit("after"))[0] == "AFTER"
    await batcher.aclose()


async def test_per_request_errors_from_the_batch_function() -> None:
    fake = Recorder()
    batcher = MicroBatcher(fake, max_batch_size=4, max_wait_s=0.01)
    outcomes = await asyncio.gather(
        *(batcher.submit(r) for r in ["ok", "reject"]), return_exceptions=True
    )
    assert outcomes[0][0] == "OK"  # type: ignore[index]
    assert isinstance(outcomes[1], ValueError)
    assert len(fake.batches) == 1  # an error result is not a failed batch
    await batcher.aclose()


async def test_a_wrong_number_of_results_is_an_error() -> None:
    async def short(batch: list[str]) -> list[str]:
        return batch[:1]

    batcher = MicroBatcher(short, max_batch_size=2, max_wait_s=0.01, isolate_failures=False)
    outcomes = await asyncio.gather(
        *(batcher.submit(r) for r in ["a", "b"]), return_exceptions=True
    )
    assert all(isinstance(o, BackendError) for o in outcomes)
    await batcher.aclose()


async def test_close_fails_waiting_and_running_requests_and_refuses_new_ones() -> None:
    fake = Recorder()
    fake.gate.clear()
    batcher = MicroBatcher(fake, max_batch_size=1, max_wait_s=0.0)
    running = asyncio.create_task(batcher.submit("running"))
    await fake.started.wait()
    waiting = asyncio.create_task(batcher.submit("waiting"))
    await asyncio.sleep(0.01)
    await batcher.aclose()
    for task in (running, waiting):
        with pytest.raises(BackendError, match="closed"):
            await task
    with pytest.raises(BackendError, match="closed"):
        await batcher.submit("late")


async def test_queue_wait_percentiles() -> None:
    fake = Recorder(delay=0.02)
    batcher = MicroBatcher(fake, max_batch_size=2, max_wait_s=0.0)
    await _results(batcher, [f"r{i}" for i in range(6)])
    stats = batcher.stats.snapshot()
    assert stats["batches"] == 3
    assert 0 <= stats["queue_wait_p50_s"] <= stats["queue_wait_p95_s"]
    assert stats["queue_wait_p95_s"] >= 0.03  # the last pair waited for two batches


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_wait_s": -1}, "max_wait_s"),
        ({"max_queue": 0}, "max_queue"),
    ],
)
def test_invalid_settings(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MicroBatcher(Recorder(), **kwargs)  # type: ignore[arg-type]
