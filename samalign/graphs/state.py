"""Typed graph state carried between the stage nodes.

LangGraph validates the input against this model but does not validate node outputs, so
every node builds its update from the typed models in :mod:`samalign.types`.
"""

from __future__ import annotations

import operator
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from samalign.agents.relations import RelationAnswer
from samalign.types import Diagnostic, DroppedTriplet, Entity, NoiseRecord, StageUsage, Triplet


def merge_usage(left: dict[str, StageUsage], right: dict[str, StageUsage]) -> dict[str, StageUsage]:
    """Reducer: add per-stage usage."""
    merged = dict(left)
    for stage, usage in right.items():
        merged[stage] = merged[stage] + usage if stage in merged else usage
    return merged


class NerState(BaseModel):
    """State of the SAM-NER graph.

    ``diagnostics``, ``failed_stages`` and ``usage`` accumulate (reducers): with a
    checkpointer, reusing a thread id for a new text keeps adding to them — use one thread per
    text.

    Attributes:
        text: The input sentence.
        id: The caller's id for the text, passed through unchanged (optional).
        anchor_mentions: Grounded mention strings from the anchor extractor (E_anc).
        explorer_mentions: Grounded mention strings from the explorer extractor (E_exp).
        noise: Explorer mentions CCR dropped (D_noise), with the reason.
        candidates: Grounded, type-agnostic candidate entities (E_final as spans).
        archetyped: Candidates with their archetype.
        entities: Final entities with target labels.
        failed_stages: Stages whose answer was unusable after every retry.
        diagnostics: Everything the stages noticed and handled (append-only).
        usage: Per-stage model calls, tokens and latency.
    """

    model_config = ConfigDict(extra="forbid")

    text: str
    id: str | None = None
    anchor_mentions: list[str] = Field(default_factory=list)
    explorer_mentions: list[str] = Field(default_factory=list)
    noise: list[NoiseRecord] = Field(default_factory=list)
    candidates: list[Entity] = Field(default_factory=list)
    archetyped: list[Entity] = Field(default_factory=list)
    entities: list[Entity] = Field(default_factory=list)
    failed_stages: Annotated[list[str], operator.add] = Field(default_factory=list)
    diagnostics: Annotated[list[Diagnostic], operator.add] = Field(default_factory=list)
    usage: Annotated[dict[str, StageUsage], merge_usage] = Field(default_factory=dict)


class JointState(NerState):
    """State of the joint entity + relation graph: the NER state plus the relation stages.

    Attributes:
        forward_triplets: The forward (subject-centric) decoder's checked triplets (T_fwd).
        reverse_triplets: The reverse (object-centric) decoder's checked triplets (T_rev).
        triplets: The anchor filter's kept triplets (T_final), plus any recovered ones.
        dropped_triplets: Candidates the filter removed, each with the reason.
    """

    forward_triplets: list[Triplet] = Field(default_factory=list)
    reverse_triplets: list[Triplet] = Field(default_factory=list)
    triplets: list[Triplet] = Field(default_factory=list)
    dropped_triplets: list[DroppedTriplet] = Field(default_factory=list)


class ParallelJointState(JointState):
    """State of the joint graph with ``relation_schedule="parallel"``.

    Attributes:
        forward_answer: The forward decoder's parsed answer, written while NER runs and
            checked against the entities by the ``relations_check`` node.
        reverse_answer: The same for the reverse decoder.
    """

    forward_answer: RelationAnswer | None = None
    reverse_answer: RelationAnswer | None = None


__all__ = ["JointState", "NerState", "ParallelJointState", "merge_usage"]
