"""Evaluation metrics: the span metric against seqeval, the string and relation protocols."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2

from samalign.errors import InputError
from samalign.evaluation.metrics import (
    PRF,
    bio_to_spans,
    invalid_bio_positions,
    normalize_mention,
    relation_prf,
    span_prf,
    string_pairs,
    string_prf,
    unlabeled_prf,
)

LABELS = ["PER", "LOC", "ORG"]
TAGS = ["O", *(f"{p}-{lab}" for lab in LABELS for p in ("B", "I"))]


def test_bio_to_spans_reads_iob2() -> None:
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O", "B-ORG"]
    assert bio_to_spans(tags) == {(0, 2, "PER"), (3, 4, "LOC"), (4, 6, "LOC"), (7, 8, "ORG")}
    assert bio_to_spans([]) == set()
    assert bio_to_spans(["O", "O"]) == set()


def test_invalid_i_tags_follow_seqeval_strict_or_are_repaired() -> None:
    tags = ["O", "I-PER", "I-PER", "B-LOC", "I-ORG", "O"]
    assert bio_to_spans(tags) == {(3, 4, "LOC")}  # seqeval strict drops the invalid chunks
    assert bio_to_spans(tags, repair=True) == {(1, 3, "PER"), (3, 4, "LOC"), (4, 5, "ORG")}
    assert invalid_bio_positions(tags) == [1, 4]


@pytest.mark.parametrize("tag", ["X", "B-", "I", "E-PER", "b-PER", "B_PER", ""])
def test_unknown_tags_are_errors(tag: str) -> None:
    with pytest.raises(InputError, match="position 1"):
        bio_to_spans(["O", tag])


def _seqeval(gold: list[list[str]], pred: list[list[str]]) -> tuple[float, float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns on empty predictions
        return (
            precision_score(gold, pred, mode="strict", scheme=IOB2),
            recall_score(gold, pred, mode="strict", scheme=IOB2),
            f1_score(gold, pred, mode="strict", scheme=IOB2),
        )


def _pairs_strategy() -> st.SearchStrategy[list[tuple[list[str], list[str]]]]:
    sentence = st.integers(min_value=1, max_value=12).flatmap(
        lambda n: st.tuples(
            st.lists(st.sampled_from(TAGS), min_size=n, max_size=n),
            st.lists(st.sampled_from(TAGS), min_size=n, max_size=n),
        )
    )
    return st.lists(sentence.map(lambda t: (list(t[0]), list(t[1]))), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(_pairs_strategy())
def test_span_prf_agrees_with_seqeval_strict(pairs: list[tuple[list[str], list[str]]]) -> None:
    """Random gold/pred tag sequences (invalid IOB2 included) score like seqeval strict."""
    gold = [g for g, _ in pairs]
    pred = [p for _, p in pairs]
    ours = span_prf([bio_to_spans(g) for g in gold], [bio_to_spans(p) for p in pred])
    precision, recall, f1 = _seqeval(gold, pred)
    assert ours.precision == pytest.approx(precision)
    assert ours.recall == pytest.approx(recall)
    assert ours.f1 == pytest.approx(f1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = classification_report(
            gold, pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0
        )
    for label, prf in ours.per_label.items():
        if prf.gold:  # seqeval lists labels that occur in gold or predictions
            assert prf.precision == pytest.approx(report[label]["precision"])
            assert prf.recall == pytest.approx(report[label]["recall"])
            assert prf.f1 == pytest.approx(report[label]["f1-score"])
            assert prf.gold == report[label]["support"]


def test_span_prf_counts_and_exclusion() -> None:
    gold = [{(0, 2, "PER"), (3, 4, "misc")}, {(1, 2, "LOC")}]
    pred = [{(0, 2, "PER"), (3, 4, "LOC")}, set()]
    all_labels = span_prf(gold, pred)
    assert (all_labels.tp, all_labels.pred, all_labels.gold) == (1, 2, 3)
    assert all_labels.precision == 0.5
    assert all_labels.recall == pytest.approx(1 / 3)
    assert all_labels.f1 == pytest.approx(0.4)
    assert set(all_labels.per_label) == {"PER", "LOC", "misc"}
    assert all_labels.per_label["LOC"] == PRF.of(0, 1, 1)
    no_misc = span_prf(gold, pred, exclude_labels=["misc"])
    assert (no_misc.tp, no_misc.pred, no_misc.gold) == (1, 2, 2)
    assert "misc" not in no_misc.per_label


def test_empty_and_mismatched_inputs() -> None:
    assert span_prf([set()], [set()]) == PRF.of(0, 0, 0)
    assert span_prf([set()], [set()]).f1 == 0.0
    with pytest.raises(InputError, match="2 sentences but predictions have 1"):
        span_prf([set(), set()], [set()])


def test_unlabeled_ignores_labels() -> None:
    result = unlabeled_prf([{(0, 1, "A"), (2, 3, "B")}], [{(0, 1, "B")}])
    assert (result.tp, result.pred, result.gold) == (1, 1, 2)
    assert result.per_label == {}


def test_normalize_mention_is_uninerss_normalize_answer() -> None:
    assert normalize_mention("The  U.S. Army") == "us army"
    assert normalize_mention("an Apple, a day") == "apple day"
    assert normalize_mention("Théâtre du Soleil") == "théâtre du soleil"
    assert normalize_mention("...") == ""


def test_string_protocol_is_per_sentence_sets() -> None:
    gold = [string_pairs([("LSTM", "algorithm"), ("LSTM", "algorithm"), ("The Beatles", "band")])]
    pred = [string_pairs([("lstm", "algorithm"), ("Beatles", "band"), ("LSTM", "product")])]
    result = string_prf(gold, pred)
    assert (result.tp, result.pred, result.gold) == (2, 3, 2)  # repeated gold counts once
    assert string_prf(gold, pred, exclude_labels=["product"]).precision == 1.0
    raw = string_prf([string_pairs([("LSTM", "a")], normalize=False)], [{("lstm", "a")}])
    assert raw.tp == 0


def test_relation_strict_and_boundary() -> None:
    gold = [
        {((0, 2), "Peop", "Work_For", (5, 6), "Org"), ((0, 2), "Peop", "Live_In", (7, 8), "Loc")}
    ]
    pred = [
        {
            ((0, 2), "Peop", "Work_For", (5, 6), "Loc"),  # wrong tail type: boundary only
            ((7, 8), "Loc", "Live_In", (0, 2), "Peop"),  # reversed: wrong under both
            ((0, 2), "Peop", "Live_In", (7, 8), "Loc"),  # right
        }
    ]
    strict = relation_prf(gold, pred)
    boundary = relation_prf(gold, pred, mode="boundary")
    assert (strict.tp, strict.pred, strict.gold) == (1, 3, 2)
    assert (boundary.tp, boundary.pred, boundary.gold) == (2, 3, 2)
    assert set(strict.per_label) == {"Work_For", "Live_In"}
    assert relation_prf(gold, pred, exclude_labels=["Work_For"]).recall == 1.0
    with pytest.raises(InputError, match="unknown relation mode"):
        relation_prf(gold, pred, mode="loose")  # type: ignore[arg-type]
