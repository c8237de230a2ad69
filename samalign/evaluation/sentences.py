"""Gold sentences: tokens, the space-joined text, gold entities and gold triplets.

Evaluation's view of a tokenised dataset record (:class:`samalign.datasets.Record`, read by
:mod:`samalign.datasets`; :func:`sentence_from_record` builds it). A sentence's ``text`` is
its tokens joined by single spaces, so each token has fixed character offsets; gold entities
carry both their character span in ``text`` and their token span. Predicted character spans
are mapped back to tokens with :class:`TokenIndex`: a span maps only when it starts at a
token's first character and ends at a token's last character. A span that cuts a token counts
as a wrong prediction.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from samalign.datasets.records import EntityMention, Record, token_entity, token_offsets
from samalign.errors import InputError
from samalign.evaluation.metrics import RelationTuple, StringPair, TokenSpan
from samalign.types import Span


class GoldEntity(BaseModel):
    """A gold entity mention.

    Attributes:
        span: Character span in the sentence's space-joined text.
        label: The gold type.
        token_start: First token.
        token_end: Token after the last one (exclusive).
    """

    model_config = ConfigDict(frozen=True)

    span: Span
    label: str
    token_start: int
    token_end: int

    @property
    def text(self) -> str:
        """The mention text."""
        return self.span.text

    @property
    def key(self) -> TokenSpan:
        """``(token_start, token_end, label)``, the span protocol's item."""
        return (self.token_start, self.token_end, self.label)


class GoldTriplet(BaseModel):
    """A gold relation between two gold entities (directed: head → tail)."""

    model_config = ConfigDict(frozen=True)

    head: GoldEntity
    relation: str
    tail: GoldEntity

    @property
    def key(self) -> RelationTuple:
        """The relation protocol's item."""
        h, t = self.head, self.tail
        return (
            (h.token_start, h.token_end),
            h.label,
            self.relation,
            (t.token_start, t.token_end),
            t.label,
        )


class Sentence(BaseModel):
    """One gold sentence.

    Attributes:
        id: Unique id (``<dataset>-<split>-<index>`` for built-in datasets).
        tokens: The tokens.
        text: The tokens joined by single spaces (what the graph reads).
        entities: Gold entities, in text order.
        triplets: Gold relation triplets (empty for NER-only data).
        tags: The BIO tags, for data read from BIO files (empty otherwise).
        origin: Where the sentence comes from (``file:line`` or ``file#record``).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    tokens: tuple[str, ...]
    text: str
    entities: tuple[GoldEntity, ...]
    triplets: tuple[GoldTriplet, ...] = ()
    tags: tuple[str, ...] = ()
    origin: str = ""

    @property
    def entity_keys(self) -> set[TokenSpan]:
        """Gold entities as span-protocol items."""
        return {e.key for e in self.entities}

    @property
    def string_keys(self) -> set[StringPair]:
        """Gold ``(mention, label)`` pairs (not yet normalised)."""
        return {(e.text, e.label) for e in self.entities}

    @property
    def triplet_keys(self) -> set[RelationTuple]:
        """Gold triplets as relation-protocol items."""
        return {t.key for t in self.triplets}


class TokenIndex:
    """Maps character spans of a space-joined sentence to token spans.

    Args:
        tokens: The sentence's tokens.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        offsets = token_offsets(tokens)
        self._starts = {start: i for i, (start, end) in enumerate(offsets) if end > start}
        self._ends = {end: i + 1 for i, (start, end) in enumerate(offsets) if end > start}

    def to_tokens(self, start: int, end: int) -> tuple[int, int] | None:
        """The token span ``[first, last + 1)`` covering exactly ``[start, end)`` characters.

        Returns:
            ``None`` when the span does not start and end on token boundaries.
        """
        first = self._starts.get(start)
        after = self._ends.get(end)
        if first is None or after is None or after <= first:
            return None
        return first, after


def make_entity(
    text: str, offsets: Sequence[tuple[int, int]], start: int, end: int, label: str
) -> GoldEntity:
    """A gold entity over tokens ``[start, end)`` of a sentence.

    Raises:
        InputError: If the token span is empty or outside the sentence.
    """
    if not 0 <= start < end <= len(offsets):
        raise InputError(
            f"entity token span [{start}, {end}) is empty or outside the sentence of "
            f"{len(offsets)} tokens"
        )
    if offsets[end - 1][1] <= offsets[start][0]:
        raise InputError(f"entity token span [{start}, {end}) covers only empty tokens")
    return _gold_entity(text, token_entity(text, offsets, start, end, label))


def _gold_entity(text: str, mention: EntityMention) -> GoldEntity:
    m = mention
    if m.start is None or m.end is None or m.token_start is None or m.token_end is None:
        raise InputError(f"gold entity {m.text!r} ({m.type}) has no token and character offsets")
    return GoldEntity(
        span=Span.of(text, m.start, m.end),
        label=m.type,
        token_start=m.token_start,
        token_end=m.token_end,
    )


def sentence_from_record(record: Record, sid: str) -> Sentence:
    """The gold sentence of a tokenised record, with id ``sid``.

    Entities are sorted by position (start, then longest first, then label); an exact repeat
    of an entity or triplet is kept once.

    Raises:
        InputError: The record has no tokens (a format of mention strings only).
    """
    if not record.tokens:
        raise InputError(
            f"{record.where}: the record has no tokens; evaluation scores token spans, so it "
            "needs BIO, SpERT or CrossRE data (see docs/data.md)"
        )
    entities = [_gold_entity(record.text, m) for m in record.entities]
    triplets = [
        GoldTriplet(head=entities[r.head], relation=r.type, tail=entities[r.tail])
        for r in record.relations
    ]
    ordered = sorted(dict.fromkeys(entities), key=lambda e: (e.token_start, -e.token_end, e.label))
    return Sentence(
        id=sid,
        tokens=record.tokens,
        text=record.text,
        entities=tuple(ordered),
        triplets=tuple(dict.fromkeys(triplets)),
        tags=record.tags,
        origin=str(record.origin),
    )


__all__ = [
    "GoldEntity",
    "GoldTriplet",
    "Sentence",
    "TokenIndex",
    "make_entity",
    "sentence_from_record",
    "token_offsets",
]
