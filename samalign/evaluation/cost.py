"""Cost accounting: per-stage calls, tokens and latency, wall time, throughput, diagnostics.

Stage latency percentiles are over sentences: a sentence's latency for a stage is the sum of
that stage's call latencies in the sentence (retries and chunked requests included). Only
sentences where the stage made at least one call count.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from samalign.evaluation.results import SentenceResult


class Percentiles(BaseModel):
    """Summary of a list of durations in seconds (nearest-rank percentiles)."""

    model_config = ConfigDict(frozen=True)

    total: float
    mean: float
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles:
        """Summarise ``values`` (all zero when empty)."""
        if not values:
            return cls(total=0.0, mean=0.0, p50=0.0, p90=0.0, p99=0.0, max=0.0)
        ordered = sorted(values)

        def rank(q: float) -> float:
            return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

        return cls(
            total=sum(ordered),
            mean=sum(ordered) / len(ordered),
            p50=rank(0.5),
            p90=rank(0.9),
            p99=rank(0.99),
            max=ordered[-1],
        )


class StageCost(BaseModel):
    """What one stage cost over the run."""

    model_config = ConfigDict(frozen=True)

    calls: int
    prompt_tokens: int
    completion_tokens: int
    latency_s: Percentiles
    cached: int = 0


class Cost(BaseModel):
    """What the run cost.

    Attributes:
        wall_time_s: Wall-clock seconds of the run (all sessions of a resumed run).
        sentences_per_s: Sentences run per wall-clock second.
        sessions: How many sessions (1 + resumes) the run took.
        sentence_latency_s: Per-sentence end-to-end graph latency.
        stages: Per-stage cost, in pipeline order.
        total: Calls, tokens and cached answers (stage-cache hits, no call) over every stage.
        per_sentence: ``total`` divided by the number of sentences run.
    """

    model_config = ConfigDict(frozen=True)

    wall_time_s: float
    sentences_per_s: float
    sessions: int
    sentence_latency_s: Percentiles
    stages: dict[str, StageCost]
    total: dict[str, int]
    per_sentence: dict[str, float]


class DiagnosticCounts(BaseModel):
    """Diagnostics by kind, and by stage then kind."""

    model_config = ConfigDict(frozen=True)

    by_kind: dict[str, int]
    by_stage: dict[str, dict[str, int]]


def summarize_cost(
    results: Sequence[SentenceResult], *, wall_time_s: float, sessions: int = 1
) -> Cost:
    """The cost of a run from its per-sentence results."""
    stages: dict[str, StageCost] = {}
    order: list[str] = []
    for result in results:
        order.extend(s for s in result.usage if s not in order)
    for stage in order:
        usages = [r.usage[stage] for r in results if stage in r.usage]
        stages[stage] = StageCost(
            calls=sum(u.calls for u in usages),
            prompt_tokens=sum(u.prompt_tokens for u in usages),
            completion_tokens=sum(u.completion_tokens for u in usages),
            latency_s=Percentiles.of([u.latency_s for u in usages if u.calls]),
            cached=sum(u.cached for u in usages),
        )
    total = {
        "calls": sum(c.calls for c in stages.values()),
        "prompt_tokens": sum(c.prompt_tokens for c in stages.values()),
        "completion_tokens": sum(c.completion_tokens for c in stages.values()),
        "cached": sum(c.cached for c in stages.values()),
    }
    n = len(results)
    return Cost(
        wall_time_s=wall_time_s,
        sentences_per_s=n / wall_time_s if wall_time_s > 0 else 0.0,
        sessions=sessions,
        sentence_latency_s=Percentiles.of([r.latency_s for r in results if r.error is None]),
        stages=stages,
        total=total,
        per_sentence={k: v / n if n else 0.0 for k, v in total.items()},
    )


def count_diagnostics(results: Sequence[SentenceResult]) -> DiagnosticCounts:
    """Diagnostics of every sentence, counted by kind and by stage."""
    by_kind: Counter[str] = Counter()
    by_stage: dict[str, Counter[str]] = {}
    for result in results:
        for d in result.diagnostics:
            by_kind[d.kind] += 1
            by_stage.setdefault(d.stage, Counter())[d.kind] += 1
    return DiagnosticCounts(
        by_kind=dict(sorted(by_kind.items())),
        by_stage={s: dict(sorted(c.items())) for s, c in sorted(by_stage.items())},
    )


__all__ = [
    "Cost",
    "DiagnosticCounts",
    "Percentiles",
    "StageCost",
    "count_diagnostics",
    "summarize_cost",
]
