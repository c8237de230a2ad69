"""Format detection and the one entry point that reads any supported file.

:func:`detect_format` looks at a file's content (never at its name):

* a JSON array whose first record has ``conversations`` is ``uniner``, ``tokens`` is
  ``spert``, ``sentence`` is ``crossre``;
* JSON Lines whose first object has ``tagName`` is ``pilener``, ``instruction`` (or ``text``
  with ``entity``/``relation``) is ``iepile``, ``sentence`` is ``crossre``;
* otherwise text whose first 50 non-blank lines all have exactly two columns (tab- or
  space-separated) is ``bio``, and so is any other text file named ``*.txt``, ``*.bio``,
  ``*.conll``, ``*.iob`` or ``*.tsv`` (the BIO reader then names the line that is not two
  columns).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from samalign.datasets.bio import BioColumns, read_bio
from samalign.datasets.crossre import read_crossre
from samalign.datasets.files import loads, read_text
from samalign.datasets.iepile import read_iepile
from samalign.datasets.pilener import read_pilener
from samalign.datasets.records import FORMATS, DataFile, DataFormat
from samalign.datasets.spert import read_spert
from samalign.datasets.uniner import read_uniner
from samalign.errors import InputError, quoted

_BIO_LINES = 50
_BIO_SUFFIXES = (".txt", ".bio", ".conll", ".iob", ".tsv")


def _first_array_item(text: str, where: str) -> tuple[Any, str]:
    """The first item of a JSON array file, or ``None`` and why there is none."""
    try:
        items = loads(text, where)
    except json.JSONDecodeError as err:
        return None, f"it is not valid JSON: invalid JSON at line {err.lineno}: {err.msg}"
    if not isinstance(items, list):
        return None, ""
    if not items:
        return None, "it is an empty JSON array"
    if not isinstance(items[0], dict):
        return None, f"record 0 is a {type(items[0]).__name__}: expected an object of fields"
    return items[0], ""


def _first_line_object(text: str, where: str) -> tuple[Any, str]:
    """The first line's JSON value, or ``None`` and why it is not one."""
    line = text.lstrip().split("\n", 1)[0]
    try:
        return loads(line, where), ""
    except json.JSONDecodeError as err:
        return None, f"its first line is not valid JSON ({err.msg})"


_ARRAY_KEYS: tuple[tuple[str, DataFormat], ...] = (
    ("conversations", "uniner"),
    ("tokens", "spert"),
    ("sentence", "crossre"),
)
"""For a JSON array: the key of its first record that tells the format."""

_SPERT_LINES = (
    "records with 'tokens' one per line look like SpERT, but a SpERT file is one JSON array: "
    "wrap the lines in [ ] and separate them by commas"
)


def _guess(text: str, file: Path) -> tuple[DataFormat | None, str]:
    """The format the content shows, or ``None`` and a hint.

    Raises:
        InputError: The content is JSON nested too deeply to read.
    """
    head = text.lstrip()[:4096]
    if head.startswith("["):
        first, why = _first_array_item(text, str(file))
        if isinstance(first, dict):
            for key, fmt in _ARRAY_KEYS:
                if key in first:
                    return fmt, ""
        return None, why
    if head.startswith("{"):
        first_line = text[: len(text) - len(text.lstrip())].count("\n") + 1
        first, why = _first_line_object(text, f"{file}:{first_line}")
        if not isinstance(first, dict):
            return None, why
        if "tagName" in first:
            return "pilener", ""
        if "instruction" in first or ("text" in first and ({"entity", "relation"} & set(first))):
            return "iepile", ""
        if "sentence" in first:
            return "crossre", ""
        return None, _SPERT_LINES if "tokens" in first else ""
    lines = [ln for ln in head.splitlines()[:_BIO_LINES] if ln.strip()]
    two = [ln for ln in lines if len(ln.split("\t") if "\t" in ln else ln.split()) == 2]
    return ("bio" if lines and len(two) == len(lines) else None), ""


def detect_format(path: str | Path) -> DataFormat:
    """Guess a file's format from its content (see the module docs).

    Raises:
        InputError: If the file cannot be read, matches no format, or is JSON nested too
            deeply to read.
    """
    file = Path(path)
    text = read_text(file)
    guess, hint = _guess(text, file)
    start = text.lstrip()[:1]
    if guess is None and file.suffix.lower() in _BIO_SUFFIXES and start and start not in "[{":
        guess = "bio"  # the BIO reader names the line that is not two columns
    if guess is not None:
        return guess
    hint = f" ({hint})" if hint else ""
    raise InputError(
        f"{file}: cannot tell the format{hint}; pass it explicitly (--format, one of "
        f"{list(FORMATS)}; see docs/data.md)"
    )


def read_file(
    path: str | Path,
    fmt: DataFormat | str = "auto",
    *,
    columns: BioColumns = "auto",
    strict: bool = False,
    schema: Sequence[str] | None = None,
    entity_labels: Collection[str] | None = None,
    relation_labels: Collection[str] | None = None,
    require_relations: bool = False,
) -> DataFile:
    """Read a dataset file in any supported format.

    Args:
        path: The file.
        fmt: The format (one of :data:`~samalign.datasets.records.FORMATS`), or ``auto`` to
            detect it.
        columns: BIO: which column holds the tags (``auto``, ``token-tag``, ``tag-token``).
        strict: BIO: refuse invalid IOB2 instead of repairing it.
        schema: IEPile: the label set of raw-form records.
        entity_labels: SpERT, CrossRE: the allowed entity types (SpERT default:
            ``ner2idx.json`` beside the file).
        relation_labels: SpERT, CrossRE: the allowed relation types (SpERT default:
            ``rel2idx.json``).
        require_relations: SpERT, CrossRE: refuse a record without a ``relations`` field.

    Raises:
        InputError: Unknown or undetectable format, unreadable file, or a malformed record
            (named with its file, line or index, field and fix).
    """
    kind = detect_format(path) if fmt == "auto" else fmt
    if kind == "bio":
        return read_bio(path, columns=columns, strict=strict)
    if kind == "spert":
        return read_spert(
            path,
            entity_labels=entity_labels,
            relation_labels=relation_labels,
            require_relations=require_relations,
        )
    if kind == "crossre":
        return read_crossre(
            path,
            entity_labels=entity_labels,
            relation_labels=relation_labels,
            require_relations=require_relations,
        )
    if kind == "pilener":
        return read_pilener(path)
    if kind == "uniner":
        return read_uniner(path)
    if kind == "iepile":
        return read_iepile(path, schema=schema)
    raise InputError(f"unknown data format {quoted(fmt)}; use one of {['auto', *FORMATS]}")


__all__ = ["detect_format", "read_file"]
