"""BIO (CoNLL-style) files: one token and its tag per line, a blank line between sentences.

Both column orders occur in the wild: ``token<TAB>tag`` (CrossNER, CoNLL) and ``tag<TAB>token``
(the MIT Restaurant and MIT Movie corpora). Columns are separated by a tab, or by spaces when a
line has no tab. With ``columns="auto"`` (the default) the reader looks at the whole file and
takes as the tag column the one holding more well-formed tags (``O``, ``B-<label>``,
``I-<label>``); on a tie it reads ``token<TAB>tag``. An explicit ``columns`` that the file
contradicts (the other column holds the tags) is refused with an error saying the columns
look swapped.

Tags are IOB2. An ``I-`` tag that continues no entity (after ``O`` or another label) is
repaired by the conlleval convention, as if it were ``B-``, with one warning per file naming
the lines (``strict=True`` makes it an error). A malformed line (one column, three columns, a
tag that is not ``O``/``B-x``/``I-x``) is an :class:`~samalign.errors.InputError` naming the
file and line.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from samalign.datasets.files import read_text
from samalign.datasets.records import (
    DataFile,
    EntityMention,
    Origin,
    Record,
    TokenSpans,
)
from samalign.errors import InputError, quoted

log = logging.getLogger(__name__)

BioColumns = Literal["auto", "token-tag", "tag-token"]
"""Which column holds the token and which the tag (``auto``: detect from the file)."""

BIO_COLUMNS: tuple[str, ...] = ("auto", "token-tag", "tag-token")

_SHOWN = 5
"""How many repaired tags a warning names."""


def _split_tag(tag: str, position: int) -> tuple[str, str]:
    if tag == "O":
        return "O", ""
    prefix, sep, label = tag.partition("-")
    if prefix not in ("B", "I") or not sep or not label:
        raise InputError(
            f"tag {quoted(tag)} at position {position} is not 'O', 'B-<label>' or 'I-<label>' "
            "(IOB2)"
        )
    return prefix, label


def is_tag(value: str) -> bool:
    """Whether ``value`` is a well-formed IOB2 tag (``O``, ``B-<label>``, ``I-<label>``)."""
    if value == "O":
        return True
    prefix, sep, label = value.partition("-")
    return (
        prefix in ("B", "I") and bool(sep) and bool(label) and not any(c.isspace() for c in label)
    )


def bio_to_spans(tags: Sequence[str], *, repair: bool = False) -> set[tuple[int, int, str]]:
    """Entities of an IOB2 tag sequence as ``(token start, token end exclusive, label)``.

    Tags are ``O``, ``B-<label>`` or ``I-<label>``. An ``I-`` tag continues the entity
    before it when the label is the same. An ``I-`` tag that continues nothing (after ``O``,
    at the start, or after another label) is invalid IOB2:

    * by default it starts no entity (seqeval's strict IOB2 mode, which drops such chunks);
    * with ``repair=True`` it starts a new entity, as if it were ``B-`` (the conlleval
      convention; the BIO reader uses it and logs a warning naming the repaired tags).

    Raises:
        InputError: On a tag that is not ``O``, ``B-<label>`` or ``I-<label>``, naming its
            position.
    """
    spans: set[tuple[int, int, str]] = set()
    start: int | None = None
    label = ""
    for i, tag in enumerate([*tags, "O"]):
        prefix, label_i = _split_tag(tag, i) if i < len(tags) else ("O", "")
        if prefix == "I" and start is not None and label_i == label:
            continue  # the open entity goes on
        if start is not None:
            spans.add((start, i, label))
            start = None
        if prefix == "B" or (prefix == "I" and repair):
            start, label = i, label_i
    return spans


def invalid_bio_positions(tags: Sequence[str]) -> list[int]:
    """Positions of ``I-`` tags that continue no entity (invalid IOB2)."""
    bad: list[int] = []
    previous = "O"
    for i, tag in enumerate(tags):
        prefix, label = _split_tag(tag, i)
        if prefix == "I":
            prev_prefix, prev_label = _split_tag(previous, i - 1) if i else ("O", "")
            if prev_prefix == "O" or prev_label != label:
                bad.append(i)
        previous = tag
    return bad


def _columns(line: str) -> list[str]:
    return line.split("\t") if "\t" in line else line.split()


def _tag_column(
    file: Path, rows: list[tuple[int, list[str]]], columns: BioColumns
) -> Literal[0, 1]:
    """Which column (0 or 1) holds the tags; refuses an explicit order the file contradicts."""
    pairs = [parts for _, parts in rows if len(parts) == 2]
    counts = (
        sum(is_tag(p[0].strip()) for p in pairs),
        sum(is_tag(p[1].strip()) for p in pairs),
    )
    detected: Literal[0, 1] = 0 if counts[0] > counts[1] else 1
    if columns == "auto":
        return detected
    wanted: Literal[0, 1] = 1 if columns == "token-tag" else 0
    if counts[1 - wanted] > counts[wanted]:
        other: Literal[0, 1] = 0 if wanted == 1 else 1
        example = next(p for p in pairs if is_tag(p[other].strip()))
        order = "tag<TAB>token" if other == 0 else "token<TAB>tag"
        right = "tag-token" if other == 0 else "token-tag"
        raise InputError(
            f"{file}: the columns look swapped: columns={columns!r} reads the tags from the "
            f"{'second' if wanted == 1 else 'first'} column, but the "
            f"{'first' if other == 0 else 'second'} column holds the BIO tags ({counts[other]} "
            f"of {len(pairs)} lines, e.g. {quoted(example)}; the other column "
            f"{counts[wanted]}); the "
            f"file is {order}: read it with columns={right!r} (samalign: --bio-columns {right}) "
            "or 'auto'"
        )
    return wanted


def _line_error(file: Path, number: int, line: str, parts: list[str], tag_col: int) -> str:
    order = "token<TAB>tag" if tag_col == 1 else "tag<TAB>token"
    if len(parts) == 1 or (len(parts) == 2 and not parts[tag_col].strip()):
        problem = " (a token without a tag)"
    elif len(parts) == 2:
        problem = " (a tag without a token)"
    else:
        problem = f" ({len(parts)} columns; separate the two columns by one tab or by spaces)"
    return f"{file}:{number}: expected {order!r}{problem}, got {quoted(line)}"


def read_bio(path: str | Path, *, columns: BioColumns = "auto", strict: bool = False) -> DataFile:
    """Read a BIO file.

    Args:
        path: The file (e.g. CrossNER's ``dev.txt``).
        columns: ``token-tag``, ``tag-token``, or ``auto`` to detect the tag column.
        strict: Refuse invalid IOB2 (an ``I-`` tag continuing no entity) instead of repairing
            it with a warning.

    Returns:
        One record per sentence; record ids are ``<folder>-<stem>-<n>``.

    Raises:
        InputError: The file cannot be read, a line is malformed, the columns look swapped
            against an explicit ``columns``, or (``strict``) a tag continues no entity.
    """
    if columns not in BIO_COLUMNS:
        raise InputError(f"BIO columns must be one of {list(BIO_COLUMNS)}, got {columns!r}")
    file = Path(path)
    rows: list[tuple[int, list[str]]] = []  # (line number, columns); [] for a blank line
    lines: dict[int, str] = {}
    for number, raw in enumerate(read_text(file).splitlines(), start=1):
        if not raw.strip():
            rows.append((number, []))
            continue
        rows.append((number, _columns(raw)))
        lines[number] = raw
    tag_col = _tag_column(file, [r for r in rows if r[1]], columns)
    token_col = 1 - tag_col
    records: list[Record] = []
    labels: dict[str, None] = {}
    repaired: list[str] = []
    tokens: list[str] = []
    tags: list[str] = []
    numbers: list[int] = []

    def flush() -> None:
        if not tokens:
            return
        for pos in invalid_bio_positions(tags):
            where = f"{file}:{numbers[pos]}"
            if strict:
                raise InputError(
                    f"{where}: tag {quoted(tags[pos])} continues no entity (invalid IOB2: an "
                    "I- tag must follow B- or I- of the same label)"
                )
            repaired.append(f"{where} ({tags[pos]})")
        spans = TokenSpans(tokens)
        entities: list[EntityMention] = [
            spans.entity(start, end, label)
            for start, end, label in sorted(bio_to_spans(tags, repair=True))
        ]
        labels.update(dict.fromkeys(e.type for e in entities))
        index = len(records)
        records.append(
            Record(
                id=f"{file.parent.name}-{file.stem}-{index}",
                text=spans.text,
                tokens=tuple(tokens),
                tags=tuple(tags),
                entities=tuple(entities),
                origin=Origin(file=str(file), index=index, line=numbers[0]),
            )
        )
        tokens.clear()
        tags.clear()
        numbers.clear()

    for number, parts in rows:
        if not parts:
            flush()
            continue
        line = lines[number]
        if len(parts) != 2 or not parts[token_col].strip() or not parts[tag_col].strip():
            raise InputError(_line_error(file, number, line, parts, tag_col))
        tag = parts[tag_col].strip()
        if not is_tag(tag):
            raise InputError(
                f"{file}:{number}: tag {quoted(tag)} is not 'O', 'B-<label>' or 'I-<label>'"
            )
        tokens.append(parts[token_col].strip())
        tags.append(tag)
        numbers.append(number)
    flush()
    if repaired:
        shown = ", ".join(repaired[:_SHOWN]) + (" …" if len(repaired) > _SHOWN else "")
        log.warning(
            "%s: %d I- tag(s) continue no entity (invalid IOB2), read as B- (conlleval "
            "convention): %s",
            file,
            len(repaired),
            shown,
        )
    return DataFile(
        path=file, format="bio", records=tuple(records), label_set=tuple(sorted(labels))
    )


__all__ = [
    "BIO_COLUMNS",
    "BioColumns",
    "bio_to_spans",
    "invalid_bio_positions",
    "is_tag",
    "read_bio",
]
