"""Candidate construction: the consensus node (CCR) and the plain merge node (no CCR)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.runnables import RunnableLambda

from samalign.agents.base import AgentSettings, Update, pure_node
from samalign.agents.consensus import NOISE_REASON, refine
from samalign.agents.grounding import ground_mentions
from samalign.types import Diagnostic, Entity, NoiseRecord, Source, Span, StageUsage


def ground_candidates(
    text: str, mentions: Sequence[str], settings: AgentSettings, *, stage: str
) -> tuple[list[tuple[str, Span]], list[Diagnostic]]:
    """Ground candidate mention strings to spans the way every candidate set is built.

    Returns ``(mention as given, span)`` pairs in grounding order and the diagnostics: in flat
    mode no two spans overlap, and a mention all of whose occurrences lie inside longer
    mentions is reported as ``subsumed``; a mention not found is a ``hallucination``.
    """
    pairs: list[tuple[str, Span]] = []
    diagnostics: list[Diagnostic] = []
    for grounded in ground_mentions(
        text, mentions, mode=settings.grounding, fuzzy_threshold=settings.fuzzy_threshold
    ):
        if grounded.subsumed or not grounded.spans:
            diagnostics.append(
                Diagnostic(
                    stage=stage,
                    kind="subsumed" if grounded.subsumed else "hallucination",
                    message=(
                        f"{grounded.mention!r} lies inside longer candidates everywhere it "
                        "occurs (flat grounding); use grounding='nested' to keep nested mentions"
                        if grounded.subsumed
                        else f"{grounded.mention!r} could not be grounded; dropped"
                    ),
                )
            )
            continue
        pairs.extend((grounded.mention, span) for span in grounded.spans)
    return pairs, diagnostics


def build_candidates(
    text: str,
    mentions: Sequence[str],
    anchor: Sequence[str],
    explorer: Sequence[str],
    settings: AgentSettings,
    *,
    stage: str = "consensus",
) -> tuple[list[Entity], list[Diagnostic]]:
    """Ground candidate mention strings to spans and record which extractor proposed each.

    Spans are sorted by position; in flat mode no two candidates overlap, and a mention all of
    whose occurrences lie inside longer mentions is reported as ``subsumed``.
    """
    anchor_set, explorer_set = set(anchor), set(explorer)
    pairs, diagnostics = ground_candidates(text, mentions, settings, stage=stage)
    entities: list[Entity] = []
    for mention, span in pairs:
        sources: list[Source] = []
        if mention in anchor_set:
            sources.append("anchor")
        if mention in explorer_set:
            sources.append("explorer")
        entities.append(Entity(span=span, sources=tuple(sources)))
    entities.sort(key=lambda e: (e.start, -e.end))
    return entities, diagnostics


def consensus_node(settings: AgentSettings) -> RunnableLambda[Any, Update]:
    """The ``consensus`` node: CCR over the two extractors' mentions, then grounding."""

    def run(state: Any) -> Update:
        final, noise = refine(state.anchor_mentions, state.explorer_mentions)
        candidates, diagnostics = build_candidates(
            state.text, final, state.anchor_mentions, state.explorer_mentions, settings
        )
        if "anchor" in state.failed_stages and noise:
            diagnostics.append(
                Diagnostic(
                    stage="consensus",
                    kind="stage_failed",
                    message="the anchor gave no usable answer, so no single-token explorer "
                    f"mention could be corroborated; CCR dropped {noise} as noise",
                )
            )
        return {
            "noise": [NoiseRecord(mention=m, reason=NOISE_REASON) for m in noise],
            "candidates": candidates,
            "diagnostics": diagnostics,
            "usage": {"consensus": StageUsage()},
        }

    return pure_node("consensus", run)


def merge_node(settings: AgentSettings) -> RunnableLambda[Any, Update]:
    """The ``merge`` node: the de-duplicated union of the enabled extractors (no CCR)."""

    def run(state: Any) -> Update:
        union = list(dict.fromkeys([*state.anchor_mentions, *state.explorer_mentions]))
        candidates, diagnostics = build_candidates(
            state.text,
            union,
            state.anchor_mentions,
            state.explorer_mentions,
            settings,
            stage="merge",
        )
        return {
            "candidates": candidates,
            "diagnostics": diagnostics,
            "usage": {"merge": StageUsage()},
        }

    return pure_node("merge", run)


__all__ = ["build_candidates", "consensus_node", "ground_candidates", "merge_node"]
