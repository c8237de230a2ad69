"""What the relation formats (SpERT, CrossRE) share: one file's reading and its record loop.

A reader of a format with entities and relations checks every record against the file's
entity and relation label sets, may require a ``relations`` field, and turns each record into
a tokenised :class:`~samalign.datasets.records.Record`; :class:`RelationReading` holds that
state, so a format's record parser needs only the record and where it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from samalign.datasets.files import LabelSet, check_tokens, read_text
from samalign.datasets.records import (
    DataFile,
    EntityMention,
    Origin,
    Record,
    RelationMention,
    relation_file,
    token_record,
)
from samalign.errors import InputError, quoted

RelationFormat = Literal["spert", "crossre"]
"""A format with relations (:data:`~samalign.datasets.records.RELATION_FORMATS`)."""

RecordParser = Callable[[int, int | None, Any, "RelationReading"], tuple[Record, bool]]
"""A format's parser of one record: ``(index, line or None, object, reading)`` →
``(record, whether it has a relations field)``."""


@dataclass(frozen=True)
class RelationLayout:
    """Where a relation format keeps a record's own id and its tokens.

    Attributes:
        name: The format's name in messages (``SpERT``).
        fmt: The format (``spert``).
        id_field: The field with the record's id in its source (``orig_id``).
        tokens_field: The field with the tokens (``tokens``).
    """

    name: str
    fmt: RelationFormat
    id_field: str
    tokens_field: str


SPERT_LAYOUT = RelationLayout("SpERT", "spert", "orig_id", "tokens")
"""SpERT JSON: ``orig_id`` and ``tokens``."""
CROSSRE_LAYOUT = RelationLayout("CrossRE", "crossre", "doc_key", "sentence")
"""CrossRE JSON Lines: ``doc_key`` and ``sentence``."""


class RecordStart(NamedTuple):
    """A record's object, checked as far as the layout goes.

    Attributes:
        where: Where it is, for messages (``file:line`` or ``file record n``, then its id).
        data: The record.
        source_id: Its id in the source (``None`` if it has none).
        tokens: Its tokens.
    """

    where: str
    data: dict[str, Any]
    source_id: Any
    tokens: list[str]


@dataclass(frozen=True)
class RelationReading:
    """One file of a relation format being read.

    Attributes:
        layout: The format's layout.
        file: The file.
        entity_labels: The entity types a record may use.
        relation_labels: The relation types a record may use.
        require_relations: Refuse a record without a ``relations`` field.
    """

    layout: RelationLayout
    file: Path
    entity_labels: LabelSet
    relation_labels: LabelSet
    require_relations: bool

    def text(self) -> str:
        """The file's text (see :func:`~samalign.datasets.files.read_text`)."""
        return read_text(self.file)

    def start(self, index: int, line: int | None, data: Any) -> RecordStart:
        """A record's place, id and tokens.

        Raises:
            InputError: The record is not a JSON object, has the other relation format's
                tokens field instead of this one's, or malformed tokens.
        """
        layout = self.layout
        where = f"{self.file}:{line}" if line is not None else f"{self.file} record {index}"
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected an object, got {type(data).__name__}")
        source_id = data.get(layout.id_field)
        if source_id is not None:
            where += f" ({layout.id_field} {quoted(source_id)})"
        other = CROSSRE_LAYOUT if layout == SPERT_LAYOUT else SPERT_LAYOUT
        if layout.tokens_field not in data and other.tokens_field in data:
            raise InputError(
                f"{where}: field {layout.tokens_field!r} is missing and the record has "
                f"{other.tokens_field!r} instead: that is the {other.name} layout; read the file "
                f"with --format {other.fmt}"
            )
        tokens = check_tokens(data.get(layout.tokens_field), layout.tokens_field, where)
        return RecordStart(where, data, source_id, tokens)

    def record(
        self,
        rid: str,
        tokens: Sequence[str],
        entities: Iterable[EntityMention],
        relations: Iterable[RelationMention],
        source_id: object,
        index: int,
        line: int | None = None,
    ) -> Record:
        """The tokenised record at ``index`` (and ``line``) of the file."""
        origin = Origin(file=str(self.file), index=index, line=line)
        return token_record(rid, tokens, entities, relations, source_id, origin)

    def read(self, items: Iterable[tuple[int, int | None, Any]], parse: RecordParser) -> DataFile:
        """The file, from its ``(index, line or None, object)`` items."""
        return relation_file(
            self.file,
            self.layout.fmt,
            (parse(index, line, item, self) for index, line, item in items),
        )


__all__ = [
    "CROSSRE_LAYOUT",
    "SPERT_LAYOUT",
    "RecordParser",
    "RecordStart",
    "RelationFormat",
    "RelationLayout",
    "RelationReading",
]
