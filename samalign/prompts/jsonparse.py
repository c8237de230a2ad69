"""Lenient JSON extraction from what LLMs really emit.

Handles fenced code blocks, text before or after the JSON value, Python-style single quotes
and ``True``/``None`` literals, trailing commas, and output cut off mid-value (a truncated
answer is repaired by closing what is open and dropping the incomplete tail).

An answer nested deeper than :data:`MAX_DEPTH` brackets is refused as unparseable (an
:class:`~samalign.errors.OutputParseError`, so the stage re-asks a bounded number of times and
then records a Diagnostic) before any JSON decoder sees it: no stage answer needs such depth,
and Python's decoders would raise ``RecursionError`` on it.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any

from samalign.errors import OutputParseError

_FENCE = re.compile(r"```(?:json|JSON|python)?\s*\n?(.*?)(?:```|$)", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([\]}])")


@dataclass(frozen=True)
class LenientResult:
    """A parsed JSON value and whether it had to be repaired from a truncated text."""

    value: Any
    repaired: bool


def _candidates(raw: str) -> list[str]:
    texts = [m.group(1) for m in _FENCE.finditer(raw)]
    texts.append(raw)
    return texts


_MAX_STARTS = 20

MAX_DEPTH = 64
"""Deepest bracket nesting an answer may have (stage answers need 3)."""


def bracket_depth(text: str) -> int:
    """The deepest ``{``/``[`` nesting of ``text``, counting every bracket (also in strings).

    Counting brackets inside strings too keeps the bound safe whatever the quoting: no JSON or
    Python decoder nests deeper than this.
    """
    depth = deepest = 0
    for ch in text:
        if ch in "{[":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "}]":
            depth = max(0, depth - 1)
    return deepest


def _complete_value(body: str) -> Any | None:
    decoder = json.JSONDecoder()
    for candidate in (body, _TRAILING_COMMA.sub(r"\1", body)):
        try:
            value, _ = decoder.raw_decode(candidate)
            return value
        except json.JSONDecodeError:
            continue
    return _python_literal(body)


def _first_value(text: str) -> tuple[Any, bool] | None:
    starts = [i for i, ch in enumerate(text) if ch in "{["][:_MAX_STARTS]
    if not starts:
        return None
    fallback: Any | None = None  # e.g. "[1]" in "see [1]: {...}" is kept only if nothing better
    for start in starts:
        body = text[start:]
        value = _complete_value(body)
        if isinstance(value, dict) or (
            isinstance(value, list) and all(isinstance(v, dict | str | list) for v in value)
        ):
            return value, False
        if isinstance(value, list):
            fallback = value if fallback is None else fallback
            continue
        if _looks_like_json(body):
            repaired = _repair_truncated(body)
            if repaired is not None:
                return repaired, True
    return (fallback, False) if fallback is not None else None


def _looks_like_json(body: str) -> bool:
    """Whether the text after an opening bracket starts like a JSON value (not prose)."""
    rest = body[1:].lstrip()
    return not rest or rest[0] in "\"'{[]}-0123456789tfn"


def _python_literal(body: str) -> Any | None:
    end = _matching_end(body)
    if end is None:
        return None
    try:
        value = ast.literal_eval(body[:end])
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, dict | list) else None


def _matching_end(body: str) -> int | None:
    """Index after the bracket that closes ``body[0]``, respecting quoted strings."""
    depth = 0
    quote: str | None = None
    escaped = False
    for i, ch in enumerate(body):
        if quote is not None:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _repair_truncated(body: str) -> Any | None:
    """Close a JSON text cut off mid-value, dropping the incomplete last element."""
    stack: list[str] = []
    in_string = False
    escaped = False
    safe_cut = 0  # position after which we can cut and close
    safe_stack: list[str] = []
    for i, ch in enumerate(body):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
            safe_cut, safe_stack = i + 1, list(stack)
        elif ch in "}]":
            if not stack:
                break
            stack.pop()
            safe_cut, safe_stack = i + 1, list(stack)
            if not stack:
                break
        elif ch == ",":
            safe_cut, safe_stack = i, list(stack)
    attempts = [(safe_cut, safe_stack), (len(body), stack)]
    if not in_string:
        attempts.reverse()  # nothing half-written: keep the last complete value too
    for cut, closers in attempts:
        text = body[:cut].rstrip().rstrip(",:")
        if in_string and cut == len(body):
            text += '"'
        candidate = _TRAILING_COMMA.sub(r"\1", text + "".join(reversed(closers)))
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    return None


def loads_lenient(raw: str) -> LenientResult:
    """Parse the first JSON object or array in an LLM answer.

    Args:
        raw: The model's raw text.

    Returns:
        The parsed value and whether it was repaired from a truncated answer.

    Raises:
        OutputParseError: If no JSON object or array can be recovered, or the answer nests
            deeper than :data:`MAX_DEPTH`.
    """
    depth = bracket_depth(raw)
    if depth > MAX_DEPTH:
        raise OutputParseError(
            f"the answer nests brackets {depth} levels deep (at most {MAX_DEPTH} are read); "
            f"answer with the flat JSON of the required format: {_snippet(raw)}",
            raw=raw,
        )
    for text in _candidates(raw):
        found = _first_value(text)
        if found is not None:
            return LenientResult(value=found[0], repaired=found[1])
    raise OutputParseError(f"no JSON object or array found in the answer: {_snippet(raw)}", raw=raw)


def _snippet(raw: str) -> str:
    return repr(raw if len(raw) <= 200 else raw[:200] + "…")


__all__ = ["MAX_DEPTH", "LenientResult", "bracket_depth", "loads_lenient"]
