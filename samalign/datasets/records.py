"""The one record type every dataset reader returns, and the file it came from.

A :class:`Record` is one passage: its text, its gold entity mentions, the relations between
them and where it came from. Tokenised formats (BIO, SpERT, CrossRE) also give the tokens;
their text is the tokens joined by single spaces, so every entity has both a token span and a
character span in the text. Instruction formats (Pile-NER, UniNER, IEPile) give mention
strings only: their entities have no offsets, and the record lists the types it asks about
(:attr:`Record.asked`, which holds the explicit negatives: asked types with no mention).

Offsets are ``[start, end)``: start inclusive, end exclusive, for tokens and characters alike,
whatever convention the file uses (each reader converts; see ``docs/data.md``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from samalign.errors import quoted

DataFormat = Literal["bio", "spert", "crossre", "pilener", "uniner", "iepile"]
"""A file format the readers know (see ``docs/data.md``)."""

FORMATS: tuple[DataFormat, ...] = ("bio", "spert", "crossre", "pilener", "uniner", "iepile")
"""Every format, in the order ``docs/data.md`` lists them."""

TOKENISED_FORMATS: tuple[DataFormat, ...] = ("bio", "spert", "crossre")
"""Formats whose records carry tokens and token offsets for every entity."""

RELATION_FORMATS: tuple[DataFormat, ...] = ("spert", "crossre")
"""Formats that can annotate relations."""


class Origin(BaseModel):
    """Where a record is in its file.

    Attributes:
        file: The file, as given to the reader.
        index: The record's position among the file's records (0-based).
        line: The first line of the record (1-based) for line-based files (BIO, JSON Lines);
            ``None`` for JSON arrays.
    """

    model_config = ConfigDict(frozen=True)

    file: str
    index: int
    line: int | None = None

    def __str__(self) -> str:
        """``file:line`` for line-based files, ``file#index`` for JSON arrays."""
        return f"{self.file}:{self.line}" if self.line is not None else f"{self.file}#{self.index}"


class EntityMention(BaseModel):
    """A gold entity mention.

    Attributes:
        type: The entity type as written in the file (e.g. ``programlang``, ``Peop``).
        text: The mention string.
        start: First character in the record text, or ``None`` (mention strings only).
        end: Character after the last one (exclusive), or ``None``.
        token_start: First token (tokenised formats), or ``None``.
        token_end: Token after the last one (exclusive), or ``None``.
    """

    model_config = ConfigDict(frozen=True)

    type: str
    text: str
    start: int | None = None
    end: int | None = None
    token_start: int | None = None
    token_end: int | None = None


class RelationMention(BaseModel):
    """A gold directed relation ``head → tail`` between two entities of the same record.

    Attributes:
        type: The relation type as written in the file.
        head: Index of the head (subject) in :attr:`Record.entities`.
        tail: Index of the tail (object) in :attr:`Record.entities`.
    """

    model_config = ConfigDict(frozen=True)

    type: str
    head: int
    tail: int


class Record(BaseModel):
    """One passage of a dataset file.

    Attributes:
        id: An id unique within the file (``<folder>-<stem>-<n>`` for BIO, ``<stem>:<orig_id>``
            for SpERT, the ``doc_key`` for CrossRE, ``pilener:<doc>``, ``uniner:<id>``, the
            IEPile ``id``; a repeat gets ``#n``).
        text: The passage (for tokenised formats, the tokens joined by single spaces).
        tokens: The tokens (tokenised formats; empty otherwise).
        tags: The BIO tags, one per token (BIO only; empty otherwise).
        entities: Gold mentions in file order; an exact repeat is kept once.
        relations: Gold relations (SpERT, CrossRE); an exact repeat is kept once.
        asked: The types the record explicitly asks about, positives and explicit negatives,
            in file order (instruction formats; empty when the format lists positives only).
        source_id: The id the file gives the record (``orig_id``, ``doc_key``,
            ``doc_question_pairID``, ``id``), if any.
        origin: Where the record is in its file.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    text: str
    tokens: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    entities: tuple[EntityMention, ...] = ()
    relations: tuple[RelationMention, ...] = ()
    asked: tuple[str, ...] = ()
    source_id: str | None = None
    origin: Origin

    @property
    def types(self) -> list[str]:
        """Types with at least one mention, in first-mention order."""
        return list(dict.fromkeys(e.type for e in self.entities))

    @property
    def where(self) -> str:
        """The record for messages: ``file:line`` or ``file record N (id X)``."""
        if self.origin.line is not None:
            return str(self.origin)
        shown = f" (id {quoted(self.source_id)})" if self.source_id is not None else ""
        return f"{self.origin.file} record {self.origin.index}{shown}"


class DataFile(BaseModel):
    """The records of one file and what the file says about its labels.

    Attributes:
        path: The file.
        format: The format it was read as.
        records: The records, in file order.
        label_set: The closed entity label set, when every record is annotated for every
            label (BIO, SpERT, CrossRE, IEPile: a label a record does not mention is a true
            negative there); ``None`` for open label sets (Pile-NER, UniNER), where a type a
            record neither mentions nor asks about may still occur in it.
        relation_set: Relation types seen, sorted (SpERT, CrossRE).
        relations: Whether the records annotate relations (SpERT records with a
            ``relations`` field; every CrossRE record).
    """

    model_config = ConfigDict(frozen=True)

    path: Path
    format: DataFormat
    records: tuple[Record, ...]
    label_set: tuple[str, ...] | None = None
    relation_set: tuple[str, ...] = ()
    relations: bool = False

    @property
    def tokenised(self) -> bool:
        """Whether every record carries tokens and token offsets."""
        return self.format in TOKENISED_FORMATS


def token_offsets(tokens: Sequence[str]) -> list[tuple[int, int]]:
    """Character ``(start, end)`` of each token in ``" ".join(tokens)``."""
    offsets: list[tuple[int, int]] = []
    pos = 0
    for token in tokens:
        offsets.append((pos, pos + len(token)))
        pos += len(token) + 1
    return offsets


def token_entity(
    text: str, offsets: Sequence[tuple[int, int]], start: int, end: int, type_: str
) -> EntityMention:
    """The mention over tokens ``[start, end)`` of a space-joined sentence (checked by caller)."""
    char_start, char_end = offsets[start][0], offsets[end - 1][1]
    return EntityMention(
        type=type_,
        text=text[char_start:char_end],
        start=char_start,
        end=char_end,
        token_start=start,
        token_end=end,
    )


class TokenSpans:
    """One tokenised sentence: its text (the tokens joined by single spaces) and its mentions.

    Args:
        tokens: The sentence's tokens.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        self.text = " ".join(tokens)
        self.offsets = token_offsets(tokens)

    def entity(self, start: int, end: int, type_: str) -> EntityMention:
        """The mention over tokens ``[start, end)`` (checked by the caller)."""
        return token_entity(self.text, self.offsets, start, end, type_)


def token_record(
    rid: str,
    tokens: Sequence[str],
    entities: Iterable[EntityMention],
    relations: Iterable[RelationMention],
    source_id: object,
    origin: Origin,
) -> Record:
    """A tokenised record: its text is the tokens joined by single spaces."""
    return Record(
        id=rid,
        text=" ".join(tokens),
        tokens=tuple(tokens),
        entities=tuple(entities),
        relations=tuple(relations),
        source_id=None if source_id is None else str(source_id),
        origin=origin,
    )


def relation_file(path: Path, fmt: DataFormat, read: Iterable[tuple[Record, bool]]) -> DataFile:
    """The file of a format with relations, from ``(record, has a relations field)`` pairs."""
    records: list[Record] = []
    any_relations = False
    for record, has_relations in read:
        records.append(record)
        any_relations = any_relations or has_relations
    return DataFile(
        path=path,
        format=fmt,
        records=tuple(unique_ids(records)),
        label_set=tuple(sorted({e.type for r in records for e in r.entities})),
        relation_set=tuple(sorted({rel.type for r in records for rel in r.relations})),
        relations=any_relations,
    )


def unique_ids(records: list[Record]) -> list[Record]:
    """The records with repeated ids made unique by a ``#n`` suffix (file order)."""
    seen: dict[str, int] = {}
    out: list[Record] = []
    for rec in records:
        n = seen.get(rec.id, 0)
        seen[rec.id] = n + 1
        out.append(rec.model_copy(update={"id": f"{rec.id}#{n}"}) if n else rec)
    return out


__all__ = [
    "FORMATS",
    "RELATION_FORMATS",
    "TOKENISED_FORMATS",
    "DataFile",
    "DataFormat",
    "EntityMention",
    "Origin",
    "Record",
    "RelationMention",
    "TokenSpans",
    "relation_file",
    "token_entity",
    "token_offsets",
    "token_record",
    "unique_ids",
]
