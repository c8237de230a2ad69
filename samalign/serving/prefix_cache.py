"""A prompt-prefix KV cache for the transformers backend (what vLLM's prefix caching does).

A stage's prompts share a long prefix (the instruction, the schema, the definitions; the
sentence comes last): ~95 % of the calibrator's prompt tokens and ~87 % of the relation
decoders'. The backend keeps the attention keys and values of such prefixes and, for a new
request whose prompt starts with one, computes only the rest of the prompt.

* **Per adapter.** Keys and values depend on the LoRA adapter that computed them, so entries
  are kept per batch-row adapter (identity adapters compute the base model and share the
  base model's entries).
* **What is stored.** No prefix boundary is declared: a prompt that shares at least
  ``min_tokens`` more tokens with a recent prompt of the same adapter than with any stored
  entry has its KV of that shared part stored after its batch ran (a copy out of the batch's
  cache: nothing is computed twice). The stored parts converge to each stage's constant
  prompt head; a longer entry (two sentences that start alike) is also used cropped.
* **Bounded.** Entries are evicted least recently used first when their total size would
  pass ``max_bytes``.

This module does the bookkeeping (matching, storing, eviction); the batch layout that feeds
cached prefixes to ``generate`` lives in :mod:`samalign.serving.transformers_backend`.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

KV = list[tuple[Any, Any]]
"""Per layer ``(keys, values)``, each a ``[kv_heads, tokens, head_dim]`` tensor."""


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences (binary search on slices)."""
    low, high = 0, min(len(a), len(b))
    if a[:high] == b[:high]:
        return high
    while low < high:  # invariant: a[:low] == b[:low], a[:high] != b[:high]
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


@dataclass(frozen=True)
class PrefixEntry:
    """The KV of one prompt prefix as one adapter computed it."""

    adapter: str
    tokens: tuple[int, ...]
    kv: KV
    nbytes: int


@dataclass(frozen=True)
class PrefixPlan:
    """What the cache offers one request.

    Attributes:
        entry: The entry whose first ``cached`` tokens the prompt starts with, or ``None``.
        cached: Prompt tokens whose KV comes from the entry (0: compute the whole prompt).
        store: After the batch, store the KV of this many prompt tokens (0: store nothing).
    """

    entry: PrefixEntry | None = None
    cached: int = 0
    store: int = 0


NO_PREFIX = PrefixPlan()


class PrefixCache:
    """Per-adapter prompt-prefix KV entries, least recently used evicted first.

    Thread-safe: requests are matched on the engine's event loop, entries stored from its
    generation thread.

    Args:
        max_bytes: Bound on the total size of the stored keys and values.
        min_tokens: Shortest prefix worth caching (shorter shared prefixes are recomputed).
        recent: Prompts remembered per adapter to find shared prefixes.
    """

    def __init__(self, max_bytes: int, *, min_tokens: int = 32, recent: int = 16) -> None:
        self.max_bytes = max_bytes
        self.min_tokens = max(1, min_tokens)
        self._recent_size = recent
        self._entries: OrderedDict[tuple[str, tuple[int, ...]], PrefixEntry] = OrderedDict()
        self._recent: dict[str, deque[tuple[int, ...]]] = {}
        self._lock = threading.Lock()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.reused_tokens = 0
        self.prompt_tokens = 0
        self.stored = 0
        self.evicted = 0

    @property
    def enabled(self) -> bool:
        """Whether anything can be stored."""
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, adapter: str, prompt: Sequence[int]) -> PrefixPlan:
        """The plan for one request (and remember its prompt for later matches)."""
        if not self.enabled or len(prompt) < 2:
            return NO_PREFIX
        tokens = tuple(prompt)
        limit = len(tokens) - 1  # at least one prompt token is computed: it gives the logits
        with self._lock:
            best: PrefixEntry | None = None
            cached = 0
            for (name, _), entry in self._entries.items():
                if name != adapter:
                    continue
                shared = min(common_prefix(tokens, entry.tokens), limit)
                if shared > cached:
                    best, cached = entry, shared
            if best is None or cached < self.min_tokens:
                best, cached = None, 0
            else:
                self._entries.move_to_end((adapter, best.tokens))
            recent = self._recent.setdefault(adapter, deque(maxlen=self._recent_size))
            shared_recent = max((min(common_prefix(tokens, r), limit) for r in recent), default=0)
            recent.append(tokens)
            self.prompt_tokens += len(tokens)
            if best is None:
                self.misses += 1
            else:
                self.hits += 1
                self.reused_tokens += cached
        store = shared_recent if shared_recent >= cached + self.min_tokens else 0
        return PrefixPlan(entry=best, cached=cached, store=store)

    def store(self, adapter: str, tokens: Sequence[int], kv: KV) -> None:
        """Keep the KV of ``tokens`` (a prompt prefix) computed by ``adapter``."""
        key = (adapter, tuple(tokens))
        nbytes = sum(int(k.nelement() * k.element_size() * 2) for k, _ in kv)
        if nbytes > self.max_bytes:
            return
        with self._lock:
            for (name, _), entry in self._entries.items():
                # covered: an entry holds all but fewer than min_tokens of these tokens
                if name == adapter and common_prefix(key[1], entry.tokens) > (
                    len(key[1]) - self.min_tokens
                ):
                    self._entries.move_to_end((name, entry.tokens))
                    return
            self._entries[key] = PrefixEntry(adapter, key[1], kv, nbytes)
            self.nbytes += nbytes
            self.stored += 1
            while self.nbytes > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self.nbytes -= old.nbytes
                self.evicted += 1

    def clear(self) -> None:
        """Drop every entry (and the remembered prompts)."""
        with self._lock:
            self._entries.clear()
            self._recent.clear()
            self.nbytes = 0

    def stats(self) -> dict[str, Any]:
        """Counters: hits, misses, reused and prompt tokens, entries, bytes, stores, evictions."""
        with self._lock:
            return {
                "prefix_cache_hits": self.hits,
                "prefix_cache_misses": self.misses,
                "prefix_cache_reused_tokens": self.reused_tokens,
                "prefix_cache_prompt_tokens": self.prompt_tokens,
                "prefix_cache_entries": len(self._entries),
                "prefix_cache_bytes": self.nbytes,
                "prefix_cache_max_bytes": self.max_bytes,
                "prefix_cache_stored": self.stored,
                "prefix_cache_evicted": self.evicted,
            }

    def reset_stats(self) -> None:
        """Start the counters afresh (entries stay)."""
        with self._lock:
            self.hits = self.misses = self.reused_tokens = self.prompt_tokens = 0
            self.stored = self.evicted = 0


@functools.cache
def reserved_layer_class() -> Any:
    """A transformers ``DynamicLayer`` that appends into a preallocated buffer.

    The default layer concatenates the whole context with each new token, so a decoding step
    copies every cached key and value: with long (cached) prompts that copy, not the model,
    dominates decoding. This layer reserves room for the prompt and the answer budget and
    writes in place (growing by doubling if it ever runs out); ``keys``/``values`` are views
    of the filled part. Defined lazily: transformers is an optional dependency.
    """
    import torch
    from transformers.cache_utils import DynamicLayer

    class ReservedLayer(DynamicLayer):  # type: ignore[no-untyped-call]
        def __init__(self, reserve: int) -> None:
            super().__init__()  # type: ignore[no-untyped-call]
            self.reserve = reserve
            self._key_buffer: Any = None
            self._value_buffer: Any = None

        def update(
            self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any
        ) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            start = self.get_seq_length()
            end = start + key_states.shape[-2]
            if self._key_buffer is None or end > self._key_buffer.shape[-2]:
                room = max(end + self.reserve, 2 * start)
                shape = (*key_states.shape[:-2], room, key_states.shape[-1])
                keys = key_states.new_empty(shape)
                values = value_states.new_empty((*shape[:-1], value_states.shape[-1]))
                if start:
                    keys[..., :start, :] = self.keys
                    values[..., :start, :] = self.values
                self._key_buffer, self._value_buffer = keys, values
            self._key_buffer[..., start:end, :] = key_states
            self._value_buffer[..., start:end, :] = value_states
            self.keys = self._key_buffer[..., :end, :]
            self.values = self._value_buffer[..., :end, :]
            return self.keys, self.values

        def reset(self) -> None:
            self._key_buffer = self._value_buffer = None
            super().reset()

        def crop(self, tokens_to_remove: int) -> None:
            super().crop(tokens_to_remove)
            self._key_buffer = self._value_buffer = None  # views stay valid; next update copies

        def batch_repeat_interleave(self, repeats: int) -> None:
            super().batch_repeat_interleave(repeats)
            self._key_buffer = self._value_buffer = None

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            super().batch_select_indices(indices)
            self._key_buffer = self._value_buffer = None

        def reorder_cache(self, beam_idx: Any) -> None:
            super().reorder_cache(beam_idx)
            self._key_buffer = self._value_buffer = None

    return ReservedLayer


__all__ = [
    "KV",
    "NO_PREFIX",
    "PrefixCache",
    "PrefixEntry",
    "PrefixPlan",
    "common_prefix",
    "reserved_layer_class",
]
