"""Match a mention string a model wrote back to one of the candidates it was given."""

from __future__ import annotations

import re
from collections.abc import Sequence

_TAGS = re.compile(r"</?ENT>", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def _normal(text: str) -> str:
    return _SPACE.sub(" ", _TAGS.sub("", text)).strip().casefold()


def resolve_mention(answer: str, candidates: Sequence[str]) -> str | None:
    """The candidate a model meant by ``answer``, or ``None``.

    Tried in order: exact; with ``<ENT>`` tags and surrounding whitespace removed; a unique
    case- and whitespace-insensitive match. An ambiguous answer resolves to nothing.
    """
    if answer in candidates:
        return answer
    stripped = _TAGS.sub("", answer).strip()
    if stripped in candidates:
        return stripped
    key = _normal(answer)
    matches = [c for c in dict.fromkeys(candidates) if _normal(c) == key]
    return matches[0] if len(matches) == 1 else None


__all__ = ["resolve_mention"]
