"""The graphs' input and output schemas: what a caller gives and gets back.

Every graph takes :class:`TextInput` (the text, and an optional id passed through). Its
output is, by default, the whole state (every stage's intermediate result, for inspection and
evaluation); built with ``output="result"`` it is only the result — :class:`NerOutput`,
:class:`JointOutput` or :class:`DocumentOutput` — which is what LangGraph's server, Studio
and the MCP endpoint show.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from samalign.agents.state import TraceFields, TripletFields
from samalign.types import Diagnostic, DroppedTriplet, Entity, NoiseRecord, StageUsage, Triplet

OutputKind = Literal["state", "result"]
"""What a graph returns: the whole ``state``, or only the ``result``."""


class TextInput(BaseModel):
    """What a graph takes.

    Attributes:
        text: The text (a sentence for the NER and joint graphs, any length for the document
            graph).
        id: An id of yours, returned unchanged with the result.
    """

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="The text to extract from.")
    id: str | None = Field(default=None, description="An id returned with the result.")


class NerOutput(BaseModel):
    """What the NER graph returns with ``output="result"``.

    Attributes:
        id: The input's id.
        text: The input text (offsets refer to it).
        entities: Grounded entities with label, archetype and sources.
        noise: Explorer mentions CCR dropped, with the reason.
        failed_stages: Stages whose answer was unusable after every retry.
        diagnostics: What the stages noticed and handled (hallucinated mentions …).
        usage: Per-stage model calls, tokens and latency.
    """

    id: str | None = None
    text: str
    entities: list[Entity] = Field(default_factory=list)
    noise: list[NoiseRecord] = Field(default_factory=list)
    failed_stages: list[str] = Field(default_factory=list)
    diagnostics: list[Diagnostic] = Field(default_factory=list)
    usage: dict[str, StageUsage] = Field(default_factory=dict)


class JointOutput(TripletFields, NerOutput):
    """What the joint graph returns with ``output="result"``: NER's plus the triplets.

    Attributes:
        triplets: The kept relation triplets.
        dropped_triplets: Candidates the anchor filter removed, with the reason.
    """


class DocumentResultFields(BaseModel):
    """What the document graph's ``merge`` node writes: all sentences' results, merged.

    Attributes:
        entities: All entities, in document offsets and document order.
        triplets: All kept triplets, in document offsets.
        dropped_triplets: All triplets the anchor filter removed.
        errors: ``"sentence i [start, end): reason"`` for each sentence that failed.
    """

    entities: list[Entity] = Field(default_factory=list)
    triplets: list[Triplet] = Field(default_factory=list)
    dropped_triplets: list[DroppedTriplet] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)


class _Identified(BaseModel):
    id: str | None = None
    text: str


class DocumentOutput(TraceFields, DocumentResultFields, _Identified):
    """What the document graph returns with ``output="result"`` (document offsets).

    Attributes:
        id: The input's id.
        text: The document.
        entities: All entities, in document order.
        triplets: All kept triplets.
        dropped_triplets: All triplets the anchor filter removed.
        errors: ``"sentence i [start, end): reason"`` for each sentence that failed.
        failed_stages: Stages whose answer was unusable (one entry per occurrence).
        diagnostics: What the stages noticed.
        usage: Per-stage model calls, tokens and latency, summed over sentences.
    """


__all__ = [
    "DocumentOutput",
    "DocumentResultFields",
    "JointOutput",
    "NerOutput",
    "OutputKind",
    "TextInput",
]
