"""Typed graph state carried between the stage nodes, and the typed updates nodes return.

LangGraph validates a graph's input against its state model but does not validate what nodes
return (a misspelt key is dropped silently). So every node builds its partial update as one
of the update models below (pydantic, ``extra="forbid"``, validated when built) and hands
LangGraph :meth:`StateUpdate.as_update`: only the fields the node set.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)

from samalign.errors import InputError, validation_problems
from samalign.prompts.relations import ParsedTriplets
from samalign.types import (
    Diagnostic,
    DroppedTriplet,
    Entity,
    GroundedMention,
    NoiseRecord,
    StageUsage,
    Triplet,
)


def merge_usage(left: dict[str, StageUsage], right: dict[str, StageUsage]) -> dict[str, StageUsage]:
    """Reducer: add per-stage usage."""
    merged = dict(left)
    for stage, usage in right.items():
        merged[stage] = merged[stage] + usage if stage in merged else usage
    return merged


class TextFields(BaseModel):
    """A graph state's input: ``text``, and the caller's ``id`` for it (passed through)."""

    text: str
    id: str | None = None


class TraceFields(BaseModel):
    """What every stage reports besides its result, as plain lists (updates and outputs).

    Attributes:
        failed_stages: Stages whose answer was unusable.
        diagnostics: What the stages noticed.
        usage: Per-stage model calls, tokens and latency.
    """

    failed_stages: list[str] = Field(default_factory=list)
    diagnostics: list[Diagnostic] = Field(default_factory=list)
    usage: dict[str, StageUsage] = Field(default_factory=dict)


class AccumulatedTraceFields(BaseModel):
    """:class:`TraceFields` in a graph state: every node's are added (reducers)."""

    failed_stages: Annotated[list[str], operator.add] = Field(default_factory=list)
    diagnostics: Annotated[list[Diagnostic], operator.add] = Field(default_factory=list)
    usage: Annotated[dict[str, StageUsage], merge_usage] = Field(default_factory=dict)


class MentionFields(BaseModel):
    """What the ``anchor`` and ``explorer`` nodes write.

    Attributes:
        anchor_mentions: The anchor's grounded mention strings (E_anc).
        explorer_mentions: The explorer's grounded mention strings (E_exp).
        anchor_grounded: Where each anchor mention occurs, and the tier that grounded it.
        explorer_grounded: The same for the explorer's mentions.
    """

    anchor_mentions: list[str] = Field(default_factory=list)
    explorer_mentions: list[str] = Field(default_factory=list)
    anchor_grounded: list[GroundedMention] = Field(default_factory=list)
    explorer_grounded: list[GroundedMention] = Field(default_factory=list)


class CandidateFields(BaseModel):
    """What the ``consensus`` or ``merge`` node writes.

    Attributes:
        noise: Explorer mentions CCR dropped (D_noise), with the reason.
        candidates: The type-agnostic candidates (E_final as spans).
    """

    noise: list[NoiseRecord] = Field(default_factory=list)
    candidates: list[Entity] = Field(default_factory=list)


class TypingFields(BaseModel):
    """What the ``archetype`` and ``calibrate`` nodes write.

    Attributes:
        archetyped: Candidates with their archetype (``archetype``).
        entities: Entities with target labels (``calibrate``, or ``archetype`` typing directly).
    """

    archetyped: list[Entity] = Field(default_factory=list)
    entities: list[Entity] = Field(default_factory=list)


class DecoderFields(BaseModel):
    """What the relation decoders write.

    Attributes:
        forward_triplets: The forward (subject-centric) decoder's checked triplets (T_fwd).
        reverse_triplets: The reverse (object-centric) decoder's checked triplets (T_rev).
    """

    forward_triplets: list[Triplet] = Field(default_factory=list)
    reverse_triplets: list[Triplet] = Field(default_factory=list)


class TripletFields(BaseModel):
    """What the anchor filter keeps and drops.

    Attributes:
        triplets: The kept triplets (T_final).
        dropped_triplets: Candidates the filter removed, each with the reason.
    """

    triplets: list[Triplet] = Field(default_factory=list)
    dropped_triplets: list[DroppedTriplet] = Field(default_factory=list)


# A state's fields are its bases' (pydantic orders them from the last base to the first):
# the input, then what each node writes, then the accumulated trace.
class NerState(AccumulatedTraceFields, TypingFields, CandidateFields, MentionFields, TextFields):
    """State of the SAM-NER graph.

    ``diagnostics``, ``failed_stages`` and ``usage`` accumulate (reducers): with a
    checkpointer, reusing a thread id for a new text keeps adding to them — use one thread per
    text.

    Attributes:
        text: The input sentence.
        id: The caller's id for the text, passed through unchanged (optional).
        anchor_mentions: Grounded mention strings from the anchor extractor (E_anc), as the
            text spells them.
        explorer_mentions: Grounded mention strings from the explorer extractor (E_exp).
        anchor_grounded: One :class:`~samalign.types.GroundedMention` per anchor mention
            (same order): every occurrence in the text and the tier that grounded the
            model's string. Later stages reuse these spans instead of grounding again.
        explorer_grounded: The same for the explorer's mentions.
        noise: Explorer mentions CCR dropped (D_noise), with the reason.
        candidates: Grounded, type-agnostic candidate entities (E_final as spans).
        archetyped: Candidates with their archetype.
        entities: Final entities with target labels.
        failed_stages: Stages whose answer was unusable after every retry.
        diagnostics: Everything the stages noticed and handled (append-only).
        usage: Per-stage model calls, tokens and latency.
    """

    model_config = ConfigDict(extra="forbid")

    graph_input: ClassVar[bool] = True
    """Validation errors are graph-input errors (:class:`InputError`); the typed results, which
    read a final state and word their own error, set it to ``False``."""

    @model_validator(mode="wrap")
    @classmethod
    def _input_errors(cls, data: Any, handler: ModelWrapValidatorHandler[NerState]) -> NerState:
        """A graph input that is not a valid state is an :class:`InputError`, naming the field."""
        try:
            return handler(data)
        except ValidationError as err:
            if not cls.graph_input:
                raise
            problems = validation_problems(err, "input")
            raise InputError(
                f"invalid graph input ({problems}); invoke the graph with {{'text': 'a sentence'}}"
            ) from None


class JointState(TripletFields, DecoderFields, NerState):
    """State of the joint entity + relation graph: the NER state plus the relation stages.

    Attributes:
        forward_triplets: The forward (subject-centric) decoder's checked triplets (T_fwd).
        reverse_triplets: The reverse (object-centric) decoder's checked triplets (T_rev).
        triplets: The anchor filter's kept triplets (T_final), plus any recovered ones.
        dropped_triplets: Candidates the filter removed, each with the reason.
    """


class RelationAnswer(BaseModel):
    """A relation decoder's parsed answer before it is checked against the NER entities.

    Attributes:
        parsed: The parsed answer; ``None`` when no attempt gave a usable answer.
        raw: The raw answer text (attached to the check's diagnostics).
    """

    model_config = ConfigDict(frozen=True)

    parsed: ParsedTriplets | None
    raw: str = ""


class AnswerFields(BaseModel):
    """The relation decoders' unchecked answers (see :class:`ParallelJointState`).

    Attributes:
        forward_answer: The forward decoder's parsed answer.
        reverse_answer: The reverse decoder's.
    """

    forward_answer: RelationAnswer | None = None
    reverse_answer: RelationAnswer | None = None


class ParallelJointState(AnswerFields, JointState):
    """State of the joint graph with ``relation_schedule="parallel"``.

    Attributes:
        forward_answer: The forward decoder's parsed answer, written while NER runs and
            checked against the entities by the ``relations_check`` node.
        reverse_answer: The same for the reverse decoder.
    """


# ---------------------------------------------------------------------------------------------
# Typed partial updates: one model per kind of node
# ---------------------------------------------------------------------------------------------


class StateUpdate(TraceFields):
    """What a node writes: only the fields it sets reach the state (:meth:`as_update`).

    Attributes:
        failed_stages: Stages whose answer was unusable (appended).
        diagnostics: What the node noticed (appended).
        usage: The node's model calls, tokens and latency (added).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    def as_update(self) -> dict[str, Any]:
        """The partial state update LangGraph applies: the fields set, values as they are."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class ExtractorUpdate(StateUpdate, MentionFields):
    """The ``anchor`` or ``explorer`` node's update (its mentions, grounded once)."""


class CandidatesUpdate(StateUpdate, CandidateFields):
    """The ``consensus`` or ``merge`` node's update."""


class TypingUpdate(StateUpdate, TypingFields):
    """The ``archetype`` or ``calibrate`` node's update."""


class SupervisedNerUpdate(StateUpdate):
    """The ``supervised_ner`` node's update: its spans untyped and typed (labels final)."""

    candidates: list[Entity] = Field(default_factory=list)
    entities: list[Entity] = Field(default_factory=list)


class RelationUpdate(StateUpdate, DecoderFields):
    """A relation decoder's update (``forward_triplets`` or ``reverse_triplets``)."""


class RelationAnswerUpdate(StateUpdate, AnswerFields):
    """A relation decoder's update in the ``parallel`` schedule: its unchecked answer."""


class FilterUpdate(StateUpdate, TripletFields):
    """The ``anchor_filter`` or ``recover`` node's update."""

    entities: list[Entity] = Field(default_factory=list)


__all__ = [
    "AccumulatedTraceFields",
    "AnswerFields",
    "CandidateFields",
    "CandidatesUpdate",
    "DecoderFields",
    "ExtractorUpdate",
    "FilterUpdate",
    "JointState",
    "MentionFields",
    "NerState",
    "ParallelJointState",
    "RelationAnswer",
    "RelationAnswerUpdate",
    "RelationUpdate",
    "StateUpdate",
    "SupervisedNerUpdate",
    "TextFields",
    "TraceFields",
    "TripletFields",
    "TypingFields",
    "TypingUpdate",
    "merge_usage",
]
