from __future__ import annotations

import random
import unicodedata

import pytest
from pydantic import ValidationError

from samalign.agents.grounding import GroundedMention, find_occurrences, ground_mentions
from samalign.errors import ConfigError
from samalign.types import Span


def offsets(spans: list[Span] | tuple[Span, ...]) -> list[tuple[int, int]]:
    return [(s.start, s.end) for s in spans]


def texts(spans: list[Span] | tuple[Span, ...]) -> list[str]:
    return [s.text for s in spans]


def by_mention(results: list[GroundedMention]) -> dict[str, GroundedMention]:
    return {r.mention: r for r in results}


# ---------------------------------------------------------------------------------------------
# the three tiers by example
# ---------------------------------------------------------------------------------------------


OCCURRENCES = [
    # exact tier
    pytest.param(
        "He SAID that AI matters ; AIR is not AI .",
        "AI",
        None,
        "exact",
        [("AI", 13, 15), ("AI", 37, 39)],
        id="exact_respects_word_boundaries",
    ),
    pytest.param(
        "He SAID so and the AIR was cold",
        "AI",
        None,
        None,
        [],
        id="exact_mention_only_inside_words_is_not_found",
    ),
    # "AC++" starts inside a word; "(C++)" is fine: "+" and "(" are not alphanumeric
    pytest.param(
        "C++ is fast , unlike AC++ ; (C++) too",
        "C++",
        None,
        "exact",
        [("C++", 0, 3), ("C++", 29, 32)],
        id="exact_punctuation_edges_need_no_boundary",
    ),
    pytest.param(
        "Zürich and Zürichsee , not XZürich ; Zürich again",
        "Zürich",
        None,
        "exact",
        [("Zürich", 0, 6), ("Zürich", 37, 43)],
        id="exact_non_ascii_letters_are_word_characters",
    ),
    pytest.param(
        "café and cafe",
        "cafe",
        None,
        "exact",
        [("cafe", 10, 14)],
        id="exact_combining_mark_is_part_of_the_word",
    ),
    pytest.param(
        "我住在東京都。東京は大きい",
        "東京",
        None,
        "exact",
        [("東京", 3, 5), ("東京", 7, 9)],
        id="exact_cjk_needs_no_boundary",
    ),
    pytest.param(
        "我喜欢Python和AI研究",
        "Python",
        None,
        "exact",
        [("Python", 3, 9)],
        id="exact_latin_mention_next_to_cjk_needs_no_boundary-1",
    ),
    pytest.param(
        "我喜欢Python和AI研究",
        "AI",
        None,
        "exact",
        [("AI", 10, 12)],
        id="exact_latin_mention_next_to_cjk_needs_no_boundary-2",
    ),
    pytest.param(
        "서울에서 만나요",
        "서울",
        None,
        "exact",
        [("서울", 0, 2)],
        id="exact_hangul_and_kana_need_no_boundary-1",
    ),
    pytest.param(
        "トヨタ自動車の社長",
        "トヨタ",
        None,
        "exact",
        [("トヨタ", 0, 3)],
        id="exact_hangul_and_kana_need_no_boundary-2",
    ),
    pytest.param(
        "wet wet wet that remained",
        "wet wet",
        None,
        "exact",
        [("wet wet", 0, 7)],
        id="exact_occurrences_do_not_overlap",
    ),
    # normalized tier
    pytest.param(
        "we use a ( LSTM ) model ; LSTM is old",
        "lstm",
        None,
        "normalized",
        [("LSTM", 11, 15), ("LSTM", 26, 30)],
        id="normalized_is_case_insensitive",
    ),
    pytest.param(
        "LSTM and lstm",
        "lstm",
        None,
        "exact",
        [("lstm", 9, 13)],
        id="exact_wins_over_normalized",
    ),
    pytest.param(
        "The U.S . Army used Long Short-Term Memory ( LSTM ) networks .",
        "U.S.",
        None,
        "normalized",
        [("U.S .", 4, 9)],
        id="normalized_crossner_tokenised_text-1",
    ),
    pytest.param(
        "The U.S . Army used Long Short-Term Memory ( LSTM ) networks .",
        "long short-term memory (LSTM)",
        None,
        "normalized",
        [("Long Short-Term Memory ( LSTM )", 20, 51)],
        id="normalized_crossner_tokenised_text-2",
    ),
    pytest.param(
        "The U.S . Army used Long Short-Term Memory ( LSTM ) networks .",
        "(LSTM)",
        None,
        "normalized",
        [("( LSTM )", 43, 51)],
        id="normalized_crossner_tokenised_text-3",
    ),
    pytest.param(
        "She moved to New York last year .",
        "New  York",
        None,
        "normalized",
        [("New York", 13, 21)],
        id="normalized_collapses_whitespace-1",
    ),
    pytest.param(
        "She moved to New\n  York .",
        "new york",
        None,
        "normalized",
        [("New\n  York", 13, 23)],
        id="normalized_collapses_whitespace-2",
    ),
    pytest.param(
        "the SAID clause",
        "ai",
        None,
        None,
        [],
        id="normalized_respects_word_boundaries",
    ),
    pytest.param(
        "我 住 在 東京 都 。",
        "東京都",
        None,
        "normalized",
        [("東京 都", 6, 10)],
        id="normalized_cjk_tokenised_text",
    ),
    # fuzzy tier
    pytest.param(
        "They trained a long short-term memory network on it .",
        "long short term memory",
        None,
        "fuzzy",
        [("long short-term memory", 15, 37)],
        id="fuzzy_matches_slightly_wrong_mention",
    ),
    pytest.param(
        "They trained a long short-term memory network on it .",
        "convolutional neural network",
        None,
        None,
        [],
        id="fuzzy_rejects_unrelated_mention-1",
    ),
    pytest.param(
        "They trained a long short-term memory network on it .",
        "recurrent memory cells",
        None,
        None,
        [],
        id="fuzzy_rejects_unrelated_mention-2",
    ),
    pytest.param(
        "She studied at the University of California , Berkeley .",
        "University of California Berkeley",
        None,
        "fuzzy",
        [("University of California , Berkeley", 19, 54)],
        id="fuzzy_tolerates_omitted_word",
    ),
    # GNER case study: the model writes "bront" for "brontë" (missing from its vocabulary)
    pytest.param(
        "four more children followed : charlotte brontë , ( 1816-1855 ) , emily brontë .",
        "charlotte bront",
        None,
        "fuzzy",
        [("charlotte brontë", 30, 46)],
        id="fuzzy_back_tokenization_dropped_character-1",
    ),
    pytest.param(
        "four more children followed : charlotte brontë , ( 1816-1855 ) , emily brontë .",
        "bront",
        None,
        "fuzzy",
        [("brontë", 40, 46), ("brontë", 71, 77)],
        id="fuzzy_back_tokenization_dropped_character-2",
    ),
    pytest.param(
        "He lives in Zürich now",
        "Zurich",
        None,
        "fuzzy",
        [("Zürich", 12, 18)],
        id="fuzzy_accent_folding_and_typo_in_text-1",
    ),
    pytest.param(
        "five star restaurants in manattan",
        "manhattan",
        None,
        "fuzzy",
        [("manattan", 25, 33)],
        id="fuzzy_accent_folding_and_typo_in_text-2",
    ),
    pytest.param(
        "born in 1816 .",
        "18160",
        None,
        None,
        [],
        id="fuzzy_numbers_and_short_words_must_be_equal-1",
    ),
    pytest.param(
        "a cat sat",
        "cats",
        None,
        None,
        [],
        id="fuzzy_numbers_and_short_words_must_be_equal-2",
    ),
    pytest.param(
        "long short-term memory helps ; long short-term memory again .",
        "long short term memory",
        None,
        "fuzzy",
        [("long short-term memory", 0, 22), ("long short-term memory", 31, 53)],
        id="fuzzy_finds_every_best_window",
    ),
    # 3 of 4 words match: score 0.75
    pytest.param(
        "the New York Stock Exchange opened",
        "New York Stock Market",
        None,
        None,
        [],
        id="fuzzy_threshold_controls_acceptance-1",
    ),
    pytest.param(
        "the New York Stock Exchange opened",
        "New York Stock Market",
        0.75,
        "fuzzy",
        [("New York Stock Exchange", 4, 27)],
        id="fuzzy_threshold_controls_acceptance-2",
    ),
    pytest.param(
        "the Chicago Stock Exchange opened",
        "Boston Stock Exchange",
        0.6,
        "fuzzy",
        [("Chicago Stock Exchange", 4, 26)],
        id="fuzzy_edge_substitution_is_covered_but_not_punctuation-1",
    ),
    # unmatched words are not taken as substitutes when they are punctuation
    pytest.param(
        "he flew to New York .",
        "New York City",
        0.6,
        "fuzzy",
        [("New York", 11, 19)],
        id="fuzzy_edge_substitution_is_covered_but_not_punctuation-2",
    ),
]
"""``(text, mention, fuzzy_threshold, tier, [(span text, start, end), ...])``."""


@pytest.mark.parametrize(("text", "mention", "threshold", "tier", "found"), OCCURRENCES)
def test_find_occurrences(
    text: str,
    mention: str,
    threshold: float | None,
    tier: str | None,
    found: list[tuple[str, int, int]],
) -> None:
    kwargs = {} if threshold is None else {"fuzzy_threshold": threshold}
    spans, got = find_occurrences(text, mention, **kwargs)
    assert got == tier
    assert [(s.text, s.start, s.end) for s in spans] == found
    if not found:
        assert (spans, got) == ([], None)


# ---------------------------------------------------------------------------------------------
# exact tier
# ---------------------------------------------------------------------------------------------


def test_exact_finds_every_occurrence() -> None:
    text = "Paris is big . I love Paris , and Paris loves me ."
    spans, tier = find_occurrences(text, "Paris")
    assert tier == "exact"
    assert offsets(spans) == [(0, 5), (22, 27), (34, 39)]
    assert all(text[s.start : s.end] == "Paris" for s in spans)


def test_non_ascii_offsets_after_emoji_and_cjk() -> None:
    text = "Ünïcödé straße in 東京都 and 😀 emoji"
    assert len("😀") == 1
    cases = {
        "Ünïcödé": (0, 7),
        "straße": (8, 14),
        "東京都": (18, 21),
        "😀": (26, 27),
        "emoji": (28, 33),
    }
    for mention, expected in cases.items():
        spans, tier = find_occurrences(text, mention)
        assert tier == "exact", mention
        assert offsets(spans) == [expected], mention
        assert spans[0].text == mention
        spans[0].check(text)


# ---------------------------------------------------------------------------------------------
# fuzzy tier
# ---------------------------------------------------------------------------------------------


def test_fuzzy_nfd_text_spans_include_combining_marks() -> None:
    text = unicodedata.normalize("NFD", "the café is open")
    spans, tier = find_occurrences(text, "café")
    assert tier == "fuzzy"
    assert spans[0].text == unicodedata.normalize("NFD", "café")
    spans[0].check(text)


def test_fuzzy_finds_the_one_window_in_a_long_repetitive_text() -> None:
    # 100 words over an 8-word vocabulary: many near-windows, one with 9 of 10 words right.
    # (How fast this is belongs to benchmarks/grounding.py, not to a unit test.)
    rng = random.Random(7)
    vocab = [f"w{i}" for i in range(8)]
    words = [rng.choice(vocab) for _ in range(100)]
    text = " ".join(words)
    mention = " ".join([*words[40:45], "zzz", *words[46:50]])
    spans, tier = find_occurrences(text, mention)
    assert tier == "fuzzy"
    window = " ".join(words[40:50])
    assert texts(spans) == [window]
    assert offsets(spans) == [(text.index(window), text.index(window) + len(window))]


def test_invalid_threshold_is_config_error() -> None:
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError):
            find_occurrences("text", "text", fuzzy_threshold=bad)
        with pytest.raises(ConfigError):
            ground_mentions("text", ["text"], fuzzy_threshold=bad)


# ---------------------------------------------------------------------------------------------
# not found
# ---------------------------------------------------------------------------------------------


def test_hallucinated_mention_not_found() -> None:
    text = "Barack Obama visited Berlin in 2013 ."
    assert find_occurrences(text, "Angela Merkel") == ([], None)
    [result] = ground_mentions(text, ["Angela Merkel"])
    assert result == GroundedMention(mention="Angela Merkel", spans=(), tier=None)
    assert not result.found
    assert not result.subsumed


def test_empty_and_whitespace_mentions() -> None:
    assert find_occurrences("some text", "") == ([], None)
    assert find_occurrences("some text", "  \n ") == ([], None)
    results = ground_mentions("some text", ["", "   ", "text"])
    assert [(r.mention, r.spans, r.tier) for r in results][:2] == [
        ("", (), None),
        ("   ", (), None),
    ]
    assert offsets(results[2].spans) == [(5, 9)]


def test_empty_text() -> None:
    assert find_occurrences("", "Paris") == ([], None)
    assert ground_mentions("", ["Paris"]) == [GroundedMention(mention="Paris")]


def test_mention_surrounding_whitespace_is_ignored() -> None:
    spans, tier = find_occurrences("I love Paris .", "  Paris ")
    assert (offsets(spans), tier) == ([(7, 12)], "exact")


# ---------------------------------------------------------------------------------------------
# ground_mentions: order, de-duplication, flat vs nested
# ---------------------------------------------------------------------------------------------


def test_results_in_input_order_and_deduplicated() -> None:
    text = "Obama met Merkel in Berlin ."
    results = ground_mentions(text, ["Berlin", "Obama", "Berlin", "Merkel", "Obama"])
    assert [r.mention for r in results] == ["Berlin", "Obama", "Merkel"]
    assert [texts(r.spans) for r in results] == [["Berlin"], ["Obama"], ["Merkel"]]


def test_repeated_mention_grounds_to_every_occurrence() -> None:
    text = "Apple sued Apple Records ; Apple won ."
    for mode in ("flat", "nested"):
        [result] = ground_mentions(text, ["Apple"], mode=mode)
        assert result.tier == "exact"
        assert offsets(result.spans) == [(0, 5), (11, 16), (27, 32)]


def test_flat_longer_mention_wins_overlap() -> None:
    text = "New York University is in New York"
    results = ground_mentions(text, ["New York", "New York University"])
    assert [r.mention for r in results] == ["New York", "New York University"]
    ny, nyu = results
    assert offsets(nyu.spans) == [(0, 19)]
    assert offsets(ny.spans) == [(26, 34)]
    assert ny.tier == nyu.tier == "exact"
    assert not ny.subsumed and not nyu.subsumed


def test_nested_keeps_every_occurrence() -> None:
    text = "New York University is in New York"
    results = by_mention(ground_mentions(text, ["New York", "New York University"], mode="nested"))
    assert offsets(results["New York"].spans) == [(0, 8), (26, 34)]
    assert offsets(results["New York University"].spans) == [(0, 19)]
    assert not any(r.subsumed for r in results.values())


def test_flat_subsumed_mention() -> None:
    text = "New York University is large ."
    results = ground_mentions(text, ["University", "New York University", "Harvard"])
    uni, nyu, harvard = results
    assert uni == GroundedMention(mention="University", spans=(), tier="exact", subsumed=True)
    assert uni.found
    assert offsets(nyu.spans) == [(0, 19)]
    assert not nyu.subsumed
    # Not found is different from subsumed.
    assert harvard == GroundedMention(mention="Harvard", spans=(), tier=None, subsumed=False)


def test_flat_equal_length_overlap_goes_to_first_in_input_order() -> None:
    text = "ab cd ef"
    results = ground_mentions(text, ["cd ef", "ab cd"])
    first, second = results
    assert offsets(first.spans) == [(3, 8)]
    assert second.spans == ()
    assert second.subsumed


def test_flat_same_span_from_two_mention_strings() -> None:
    text = "we use LSTM here"
    results = ground_mentions(text, ["LSTM", "lstm"])
    assert offsets(results[0].spans) == [(7, 11)]
    assert results[0].tier == "exact"
    assert results[1].tier == "normalized"
    assert results[1].subsumed

    nested = ground_mentions(text, ["LSTM", "lstm"], mode="nested")
    assert [offsets(r.spans) for r in nested] == [[(7, 11)], [(7, 11)]]


def test_flat_spans_never_overlap() -> None:
    text = "Bank of America and America and Bank of America Tower"
    mentions = ["America", "Bank of America", "Bank of America Tower", "of", "Tower"]
    results = ground_mentions(text, mentions)
    spans = [s for r in results for s in r.spans]
    assert len(spans) >= 2
    for i, a in enumerate(spans):
        for b in spans[i + 1 :]:
            assert not a.overlaps(b), (a, b)
    got = {r.mention: texts(r.spans) for r in results}
    assert got == {
        "America": ["America"],
        "Bank of America": ["Bank of America"],
        "Bank of America Tower": ["Bank of America Tower"],
        "of": [],
        "Tower": [],
    }
    assert by_mention(results)["America"].spans[0].start == 20


def test_unknown_mode_is_config_error() -> None:
    with pytest.raises(ConfigError):
        ground_mentions("text", ["text"], mode="overlapping")  # type: ignore[arg-type]


def test_grounded_mention_is_frozen_and_strict() -> None:
    result = GroundedMention(mention="x")
    with pytest.raises(ValidationError):
        result.mention = "y"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        GroundedMention(mention="x", unexpected=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        GroundedMention(mention="x", subsumed=True)
    with pytest.raises(ValidationError):
        GroundedMention(mention="x", spans=(Span.of("x", 0, 1),))


# ---------------------------------------------------------------------------------------------
# invariant: every span is grounded in the text
# ---------------------------------------------------------------------------------------------

_ALPHABET = [
    "New", "York", "AI", "SAID", "lstm", "LSTM", "U.S", ".", ",", "(", ")", "-", "C++",
    "Zürich", "straße", "東京", "都", "서울", "😀", "e\u0301", "brontë", "bront", "  ", "\n", "_",
]  # fmt: skip


def test_every_span_matches_its_text_random() -> None:
    rng = random.Random(20240501)
    for _ in range(300):
        pieces = [rng.choice(_ALPHABET) for _ in range(rng.randint(0, 25))]
        text = "".join(p + rng.choice(["", " ", " ", "  "]) for p in pieces)
        mentions = []
        for _ in range(rng.randint(1, 5)):
            if text and rng.random() < 0.5:
                a = rng.randrange(len(text))
                b = rng.randint(a, min(len(text), a + 20))
                mentions.append(text[a:b])
            else:
                mentions.append(" ".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 4))))
        for mode in ("flat", "nested"):
            results = ground_mentions(text, mentions, mode=mode)
            assert [r.mention for r in results] == list(dict.fromkeys(mentions))
            kept: list[Span] = []
            for r in results:
                if r.tier is None:
                    assert not r.spans
                assert r.subsumed == (mode == "flat" and r.tier is not None and not r.spans)
                for s in r.spans:
                    assert text[s.start : s.end] == s.text
                    assert 0 <= s.start < s.end <= len(text)
                starts = [s.start for s in r.spans]
                assert starts == sorted(starts)
                kept.extend(r.spans)
            if mode == "flat":
                for i, x in enumerate(kept):
                    for y in kept[i + 1 :]:
                        assert not x.overlaps(y)
        for mention in mentions:
            spans, tier = find_occurrences(text, mention)
            assert (tier is None) == (not spans)
            for s in spans:
                assert text[s.start : s.end] == s.text


def test_exact_substring_mentions_are_always_found() -> None:
    rng = random.Random(99)
    for _ in range(200):
        vocab = ["alpha", "beta", "Gamma", "δέλτα", "東京", "😀", "x1"]
        words = [rng.choice(vocab) for _ in range(8)]
        text = " ".join(words)
        a = rng.randrange(len(words))
        b = rng.randint(a + 1, len(words))
        mention = " ".join(words[a:b])
        spans, tier = find_occurrences(text, mention)
        assert tier == "exact"
        start = len(" ".join(words[:a])) + (1 if a else 0)
        occurrence = Span.of(text, start, start + len(mention))
        # Occurrences are non-overlapping, leftmost first: this one is found or overlapped.
        assert all(s.text == mention for s in spans)
        assert any(s.overlaps(occurrence) for s in spans)
