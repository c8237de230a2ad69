"""Reading dataset files: text (UTF-8, a leading BOM dropped), JSON arrays, JSON Lines.

Every failure is an :class:`~samalign.errors.InputError` naming the file (and the line for
JSON Lines). The readers share these helpers and the field checks below, so every format
reports a broken record the same way.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from samalign.errors import InputError

BOM = "\ufeff"
"""The UTF-8 byte-order mark some editors write at the start of a file."""


def read_text(path: Path) -> str:
    """The file's text, without a leading byte-order mark.

    Raises:
        InputError: The file cannot be read or is not UTF-8.
    """
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text (byte {err.start})") from None
    return text.removeprefix(BOM)


def _loads(text: str, where: str, kind: type, expected: str, *, line: bool) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        at = (
            f"not valid JSON ({err.msg})"
            if line
            else f"invalid JSON at line {err.lineno}: {err.msg}"
        )
        raise InputError(f"{where}: {at}") from None
    if not isinstance(value, kind):
        raise InputError(f"{where}: expected {expected}, got {type(value).__name__}")
    return value


def json_array(path: Path, text: str) -> list[Any]:
    """The items of a file holding one JSON array.

    Raises:
        InputError: The text is not JSON or not an array.
    """
    items: list[Any] = _loads(text, str(path), list, "a JSON array of records", line=False)
    return items


def json_lines(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of a JSON Lines file.

    Raises:
        InputError: A line is not JSON or not an object (naming the line).
    """
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, _loads(line, f"{path}:{number}", dict, "a JSON object", line=True)


def str_field(rec: dict[str, Any], key: str, where: str, *, allow_empty: bool = False) -> str:
    """A record's string field.

    Raises:
        InputError: The field is missing, not a string, or empty (unless allowed).
    """
    if key not in rec:
        raise InputError(f"{where}: field {key!r} is missing")
    value = rec[key]
    if not isinstance(value, str):
        raise InputError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise InputError(f"{where}: field {key!r} is empty")
    return value


def int_field(value: Any, what: str, where: str) -> int:
    """An integer field value (``bool`` is not an integer here).

    Raises:
        InputError: The value is not an integer.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where}: {what} must be an integer, got {value!r}")
    return value


def check_tokens(tokens: Any, field: str, where: str) -> list[str]:
    """A tokenised record's tokens: a non-empty list of non-empty strings without spaces.

    The text of a tokenised record is its tokens joined by single spaces, so a token holding
    whitespace would shift every later offset.

    Raises:
        InputError: Naming the field and the first bad token.
    """
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise InputError(f"{where}: {field!r} must be a non-empty list of strings")
    for i, token in enumerate(tokens):
        if not token or any(ch.isspace() for ch in token):
            raise InputError(
                f"{where}: a token is empty or contains whitespace ({field}[{i}] = {token!r})"
            )
    return tokens


class LabelSet:
    """The types a field may take (``None``: any) and where that list came from.

    Args:
        labels: The allowed types, or ``None``.
        source: Where they come from, for messages (e.g. ``from .../ner2idx.json``).
    """

    def __init__(self, labels: Collection[str] | None, source: str = "the labels given") -> None:
        self.labels = None if labels is None else set(labels)
        self.source = source

    def check(self, value: Any, what: str, where: str) -> str:
        """``value`` if it is a non-empty string in the set.

        Raises:
            InputError: Naming ``what`` (e.g. ``entity``) and the allowed types.
        """
        if not isinstance(value, str) or not value:
            raise InputError(f"{where}: the {what} type must be a non-empty string, got {value!r}")
        if self.labels is not None and value not in self.labels:
            raise InputError(
                f"{where}: {what} type {value!r} is not in the label set {sorted(self.labels)} "
                f"({self.source})"
            )
        return value


def has_relations(rec: dict[str, Any], where: str, required: bool, shape: str) -> bool:
    """Whether the record has a ``relations`` field.

    Raises:
        InputError: It has none and relations are ``required``.
    """
    if "relations" in rec:
        return True
    if required:
        raise InputError(
            f"{where}: field 'relations' is missing; scoring or training relations needs every "
            f"record to list them as {shape} ([] when it has none)"
        )
    return False


def mention_list(raw: Any, where: str, what: str) -> list[str]:
    """A list of mention strings, given as a list or as a JSON string holding one.

    Raises:
        InputError: Not a list of strings.
    """
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise InputError(
                f"{where}: {what} is not a JSON list of strings: {raw[:80]!r}"
            ) from None
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise InputError(f"{where}: {what} must be a list of strings, got {str(raw)[:80]!r}")
    return [str(v).strip() for v in value if str(v).strip()]


__all__ = [
    "BOM",
    "LabelSet",
    "check_tokens",
    "has_relations",
    "int_field",
    "json_array",
    "json_lines",
    "mention_list",
    "read_text",
    "str_field",
]
