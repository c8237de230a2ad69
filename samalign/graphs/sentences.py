r"""Rule-based sentence splitting with exact character offsets.

The long-document graph splits a document into sentences and fans them out to the extraction
pipeline. :func:`iter_sentences` does the split without any dependency: a handful of documented
rules over one regular-expression scan of the text. It is a generator, so a document of any
size (1 MB and more) is processed with bounded memory, and each yielded span's ``end`` divided
by ``len(text)`` is the fraction of the document processed so far (a progress signal).

Offsets:
    Every sentence is a :class:`~samalign.types.Span` whose ``start`` and ``end`` are Python
    ``str`` indices (code points, ``end`` exclusive) into the input, so
    ``text[span.start:span.end] == span.text`` holds for every script. Spans come in document
    order, never overlap, never start or end with whitespace (``str.isspace``), and together
    cover every non-whitespace character of the input exactly once: only whitespace between
    sentences is dropped. Whitespace-only text yields no sentence.

Where a sentence ends:
    * **Paragraph breaks** always end a sentence: two or more newlines separated only by
      whitespace (a blank line, ``\r\n\r\n`` included) or a paragraph separator (U+2029).
      A single newline does not (hard-wrapped text stays intact).
    * **Terminators** ``.`` ``!`` ``?`` ``…`` and runs of them (``?!``, ``...``, ``!!``), plus
      ``‼ ⁇ ⁈ ⁉``, the Devanagari danda ``।`` and double danda ``॥``, the Arabic question mark
      ``؟``, the Urdu full stop ``۔``, the Greek question mark ``;`` (U+037E; the ASCII
      semicolon is never a terminator), the Armenian full stop ``։`` and the Ethiopic full stop
      ``።`` and question mark ``፧``. The run may be followed by closing quotes or brackets
      (``" ' ” ’ » « › ‹ ) ] }`` and the CJK ones; a French ``»`` after a space too, when
      whitespace follows it), which stay with the sentence. The sentence
      ends there only when whitespace follows and the next non-whitespace character is a
      plausible sentence start: an uppercase or titlecase letter, a letter of a script without
      case (CJK, kana, Hangul, Arabic, Hebrew, Devanagari, Ethiopic, Thai, …), a decimal digit,
      an opening or quotation punctuation mark, or ``¿ ¡``. So ``"and so on... but"`` (an
      ellipsis before a lowercase word) or ``"approx. five"`` do not split, and neither does a
      period before a lowercase letter of a cased script (Latin, Greek, Cyrillic, Armenian).
    * **Full-width terminators** ``。 ！ ？ ｡`` (CJK) and the Khmer ``។`` and Myanmar ``။`` end
      a sentence even without whitespace after them, since these scripts do not put spaces
      between sentences. When they are followed by closing quotes or brackets (``。」``,
      ``。”``), the sentence ends after the closers only if whitespace, an opening quote or
      bracket or the end of the text follows; otherwise the quotation is embedded in a longer
      sentence (``「行こう。」と言った。`` is one sentence).

Where a sentence does not end (a single period followed by whitespace and a capital):
    * **Numbers** are never split: a period inside ``3.14``, ``1.000.000``, ``v2.0``,
      ``example.com`` or ``file.txt`` is not followed by whitespace.
    * **Abbreviations** from :data:`DEFAULT_ABBREVIATIONS` (``Mr. Mrs. Dr. Prof. St. vs. etc.
      e.g. i.e. Inc. Ltd. Co. Corp. Jan.`` … ``Dec. Fig. Eq. al. Ph.D.`` and more, compared
      case-insensitively, without the final period; pass ``abbreviations=`` to replace the
      list). The abbreviations in :data:`NUMBER_ABBREVIATIONS` (``No. Nr. Vol. pp. Sec. Art.
      Ch.`` …) only hold the sentence together before a digit (``No. 5``), so ``"He said no.
      Then"`` still splits; they apply whatever ``abbreviations`` is.
    * **Initials and initialisms**: a single letter (``J. R. R. Tolkien``, ``George W. Bush``)
      or single letters separated by periods (``U.S.``, ``U.K.``, ``a.m.``, ``p.m.``,
      ``z.B.``, ``т.е.``), in any script.
    * **Enumeration markers**: a number of one to three digits (also ``2.1``) or a Roman numeral
      that starts a line, follows a colon or starts the current sentence (``1. Introduction``,
      ``Steps: 1. Mix``, ``IV. Results``).
    * The abbreviation, initial and enumeration rules apply only to a single period directly
      after the word; a closing quote or bracket after the period (``"... Inc." He``) ends the
      sentence.

    An initialism or abbreviation followed by a capitalised word is ambiguous (``the U.S.
    Army`` versus ``in the U.S. The next day``). We never split there: for extraction, a merged
    sentence is harmless, while a wrong split would cut an entity in two. The same holds for
    ``vitamin C. The`` or ``Smith et al. The``.

Long sentences:
    A sentence longer than ``max_chars`` code points (a table, a list or a text without
    punctuation) is cut into pieces of at most ``max_chars`` characters so that downstream
    prompts stay bounded. Each cut is at the last whitespace within the limit; only a piece
    without any whitespace is cut inside a word, and then not before a combining mark, a
    variation selector or inside a zero-width-joiner emoji sequence when that can be avoided.

Known limitations:
    Rules, not a model: sentence ends without a terminator (headings followed by a single
    newline, lists) merge with the next sentence; a sentence starting with a lowercase word
    (``iPhone``) or a symbol or emoji merges with the previous one; a terminator without
    following whitespace (``end.Next``, ASCII ``?`` in Chinese text) does not split; Thai and
    other scripts that mark sentence ends only with spaces are split by paragraphs and
    ``max_chars`` only.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

from samalign.errors import ConfigError, InputError
from samalign.types import Span

__all__ = [
    "DEFAULT_ABBREVIATIONS",
    "DEFAULT_MAX_CHARS",
    "NUMBER_ABBREVIATIONS",
    "iter_sentences",
    "split_sentences",
]

DEFAULT_MAX_CHARS = 2000
"""Default upper bound on the length of one sentence, in code points."""

# fmt: off
DEFAULT_ABBREVIATIONS: frozenset[str] = frozenset(
    {
        # titles and names
        "mr", "mrs", "ms", "messrs", "dr", "drs", "prof", "profs", "sr", "jr", "st", "mt",
        "rev", "hon", "gen", "col", "capt", "cmdr", "lt", "sgt", "maj", "gov", "sen", "rep",
        "pres", "supt", "mme", "mlle", "mmes", "sra", "srta", "dra", "ud", "uds",
        # Latin and common prose
        "vs", "etc", "cf", "viz", "approx", "ca", "al", "ibid", "resp", "incl", "esp",
        "e.g", "i.e", "ph.d", "p.ex", "p.ej", "ff",
        # organisations and places
        "inc", "ltd", "co", "corp", "bros", "dept", "univ", "assn", "est", "ave", "blvd",
        # months (May is never abbreviated)
        "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
        # references in scientific text
        "fig", "figs", "eq", "eqs", "ed", "eds", "et",
        # German
        "bzw", "ggf", "usw", "vgl", "evtl", "inkl", "sog",
    }
)
# fmt: on
"""Words that a period does not end (lowercase, without the final period)."""

NUMBER_ABBREVIATIONS: frozenset[str] = frozenset(
    {"no", "nos", "nr", "art", "sec", "ch", "ref", "refs", "tab", "para", "vol", "vols", "pp"}
)
"""Abbreviations that hold a sentence together only before a digit (``No. 5``)."""

_TERMINATORS = ".!?\u2026\u203c\u2047\u2048\u2049\u0964\u0965\u061f\u06d4\u037e\u0589\u1362\u1367"
_FULL_WIDTH_TERMINATORS = "\u3002\uff01\uff1f\uff61\u17d4\u104b"
_CLOSERS = (
    "\"'\u201d\u2019\u00bb\u00ab\u203a\u2039)]}"
    "\u300d\u300f\uff09\u3011\u3015\u3009\u300b\u3019\u3017\u301b\uff63\uff3d\uff5d"
)
_OPENERS = (
    "\"'\u201c\u2018\u201e\u201a\u00ab\u00bb\u2039\u203a([{\u00bf\u00a1"
    "\u300c\u300e\uff08\u3010\u3014\u3008\u300a\u3018\u3016\u301a\uff62\uff3b\uff5b"
)
_SENTENCE_START_CATEGORIES = frozenset({"Lu", "Lt", "Lo", "Nd", "Ps", "Pi", "Pf"})
_JOINERS = frozenset({"\u200d", "\ufe0e", "\ufe0f"})
_MAX_TOKEN = 64
_MAX_CLUSTER_BACKOFF = 16


def _char_class(chars: str) -> str:
    return "".join(re.escape(c) for c in chars)


_T = _char_class(_TERMINATORS)
_F = _char_class(_FULL_WIDTH_TERMINATORS)
_C = _char_class(_CLOSERS)

# One scan finds every candidate boundary. The look-behinds make each terminator run match only
# from its first character and the possessive quantifiers never backtrack, so the scan is
# linear even on pathological input (a megabyte of periods).
_BOUNDARY = re.compile(
    r"(?P<para>\n[^\S\n]*\n|\u2029)"
    rf"|(?<![{_T}])(?P<term>[{_T}]++)"
    rf"(?P<close>[{_C}]*+(?:[ \u00a0\u202f\u2009]++[»›](?=\s))?)(?=\s)"
    rf"|(?<![{_F}])(?P<full>[{_F}]++)(?P<fclose>[{_C}]*+)"
)
_NON_WS = re.compile(r"\S")
_WS = re.compile(r"\s")
_INITIALISM = re.compile(r"(?:[^\W\d_]\.)*[^\W\d_]")
_ENUMERATION = re.compile(r"\d{1,3}(?:\.\d{1,3})*|[IVXLC]{1,6}|[ivxlc]{1,6}")


def iter_sentences(
    text: str,
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    abbreviations: frozenset[str] | None = None,
) -> Iterator[Span]:
    """Split ``text`` into sentences, lazily, with exact offsets.

    The rules are documented in this module's docstring. The returned generator scans the text
    as it is consumed and keeps no copy of it, so memory stays bounded by ``max_chars``;
    ``span.end / len(text)`` tells how far it has got.

    Args:
        text: The document.
        max_chars: Longest sentence to yield, in code points; longer ones are cut at whitespace.
        abbreviations: Words a period does not end, compared case-insensitively, with or
            without their final period (``"Dr"``, ``"e.g."``). ``None`` uses
            :data:`DEFAULT_ABBREVIATIONS`; pass ``DEFAULT_ABBREVIATIONS | {...}`` to extend it.

    Returns:
        A generator of the sentence spans, in document order.

    Raises:
        InputError: If ``text`` is not a string.
        ConfigError: If ``max_chars`` is not a positive integer.
    """
    if not isinstance(text, str):
        raise InputError(f"sentence splitting needs a str, got {type(text).__name__}")
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise ConfigError(f"max_chars must be a positive integer, got {max_chars!r}")
    if abbreviations is None:
        known = DEFAULT_ABBREVIATIONS
    else:
        known = frozenset(a.strip().rstrip(".").lower() for a in abbreviations)
    return _generate(text, max_chars, known)


def split_sentences(
    text: str,
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    abbreviations: frozenset[str] | None = None,
) -> list[Span]:
    """Split ``text`` into a list of sentence spans (see :func:`iter_sentences`).

    Args:
        text: The document.
        max_chars: Longest sentence to return, in code points.
        abbreviations: Words a period does not end (``None``: :data:`DEFAULT_ABBREVIATIONS`).

    Returns:
        The sentence spans, in document order.

    Raises:
        InputError: If ``text`` is not a string.
        ConfigError: If ``max_chars`` is not a positive integer.
    """
    return list(iter_sentences(text, max_chars=max_chars, abbreviations=abbreviations))


def _generate(text: str, max_chars: int, abbreviations: frozenset[str]) -> Iterator[Span]:
    start = 0
    for match in _BOUNDARY.finditer(text):
        if match.group("para") is not None:
            yield from _emit(text, start, match.start(), max_chars)
            start = match.end()
        elif match.group("term") is not None:
            if _ends_sentence(text, match, start, abbreviations):
                yield from _emit(text, start, match.end(), max_chars)
                start = match.end()
        elif _full_width_ends_sentence(text, match):
            yield from _emit(text, start, match.end(), max_chars)
            start = match.end()
    yield from _emit(text, start, len(text), max_chars)


def _ends_sentence(
    text: str, match: re.Match[str], sentence_start: int, abbreviations: frozenset[str]
) -> bool:
    following = _NON_WS.search(text, match.end())
    if following is None:
        return False  # only whitespace is left: the last sentence ends anyway
    next_char = following.group()
    if not _can_start_sentence(next_char):
        return False
    if match.group("term") != "." or match.group("close"):
        return True
    return not _period_is_inner(text, match.start(), sentence_start, next_char, abbreviations)


def _period_is_inner(
    text: str, period: int, sentence_start: int, next_char: str, abbreviations: frozenset[str]
) -> bool:
    """Whether the word before a single period makes the period sentence-internal."""
    lowest = max(0, period - _MAX_TOKEN)
    begin = period
    while begin > lowest and not text[begin - 1].isspace():
        begin -= 1
    if begin == lowest and begin > 0 and not text[begin - 1].isspace():
        return False  # a very long "word" (a URL, a path): not an abbreviation
    raw = text[begin:period]
    token = raw.lstrip(_OPENERS)
    if not token:
        return False
    lowered = token.lower()
    if lowered in abbreviations or _INITIALISM.fullmatch(token):
        return True
    if lowered in NUMBER_ABBREVIATIONS:
        return next_char.isdecimal()
    if _ENUMERATION.fullmatch(raw):
        return _starts_item(text, begin, sentence_start)
    return False


def _starts_item(text: str, begin: int, sentence_start: int) -> bool:
    """Whether the word at ``begin`` starts a line, follows a colon or starts the sentence."""
    if _NON_WS.search(text, sentence_start, begin) is None:
        return True
    before = begin
    while before > 0 and text[before - 1] in " \t":
        before -= 1
    return before == 0 or text[before - 1] in "\n\r:\u2028\u2029"


def _can_start_sentence(char: str) -> bool:
    return char in "\"'\u00bf\u00a1" or unicodedata.category(char) in _SENTENCE_START_CATEGORIES


def _full_width_ends_sentence(text: str, match: re.Match[str]) -> bool:
    if not match.group("fclose"):
        return True
    end = match.end()
    if end == len(text):
        return True
    following = text[end]
    return following.isspace() or following in _OPENERS or following in _FULL_WIDTH_TERMINATORS


def _emit(text: str, start: int, end: int, max_chars: int) -> Iterator[Span]:
    """Yield ``text[start:end]`` trimmed of whitespace, in pieces of at most ``max_chars``."""
    first = _NON_WS.search(text, start, end)
    if first is None:
        return
    begin = first.start()
    while text[end - 1].isspace():
        end -= 1
    while end - begin > max_chars:
        limit = begin + max_chars  # < end, so text[limit] exists
        window = text[begin + 1 : limit + 1]
        space = _WS.search(window[::-1])
        if space is None:
            cut = _hard_cut(text, begin, limit)
            yield Span(start=begin, end=cut, text=text[begin:cut])
            begin = cut
            continue
        gap = limit - space.start()  # the last whitespace in (begin, limit]
        piece_end = gap
        while text[piece_end - 1].isspace():
            piece_end -= 1
        yield Span(start=begin, end=piece_end, text=text[begin:piece_end])
        resume = _NON_WS.search(text, gap, end)
        assert resume is not None  # text[end - 1] is not whitespace
        begin = resume.start()
    yield Span(start=begin, end=end, text=text[begin:end])


def _hard_cut(text: str, begin: int, limit: int) -> int:
    """Cut a run without whitespace at ``limit``, moved back out of a grapheme if possible."""
    cut = limit
    while cut > begin + 1 and limit - cut < _MAX_CLUSTER_BACKOFF and _continues(text, cut):
        cut -= 1
    return limit if _continues(text, cut) else cut


def _continues(text: str, index: int) -> bool:
    """Whether ``text[index]`` belongs to the same grapheme as the character before it."""
    char = text[index]
    return (
        char in _JOINERS
        or text[index - 1] == "\u200d"
        or unicodedata.category(char) in ("Mn", "Mc", "Me")
        or "\U0001f3fb" <= char <= "\U0001f3ff"  # emoji skin tone modifiers
    )
