"""The builders' view of a dataset file: passages with gold mentions, asked types, relations.

Files are read by :mod:`samalign.datasets` (one reader per format, validated the same way as
for evaluation; ``docs/data.md`` documents the formats); :func:`read_source` turns its records
into :class:`SourceRecord` objects, the shape the builders work on: the text, the gold mentions
(type, string and, for tokenised formats, character offsets), the types the record asks about
and the gold relations.

Formats (``fmt``): ``pilener`` (SLIMER's Pile-NER JSONL), ``uniner`` (UniversalNER
conversations), ``iepile`` (IEPile NER, instruction or raw form), ``bio`` (CoNLL BIO in either
column order), ``spert`` (SpERT JSON) and ``crossre`` (CrossRE JSON Lines). For ``bio``,
``spert`` and ``crossre`` the text is the tokens joined by single spaces (the CrossNER protocol
and UniNER's conversion), and the label set is closed: every record is fully annotated for
every label, so an absent label is a true negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from samalign.datasets import (
    FORMATS,
    RELATION_FORMATS,
    BioColumns,
    DataFile,
    detect_format,
    read_file,
)
from samalign.datasets.files import unicode_text

SourceFormat = Literal["auto", "pilener", "uniner", "iepile", "bio", "spert", "crossre"]
"""The formats :func:`read_source` reads (``auto`` detects one from the file)."""

SOURCE_FORMATS: tuple[str, ...] = FORMATS


@dataclass(frozen=True)
class SourceMention:
    """A gold mention: its type, its string and, when the format gives them, its offsets.

    Attributes:
        type: The entity type as written in the source (e.g. ``programlang``, ``Peop``).
        text: The mention string.
        start: Character offset in the record text (inclusive), or ``None``.
        end: Character offset in the record text (exclusive), or ``None``.
    """

    type: str
    text: str
    start: int | None = None
    end: int | None = None


@dataclass(frozen=True)
class SourceRelation:
    """A gold relation between two mentions of the same record (indices into ``mentions``)."""

    type: str
    head: int
    tail: int


@dataclass(frozen=True)
class SourceRecord:
    """One passage of a source dataset.

    Attributes:
        id: A stable id (``<file stem>:<line or item>`` unless the format carries one).
        text: The passage.
        mentions: Gold mentions in source order.
        asked: Types the record explicitly asks about (positives and explicit negatives), in
            source order; empty when the format only lists positives.
        relations: Gold relations (``spert``, ``crossre``).
        origin: ``<path>:<line>`` or ``<path> record <n> (id ...)`` for messages.
    """

    id: str
    text: str
    mentions: tuple[SourceMention, ...]
    asked: tuple[str, ...] = ()
    relations: tuple[SourceRelation, ...] = ()
    origin: str = ""

    @property
    def types(self) -> list[str]:
        """Types with at least one mention, in first-mention order."""
        return list(dict.fromkeys(m.type for m in self.mentions))


@dataclass(frozen=True)
class SourceDataset:
    """Records read from one file.

    Attributes:
        path: The file.
        format: The format it was read as.
        records: The passages.
        label_set: The dataset's closed entity label set (every record fully annotated for
            each), or ``None`` for open-label sets (Pile-NER) where a type a record does not
            mention may still occur in it.
        relation_set: Relation types seen (``spert``, ``crossre``).
    """

    path: Path
    format: str
    records: list[SourceRecord]
    label_set: tuple[str, ...] | None = None
    relation_set: tuple[str, ...] = ()

    @property
    def has_relations(self) -> bool:
        """Whether the format annotates relations (``spert``, ``crossre``)."""
        return self.format in RELATION_FORMATS


def source_dataset(data: DataFile) -> SourceDataset:
    r"""The builders' view of a file read by :mod:`samalign.datasets`.

    Raises:
        InputError: A record's text is not valid Unicode (a lone surrogate, e.g. a ``\ud800``
            escape in a SpERT token): no training example can hold it. (Evaluation reads such a
            record and fails that one sentence instead.)
    """
    records = [
        SourceRecord(
            id=rec.id,
            text=unicode_text(rec.text, "the text", rec.where),
            mentions=tuple(SourceMention(m.type, m.text, m.start, m.end) for m in rec.entities),
            asked=rec.asked,
            relations=tuple(SourceRelation(r.type, r.head, r.tail) for r in rec.relations),
            origin=rec.where,
        )
        for rec in data.records
    ]
    return SourceDataset(
        path=data.path,
        format=data.format,
        records=records,
        label_set=data.label_set,
        relation_set=data.relation_set,
    )


def read_source(
    path: str | Path,
    fmt: SourceFormat | str = "auto",
    *,
    schema: Sequence[str] | None = None,
    columns: BioColumns = "auto",
    require_relations: bool = False,
) -> SourceDataset:
    """Read a source dataset in any supported format (:func:`samalign.datasets.read_file`).

    Args:
        path: The file.
        fmt: The format, or ``auto`` to detect it.
        schema: Label set for raw IEPile records.
        columns: BIO: which column holds the tags (``auto``, ``token-tag``, ``tag-token``).
        require_relations: SpERT, CrossRE: refuse a record without a ``relations`` field
            (relation and joint examples need them).

    Raises:
        InputError: Unknown format, unreadable file or a malformed record (named), or a
            record text that is not valid Unicode.
    """
    data = read_file(path, fmt, schema=schema, columns=columns, require_relations=require_relations)
    return source_dataset(data)


__all__ = [
    "SOURCE_FORMATS",
    "SourceDataset",
    "SourceFormat",
    "SourceMention",
    "SourceRecord",
    "SourceRelation",
    "detect_format",
    "read_source",
    "source_dataset",
]
