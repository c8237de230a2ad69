"""The rule-based sentence splitter: rules, exact offsets, max_chars, laziness, 1 MB documents."""

from __future__ import annotations

import inspect
import unicodedata
from pathlib import Path
from typing import SupportsIndex

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samalign.errors import ConfigError, InputError, SamalignError
from samalign.graphs.sentences import (
    DEFAULT_ABBREVIATIONS,
    DEFAULT_MAX_CHARS,
    iter_sentences,
    split_sentences,
)
from samalign.types import Span


def sentences(text: str, **kwargs: object) -> list[str]:
    return [span.text for span in split_sentences(text, **kwargs)]  # type: ignore[arg-type]


def assert_valid(text: str, spans: list[Span], max_chars: int = DEFAULT_MAX_CHARS) -> None:
    """The splitter's contract: exact, ordered, trimmed, bounded, nothing lost."""
    covered = [0] * len(text)
    previous_end = 0
    for span in spans:
        assert text[span.start : span.end] == span.text
        assert span.start >= previous_end, "spans must be increasing and non-overlapping"
        assert not span.text[0].isspace() and not span.text[-1].isspace()
        assert len(span.text) <= max_chars
        previous_end = span.end
        for index in range(span.start, span.end):
            covered[index] += 1
    for index, char in enumerate(text):
        if not char.isspace():
            assert covered[index] == 1, f"character {index} {char!r} is not covered exactly once"


# ---------------------------------------------------------------------------------------------
# splits by example: English rules, quotes and brackets, other languages
# ---------------------------------------------------------------------------------------------


SPLITS = [
    # English rules
    pytest.param(
        "It rains. Does it? Yes! It does.",
        ["It rains.", "Does it?", "Yes!", "It does."],
        id="basic_terminators",
    ),
    pytest.param(
        "  no punctuation at all  ",
        ["no punctuation at all"],
        id="text_without_terminator_is_one_sentence",
    ),
    pytest.param(
        "Really?! Yes!!! Hmm... Ok… Fine?? Sure.",
        ["Really?!", "Yes!!!", "Hmm...", "Ok…", "Fine??", "Sure."],
        id="runs_of_terminators",
    ),
    pytest.param(
        "We waited... and waited… and then it came. ok fine.",
        ["We waited... and waited… and then it came. ok fine."],
        id="lowercase_after_terminator_does_not_split",
    ),
    pytest.param(
        "I met DR. Who and MR. Bean.",
        ["I met DR. Who and MR. Bean."],
        id="abbreviation_matching_ignores_case",
    ),
    pytest.param(
        "Item No. 5 sold. He said no. Then he left. See Vol. 2 and pp. 10-12.",
        ["Item No. 5 sold.", "He said no.", "Then he left.", "See Vol. 2 and pp. 10-12."],
        id="number_abbreviations_hold_only_before_digits",
    ),
    pytest.param(
        "Go to example.com. Then sign in.",
        ["Go to example.com.", "Then sign in."],
        id="period_after_url_at_sentence_end_splits",
    ),
    pytest.param(
        "He was born in 1990. 2020 was a hard year.",
        ["He was born in 1990.", "2020 was a hard year."],
        id="digits_start_sentences",
    ),
    pytest.param(
        "1. Introduction\n2. Methods used here. Results follow.\nSteps: 1. Mix. 2. Bake.\nIV. End",
        [
            "1. Introduction\n2. Methods used here.",
            "Results follow.",
            "Steps: 1. Mix.",
            "2. Bake.",
            "IV. End",
        ],
        id="enumeration_markers",
    ),
    pytest.param(
        "The team scored 42. Then it lost.",
        ["The team scored 42.", "Then it lost."],
        id="score_in_mid_sentence_still_splits",
    ),
    # quotes, brackets, paragraphs
    pytest.param(
        'He said "Stop." Then he left. (It was late.) She wrote ‘Fine!’ And «Oui.» Ok.',
        [
            'He said "Stop."',
            "Then he left.",
            "(It was late.)",
            "She wrote ‘Fine!’",
            "And «Oui.»",
            "Ok.",
        ],
        id="closing_quotes_and_brackets_stay_with_the_sentence",
    ),
    pytest.param(
        'He works at "Acme Inc." He likes it.',
        ['He works at "Acme Inc."', "He likes it."],
        id="closing_quote_after_abbreviation_ends_the_sentence",
    ),
    pytest.param(
        'It ended. "Why?" she asked. “Because.” (See above.)',
        ["It ended.", '"Why?" she asked.', "“Because.”", "(See above.)"],
        id="opening_quote_starts_a_sentence",
    ),
    pytest.param(
        "Title without period\n\nfirst paragraph, lowercase\r\n\r\nDr.\n \t\nSmith\u2029next",
        ["Title without period", "first paragraph, lowercase", "Dr.", "Smith", "next"],
        id="paragraph_breaks_always_split",
    ),
    pytest.param(
        "A hard-wrapped\nline of text. And\nanother one.",
        ["A hard-wrapped\nline of text.", "And\nanother one."],
        id="single_newline_does_not_split",
    ),
    # other languages and scripts
    pytest.param(
        "今天天气很好。我们去公园吧！你来吗？好的｡",
        ["今天天气很好。", "我们去公园吧！", "你来吗？", "好的｡"],
        id="chinese_and_japanese_full_width_terminators",
    ),
    pytest.param(
        "「行こう。」と彼は言った。「はい。」「いいえ。」",
        ["「行こう。」と彼は言った。", "「はい。」", "「いいえ。」"],
        id="cjk_quotes_after_terminator-1",
    ),
    pytest.param(
        "他说：“好。”然后走了。他走了。”",
        ["他说：“好。”然后走了。", "他走了。”"],
        id="cjk_quotes_after_terminator-2",
    ),
    pytest.param(
        "यह एक वाक्य है। यह दूसरा वाक्य है॥ तीसरा।",
        ["यह एक वाक्य है।", "यह दूसरा वाक्य है॥", "तीसरा।"],
        id="hindi_danda",
    ),
    pytest.param(
        "هل أنت بخير؟ نعم، أنا بخير. شكرا!",
        ["هل أنت بخير؟", "نعم، أنا بخير.", "شكرا!"],
        id="arabic_and_urdu-1",
    ),
    pytest.param(
        "یہ پہلا جملہ ہے۔ یہ دوسرا ہے۔",
        ["یہ پہلا جملہ ہے۔", "یہ دوسرا ہے۔"],
        id="arabic_and_urdu-2",
    ),
    pytest.param(
        "Τι κάνεις\u037e Καλά. ευχαριστώ.",
        ["Τι κάνεις\u037e", "Καλά. ευχαριστώ."],
        id="greek_armenian_ethiopic-1",
    ),
    pytest.param(
        "Ես եմ։ Դու ես։",
        ["Ես եմ։", "Դու ես։"],
        id="greek_armenian_ethiopic-2",
    ),
    pytest.param(
        "ሰላም ነው። እንዴት ነህ፧ ደህና።",
        ["ሰላም ነው።", "እንዴት ነህ፧", "ደህና።"],
        id="greek_armenian_ethiopic-3",
    ),
    pytest.param(
        "First part; Second part.",
        ["First part; Second part."],
        id="ascii_semicolon_is_not_a_terminator",
    ),
    pytest.param(
        "¿Cómo estás? ¡Muy bien! Gracias, Sr. García.",
        ["¿Cómo estás?", "¡Muy bien!", "Gracias, Sr. García."],
        id="spanish_inverted_marks",
    ),
    pytest.param(
        "Das ist z.B. ein Test, d.h. Übung. Die Übung endet bzw. Endet nie.",
        ["Das ist z.B. ein Test, d.h. Übung.", "Die Übung endet bzw. Endet nie."],
        id="german_and_french-1",
    ),
    pytest.param(
        "Il a dit : « Bonjour. » Ensuite, M. Dupont est parti. Élise aussi.",
        ["Il a dit : « Bonjour. »", "Ensuite, M. Dupont est parti.", "Élise aussi."],
        id="german_and_french-2",
    ),
    pytest.param(
        "Il a dit : « Oui ! » Puis « Non. »\u00a0Fin ? Oui.",
        ["Il a dit : « Oui ! »", "Puis « Non. »", "Fin ?", "Oui."],
        id="french_spaced_guillemets_and_german_openers-1",
    ),
    pytest.param(
        "Er sagte es. »Hallo«, rief sie. »Komm!« Dann ging sie.",
        ["Er sagte es.", "»Hallo«, rief sie.", "»Komm!«", "Dann ging sie."],
        id="french_spaced_guillemets_and_german_openers-2",
    ),
    pytest.param(
        "Это т.е. пример. Следующее предложение. и это тоже.",
        ["Это т.е. пример.", "Следующее предложение. и это тоже."],
        id="russian",
    ),
]
"""``(text, sentences)``: what the splitter makes of each text."""


@pytest.mark.parametrize(("text", "expected"), SPLITS)
def test_splits(text: str, expected: list[str]) -> None:
    assert sentences(text) == expected


# ---------------------------------------------------------------------------------------------
# English rules: offsets, abbreviations, numbers
# ---------------------------------------------------------------------------------------------


def test_offsets_are_exact_and_trimmed() -> None:
    text = "  First one.   Second one.\n"
    spans = split_sentences(text)
    assert [(s.start, s.end) for s in spans] == [(2, 12), (15, 26)]
    assert_valid(text, spans)


def test_returns_project_spans() -> None:
    spans = split_sentences("One. Two.")
    assert all(isinstance(span, Span) for span in spans)


@pytest.mark.parametrize("text", ["", " ", "\n\n\t  \r\n", "\u3000\xa0\u2029"])
def test_whitespace_only_yields_nothing(text: str) -> None:
    assert split_sentences(text) == []


@pytest.mark.parametrize(
    "text",
    [
        "Mr. Smith met Mrs. Jones and Dr. Brown at St. Paul's.",
        "Prof. Lee and Ms. Park work for Acme Inc. in Berlin.",
        "Apple vs. Samsung is a case, e.g. Patents, i.e. Design.",
        "Apples, pears, etc. Are all fruit here.",
        "Acme Ltd. and Foo Co. and Bar Corp. Merged.",
        "It happened on Jan. 5 and Feb. 7 and Dec. 24 of that year.",
        "See Fig. 3 and Eq. 2 in Smith et al. For details.",
        "She holds a Ph.D. From Oxford.",
        "He arrived at 9 a.m. And left at 5 p.m. Quickly.",
        "The U.S. Army and the U.K. Government agreed.",
        "We saw it in the U.S. The next day we left.",
        "Gen. Patton and Capt. Miller talked.",
    ],
)
def test_abbreviations_do_not_split(text: str) -> None:
    assert sentences(text) == [text]


def test_custom_abbreviations_replace_the_default() -> None:
    assert sentences("I met Dr. Smith. Approx. Ten came.", abbreviations=frozenset({"approx"})) == [
        "I met Dr.",
        "Smith.",
        "Approx. Ten came.",
    ]


def test_custom_abbreviations_can_extend_the_default() -> None:
    extra = DEFAULT_ABBREVIATIONS | frozenset({"Approx.", "Wz"})
    assert sentences("Dr. Smith saw approx. Ten. Wz. Kowalski too.", abbreviations=extra) == [
        "Dr. Smith saw approx. Ten.",
        "Wz. Kowalski too.",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "J. R. R. Tolkien wrote it.",
        "George W. Bush spoke.",
        "A. Einstein and M. Curie met.",
        "Plan B. Was the answer.",
    ],
)
def test_initials_do_not_split(text: str) -> None:
    assert sentences(text) == [text]


@pytest.mark.parametrize(
    "text",
    [
        "Pi is 3.14 and e is 2.718 today.",
        "About 1.000.000 people use v2.0 of it.",
        "Visit www.example.com or https://a.b/c.html?x=1 for more.",
        "Mail john.doe@example.org about report.final.pdf now.",
    ],
)
def test_numbers_urls_emails_and_files_do_not_split(text: str) -> None:
    assert sentences(text) == [text]


# ---------------------------------------------------------------------------------------------
# other languages and scripts
# ---------------------------------------------------------------------------------------------


def test_emoji_and_mixed_scripts() -> None:
    text = "I love Tokyo 🗼! 東京は大きい。Next we go to Delhi. दिल्ली बड़ी है। 👍🏽 Great."
    spans = split_sentences(text)
    assert [s.text for s in spans] == [
        "I love Tokyo 🗼!",
        "東京は大きい。",
        "Next we go to Delhi.",
        "दिल्ली बड़ी है। 👍🏽 Great.",
    ]
    assert_valid(text, spans)


def test_offsets_count_code_points() -> None:
    text = "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🎉. Ünïcödé. 日本。"
    spans = split_sentences(text)
    assert [(s.start, s.end) for s in spans] == [(0, 10), (11, 19), (20, 23)]
    assert_valid(text, spans)


# ---------------------------------------------------------------------------------------------
# max_chars
# ---------------------------------------------------------------------------------------------


def test_long_sentence_is_cut_at_whitespace() -> None:
    text = " ".join(f"word{i}" for i in range(500))
    spans = split_sentences(text, max_chars=50)
    assert len(spans) > 1
    assert_valid(text, spans, max_chars=50)
    words = set(text.split())
    for span in spans:
        assert set(span.text.split()) <= words, "no word may be cut"


def test_cut_keeps_pieces_as_long_as_possible() -> None:
    assert sentences("aaa bbb ccc ddd", max_chars=7) == ["aaa bbb", "ccc ddd"]
    assert sentences("aaa bbb ccc ddd", max_chars=8) == ["aaa bbb", "ccc ddd"]
    assert sentences("aaa bbb ccc ddd", max_chars=11) == ["aaa bbb ccc", "ddd"]


def test_text_without_whitespace_is_cut_hard() -> None:
    assert [len(s) for s in sentences("x" * 120, max_chars=50)] == [50, 50, 20]


def test_hard_cut_avoids_combining_marks_and_emoji_sequences() -> None:
    text = "e\u0301" * 30
    pieces = sentences(text, max_chars=7)
    assert all(not unicodedata.combining(piece[0]) for piece in pieces)
    assert "".join(pieces) == text
    family = "👨\u200d👩\u200d👧" * 10
    pieces = sentences(family, max_chars=7)
    assert all(piece[0] == "👨" for piece in pieces)
    assert "".join(pieces) == family


def test_max_chars_one() -> None:
    text = "ab c. D!"
    spans = split_sentences(text, max_chars=1)
    assert [s.text for s in spans] == ["a", "b", "c", ".", "D", "!"]
    assert_valid(text, spans, max_chars=1)


@pytest.mark.parametrize("bad", [0, -3, True, 2.5, "10"])
def test_invalid_max_chars(bad: object) -> None:
    with pytest.raises(ConfigError):
        iter_sentences("Text.", max_chars=bad)  # type: ignore[arg-type]


def test_invalid_text() -> None:
    with pytest.raises(InputError) as info:
        split_sentences(b"bytes. Not text.")  # type: ignore[arg-type]
    assert isinstance(info.value, SamalignError)


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------

_ALPHABET = (
    "aZ9 .!?…;\n\r\t\xa0\u3000\u2029\u0301\u200d\ufe0f\"'”’»«)(「」。！？।؟\u037e։።¿¡:AbcXyz0日ह😀"
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(alphabet=_ALPHABET, max_size=200), max_chars=st.integers(1, 40))
def test_properties_on_boundary_heavy_text(text: str, max_chars: int) -> None:
    spans = split_sentences(text, max_chars=max_chars)
    assert_valid(text, spans, max_chars)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300), max_chars=st.integers(1, 500))
def test_properties_on_any_text(text: str, max_chars: int) -> None:
    spans = split_sentences(text, max_chars=max_chars)
    assert_valid(text, spans, max_chars)


@settings(max_examples=100, deadline=None)
@given(
    words=st.lists(
        st.sampled_from(
            [
                *("Mr.", "Dr.", "U.S.", "J.", "3.14", "etc.", "No.", "5.", "The", "it.", "Why?"),
                *(
                    "“Hi.”",
                    "ok...",
                    "1.",
                    "\n",
                    "\n\n",
                    "今日。",
                    "है।",
                    "e.g.",
                    "a",
                    "(b.)",
                    "Done!",
                ),
            ]
        ),
        max_size=60,
    )
)
def test_properties_on_word_salad(words: list[str]) -> None:
    text = " ".join(words)
    spans = split_sentences(text)
    assert_valid(text, spans)
    assert spans == list(iter_sentences(text))


# ---------------------------------------------------------------------------------------------
# long documents and laziness
# ---------------------------------------------------------------------------------------------


class _TouchRecorder(str):
    """A str that records the highest index read through ``[]`` (the splitter's own reads)."""

    highest: int = -1

    def __getitem__(self, key: SupportsIndex | slice) -> str:
        if isinstance(key, slice):
            stop = key.stop if key.stop is not None else len(self)
            type(self).highest = max(type(self).highest, stop - 1)
        else:
            type(self).highest = max(type(self).highest, int(key))
        return str.__getitem__(self, key)


def _megabyte(sentence_source: list[str]) -> str:
    base = " ".join(sentence_source)
    repeated = (base + "\n") * (1_000_000 // (len(base) + 1) + 1)
    return repeated[:1_000_000]


def _crossner_sentences(folder: Path) -> list[str]:
    result: list[str] = []
    tokens: list[str] = []
    for line in (folder / "dev.txt").read_text(encoding="utf-8").splitlines():
        if line.strip():
            tokens.append(line.split("\t")[0])
        elif tokens:
            result.append(" ".join(tokens))
            tokens = []
    return result


_GENERATED = [
    "Dr. Ada Lovelace wrote the first algorithm in 1843.",
    "The U.S. Army funded ENIAC, e.g. for ballistics tables.",
    "Was it 3.14 or 2.72?!",
    "Geoffrey E. Hinton et al. Trained networks on ImageNet.",
    "深度学习很流行。",
    "यह एक वाक्य है।",
    "¿Funciona? ¡Sí!",
    "See Fig. 2 (left) for the results…",
]


def test_generated_megabyte_document() -> None:
    text = _megabyte(_GENERATED)
    spans = list(iter_sentences(text))
    assert_valid(text, spans)
    assert len(spans) > 10_000


def test_crossner_megabyte_document(shared_data: Path) -> None:
    folder = shared_data / "crossner" / "ai"
    if not (folder / "dev.txt").is_file():
        pytest.skip(f"CrossNER AI data not found in {folder}")
    text = _megabyte(_crossner_sentences(folder))
    spans = list(iter_sentences(text))
    assert_valid(text, spans)
    assert len(spans) > 1_000


def test_iter_sentences_is_lazy() -> None:
    first = "Dr. Ada Lovelace wrote the first algorithm."
    text = _TouchRecorder(first + " " + _megabyte(_GENERATED))
    _TouchRecorder.highest = -1
    result = iter_sentences(text)
    assert inspect.isgenerator(result)
    assert _TouchRecorder.highest == -1, "nothing is read before iteration starts"
    span = next(result)
    assert span.text == first
    assert (span.start, span.end) == (0, len(first))
    assert _TouchRecorder.highest < 500, "the first sentence must not read the whole document"
    second = next(result)
    assert second.start > span.end
    assert _TouchRecorder.highest < 1_000


def test_progress_can_be_read_from_offsets() -> None:
    text = _megabyte(_GENERATED)
    fractions = [span.end / len(text) for span in iter_sentences(text)]
    assert fractions == sorted(fractions)
    assert 0 < fractions[0] < 0.001
    assert fractions[-1] > 0.999
