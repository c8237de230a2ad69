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
# exact tier
# ---------------------------------------------------------------------------------------------


def test_exact_finds_every_occurrence() -> None:
    text = "Paris is big . I love Paris , and Paris loves me ."
    spans, tier = find_occurrences(text, "Paris")
    assert tier == "exact"
    assert offsets(spans) == [(0, 5), (22, 27), (34, 39)]
    assert all(text[s.start : s.end] == "Paris" for s in spans)


def test_exact_respects_word_boundaries() -> None:
    text = "He SAID that AI matters ; AIR is not AI ."
    spans, tier = find_occurrences(text, "AI")
    assert tier == "exact"
    assert offsets(spans) == [(13, 15), (37, 39)]


def test_exact_mention_only_inside_words_is_not_found() -> None:
    spans, tier = find_occurrences("He SAID so and the AIR was cold", "AI")
    assert spans == []
    assert tier is None


def test_exact_punctuation_edges_need_no_boundary() -> None:
    text = "C++ is fast , unlike AC++ ; (C++) too"
    spans, tier = find_occurrences(text, "C++")
    assert tier == "exact"
    # "AC++" starts inside a word; "(C++)" is fine because "+" and "(" are not alphanumeric.
    assert offsets(spans) == [(0, 3), (29, 32)]


def test_exact_non_ascii_letters_are_word_characters() -> None:
    text = "Zürich and Zürichsee , not XZürich ; Zürich again"
    spans, tier = find_occurrences(text, "Zürich")
    assert tier == "exact"
    assert offsets(spans) == [(0, 6), (37, 43)]


def test_exact_combining_mark_is_part_of_the_word() -> None:
    text = "cafe\u0301 and cafe"  # NFD "café" then a plain "cafe"
    spans, tier = find_occurrences(text, "cafe")
    assert tier == "exact"
    assert offsets(spans) == [(10, 14)]


def test_exact_cjk_needs_no_boundary() -> None:
    text = "我住在東京都。東京は大きい"
    spans, tier = find_occurrences(text, "東京")
    assert tier == "exact"
    assert offsets(spans) == [(3, 5), (7, 9)]
    assert texts(spans) == ["東京", "東京"]


def test_exact_latin_mention_next_to_cjk_needs_no_boundary() -> None:
    text = "我喜欢Python和AI研究"
    spans, tier = find_occurrences(text, "Python")
    assert tier == "exact"
    assert offsets(spans) == [(3, 9)]
    spans, tier = find_occurrences(text, "AI")
    assert tier == "exact"
    assert offsets(spans) == [(10, 12)]


def test_exact_hangul_and_kana_need_no_boundary() -> None:
    spans, tier = find_occurrences("서울에서 만나요", "서울")
    assert (offsets(spans), tier) == ([(0, 2)], "exact")
    spans, tier = find_occurrences("トヨタ自動車の社長", "トヨタ")
    assert (offsets(spans), tier) == ([(0, 3)], "exact")


def test_exact_occurrences_do_not_overlap() -> None:
    spans, tier = find_occurrences("wet wet wet that remained", "wet wet")
    assert tier == "exact"
    assert offsets(spans) == [(0, 7)]


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
# normalized tier
# ---------------------------------------------------------------------------------------------


def test_normalized_is_case_insensitive() -> None:
    text = "we use a ( LSTM ) model ; LSTM is old"
    spans, tier = find_occurrences(text, "lstm")
    assert tier == "normalized"
    assert texts(spans) == ["LSTM", "LSTM"]
    assert offsets(spans) == [(11, 15), (26, 30)]


def test_exact_wins_over_normalized() -> None:
    text = "LSTM and lstm"
    spans, tier = find_occurrences(text, "lstm")
    assert tier == "exact"
    assert offsets(spans) == [(9, 13)]


def test_normalized_crossner_tokenised_text() -> None:
    text = "The U.S . Army used Long Short-Term Memory ( LSTM ) networks ."
    spans, tier = find_occurrences(text, "U.S.")
    assert tier == "normalized"
    assert texts(spans) == ["U.S ."]
    assert offsets(spans) == [(4, 9)]

    spans, tier = find_occurrences(text, "long short-term memory (LSTM)")
    assert tier == "normalized"
    assert texts(spans) == ["Long Short-Term Memory ( LSTM )"]

    spans, tier = find_occurrences(text, "(LSTM)")
    assert tier == "normalized"
    assert texts(spans) == ["( LSTM )"]


def test_normalized_collapses_whitespace() -> None:
    text = "She moved to New York last year ."
    spans, tier = find_occurrences(text, "New  York")
    assert tier == "normalized"
    assert offsets(spans) == [(13, 21)]
    assert spans[0].text == "New York"

    spans, tier = find_occurrences("She moved to New\n  York .", "new york")
    assert tier == "normalized"
    assert texts(spans) == ["New\n  York"]


def test_normalized_respects_word_boundaries() -> None:
    spans, tier = find_occurrences("the SAID clause", "ai")
    assert (spans, tier) == ([], None)


def test_normalized_cjk_tokenised_text() -> None:
    spans, tier = find_occurrences("我 住 在 東京 都 。", "東京都")
    assert tier == "normalized"
    assert texts(spans) == ["東京 都"]


# ---------------------------------------------------------------------------------------------
# fuzzy tier
# ---------------------------------------------------------------------------------------------


def test_fuzzy_matches_slightly_wrong_mention() -> None:
    text = "They trained a long short-term memory network on it ."
    spans, tier = find_occurrences(text, "long short term memory")
    assert tier == "fuzzy"
    assert texts(spans) == ["long short-term memory"]
    assert offsets(spans) == [(15, 37)]


def test_fuzzy_rejects_unrelated_mention() -> None:
    text = "They trained a long short-term memory network on it ."
    assert find_occurrences(text, "convolutional neural network") == ([], None)
    assert find_occurrences(text, "recurrent memory cells") == ([], None)


def test_fuzzy_tolerates_omitted_word() -> None:
    text = "She studied at the University of California , Berkeley ."
    spans, tier = find_occurrences(text, "University of California Berkeley")
    assert tier == "fuzzy"
    assert texts(spans) == ["University of California , Berkeley"]


def test_fuzzy_back_tokenization_dropped_character() -> None:
    # GNER case study: the model writes "bront" for "brontë" (missing from its vocabulary).
    text = "four more children followed : charlotte brontë , ( 1816-1855 ) , emily brontë ."
    spans, tier = find_occurrences(text, "charlotte bront")
    assert tier == "fuzzy"
    assert texts(spans) == ["charlotte brontë"]
    spans, tier = find_occurrences(text, "bront")
    assert tier == "fuzzy"
    assert texts(spans) == ["brontë", "brontë"]


def test_fuzzy_accent_folding_and_typo_in_text() -> None:
    spans, tier = find_occurrences("He lives in Zürich now", "Zurich")
    assert (texts(spans), tier) == (["Zürich"], "fuzzy")
    spans, tier = find_occurrences("five star restaurants in manattan", "manhattan")
    assert (texts(spans), tier) == (["manattan"], "fuzzy")


def test_fuzzy_nfd_text_spans_include_combining_marks() -> None:
    text = unicodedata.normalize("NFD", "the café is open")
    spans, tier = find_occurrences(text, "café")
    assert tier == "fuzzy"
    assert spans[0].text == unicodedata.normalize("NFD", "café")
    spans[0].check(text)


def test_fuzzy_numbers_and_short_words_must_be_equal() -> None:
    assert find_occurrences("born in 1816 .", "18160") == ([], None)
    assert find_occurrences("a cat sat", "cats") == ([], None)


def test_fuzzy_finds_every_best_window() -> None:
    text = "long short-term memory helps ; long short-term memory again ."
    spans, tier = find_occurrences(text, "long short term memory")
    assert tier == "fuzzy"
    assert offsets(spans) == [(0, 22), (31, 53)]


def test_fuzzy_threshold_controls_acceptance() -> None:
    text = "the New York Stock Exchange opened"
    mention = "New York Stock Market"  # 3 of 4 words match: score 0.75
    assert find_occurrences(text, mention) == ([], None)
    spans, tier = find_occurrences(text, mention, fuzzy_threshold=0.75)
    assert tier == "fuzzy"
    assert texts(spans) == ["New York Stock Exchange"]


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


def test_fuzzy_edge_substitution_is_covered_but_not_punctuation() -> None:
    spans, tier = find_occurrences(
        "the New York Stock Exchange opened", "New York Stock Market", fuzzy_threshold=0.75
    )
    assert (texts(spans), tier) == (["New York Stock Exchange"], "fuzzy")
    spans, tier = find_occurrences(
        "the Chicago Stock Exchange opened", "Boston Stock Exchange", fuzzy_threshold=0.6
    )
    assert (texts(spans), tier) == (["Chicago Stock Exchange"], "fuzzy")
    # Unmatched words are not taken as substitutes when they are punctuation.
    spans, tier = find_occurrences("he flew to New York .", "New York City", fuzzy_threshold=0.6)
    assert (texts(spans), tier) == (["New York"], "fuzzy")


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
