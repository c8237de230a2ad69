"""Typed results: what a graph returns, read into frozen pydantic models.

LangGraph returns a graph's final state as a plain ``dict``. Read it into the result type of
the graph you ran and use attributes instead of keys::

    result = NerResult.from_state(graph.invoke({"text": text}, context=context))
    for entity in result.entities:
        print(entity.start, entity.end, entity.text, entity.label)

:class:`NerResult` (``build_ner_graph``), :class:`JointResult` (``build_joint_graph``) and
:class:`DocumentResult` (``build_document_graph``) have exactly the fields of the graph's
state; keys they do not know (a parent graph's own keys) are ignored, so a result can be read
from the state of any graph that embeds a samalign graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from samalign.agents.state import JointState, NerState
from samalign.errors import InputError, validation_problems
from samalign.graphs.document import DocumentState
from samalign.types import StageUsage

_CONFIG = ConfigDict(frozen=True, extra="ignore")
"""Every result: frozen, unknown keys ignored (set on each class: the state's would win)."""


class _Result(BaseModel):
    """What every result has: built from a state, frozen, unknown keys ignored."""

    model_config = _CONFIG
    graph_input: ClassVar[bool] = False  # from_state words the error, naming the result

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | BaseModel) -> Self:
        """Read a graph's final state (the dict ``invoke`` returns, or a state model).

        Raises:
            InputError: If the state does not hold this result's fields (naming them).
        """
        data = dict(state.__dict__) if isinstance(state, BaseModel) else state
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            problems = validation_problems(err, "state", limit=5)
            raise InputError(
                f"cannot read a {cls.__name__} from this state ({problems}); pass the dict the "
                "graph's invoke/ainvoke returned"
            ) from None

    @property
    def total_usage(self) -> StageUsage:
        """Model calls, tokens and latency summed over the stages."""
        total = StageUsage()
        usage: dict[str, StageUsage] = getattr(self, "usage", {})
        for stage_usage in usage.values():
            total = total + stage_usage
        return total


class NerResult(_Result, NerState):
    """The result of the SAM-NER graph (frozen; the fields of :class:`~samalign.graphs.NerState`).

    Attributes:
        text: The input sentence.
        entities: The final entities: grounded spans with ``label``, ``archetype`` and
            ``sources``.
        candidates: The type-agnostic candidates after CCR (or merge).
        anchor_mentions: The anchor extractor's grounded mention strings.
        explorer_mentions: The explorer extractor's grounded mention strings.
        anchor_grounded: The anchor's mentions with their spans and matching tier.
        explorer_grounded: The explorer's mentions with their spans and matching tier.
        noise: Explorer mentions CCR dropped, with the reason.
        archetyped: Candidates with their archetype.
        failed_stages: Stages whose answer was unusable after every retry.
        diagnostics: Everything the stages noticed and handled.
        usage: Per-stage model calls, tokens and latency.
    """

    model_config = _CONFIG


class JointResult(NerResult, JointState):
    """The result of the joint graph: the NER result plus the relation stages.

    Attributes:
        triplets: The kept triplets (anchor filter, plus any recovered).
        dropped_triplets: Candidates the anchor filter removed, each with the reason.
        forward_triplets: The forward (subject-centric) decoder's checked triplets.
        reverse_triplets: The reverse (object-centric) decoder's checked triplets.
    """

    model_config = _CONFIG


class DocumentResult(_Result, DocumentState):
    """The result of the document graph (entities and triplets in document offsets).

    Attributes:
        text: The document.
        entities: All entities, in document order.
        triplets: All kept triplets.
        dropped_triplets: All triplets the anchor filter removed.
        sentences: Per-sentence results (with each sentence's offsets and error).
        errors: ``"sentence i [start, end): reason"`` for each sentence that failed (the
            others still count).
        failed_stages: Stages whose answer was unusable (one entry per occurrence).
        diagnostics: Everything the stages noticed.
        usage: Per-stage model calls, tokens and latency, summed over sentences.
    """

    model_config = _CONFIG


_RELATION_KEYS = frozenset(JointState.model_fields) - frozenset(NerState.model_fields)


def read_result(state: Mapping[str, Any]) -> NerResult | JointResult | DocumentResult:
    """The typed result of any samalign graph's final state, told apart by its keys.

    For code that runs a graph it did not build (batch jobs, tools): a state with
    ``sentences`` or ``errors`` (the document graph's, whole or ``output="result"``) is a
    :class:`DocumentResult`, one with relation keys a :class:`JointResult`, else a
    :class:`NerResult`. Code that knows its graph calls that result's ``from_state``.
    """
    if "sentences" in state or "errors" in state:
        return DocumentResult.from_state(state)
    if _RELATION_KEYS & state.keys():
        return JointResult.from_state(state)
    return NerResult.from_state(state)


__all__ = ["DocumentResult", "JointResult", "NerResult", "read_result"]
