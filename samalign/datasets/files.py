r"""Reading dataset files: text (UTF-8, a leading BOM dropped), JSON arrays, JSON Lines.

Every failure is an :class:`~samalign.errors.InputError` naming the file (and the line for
JSON Lines). The readers share these helpers and the field checks below, so every format
reports a broken record the same way. Files someone else wrote are read defensively:

* only a regular file is read (a folder, a device such as ``/dev/zero`` or a pipe is refused
  before reading, so nothing blocks or fills memory);
* a leading UTF-8 byte-order mark is dropped; text that is not UTF-8 is refused (naming the byte);
* JSON nested too deeply for the parser, or holding a number with too many digits, is a clean
  error (:func:`loads`), never a ``RecursionError``;
* JSON Lines are split at ``\n`` only, so a string holding U+2028, U+0085 or a form feed
  (valid in JSON, and written raw by ``ensure_ascii=False``) stays on its line;
* a text field holding a lone surrogate (a ``\ud800`` escape), which no output can encode, is
  refused by :func:`str_field`;
* every value an error message quotes is cut short (:func:`~samalign.errors.quoted`).
"""

from __future__ import annotations

import json
import stat
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from samalign.errors import InputError, quoted

BOM = "\ufeff"
"""The UTF-8 byte-order mark some editors write at the start of a file."""


def read_text(path: Path) -> str:
    """The file's text, without a leading byte-order mark.

    Raises:
        InputError: The file is missing, not a regular file, cannot be read or is not UTF-8.
    """
    name = str(path)
    shown = name if len(name) <= 300 and name.isprintable() else quoted(name, 300)
    try:
        mode = path.stat().st_mode
    except OSError as err:  # missing, no permission, a name too long
        raise InputError(f"cannot read {shown}: {err.strerror or err}") from None
    except ValueError as err:  # a NUL byte in the name
        raise InputError(f"cannot read {shown}: {err}") from None
    if not stat.S_ISREG(mode):
        raise InputError(
            f"{path}: not a regular file (a folder, a device or a pipe); pass a data file"
        )
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text (byte {err.start})") from None
    return text.removeprefix(BOM)


def loads(text: str, where: str) -> Any:
    """``json.loads(text)``; JSON too deep or too long a number is an :class:`InputError`.

    Raises:
        json.JSONDecodeError: The text is not JSON (the caller words the message).
        InputError: The JSON nests too deeply for the parser (``RecursionError``) or holds an
            integer with more digits than Python converts (``ValueError``).
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except (RecursionError, ValueError) as err:
        raise InputError(
            f"{where}: not readable JSON: nested too deeply or a number with too many digits "
            f"({type(err).__name__}); fix the data"
        ) from None


def unicode_text(value: str, what: str, where: str) -> str:
    """``value`` if it is valid Unicode text (no lone surrogate, which no UTF-8 output encodes).

    Raises:
        InputError: Naming ``what`` and the position of the lone surrogate.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(
            f"{where}: {what} is not valid Unicode (lone surrogate at character {err.start}, "
            "e.g. a '\\ud800' escape); fix the text"
        ) from None
    return value


def _loads(text: str, where: str, kind: type, expected: str, *, line: bool) -> Any:
    try:
        value = loads(text, where)
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
        InputError: The text is not JSON (or too deeply nested) or not an array.
    """
    items: list[Any] = _loads(text, str(path), list, "a JSON array of records", line=False)
    return items


def json_lines(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    r"""``(line number, object)`` for every non-blank line of a JSON Lines file.

    Lines end at ``\n`` (a trailing ``\r`` is dropped) and nowhere else.

    Raises:
        InputError: A line is not JSON (or too deeply nested) or not an object (naming the line).
    """
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            where = f"{path}:{number}"
            yield number, _loads(line.removesuffix("\r"), where, dict, "a JSON object", line=True)


def str_field(rec: dict[str, Any], key: str, where: str, *, allow_empty: bool = False) -> str:
    """A record's string field.

    Raises:
        InputError: The field is missing, not a string, empty (unless allowed) or not valid
            Unicode (a lone surrogate).
    """
    if key not in rec:
        raise InputError(f"{where}: field {key!r} is missing")
    value = rec[key]
    if not isinstance(value, str):
        raise InputError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise InputError(f"{where}: field {key!r} is empty")
    return unicode_text(value, f"field {key!r}", where)


def int_field(value: Any, what: str, where: str) -> int:
    """An integer field value (``bool`` is not an integer here).

    Raises:
        InputError: The value is not an integer.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where}: {what} must be an integer, got {quoted(value)}")
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
                f"{where}: a token is empty or contains whitespace ({field}[{i}] = {quoted(token)})"
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
            raise InputError(
                f"{where}: the {what} type must be a non-empty string, got {quoted(value)}"
            )
        if self.labels is not None and value not in self.labels:
            raise InputError(
                f"{where}: {what} type {quoted(value)} is not in the label set "
                f"{quoted(sorted(self.labels), 400)} ({self.source})"
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
            value = loads(raw, where)
        except json.JSONDecodeError:
            raise InputError(
                f"{where}: {what} is not a JSON list of strings: {quoted(raw)}"
            ) from None
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise InputError(f"{where}: {what} must be a list of strings, got {quoted(raw)}")
    return [str(v).strip() for v in value if str(v).strip()]


__all__ = [
    "BOM",
    "LabelSet",
    "check_tokens",
    "has_relations",
    "int_field",
    "json_array",
    "json_lines",
    "loads",
    "mention_list",
    "read_text",
    "str_field",
    "unicode_text",
]
