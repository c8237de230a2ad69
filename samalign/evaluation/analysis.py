"""Why a sentence lost or gained something: per-sentence differences with a reason each.

Every gold entity that was not predicted (``missed``) and every prediction that is not gold
(``spurious``) gets one reason code, the first that applies:

===========================  ===============================================================
``error``                    the sentence failed (the error is reported)
``ambiguous_label``          the same string carries several gold labels in the sentence; a
                             string answer gives all its occurrences one label
``wrong_label``              the span is right, the label is not
``unaligned``                a predicted span that cuts a token (never correct)
``unannotated_occurrence``   a predicted span whose string is a gold entity elsewhere in the
                             sentence but is not annotated here (string answers ground every
                             occurrence), or a gold entity such a span covers
``nested``                   a gold entity overlapping another gold entity, lost to a
                             predicted span that covers the other one (flat grounding keeps
                             one of two overlapping spans)
``boundary``                 a span overlapping a gold/predicted span with other boundaries
``dropped_by_ccr``           a gold mention CCR removed as uncorroborated explorer noise
``untyped``                  a gold span that was a candidate but got no label
``not_a_candidate``          a gold entity no extractor found
``not_gold``                 a prediction overlapping no gold entity
===========================  ===============================================================

Relation triplets get ``error``, ``argument_missed`` (an argument span was not predicted as an
entity), ``argument_not_gold`` (an argument is not a gold entity), ``entity_type`` (right
spans and relation, wrong argument type), ``wrong_relation``, ``reversed``,
``other_occurrence`` (the same (head, relation, tail) strings hold between other occurrences of
a repeated mention) and ``not_predicted``/``not_gold``.

With gold answers (gold replay) only the reasons in :data:`GOLD_REPLAY_REASONS` can occur:
they are what string answers cannot express (and, for relations, their consequences). Any
other reason in a gold-replay report is a bug.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from samalign.evaluation.results import PredEntity, PredTriplet, SentenceResult
from samalign.evaluation.sentences import GoldEntity, GoldTriplet, Sentence

GOLD_REPLAY_REASONS = frozenset(
    {
        "ambiguous_label",
        "unannotated_occurrence",
        "nested",
        "unaligned",
        "other_occurrence",
        "argument_missed",
        "argument_not_gold",
    }
)
"""The only reasons gold replay can lose something for (string answers' limits)."""


class EntityDiff(BaseModel):
    """A missed gold entity or a spurious prediction."""

    model_config = ConfigDict(frozen=True)

    text: str
    label: str | None
    tokens: tuple[int, int] | None
    reason: str
    detail: str = ""


class TripletDiff(BaseModel):
    """A missed gold triplet or a spurious predicted one."""

    model_config = ConfigDict(frozen=True)

    head: str
    relation: str
    tail: str
    reason: str


class SentenceDiff(BaseModel):
    """Everything one sentence lost or gained."""

    model_config = ConfigDict(frozen=True)

    id: str
    text: str
    origin: str
    error: str | None = None
    missed: list[EntityDiff] = []
    spurious: list[EntityDiff] = []
    missed_triplets: list[TripletDiff] = []
    spurious_triplets: list[TripletDiff] = []

    def reasons(self) -> Counter[str]:
        """Reason codes and how often they occur."""
        counts: Counter[str] = Counter(d.reason for d in (*self.missed, *self.spurious))
        counts.update(t.reason for t in (*self.missed_triplets, *self.spurious_triplets))
        if self.error is not None and not (self.missed or self.missed_triplets):
            counts["error"] += 1
        return counts


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _gold_tokens(e: GoldEntity) -> tuple[int, int]:
    return (e.token_start, e.token_end)


def _miss_reason(
    gold: GoldEntity,
    sentence: Sentence,
    result: SentenceResult,
    labels_by_text: dict[str, set[str]],
) -> tuple[str, str]:
    span = _gold_tokens(gold)
    preds = [p for p in result.entities if p.tokens is not None]
    same = [p for p in preds if p.tokens == span]
    if same:
        if len(labels_by_text[gold.text]) > 1:
            return "ambiguous_label", f"typed {same[0].label}; the string has several gold labels"
        return "wrong_label", f"typed {same[0].label}"
    overlapping = [p for p in preds if p.tokens is not None and _overlap(p.tokens, span)]
    if overlapping:
        other = overlapping[0]
        covers_gold = any(
            g is not gold and other.tokens == _gold_tokens(g) for g in sentence.entities
        )
        if covers_gold:
            return "nested", f"overlaps gold {other.text!r}, which was predicted"
        if other.text in labels_by_text:
            return (
                "unannotated_occurrence",
                f"covered by {other.text!r}, a gold string elsewhere but not annotated here",
            )
        return "boundary", f"predicted {other.text!r} ({other.label}) instead"
    if gold.text in result.noise:
        return "dropped_by_ccr", ""
    if any(c.tokens == span for c in result.candidates):
        return "untyped", "a candidate without a label"
    return "not_a_candidate", ""


def _spurious_reason(
    pred: PredEntity, sentence: Sentence, labels_by_text: dict[str, set[str]]
) -> tuple[str, str]:
    if pred.tokens is None:
        return "unaligned", f"characters [{pred.start}, {pred.end}) cut a token"
    same = [g for g in sentence.entities if _gold_tokens(g) == pred.tokens]
    if same:
        if len(labels_by_text.get(pred.text, set())) > 1:
            return "ambiguous_label", f"gold {same[0].label}; the string has several gold labels"
        return "wrong_label", f"gold label {same[0].label}"
    if pred.text in labels_by_text:
        return "unannotated_occurrence", "the string is a gold entity elsewhere in the sentence"
    overlapping = [g for g in sentence.entities if _overlap(_gold_tokens(g), pred.tokens)]
    if overlapping:
        return "boundary", f"gold {overlapping[0].text!r} ({overlapping[0].label})"
    return "not_gold", ""


def _triplet_text(t: GoldTriplet | PredTriplet) -> tuple[str, str, str]:
    return t.head.text, t.relation, t.tail.text


def _pred_key(t: PredTriplet) -> tuple[object, ...]:
    return (t.head.tokens, t.head.label, t.relation, t.tail.tokens, t.tail.label)


def _gold_key(t: GoldTriplet) -> tuple[object, ...]:
    return (_gold_tokens(t.head), t.head.label, t.relation, _gold_tokens(t.tail), t.tail.label)


def _triplet_diffs(
    sentence: Sentence, result: SentenceResult
) -> tuple[list[TripletDiff], list[TripletDiff]]:
    gold_keys = {_gold_key(t) for t in sentence.triplets}
    pred_keys = {_pred_key(t) for t in result.triplets}
    pred_spans = {p.tokens for p in result.entities if p.tokens is not None}
    gold_spans = {_gold_tokens(e) for e in sentence.entities}
    gold_strings = {_triplet_text(t) for t in sentence.triplets}
    pred_strings = {_triplet_text(t) for t in result.triplets}
    gold_pairs = {(_gold_tokens(g.head), _gold_tokens(g.tail)): g for g in sentence.triplets}
    missed: list[TripletDiff] = []
    for t in sentence.triplets:
        if _gold_key(t) in pred_keys:
            continue
        h, r, tl = _gold_tokens(t.head), t.relation, _gold_tokens(t.tail)
        same = [p for p in result.triplets if (p.head.tokens, p.tail.tokens) == (h, tl)]
        if result.error is not None:
            reason = "error"
        elif h not in pred_spans or tl not in pred_spans:
            reason = "argument_missed"
        elif same:
            reason = "entity_type" if any(p.relation == r for p in same) else "wrong_relation"
        elif _triplet_text(t) in pred_strings:
            reason = "other_occurrence"
        elif any((p.head.tokens, p.tail.tokens) == (tl, h) for p in result.triplets):
            reason = "reversed"
        else:
            reason = "not_predicted"
        missed.append(TripletDiff(head=t.head.text, relation=r, tail=t.tail.text, reason=reason))
    spurious: list[TripletDiff] = []
    for p in result.triplets:
        if _pred_key(p) in gold_keys:
            continue
        h2, tl2 = p.head.tokens, p.tail.tokens
        if h2 not in gold_spans or tl2 not in gold_spans:
            reason = "argument_not_gold"
        elif (h2, tl2) in gold_pairs:
            gold = gold_pairs[(h2, tl2)]
            reason = "entity_type" if gold.relation == p.relation else "wrong_relation"
        elif _triplet_text(p) in gold_strings:
            reason = "other_occurrence"
        elif (tl2, h2) in gold_pairs:
            reason = "reversed"
        else:
            reason = "not_gold"
        head, rel, tail = _triplet_text(p)
        spurious.append(TripletDiff(head=head, relation=rel, tail=tail, reason=reason))
    return missed, spurious


def diff_sentence(sentence: Sentence, result: SentenceResult) -> SentenceDiff | None:
    """What ``result`` missed and added against ``sentence``'s gold (``None``: nothing)."""
    labels_by_text: dict[str, set[str]] = {}
    for g in sentence.entities:
        labels_by_text.setdefault(g.text, set()).add(g.label)
    pred_keys = {(p.tokens, p.label) for p in result.entities if p.tokens is not None}
    missed = []
    for g in sentence.entities:
        if (_gold_tokens(g), g.label) in pred_keys:
            continue
        reason, detail = (
            ("error", "")
            if result.error is not None
            else _miss_reason(g, sentence, result, labels_by_text)
        )
        missed.append(
            EntityDiff(
                text=g.text, label=g.label, tokens=_gold_tokens(g), reason=reason, detail=detail
            )
        )
    gold_keys = {(_gold_tokens(g), g.label) for g in sentence.entities}
    spurious = []
    for p in dict.fromkeys(result.entities):
        if p.tokens is not None and (p.tokens, p.label) in gold_keys:
            continue
        reason, detail = _spurious_reason(p, sentence, labels_by_text)
        spurious.append(
            EntityDiff(text=p.text, label=p.label, tokens=p.tokens, reason=reason, detail=detail)
        )
    missed_t, spurious_t = _triplet_diffs(sentence, result)
    if not (missed or spurious or missed_t or spurious_t or result.error):
        return None
    return SentenceDiff(
        id=sentence.id,
        text=sentence.text,
        origin=sentence.origin,
        error=result.error,
        missed=missed,
        spurious=spurious,
        missed_triplets=missed_t,
        spurious_triplets=spurious_t,
    )


def diff_all(
    sentences: Sequence[Sentence], results: Sequence[SentenceResult]
) -> list[SentenceDiff]:
    """:func:`diff_sentence` for every sentence, keeping those with a difference."""
    diffs = [diff_sentence(s, r) for s, r in zip(sentences, results, strict=True)]
    return [d for d in diffs if d is not None]


__all__ = [
    "GOLD_REPLAY_REASONS",
    "EntityDiff",
    "SentenceDiff",
    "TripletDiff",
    "diff_all",
    "diff_sentence",
]
