"""Ground mention strings emitted by a model to character spans of the source text.

A model answers with mention *strings*; everything downstream needs *spans* (offsets into the
input text). :func:`ground_mentions` maps one to the other with three tiers, tried in order for
each mention; the first tier that finds at least one occurrence wins:

1. ``exact``: every occurrence of the mention string, at token boundaries ("AI" does not match
   inside "SAID"). Scripts written without spaces between words (Chinese, Japanese, Korean,
   Thai, Lao, Khmer, Myanmar) need no boundary.
2. ``normalized``: case- and whitespace-insensitive: the mention's tokens may be separated by any
   (or no) whitespace in the text, so "U.S." finds "U.S ." and "lstm" finds "( LSTM )".
3. ``fuzzy``: word-level Longest Common Subsequence matching after GNER's Hierarchical Matching
   (Ding et al., 2024, section 4.3), restricted to text windows about as long as the mention.

The first two tiers are level (1) of GNER's hierarchy (the prediction equals the text); the
windowed LCS of the third covers levels (2) omission and (3) addition/substitution, and its word
comparison is lenient in the spirit of GNER's *back tokenization* (accents and a dropped or
added letter are tolerated: "bront" matches "brontë", "manhattan" matches "manattan").

Returned spans always hold the *source* characters (``text[span.start:span.end] == span.text``),
whatever the tier.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from samalign.errors import ConfigError
from samalign.types import GroundedMention, MatchTier, Span

GroundingMode = Literal["flat", "nested"]
"""How overlapping spans of different mentions are resolved (see :func:`ground_mentions`)."""

_GROUNDING_MODES: frozenset[str] = frozenset({"flat", "nested"})

# Scripts written without spaces between words: no word boundary is required next to them, and
# each of their characters is a token of its own.
_NO_SPACE_RANGES: tuple[tuple[int, int], ...] = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x2FDF),  # CJK Radicals Supplement, Kangxi Radicals
    (0x3005, 0x3007),  # Ideographic iteration mark, closing mark, number zero
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3100, 0x312F),  # Bopomofo
    (0x3130, 0x318F),  # Hangul Compatibility Jamo
    (0x31A0, 0x31BF),  # Bopomofo Extended
    (0x31F0, 0x31FF),  # Katakana Phonetic Extensions
    (0x3400, 0x4DBF),  # CJK Unified Ideographs Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xA960, 0xA97F),  # Hangul Jamo Extended-A
    (0xAC00, 0xD7FF),  # Hangul Syllables, Hangul Jamo Extended-B
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0xFF66, 0xFFDC),  # Halfwidth Katakana and Hangul
    (0x20000, 0x3134F),  # CJK Unified Ideographs Extensions B-G, Compatibility Supplement
)
_NO_SPACE_RE = re.compile(
    "[" + "".join(f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in _NO_SPACE_RANGES) + "]"
)

_SCORE_EPS = 1e-9
"""Tolerance when comparing fuzzy scores (ratios of small integers)."""

_WINDOW_SLACK = 2
"""Fuzzy windows are between ``len(mention words) - 2`` and ``len(mention words) + 2`` words."""

_LENIENT_MIN_CHARS = 4
"""Words shorter than this must match exactly (after case and accent folding) in the fuzzy tier."""


# --------------------------------------------------------------------------------------------
# Characters and tokens
# --------------------------------------------------------------------------------------------


def _is_no_space(ch: str) -> bool:
    return _NO_SPACE_RE.match(ch) is not None


def _is_word_char(ch: str) -> bool:
    """A character that continues a word: alphanumeric, or a combining mark (e.g. U+0301)."""
    return ch.isalnum() or unicodedata.category(ch).startswith("M")


def _boundary_ok(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` neither starts nor ends inside a word."""
    first, last = text[start], text[end - 1]
    if start > 0 and _is_word_char(first):
        before = text[start - 1]
        if _is_word_char(before) and not (_is_no_space(first) or _is_no_space(before)):
            return False
    if end < len(text) and _is_word_char(last):
        after = text[end]
        if _is_word_char(after) and not (_is_no_space(last) or _is_no_space(after)):
            return False
    return True


def _tokenize(s: str) -> list[tuple[int, int]]:
    r"""Split ``s`` into ``(start, end)`` tokens, like the regex ``\w+|[^\w\s]``.

    Differences from that regex: combining marks stay inside their word, and each character of
    a script written without spaces (CJK, kana, Hangul, Thai, ...) is a token of its own, so
    "東京都" matches "東京 都".
    """
    tokens: list[tuple[int, int]] = []
    i, n = 0, len(s)
    while i < n:
        ch = s[i]
        if ch.isspace():
            i += 1
            continue
        if _is_no_space(ch):
            j = i + 1
            while j < n and not s[j].isspace() and unicodedata.category(s[j]).startswith("M"):
                j += 1
        elif ch == "_" or _is_word_char(ch):
            j = i + 1
            while j < n and (s[j] == "_" or _is_word_char(s[j])) and not _is_no_space(s[j]):
                j += 1
        else:
            j = i + 1
        tokens.append((i, j))
        i = j
    return tokens


def word_spans(text: str) -> list[tuple[int, int]]:
    """Word and punctuation token offsets of ``text`` (each CJK/kana/Hangul char is a token)."""
    return _tokenize(text)


def _fold(word: str) -> str:
    """Case- and accent-insensitive form of a word ("Brontë" -> "bronte")."""
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _is_subsequence(short: str, long: str) -> bool:
    it = iter(long)
    return all(ch in it for ch in short)


def _words_match(a: str, b: str) -> bool:
    """Lenient comparison of two folded words (GNER's back tokenization, approximated).

    Equal words match. Longer alphabetic words also match when one is the other with one
    character dropped (two for words of 12+ characters): a model may drop a character missing
    from its vocabulary ("brontë" -> "bront") or fix a typo in the text ("manattan").
    Numbers and short words must be equal.
    """
    if a == b:
        return True
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    if len(short) < _LENIENT_MIN_CHARS or len(long) - len(short) > 1 + len(long) // 12:
        return False
    if any(ch.isdigit() for ch in long) or not short.isalpha():
        return False
    return _is_subsequence(short, long)


@dataclass(frozen=True, slots=True)
class _TextIndex:
    """The text with its tokens, computed once and shared by every mention of one call."""

    text: str
    tokens: tuple[tuple[int, int], ...]
    folds: tuple[str, ...]
    has_alnum: tuple[bool, ...]

    @classmethod
    def build(cls, text: str) -> _TextIndex:
        tokens = tuple(_tokenize(text))
        words = [text[s:e] for s, e in tokens]
        return cls(
            text=text,
            tokens=tokens,
            folds=tuple(_fold(w) for w in words),
            has_alnum=tuple(any(ch.isalnum() for ch in w) for w in words),
        )


def _lazy_index(text: str) -> Callable[[], _TextIndex]:
    """The text's index, built on first use (only the fuzzy tier needs it)."""
    built: list[_TextIndex] = []

    def get() -> _TextIndex:
        if not built:
            built.append(_TextIndex.build(text))
        return built[0]

    return get


# --------------------------------------------------------------------------------------------
# Tiers
# --------------------------------------------------------------------------------------------


def _exact(text: str, mention: str) -> list[tuple[int, int]]:
    """Non-overlapping occurrences of ``mention`` at token boundaries, leftmost first."""
    found: list[tuple[int, int]] = []
    pos = 0
    while (start := text.find(mention, pos)) != -1:
        end = start + len(mention)
        if _boundary_ok(text, start, end):
            found.append((start, end))
            pos = end
        else:
            pos = start + 1
    return found


def _normalized(text: str, mention: str) -> list[tuple[int, int]]:
    """Case-insensitive occurrences of the mention's tokens separated by optional whitespace."""
    tokens = [mention[s:e] for s, e in _tokenize(mention)]
    if not tokens:
        return []
    pattern = re.compile(r"\s*".join(re.escape(t) for t in tokens), re.IGNORECASE)
    found: list[tuple[int, int]] = []
    pos = 0
    while (match := pattern.search(text, pos)) is not None:
        start, end = match.span()
        if end > start and _boundary_ok(text, start, end):
            found.append((start, end))
            pos = end
        else:
            pos = start + 1
    return found


def _fuzzy(index: _TextIndex, mention: str, threshold: float) -> list[tuple[int, int]]:
    """Best-scoring word windows by word-level LCS (GNER Hierarchical Matching, windowed).

    A window ``W`` of text words scores ``LCS(W, M) / max(len(W), len(M))`` against the
    mention words ``M``. Windows are ``len(M) - 2`` to ``len(M) + 2`` words long, start and
    end on a word that matches some mention word and contain a matching alphanumeric word.
    All non-overlapping windows with the best score, if it reaches ``threshold``, are returned,
    each grown over words substituted at the mention's edges (:func:`_extend_substitutions`).
    """
    mention_folds = [_fold(mention[s:e]) for s, e in _tokenize(mention)]
    m = len(mention_folds)
    n = len(index.tokens)
    if m == 0 or n == 0:
        return []

    # Which mention words each text word matches (computed once per distinct text word).
    cache: dict[str, frozenset[int]] = {}
    matches: list[frozenset[int]] = []
    for word in index.folds:
        hit = cache.get(word)
        if hit is None:
            hit = frozenset(j for j, mw in enumerate(mention_folds) if _words_match(word, mw))
            cache[word] = hit
        matches.append(hit)
    hit_prefix = [0]
    alnum_prefix = [0]
    for k in range(n):
        hit_prefix.append(hit_prefix[-1] + bool(matches[k]))
        alnum_prefix.append(alnum_prefix[-1] + (bool(matches[k]) and index.has_alnum[k]))

    min_len = max(1, m - _WINDOW_SLACK)
    max_len = m + _WINDOW_SLACK
    # (score, lcs, window length, first word); only candidates reaching the threshold.
    candidates: list[tuple[float, int, int, int]] = []
    for i in range(n):
        if not matches[i]:
            continue
        stop = min(n, i + max_len)
        # Upper bound: LCS <= matching words in the longest window, and the denominator >= m.
        if min(hit_prefix[stop] - hit_prefix[i], m) / m + _SCORE_EPS < threshold:
            continue
        row = [0] * (m + 1)  # row[j] = LCS(text words i..k, mention words 0..j-1)
        for k in range(i, stop):
            hit = matches[k]
            if not hit:
                continue  # an unmatched word leaves the LCS row unchanged and cannot end a window
            new = [0] * (m + 1)
            for j in range(m):
                new[j + 1] = row[j] + 1 if j in hit else max(row[j + 1], new[j])
            row = new
            length = k - i + 1
            if length < min_len or alnum_prefix[k + 1] == alnum_prefix[i]:
                continue
            lcs = row[m]
            score = lcs / max(length, m)
            if score + _SCORE_EPS >= threshold:
                candidates.append((score, lcs, length, i))
    if not candidates:
        return []

    best = max(c[0] for c in candidates)
    ranked = sorted(
        (c for c in candidates if c[0] + _SCORE_EPS >= best),
        key=lambda c: (-c[1], abs(c[2] - m), c[3], c[2]),
    )
    chosen: list[tuple[int, int]] = []  # (first word, last word), non-overlapping
    for _, _, length, i in ranked:
        last = i + length - 1
        if all(last < a or i > b for a, b in chosen):
            chosen.append((i, last))
    chosen.sort()
    extended = _extend_substitutions(chosen, matches, index.has_alnum, m)
    return [(index.tokens[a][0], index.tokens[b][1]) for a, b in extended]


def _extend_substitutions(
    windows: list[tuple[int, int]],
    matches: list[frozenset[int]],
    has_alnum: tuple[bool, ...],
    m: int,
) -> list[tuple[int, int]]:
    """Grow windows over words the model substituted at the mention's edges.

    Windows start and end on matching words, so "New York Stock Market" first grounds to
    "New York Stock" in "the New York Stock Exchange". When the mention's last (first) words
    match nothing in the window, the same number of unmatched alphanumeric text words right
    after (before) the window are taken as their substitutes, as long as the window stays no
    longer than the mention (so its score is unchanged) and does not reach another window.
    """
    result: list[tuple[int, int]] = []
    for pos, (first, last) in enumerate(windows):
        used = frozenset().union(*matches[first : last + 1])
        missing_tail = 0
        while missing_tail < m and (m - 1 - missing_tail) not in used:
            missing_tail += 1
        missing_head = 0
        while missing_head < m and missing_head not in used:
            missing_head += 1
        right_limit = windows[pos + 1][0] if pos + 1 < len(windows) else len(matches)
        left_limit = result[-1][1] if result else -1
        for _ in range(missing_tail):
            k = last + 1
            if last - first + 1 >= m or k >= right_limit or matches[k] or not has_alnum[k]:
                break
            last = k
        for _ in range(missing_head):
            k = first - 1
            if last - first + 1 >= m or k <= left_limit or matches[k] or not has_alnum[k]:
                break
            first = k
        result.append((first, last))
    return result


def _check_threshold(fuzzy_threshold: float) -> None:
    if not 0.0 < fuzzy_threshold <= 1.0:
        raise ConfigError(f"fuzzy_threshold must be in (0, 1], got {fuzzy_threshold!r}")


def _find(
    text: str, index: Callable[[], _TextIndex], mention: str, fuzzy_threshold: float
) -> tuple[list[Span], MatchTier | None]:
    needle = mention.strip()
    if not needle or not text:
        return [], None
    offsets = _exact(text, needle)
    tier: MatchTier = "exact"
    if not offsets:
        offsets, tier = _normalized(text, needle), "normalized"
    if not offsets:
        offsets, tier = _fuzzy(index(), needle, fuzzy_threshold), "fuzzy"
    if not offsets:
        return [], None
    return [Span.of(text, s, e) for s, e in offsets], tier


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def find_occurrences(
    text: str, mention: str, *, fuzzy_threshold: float = 0.8
) -> tuple[list[Span], MatchTier | None]:
    """All occurrences of one mention in text, by the first tier that finds any.

    Tiers are tried in order ``exact``, ``normalized``, ``fuzzy`` (see the module docstring).
    Occurrences never overlap each other; they are returned in text order. Surrounding
    whitespace of ``mention`` is ignored.

    Args:
        text: The source text.
        mention: The mention string emitted by the model.
        fuzzy_threshold: Minimum fuzzy score, in ``(0, 1]``, for a fuzzy match to count.

    Returns:
        The spans found and the tier that found them, or ``([], None)`` when no tier finds
        the mention (including an empty or whitespace-only mention).

    Raises:
        ConfigError: If ``fuzzy_threshold`` is outside ``(0, 1]``.
    """
    _check_threshold(fuzzy_threshold)
    return _find(text, _lazy_index(text), mention, fuzzy_threshold)


def ground_mentions(
    text: str,
    mentions: Sequence[str],
    *,
    mode: GroundingMode = "flat",
    fuzzy_threshold: float = 0.8,
) -> list[GroundedMention]:
    """Ground each mention to the spans of ``text`` where it occurs.

    The result has one entry per distinct mention string, in input order (a repeated mention
    string keeps its first position). Each mention is found with :func:`find_occurrences`;
    then overlaps between mentions are resolved by ``mode``:

    * ``"nested"``: every mention keeps every occurrence found.
    * ``"flat"``: spans are kept longest first (by the length of the matched source text; ties
      by input order of the mention, then by position). A span overlapping an already kept
      span is dropped. A mention that was found but lost every span is marked ``subsumed``.

    Args:
        text: The source text.
        mentions: Mention strings emitted by the model.
        mode: ``"flat"`` (no two kept spans overlap) or ``"nested"`` (overlaps allowed).
        fuzzy_threshold: Minimum fuzzy score, in ``(0, 1]``, for a fuzzy match to count.

    Returns:
        One :class:`GroundedMention` per distinct mention string, in input order.

    Raises:
        ConfigError: If ``mode`` is unknown or ``fuzzy_threshold`` is outside ``(0, 1]``.
    """
    if mode not in _GROUNDING_MODES:
        raise ConfigError(f"unknown grounding mode {mode!r}; expected 'flat' or 'nested'")
    _check_threshold(fuzzy_threshold)

    index = _lazy_index(text)
    unique = list(dict.fromkeys(mentions))
    found = [
        GroundedMention(mention=mention, spans=tuple(spans), tier=tier)
        for mention in unique
        for spans, tier in [_find(text, index, mention, fuzzy_threshold)]
    ]
    return resolve_overlaps(found, mode=mode)


def resolve_overlaps(
    grounded: Sequence[GroundedMention], *, mode: GroundingMode = "flat"
) -> list[GroundedMention]:
    """Resolve overlaps between mentions grounded with every occurrence (``"nested"``).

    The second half of :func:`ground_mentions`, for mentions grounded earlier (the extractors
    keep theirs in the state): ``"nested"`` keeps every span; ``"flat"`` keeps spans longest
    first (ties by the order of ``grounded``, then by position), drops a span overlapping an
    already kept one, and marks a mention that lost every span ``subsumed``.

    Args:
        grounded: Distinct mentions with every occurrence found, none subsumed.
        mode: ``"flat"`` or ``"nested"``.

    Returns:
        One :class:`GroundedMention` per input, in input order.

    Raises:
        ConfigError: If ``mode`` is unknown.
    """
    if mode not in _GROUNDING_MODES:
        raise ConfigError(f"unknown grounding mode {mode!r}; expected 'flat' or 'nested'")
    if mode == "nested":
        return list(grounded)

    order = sorted(
        ((idx, span) for idx, g in enumerate(grounded) for span in g.spans),
        key=lambda item: (item[1].start - item[1].end, item[0], item[1].start),
    )
    kept_starts: list[int] = []  # kept spans never overlap, so sorted starts imply sorted ends
    kept_ends: list[int] = []
    kept: dict[int, list[Span]] = {}
    for idx, span in order:
        pos = bisect.bisect_right(kept_starts, span.start)
        if pos > 0 and kept_ends[pos - 1] > span.start:
            continue
        if pos < len(kept_starts) and kept_starts[pos] < span.end:
            continue
        kept_starts.insert(pos, span.start)
        kept_ends.insert(pos, span.end)
        kept.setdefault(idx, []).append(span)

    results: list[GroundedMention] = []
    for idx, g in enumerate(grounded):
        spans = tuple(sorted(kept.get(idx, []), key=lambda s: s.start))
        results.append(
            GroundedMention(
                mention=g.mention,
                spans=spans,
                tier=g.tier,
                subsumed=g.tier is not None and not spans,
            )
        )
    return results


__all__ = [
    "GroundedMention",
    "GroundingMode",
    "MatchTier",
    "find_occurrences",
    "ground_mentions",
    "resolve_overlaps",
    "word_spans",
]
