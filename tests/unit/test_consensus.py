"""Collaborative Consensus Refinement, checked against SAM-NER §3.1 (Algorithm 1, Eq. 3–5).

Definitions (from the paper):

* V_noise = the explorer mentions of one whitespace token (``len(split(e)) == 1``);
* D_noise = {e ∈ V_noise | e ∉ E_anc}                                   (Eq. 3)
* Ẽ_exp  = E_exp \\ D_noise                                             (Eq. 4)
* E_final = E_anc ∪ Ẽ_exp, de-duplicated                                 (Eq. 5)

Mentions are compared by string equality (case-sensitive).
"""

from __future__ import annotations

import random

import pytest

from samalign.agents.consensus import NOISE_REASON, refine


def reference(anchor: list[str], explorer: list[str]) -> tuple[set[str], set[str]]:
    """A direct set transcription of Eq. 3–5."""
    e_anc = set(anchor)
    e_exp = set(explorer)
    v_noise = {e for e in e_exp if len(e.split()) == 1}
    d_noise = {e for e in v_noise if e not in e_anc}
    e_exp_tilde = e_exp - d_noise
    return e_anc | e_exp_tilde, d_noise


# ---------------------------------------------------------------------------------------------
# hand-written cases
# ---------------------------------------------------------------------------------------------


def test_paper_example_generic_words_are_noise() -> None:
    anchor = ["Sepp Hochreiter", "LSTM"]
    explorer = ["Sepp Hochreiter", "data", "LSTM", "system", "recurrent neural network", "user"]
    final, noise = refine(anchor, explorer)
    assert noise == ["data", "system", "user"]
    assert final == ["Sepp Hochreiter", "LSTM", "recurrent neural network"]


def test_multiword_explorer_mentions_are_always_kept() -> None:
    final, noise = refine([], ["New York", "machine translation system", "a b"])
    assert noise == []
    assert final == ["New York", "machine translation system", "a b"]


@pytest.mark.parametrize(
    ("mention", "tokens"),
    [("New\tYork", 2), ("New\nYork", 2), ("New  York", 2), ("U.S.", 1), ("state-of-the-art", 1)],
)
def test_token_count_is_whitespace_split(mention: str, tokens: int) -> None:
    final, noise = refine([], [mention])
    if tokens == 1:
        assert noise == [mention]
        assert final == []
    else:
        assert noise == []
        assert final == [mention]


def test_single_token_kept_iff_anchor_has_it() -> None:
    final, noise = refine(["LSTM"], ["LSTM", "CNN"])
    assert final == ["LSTM"]
    assert noise == ["CNN"]


def test_case_differences_matter() -> None:
    final, noise = refine(["lstm"], ["LSTM", "Lstm"])
    assert noise == ["LSTM", "Lstm"]
    assert final == ["lstm"]


def test_surrounding_whitespace_is_part_of_the_string() -> None:
    # " data" is one token but not string-equal to the anchor's "data"
    final, noise = refine(["data"], [" data", "data"])
    assert noise == [" data"]
    assert final == ["data"]


def test_anchor_only_mentions_are_kept_even_single_token() -> None:
    final, noise = refine(["Python", "Guido van Rossum"], [])
    assert final == ["Python", "Guido van Rossum"]
    assert noise == []


def test_anchor_mentions_are_never_filtered() -> None:
    # CCR denoises explorer candidates only; single-token anchor mentions pass untouched
    final, noise = refine(["x", "y"], ["z"])
    assert final == ["x", "y"]
    assert noise == ["z"]


def test_empty_inputs() -> None:
    assert refine([], []) == ([], [])
    assert refine(["a"], []) == (["a"], [])
    assert refine([], ["a"]) == ([], ["a"])


def test_empty_string_mention_has_zero_tokens_so_is_not_noise() -> None:
    # len(split("")) == 0 != 1: Algorithm 1 line 5 does not mark it
    final, noise = refine([], [""])
    assert noise == []
    assert final == [""]


def test_duplicates_are_removed() -> None:
    final, noise = refine(
        ["BERT", "BERT", "Google AI"], ["data", "data", "Google AI", "BERT", "deep learning"] * 2
    )
    assert final == ["BERT", "Google AI", "deep learning"]
    assert noise == ["data"]
    assert len(final) == len(set(final))
    assert len(noise) == len(set(noise))


def test_order_anchor_first_then_explorer_first_seen() -> None:
    anchor = ["c c", "a a"]
    explorer = ["z z", "a a", "y y", "z z", "b"]
    final, noise = refine(anchor, explorer)
    assert final == ["c c", "a a", "z z", "y y"]
    assert noise == ["b"]


def test_noise_order_is_first_seen_in_explorer() -> None:
    _, noise = refine([], ["zeta", "alpha", "zeta", "mid"])
    assert noise == ["zeta", "alpha", "mid"]


def test_inputs_are_not_mutated_and_tuples_are_accepted() -> None:
    anchor = ["A"]
    explorer = ["A", "b"]
    final, noise = refine(tuple(anchor), tuple(explorer))
    assert (final, noise) == (["A"], ["b"])
    assert anchor == ["A"]
    assert explorer == ["A", "b"]


def test_noise_reason_cites_the_paper() -> None:
    assert "single-token" in NOISE_REASON
    assert "anchor" in NOISE_REASON


# ---------------------------------------------------------------------------------------------
# property test against the set transcription (seeded random loop)
# ---------------------------------------------------------------------------------------------

_VOCAB = [
    "data",
    "Data",
    "DATA",
    " data",
    "data ",
    "system",
    "LSTM",
    "lstm",
    "BERT",
    "Sepp Hochreiter",
    "sepp hochreiter",
    "New York",
    "New  York",
    "New\tYork",
    "machine translation",
    "the user",
    "U.S.",
    "東京",
    "東京 都",
    "Jürgen",
    "",
    " ",
    "x",
    "y z",
]


def _sample(rng: random.Random) -> list[str]:
    return [rng.choice(_VOCAB) for _ in range(rng.randint(0, 8))]


@pytest.mark.parametrize("seed", range(5))
def test_refine_matches_set_transcription(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(400):
        anchor, explorer = _sample(rng), _sample(rng)
        final, noise = refine(anchor, explorer)
        want_final, want_noise = reference(anchor, explorer)
        ctx = f"anchor={anchor!r} explorer={explorer!r}"
        assert set(final) == want_final, ctx
        assert set(noise) == want_noise, ctx
        # de-duplicated, in first-seen order, anchor first
        assert len(final) == len(set(final)), ctx
        assert len(noise) == len(set(noise)), ctx
        kept_explorer = [e for e in explorer if e not in want_noise]
        assert final == list(dict.fromkeys([*anchor, *kept_explorer])), ctx
        assert noise == list(dict.fromkeys(e for e in explorer if e in want_noise)), ctx
        # every anchor mention survives; noise never reaches the final set
        assert set(anchor) <= set(final), ctx
        assert not set(noise) & set(final), ctx
        assert set(noise) <= set(explorer), ctx
