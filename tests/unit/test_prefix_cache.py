"""The prefix cache's bookkeeping and the CPU-share thread policy (no model)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from samalign.serving import threads
from samalign.serving.prefix_cache import PrefixCache, common_prefix
from samalign.serving.threads import CpuShare, prefer_passive_openmp

torch = pytest.importorskip("torch")

HEAD = list(range(100, 180))  # an 80-token "stage prompt head"


def _kv(tokens: int, layers: int = 2) -> list[tuple[Any, Any]]:
    return [(torch.zeros(2, tokens, 4), torch.zeros(2, tokens, 4)) for _ in range(layers)]


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([1, 2, 3], [1, 2, 3, 4]) == 3
    assert common_prefix([], [1]) == 0
    assert common_prefix([5], [6]) == 0
    a = list(range(1000))
    assert common_prefix(a, [*a[:777], -1]) == 777


def test_second_prompt_stores_the_shared_head_and_the_third_reuses_it() -> None:
    cache = PrefixCache(1 << 20, min_tokens=16)
    first = cache.match("calibrate", [*HEAD, 1, 2, 3])
    assert (first.entry, first.cached, first.store) == (None, 0, 0)  # nothing seen yet
    second = cache.match("calibrate", [*HEAD, 7, 8])
    assert second.entry is None and second.store == len(HEAD)  # keep the shared head
    cache.store("calibrate", [*HEAD, 7, 8][: second.store], _kv(second.store))
    third = cache.match("calibrate", [*HEAD, 9, 9, 9])
    assert third.entry is not None and third.cached == len(HEAD) and third.store == 0
    # per adapter: another stage's identical head is not served from this entry
    assert cache.match("relations_forward", [*HEAD, 9]).entry is None
    stats = cache.stats()
    assert stats["prefix_cache_hits"] == 1 and stats["prefix_cache_entries"] == 1
    assert stats["prefix_cache_reused_tokens"] == len(HEAD)
    assert stats["prefix_cache_bytes"] == 2 * 2 * (2 * len(HEAD) * 4) * 4


def test_at_least_one_prompt_token_is_computed_and_short_heads_are_not_cached() -> None:
    cache = PrefixCache(1 << 20, min_tokens=16)
    cache.store("a", HEAD, _kv(len(HEAD)))
    same = cache.match("a", HEAD)  # the whole prompt is cached: still compute its last token
    assert same.cached == len(HEAD) - 1
    longer = cache.match("a", [*HEAD[:40], -1, -2])  # a partial match uses the entry cropped
    assert longer.cached == 40
    assert cache.match("a", [*HEAD[:10], -1]).entry is None  # under min_tokens: recompute


def test_entries_are_evicted_least_recently_used_first_within_the_bound() -> None:
    one = 2 * 2 * (2 * 40 * 4) * 4  # bytes of a 40-token entry
    cache = PrefixCache(2 * one, min_tokens=8)
    heads = [[h * 1000 + i for i in range(40)] for h in range(3)]
    cache.store("a", heads[0], _kv(40))
    cache.store("a", heads[1], _kv(40))
    assert cache.match("a", [*heads[0], 5]).entry is not None  # heads[0] is now recent
    cache.store("a", heads[2], _kv(40))  # evicts heads[1]
    assert cache.nbytes <= cache.max_bytes and len(cache) == 2
    assert cache.match("a", [*heads[1], 5]).entry is None
    assert cache.match("a", [*heads[0], 5]).entry is not None
    assert cache.stats()["prefix_cache_evicted"] == 1
    cache.store("a", [*heads[2][:39]], _kv(39))  # covered by the stored heads[2]: not kept
    assert len(cache) == 2
    too_big = PrefixCache(one - 1)
    too_big.store("a", heads[0], _kv(40))
    assert len(too_big) == 0
    assert not PrefixCache(0).enabled and PrefixCache(0).match("a", [*HEAD, 1]).cached == 0


def test_cpu_share_counts_only_the_other_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = {"wall": 0.0, "busy": 0.0, "ours": 0.0}
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(threads.time, "process_time", lambda: clock["ours"])
    monkeypatch.setattr(threads, "_machine_busy_seconds", lambda: (clock["busy"], 2))
    share = CpuShare(cores=2, window_s=0.5)
    assert share.threads() == 2
    clock.update(wall=1.0, busy=2.0, ours=1.9)  # the machine was busy, but with our own work
    assert share.threads() == 2
    clock.update(wall=2.0, busy=4.0, ours=2.9)  # another process took a whole core
    assert share.available() == pytest.approx(1.0) and share.threads() == 1
    clock.update(wall=2.1, busy=4.2, ours=2.9)  # within the window: the last measurement
    assert share.threads() == 1
    clock.update(wall=3.0, busy=7.0, ours=2.9)  # overloaded: still one thread
    assert share.threads() == 1
    clock.update(wall=4.0, busy=7.2, ours=3.0)  # quiet again
    assert share.threads() == 2 and share.threads(most=1) == 1


def test_passive_openmp_only_before_torch_and_never_over_the_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(threads.WAIT_POLICY_ENV, raising=False)
    assert "torch" in sys.modules  # imported by this module: too late to set it
    assert prefer_passive_openmp() is False
    assert threads.WAIT_POLICY_ENV not in os.environ
    monkeypatch.setenv(threads.WAIT_POLICY_ENV, "ACTIVE")
    assert prefer_passive_openmp() is False and os.environ[threads.WAIT_POLICY_ENV] == "ACTIVE"
    monkeypatch.delenv(threads.WAIT_POLICY_ENV)
    monkeypatch.delitem(sys.modules, "torch")  # restored by monkeypatch
    assert prefer_passive_openmp() is True
    assert os.environ[threads.WAIT_POLICY_ENV] == "PASSIVE"


def test_machine_busy_seconds_reads_proc_stat() -> None:
    if not Path("/proc/stat").is_file():
        pytest.skip("no /proc/stat here")
    busy = threads._machine_busy_seconds()
    assert busy is not None and busy[0] > 0 and busy[1] >= 1
