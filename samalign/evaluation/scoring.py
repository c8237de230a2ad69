"""Score per-sentence results against gold sentences under every protocol.

A failed sentence predicts nothing (its gold entities count as missed). A predicted span that
cuts a token (no exact token span) enters the predicted set as a marker that matches nothing,
so it counts as a wrong prediction, never silently disappears.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from pydantic import BaseModel, ConfigDict

from samalign.evaluation.metrics import (
    PRF,
    RelationTuple,
    StringPair,
    TokenSpan,
    relation_prf,
    sam_ner_pairs,
    span_prf,
    string_pairs,
    string_prf,
    unlabeled_prf,
)
from samalign.evaluation.results import PredEntity, SentenceResult
from samalign.evaluation.sentences import Sentence

MISC_LABEL = "misc"


class EntityScores(BaseModel):
    """Entity scores under every protocol.

    Attributes:
        span: Strict span micro P/R/F1 with per-label results (CrossNER protocol).
        string: UniNER's string-set protocol.
        sam_ner: The SAM-NER authors' protocol (``src/eval/eval.py``): per sentence the set of
            stripped ``(mention, label)`` strings, case-sensitive; ``misc`` scored.
        boundary: Spans only, labels ignored.
        candidates: The candidates' spans (before typing) against gold spans, labels ignored:
            how good entity discovery is.
        excluded_labels: Labels left out of all of the above.
        without_misc: ``span`` and ``string`` with ``misc`` also left out (when the data has a
            ``misc`` label and it was not excluded already).
    """

    model_config = ConfigDict(frozen=True)

    span: PRF
    string: PRF
    sam_ner: PRF
    boundary: PRF
    candidates: PRF
    excluded_labels: list[str]
    without_misc: dict[str, PRF] | None = None


class RelationScores(BaseModel):
    """Relation strict and boundary scores (AnchorAlign §4.1)."""

    model_config = ConfigDict(frozen=True)

    strict: PRF
    boundary: PRF


def _token_key(entity: PredEntity, marker: int) -> tuple[int, int]:
    return entity.tokens if entity.tokens is not None else (-marker, -marker)


def predicted_spans(result: SentenceResult | None) -> set[TokenSpan]:
    """The span-protocol items of a result (unaligned spans become unmatched markers)."""
    if result is None or result.error is not None:
        return set()
    out: set[TokenSpan] = set()
    for k, e in enumerate(result.entities, start=1):
        start, end = _token_key(e, k)
        out.add((start, end, e.label or ""))
    return out


def predicted_strings(result: SentenceResult | None) -> set[StringPair]:
    """The string-protocol items of a result (normalised)."""
    if result is None or result.error is not None:
        return set()
    return string_pairs((e.text, e.label or "") for e in result.entities)


def predicted_sam_ner(result: SentenceResult | None) -> set[StringPair]:
    """The SAM-NER-protocol items of a result (stripped mention strings and labels)."""
    if result is None or result.error is not None:
        return set()
    return sam_ner_pairs((e.text, e.label or "") for e in result.entities)


def predicted_triplets(result: SentenceResult | None) -> set[RelationTuple]:
    """The relation-protocol items of a result."""
    if result is None or result.error is not None:
        return set()
    out: set[RelationTuple] = set()
    for k, t in enumerate(result.triplets, start=1):
        out.add(
            (
                _token_key(t.head, 2 * k),
                t.head.label or "",
                t.relation,
                _token_key(t.tail, 2 * k + 1),
                t.tail.label or "",
            )
        )
    return out


def score_entities(
    sentences: Sequence[Sentence],
    results: Sequence[SentenceResult | None],
    *,
    exclude_labels: Collection[str] = (),
) -> EntityScores:
    """Entity scores of ``results`` (aligned with ``sentences``)."""
    gold_spans = [s.entity_keys for s in sentences]
    pred_spans = [predicted_spans(r) for r in results]
    gold_strings = [string_pairs(s.string_keys) for s in sentences]
    pred_strings = [predicted_strings(r) for r in results]
    gold_sam_ner = [sam_ner_pairs(s.string_keys) for s in sentences]
    pred_sam_ner = [predicted_sam_ner(r) for r in results]
    excluded = sorted(set(exclude_labels))
    kept_gold = [{x for x in g if x[2] not in excluded} for g in gold_spans]
    kept_pred = [{x for x in p if x[2] not in excluded} for p in pred_spans]
    candidates = [
        {(*_token_key(c, k), "") for k, c in enumerate(r.candidates, start=1)}
        if r is not None and r.error is None
        else set()
        for r in results
    ]
    without_misc = None
    has_misc = any(x[2] == MISC_LABEL for g in gold_spans for x in g)
    if has_misc and MISC_LABEL not in excluded:
        also = [*excluded, MISC_LABEL]
        without_misc = {
            "span": span_prf(gold_spans, pred_spans, exclude_labels=also),
            "string": string_prf(gold_strings, pred_strings, exclude_labels=also),
        }
    return EntityScores(
        span=span_prf(gold_spans, pred_spans, exclude_labels=excluded),
        string=string_prf(gold_strings, pred_strings, exclude_labels=excluded),
        sam_ner=string_prf(gold_sam_ner, pred_sam_ner, exclude_labels=excluded),
        boundary=unlabeled_prf(kept_gold, kept_pred),
        candidates=unlabeled_prf(kept_gold, candidates),
        excluded_labels=excluded,
        without_misc=without_misc,
    )


def score_relations(
    sentences: Sequence[Sentence], results: Sequence[SentenceResult | None]
) -> RelationScores:
    """Relation strict and boundary scores of ``results``."""
    gold = [s.triplet_keys for s in sentences]
    pred = [predicted_triplets(r) for r in results]
    return RelationScores(
        strict=relation_prf(gold, pred, mode="strict"),
        boundary=relation_prf(gold, pred, mode="boundary"),
    )


__all__ = [
    "MISC_LABEL",
    "EntityScores",
    "RelationScores",
    "predicted_sam_ner",
    "predicted_spans",
    "predicted_strings",
    "predicted_triplets",
    "score_entities",
    "score_relations",
]
