"""Candidate construction: the consensus node (CCR) and the plain merge node (no CCR).

Both reuse the spans the extractors grounded (``anchor_grounded``, ``explorer_grounded``):
no mention string is grounded twice. CCR itself compares the strings, as Algorithm 1 says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.runnables import RunnableLambda

from samalign.agents.base import AgentSettings, pure_node
from samalign.agents.consensus import NOISE_REASON, refine
from samalign.agents.grounding import ground_mentions, resolve_overlaps
from samalign.agents.state import CandidatesUpdate, NerState
from samalign.types import Diagnostic, Entity, GroundedMention, NoiseRecord, Source, StageUsage


def ground_candidates(
    text: str,
    mentions: Sequence[str],
    settings: AgentSettings,
    *,
    stage: str,
    known: Sequence[GroundedMention] = (),
) -> tuple[list[GroundedMention], list[Diagnostic]]:
    """Ground candidate mention strings to spans the way every candidate set is built.

    Each mention takes the spans already grounded for it in ``known`` (the extractors'
    grounded mentions); any other mention is grounded here. Overlaps are then resolved by
    ``settings.grounding``: in flat mode no two spans overlap, and a mention all of whose
    occurrences lie inside longer mentions is reported as ``subsumed``; a mention not found is
    a ``hallucination``. Both are dropped.

    Args:
        text: The sentence.
        mentions: The candidate strings (in order; repeats are ignored).
        settings: The node's settings (``grounding``, ``fuzzy_threshold``).
        stage: Stage name for diagnostics.
        known: Mentions grounded earlier, whose spans are reused.

    Returns:
        The kept grounded mentions (each with at least one span), in the order of
        ``mentions``, and the diagnostics.
    """
    by_mention = {g.mention: g for g in known}
    diagnostics: list[Diagnostic] = []
    unique = list(dict.fromkeys(mentions))
    unknown = [m for m in unique if m not in by_mention]
    if unknown:
        by_mention.update(
            (g.mention, g)
            for g in ground_mentions(
                text, unknown, mode="nested", fuzzy_threshold=settings.fuzzy_threshold
            )
        )
    kept: list[GroundedMention] = []
    for grounded in resolve_overlaps([by_mention[m] for m in unique], mode=settings.grounding):
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
        kept.append(grounded)
    return kept, diagnostics


def build_candidates(
    text: str,
    mentions: Sequence[str],
    anchor: Sequence[GroundedMention],
    explorer: Sequence[GroundedMention],
    settings: AgentSettings,
    *,
    stage: str = "consensus",
) -> tuple[list[Entity], list[Diagnostic]]:
    """Turn candidate mention strings into entities, from the extractors' grounded mentions.

    Each mention takes the spans its extractor grounded (a mention no extractor grounded, e.g.
    one given in the graph's input, is grounded here); overlaps are then resolved by
    ``settings.grounding`` (see :func:`ground_candidates`). Spans are sorted by position.

    Args:
        text: The sentence.
        mentions: The candidate strings (distinct, in CCR's order).
        anchor: The anchor's grounded mentions.
        explorer: The explorer's grounded mentions.
        settings: The node's settings (``grounding``).
        stage: Stage name for diagnostics.

    Returns:
        The candidate entities and the diagnostics.
    """
    anchor_set = {g.mention for g in anchor}
    explorer_set = {g.mention for g in explorer}
    kept, diagnostics = ground_candidates(
        text, mentions, settings, stage=stage, known=(*explorer, *anchor)
    )  # same text: same spans
    entities: list[Entity] = []
    for grounded in kept:
        sources: list[Source] = []
        if grounded.mention in anchor_set:
            sources.append("anchor")
        if grounded.mention in explorer_set:
            sources.append("explorer")
        entities.extend(Entity(span=span, sources=tuple(sources)) for span in grounded.spans)
    entities.sort(key=lambda e: (e.start, -e.end))
    return entities, diagnostics


def consensus_node(settings: AgentSettings) -> RunnableLambda[NerState, dict[str, Any]]:
    """The ``consensus`` node: CCR over the two extractors' mentions, on their spans."""

    def run(state: NerState) -> CandidatesUpdate:
        final, noise = refine(state.anchor_mentions, state.explorer_mentions)
        candidates, diagnostics = build_candidates(
            state.text, final, state.anchor_grounded, state.explorer_grounded, settings
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
        return CandidatesUpdate(
            noise=[NoiseRecord(mention=m, reason=NOISE_REASON) for m in noise],
            candidates=candidates,
            diagnostics=diagnostics,
            usage={"consensus": StageUsage()},
        )

    return pure_node("consensus", run)


def merge_node(settings: AgentSettings) -> RunnableLambda[NerState, dict[str, Any]]:
    """The ``merge`` node: the de-duplicated union of the enabled extractors (no CCR)."""

    def run(state: NerState) -> CandidatesUpdate:
        union = list(dict.fromkeys([*state.anchor_mentions, *state.explorer_mentions]))
        candidates, diagnostics = build_candidates(
            state.text,
            union,
            state.anchor_grounded,
            state.explorer_grounded,
            settings,
            stage="merge",
        )
        return CandidatesUpdate(
            candidates=candidates, diagnostics=diagnostics, usage={"merge": StageUsage()}
        )

    return pure_node("merge", run)


__all__ = ["build_candidates", "consensus_node", "ground_candidates", "merge_node"]
