"""Candidate construction: the consensus node (CCR) and the plain merge node (no CCR)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.runnables import RunnableLambda

from samalign.agents.base import AgentSettings, Update, pure_node
from samalign.agents.consensus import NOISE_REASON, refine
from samalign.agents.grounding import ground_mentions
from samalign.types import Entity, NoiseRecord, Source, StageUsage


def build_candidates(
    text: str,
    mentions: Sequence[str],
    anchor: Sequence[str],
    explorer: Sequence[str],
    settings: AgentSettings,
) -> list[Entity]:
    """Ground candidate mention strings to spans and record which extractor proposed each.

    Spans are sorted by position; in flat mode no two candidates overlap.
    """
    anchor_set, explorer_set = set(anchor), set(explorer)
    entities: list[Entity] = []
    for grounded in ground_mentions(
        text, mentions, mode=settings.grounding, fuzzy_threshold=settings.fuzzy_threshold
    ):
        sources: list[Source] = []
        if grounded.mention in anchor_set:
            sources.append("anchor")
        if grounded.mention in explorer_set:
            sources.append("explorer")
        entities.extend(Entity(span=span, sources=tuple(sources)) for span in grounded.spans)
    entities.sort(key=lambda e: (e.start, -e.end))
    return entities


def consensus_node(settings: AgentSettings) -> RunnableLambda[Any, Update]:
    """The ``consensus`` node: CCR over the two extractors' mentions, then grounding."""

    def run(state: Any) -> Update:
        final, noise = refine(state.anchor_mentions, state.explorer_mentions)
        candidates = build_candidates(
            state.text, final, state.anchor_mentions, state.explorer_mentions, settings
        )
        return {
            "noise": [NoiseRecord(mention=m, reason=NOISE_REASON) for m in noise],
            "candidates": candidates,
            "usage": {"consensus": StageUsage()},
        }

    return pure_node("consensus", run)


def merge_node(settings: AgentSettings) -> RunnableLambda[Any, Update]:
    """The ``merge`` node: the de-duplicated union of the enabled extractors (no CCR)."""

    def run(state: Any) -> Update:
        union = list(dict.fromkeys([*state.anchor_mentions, *state.explorer_mentions]))
        candidates = build_candidates(
            state.text, union, state.anchor_mentions, state.explorer_mentions, settings
        )
        return {"candidates": candidates, "usage": {"merge": StageUsage()}}

    return pure_node("merge", run)


__all__ = ["build_candidates", "consensus_node", "merge_node"]
