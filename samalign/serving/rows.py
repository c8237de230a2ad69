"""Per-row decoding control for batched ``generate`` calls of the transformers backend.

One ``model.generate`` call decodes a batch of requests that differ in everything but the
model: each row has its own token budget, stop strings and grammar (JSON schema). The
:class:`RowControl` is plugged in as both the logits processor (grammar masks) and the
stopping criterion (end of sequence, stop strings, budget), so rows finish independently.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from samalign.errors import BackendError, SamalignError
from samalign.serving.constrained import JsonSchemaConstraints


@dataclass
class Row:
    """Decoding state of one batch row."""

    budget: int
    matcher: Any
    stop: tuple[str, ...]
    ids: list[int] = field(default_factory=list)
    done: bool = False
    finish: str = "length"
    error: SamalignError | None = None


class RowControl:
    """Per-row grammar masks, token budgets and stop strings for one ``generate`` call.

    ``mask`` is used as the logits processor, ``stop`` as the stopping criterion: after each
    step it feeds the new token to the row's grammar and ends the row on end-of-sequence, a
    stop string or its budget (in that order, as vLLM checks them).
    """

    def __init__(
        self,
        rows: list[Row],
        constraints: JsonSchemaConstraints,
        stop_ids: frozenset[int],
        decode: Callable[[list[int]], str],
    ) -> None:
        self.rows = rows
        self.constraints = constraints
        self.stop_ids = stop_ids
        self.decode = decode
        self.bitmask = constraints.allocate(len(rows)) if any(r.matcher for r in rows) else None

    def mask(self, input_ids: Any, scores: Any) -> Any:
        """Logits processor: forbid, in place, what each constrained row's grammar forbids."""
        active = [(i, r.matcher) for i, r in enumerate(self.rows) if r.matcher and not r.done]
        if active:
            self.constraints.mask(scores, self.bitmask, active)
        return scores

    def stop(self, input_ids: Any, scores: Any) -> Any:
        """Stopping criterion: take each row's new token; return which rows are done."""
        import torch

        last = input_ids[:, -1].tolist()
        for row, token in zip(self.rows, last, strict=True):
            if row.done:
                continue
            row.ids.append(int(token))
            if token in self.stop_ids:
                row.done, row.finish = True, "stop"
            elif row.matcher is not None and not row.matcher.accept_token(int(token)):
                row.done = True
                row.error = BackendError(
                    f"constrained decoding failed: the grammar rejected token {token}"
                )
            elif row.stop and self._hit_stop(row):
                row.done, row.finish = True, "stop"
            elif len(row.ids) >= row.budget:
                row.done, row.finish = True, "length"
        return torch.tensor([r.done for r in self.rows], device=input_ids.device)

    def _hit_stop(self, row: Row) -> bool:
        text = self.decode(row.ids)
        return any(s in text for s in row.stop)


def length_groups(lengths: Sequence[int], max_ratio: float) -> list[list[int]]:
    """Split a batch into groups of similar length, so left padding wastes little compute.

    Args:
        lengths: Prompt length of each request.
        max_ratio: Longest / shortest prompt allowed in one group (``inf``: one group).

    Returns:
        Groups of request indices, shortest prompts first; every index once.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for index in order:
        if groups and lengths[index] <= max_ratio * max(lengths[groups[-1][0]], 1):
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string (vLLM leaves them out)."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[: min(cuts)] if cuts else text


@functools.cache
def hf_hooks() -> tuple[Any, Any]:
    """Logits-processor and stopping-criterion classes that call a function.

    Defined lazily: transformers is an optional dependency.
    """
    from transformers import LogitsProcessor, StoppingCriteria

    class Processor(LogitsProcessor):
        def __init__(self, fn: Any) -> None:
            self.fn = fn

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            return self.fn(input_ids, scores)

    class Criterion(StoppingCriteria):
        def __init__(self, fn: Any) -> None:
            self.fn = fn

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return self.fn(input_ids, scores)

    return Processor, Criterion


__all__ = ["Row", "RowControl", "cut_at_stop", "hf_hooks", "length_groups"]
