"""Evaluation metrics: pure functions over sets of spans, strings and triplets.

Protocols (see ``docs/evaluation.md``):

* **span** (CrossNER, GLiNER, SAM-NER): an entity is ``(token start, token end exclusive,
  label)``; a prediction is correct when all three equal a gold entity's. Micro-averaged over
  every entity of every sentence (:func:`span_prf`); the same as seqeval's strict IOB2 mode.
* **string** (UniNER; GNER's re-evaluation): per sentence, the *set* of
  ``(normalised mention string, label)`` pairs; a predicted pair is correct when the gold set
  of that sentence holds it (:func:`string_prf`). Repeated mentions count once, and position
  does not matter.
* **sam_ner** (the SAM-NER authors' ``src/eval/eval.py``): the same per-sentence sets, with
  mention and label only stripped of surrounding whitespace — case-sensitive, no other
  normalisation (:func:`sam_ner_pairs`, scored by :func:`string_prf`); their reported average
  is the mean of the five CrossNER domains' F1 (:mod:`samalign.evaluation.domains`).
* **relation strict / boundary** (AnchorAlign §4.1): a triplet
  ``(head span, head type, relation, tail span, tail type)`` is correct under *strict* when
  every part matches, under *boundary* when the spans and the relation match whatever the
  entity types (:func:`relation_prf`).

Every metric takes ``exclude_labels``: gold and predicted items with those labels are left out
before counting (e.g. ``misc``, which UniNER does not score).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from samalign.datasets.bio import bio_to_spans, invalid_bio_positions
from samalign.errors import InputError

TokenSpan = tuple[int, int, str]
"""``(token start, token end exclusive, label)``."""

StringPair = tuple[str, str]
"""``(mention string, label)``."""

RelationTuple = tuple[tuple[int, int], str, str, tuple[int, int], str]
"""``((head start, head end), head type, relation, (tail start, tail end), tail type)``."""

RelationMode = Literal["strict", "boundary"]

T = TypeVar("T", bound=Hashable)


class PRF(BaseModel):
    """Micro precision, recall and F1 with the counts behind them.

    Attributes:
        precision: ``tp / pred`` (0 when nothing was predicted).
        recall: ``tp / gold`` (0 when there is no gold item).
        f1: Harmonic mean of precision and recall (0 when both are 0).
        tp: Correct predictions.
        pred: Predictions.
        gold: Gold items.
        per_label: The same numbers for each label (empty inside a per-label entry).
    """

    model_config = ConfigDict(frozen=True)

    precision: float
    recall: float
    f1: float
    tp: int
    pred: int
    gold: int
    per_label: dict[str, PRF] = {}

    @classmethod
    def of(cls, tp: int, pred: int, gold: int, per_label: dict[str, PRF] | None = None) -> PRF:
        """Build from counts."""
        precision = tp / pred if pred else 0.0
        recall = tp / gold if gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return cls(
            precision=precision,
            recall=recall,
            f1=f1,
            tp=tp,
            pred=pred,
            gold=gold,
            per_label=per_label or {},
        )


def _check_lengths(gold: Sequence[object], pred: Sequence[object]) -> None:
    if len(gold) != len(pred):
        raise InputError(
            f"gold has {len(gold)} sentences but predictions have {len(pred)}; "
            "give one (possibly empty) set per sentence for both"
        )


def _micro(
    gold: Sequence[Collection[T]],
    pred: Sequence[Collection[T]],
    label_of: Callable[[T], str],
    exclude: Collection[str],
) -> PRF:
    """Micro P/R/F1 over per-sentence sets of items whose label ``label_of`` gives."""
    _check_lengths(gold, pred)
    excluded = set(exclude)
    tp_by: Counter[str] = Counter()
    pred_by: Counter[str] = Counter()
    gold_by: Counter[str] = Counter()
    for gold_items, pred_items in zip(gold, pred, strict=True):
        g = {item for item in gold_items if label_of(item) not in excluded}
        p = {item for item in pred_items if label_of(item) not in excluded}
        gold_by.update(label_of(item) for item in g)
        pred_by.update(label_of(item) for item in p)
        tp_by.update(label_of(item) for item in p & g)
    labels = sorted(set(gold_by) | set(pred_by))
    per_label = {lab: PRF.of(tp_by[lab], pred_by[lab], gold_by[lab]) for lab in labels}
    return PRF.of(sum(tp_by.values()), sum(pred_by.values()), sum(gold_by.values()), per_label)


def span_prf(
    gold: Sequence[set[TokenSpan]],
    pred: Sequence[set[TokenSpan]],
    *,
    exclude_labels: Collection[str] = (),
) -> PRF:
    """Strict micro P/R/F1 of token-span entities (CrossNER protocol).

    Args:
        gold: One set of gold ``(start, end, label)`` per sentence.
        pred: One set of predicted ``(start, end, label)`` per sentence, aligned with ``gold``.
        exclude_labels: Labels left out of gold and predictions before counting.

    Returns:
        Micro precision, recall and F1, plus a per-label breakdown.

    Raises:
        InputError: If ``gold`` and ``pred`` have different lengths.
    """
    return _micro(gold, pred, lambda item: item[2], exclude_labels)


def unlabeled_prf(gold: Sequence[set[TokenSpan]], pred: Sequence[set[TokenSpan]]) -> PRF:
    """Micro P/R/F1 of entity boundaries only (labels ignored; no per-label breakdown)."""
    _check_lengths(gold, pred)
    tp = n_pred = n_gold = 0
    for g, p in zip(gold, pred, strict=True):
        gs = {(s, e) for s, e, _ in g}
        ps = {(s, e) for s, e, _ in p}
        tp += len(gs & ps)
        n_pred += len(ps)
        n_gold += len(gs)
    return PRF.of(tp, n_pred, n_gold)


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_mention(text: str) -> str:
    """UniNER's ``normalize_answer`` (the SQuAD normalisation).

    Lower-case, drop ASCII punctuation and the articles a/an/the, collapse whitespace.
    """
    lowered = text.lower()
    no_punct = "".join(ch for ch in lowered if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", no_punct).split())


def string_pairs(pairs: Iterable[StringPair], *, normalize: bool = True) -> set[StringPair]:
    """The set of ``(mention, label)`` pairs of one sentence, normalised as UniNER does."""
    return {(normalize_mention(m) if normalize else m, label) for m, label in pairs}


def sam_ner_pairs(pairs: Iterable[StringPair]) -> set[StringPair]:
    """The set of ``(name, type)`` pairs of one sentence as the SAM-NER authors score it.

    Their ``src/eval/eval.py`` (DMIRLAB-Group/SAM-NER@d9e41bc) keeps
    ``(name.strip(), type.strip())``: case-sensitive, punctuation and articles kept.
    """
    return {(m.strip(), label.strip()) for m, label in pairs}


def string_prf(
    gold: Sequence[set[StringPair]],
    pred: Sequence[set[StringPair]],
    *,
    exclude_labels: Collection[str] = (),
) -> PRF:
    """Micro P/R/F1 of per-sentence ``(mention string, label)`` sets.

    Build each set with :func:`string_pairs` (UniNER: normalisation and de-duplication as
    UniNER's evaluation script does per (text, type) query) or :func:`sam_ner_pairs` (the
    SAM-NER authors' script: stripped only); the counting is the same for both.

    Raises:
        InputError: If ``gold`` and ``pred`` have different lengths.
    """
    return _micro(gold, pred, lambda item: item[1], exclude_labels)


def relation_prf(
    gold: Sequence[set[RelationTuple]],
    pred: Sequence[set[RelationTuple]],
    *,
    mode: RelationMode = "strict",
    exclude_labels: Collection[str] = (),
) -> PRF:
    """Relation micro P/R/F1 (AnchorAlign §4.1).

    * ``strict``: head span and type, relation, tail span and type all match.
    * ``boundary``: head span, relation and tail span match; entity types are ignored.

    Relations are directed (head and tail are not interchangeable). ``per_label`` is by
    relation type; ``exclude_labels`` names relation types to leave out.

    Raises:
        InputError: If ``gold`` and ``pred`` have different lengths.
    """
    if mode == "boundary":
        gold = [{(h, "", r, t, "") for h, _, r, t, _ in s} for s in gold]
        pred = [{(h, "", r, t, "") for h, _, r, t, _ in s} for s in pred]
    elif mode != "strict":
        raise InputError(f"unknown relation mode {mode!r}; expected 'strict' or 'boundary'")
    return _micro(gold, pred, lambda item: item[2], exclude_labels)


__all__ = [
    "PRF",
    "RelationMode",
    "RelationTuple",
    "StringPair",
    "TokenSpan",
    "bio_to_spans",
    "invalid_bio_positions",
    "normalize_mention",
    "relation_prf",
    "sam_ner_pairs",
    "span_prf",
    "string_pairs",
    "string_prf",
    "unlabeled_prf",
]
