"""Typed, immutable data passed between samalign stages.

All offsets are Python ``str`` indices into the input text (code points, end exclusive),
so ``text[span.start:span.end] == span.text`` holds for any script, including non-ASCII text.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from samalign.errors import InputError


class Archetype(StrEnum):
    """The 14 universal semantic archetypes of SAM-NER (Table 5)."""

    PERSON = "Person"
    ORGANIZATION = "Organization"
    LOCATION = "Location"
    BIOLOGY = "Biology"
    MEDICINE = "Medicine"
    FOOD = "Food"
    VEHICLE = "Vehicle"
    CREATIVE_WORK = "Creative_Work"
    EVENT = "Event"
    ARTIFACT = "Artifact"
    COMPUTER_SCIENCE = "Computer_Science"
    POLITICAL = "Political"
    SCIENCE = "Science"
    MISC = "Misc"


Source = Literal["anchor", "explorer", "supervised_ner"]
"""Which extractor proposed a mention (``supervised_ner``: AnchorAlign's supervised NER)."""

RelationSource = Literal["forward", "reverse"]
"""Which relation decoder proposed a triplet."""


NER_STAGES: tuple[str, ...] = ("anchor", "explorer", "archetype", "calibrate")
"""The SAM-NER stages, in pipeline order (each is a graph node and, by default, an adapter)."""

RELATION_STAGES: tuple[str, ...] = ("relations_forward", "relations_reverse")
"""The AnchorAlign relation decoder stages."""

DIRECT_TYPING_STAGE = "direct_typing"
"""The classifier trained on target types directly: SAM-NER's "w/o cali." ablation (§6)."""

SUPERVISED_NER_STAGE = "supervised_ner"
"""AnchorAlign's supervised NER: a dataset-trained extractor whose typed entities are final."""

ALL_STAGES: tuple[str, ...] = (
    *NER_STAGES,
    DIRECT_TYPING_STAGE,
    SUPERVISED_NER_STAGE,
    *RELATION_STAGES,
)
"""Every stage that calls a model."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Span(_Frozen):
    """A grounded character span of the input text.

    Attributes:
        start: Offset of the first character (inclusive).
        end: Offset after the last character (exclusive).
        text: The covered text, always equal to ``source[start:end]``.
    """

    start: int = Field(ge=0)
    end: int = Field(gt=0)
    text: str = Field(min_length=1)

    @model_validator(mode="after")
    def _check_length(self) -> Self:
        if self.end <= self.start:
            raise ValueError(f"span end ({self.end}) must be greater than start ({self.start})")
        if self.end - self.start != len(self.text):
            raise ValueError(
                f"span [{self.start}, {self.end}) has length {self.end - self.start} "
                f"but its text {self.text!r} has length {len(self.text)}"
            )
        return self

    @classmethod
    def of(cls, source: str, start: int, end: int) -> Span:
        """Build the span ``source[start:end]``.

        Raises:
            InputError: If the offsets are outside ``source`` or select nothing.
        """
        if not 0 <= start < end <= len(source):
            raise InputError(f"span [{start}, {end}) is outside the text of length {len(source)}")
        return cls(start=start, end=end, text=source[start:end])

    def check(self, source: str) -> None:
        """Raise :class:`~samalign.errors.InputError` unless this span is grounded in ``source``."""
        if source[self.start : self.end] != self.text:
            raise InputError(
                f"span [{self.start}, {self.end}) {self.text!r} does not match the source text "
                f"{source[self.start : self.end]!r}"
            )

    def overlaps(self, other: Span) -> bool:
        """Whether the two spans share at least one character."""
        return self.start < other.end and other.start < self.end

    def shifted(self, offset: int) -> Span:
        """This span moved by ``offset`` characters (used when merging document chunks)."""
        return Span(start=self.start + offset, end=self.end + offset, text=self.text)


class Entity(_Frozen):
    """A grounded entity mention.

    Attributes:
        span: Where the mention is in the text.
        label: The target-domain type (``None`` before typing).
        archetype: The stage-2 archetype (``None`` when archetype mediation is disabled or
            has not run yet).
        sources: Which extractor(s) proposed the mention.
    """

    span: Span
    label: str | None = None
    archetype: Archetype | None = None
    sources: tuple[Source, ...] = ()

    @property
    def text(self) -> str:
        """The mention text."""
        return self.span.text

    @property
    def start(self) -> int:
        """Start offset of the mention."""
        return self.span.start

    @property
    def end(self) -> int:
        """End offset (exclusive) of the mention."""
        return self.span.end


class Triplet(_Frozen):
    """A relation triplet between two grounded entities."""

    head: Entity
    relation: str
    tail: Entity
    sources: tuple[RelationSource, ...] = ()


class DroppedTriplet(_Frozen):
    """A candidate triplet the anchor filter removed, and why (AnchorAlign Eq. 13).

    Attributes:
        triplet: The candidate (forward and/or reverse).
        reason: Which argument mention(s) NER did not recognise.
    """

    triplet: Triplet
    reason: str


DiagnosticKind = Literal[
    "hallucination",
    "parse_error",
    "truncated",
    "label_out_of_schema",
    "unclassified",
    "duplicate_assignment",
    "empty_answer",
    "subsumed",
    "stage_failed",
    "malformed",
    "self_relation",
    "argument_type",
    "recovered",
]


class Diagnostic(_Frozen):
    """Something a stage noticed and handled without failing.

    Attributes:
        stage: The stage (node) that produced it.
        kind: A machine-readable category.
        message: A human-readable explanation.
        raw: The raw model text involved, if any.
    """

    stage: str
    kind: DiagnosticKind
    message: str
    raw: str | None = None


MatchTier = Literal["exact", "normalized", "fuzzy"]
"""Which grounding tier found a mention (see :mod:`samalign.agents.grounding`)."""


class GroundedMention(_Frozen):
    """One mention string and where it was found in the text.

    The extractors keep one per distinct mention (in the state's ``anchor_grounded`` and
    ``explorer_grounded``), so the later stages reuse the spans instead of grounding the same
    strings again.

    Attributes:
        mention: The mention string (as the model emitted it, or as the text spells it once
            grounded).
        spans: Every occurrence kept, in text order. Empty when the mention was not found
            (a hallucination) or, in ``"flat"`` mode, when all its occurrences lie inside
            spans kept for longer mentions (``subsumed``).
        tier: The tier that found the mention; ``None`` when it was not found.
        subsumed: ``True`` when the mention was found but every occurrence overlapped a span
            kept for a longer mention (``"flat"`` mode only); ``spans`` is then empty.
    """

    mention: str
    spans: tuple[Span, ...] = ()
    tier: MatchTier | None = None
    subsumed: bool = False

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        if self.tier is None and self.spans:
            raise ValueError("a mention with spans must record the tier that found it")
        if self.subsumed and (self.tier is None or self.spans):
            raise ValueError("a subsumed mention was found (tier set) but keeps no span")
        return self

    @property
    def found(self) -> bool:
        """Whether any tier found the mention in the text (even if it was subsumed)."""
        return self.tier is not None


class NoiseRecord(_Frozen):
    """An explorer mention that Collaborative Consensus Refinement dropped, and why."""

    mention: str
    reason: str


class StageUsage(_Frozen):
    """Cost of one stage: model calls, tokens and wall-clock latency.

    Attributes:
        calls: Model calls made.
        prompt_tokens: Prompt tokens of those calls.
        completion_tokens: Completion tokens of those calls.
        latency_s: Wall-clock seconds spent in those calls.
        cached: Answers replayed from the stage cache instead of calling the model (they cost
            no call, token or latency).
    """

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cached: int = 0

    def __add__(self, other: StageUsage) -> StageUsage:
        return StageUsage(
            calls=self.calls + other.calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            latency_s=self.latency_s + other.latency_s,
            cached=self.cached + other.cached,
        )


__all__ = [
    "ALL_STAGES",
    "DIRECT_TYPING_STAGE",
    "NER_STAGES",
    "RELATION_STAGES",
    "SUPERVISED_NER_STAGE",
    "Archetype",
    "Diagnostic",
    "DiagnosticKind",
    "DroppedTriplet",
    "Entity",
    "GroundedMention",
    "MatchTier",
    "NoiseRecord",
    "RelationSource",
    "Source",
    "Span",
    "StageUsage",
    "Triplet",
]
