"""Match a mention string a model wrote back to one of the candidates it was given."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from samalign.types import Diagnostic

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


def assign_types(
    answers: Iterable[tuple[str, str]],
    candidates: Sequence[str],
    *,
    stage: str,
    to_label: Callable[[str], str | None],
) -> tuple[dict[str, str], list[Diagnostic]]:
    """Map each candidate to the first valid type a model gave it.

    Args:
        answers: (mention as written, type as written) pairs, in answer order.
        candidates: The mentions the model was asked about.
        stage: Stage name for diagnostics.
        to_label: Maps a written type to the label to keep (``None``: not a valid type).

    Returns:
        The assignments, and one diagnostic per kind of problem: answers about mentions that
        were not asked about, types outside the schema, mentions given several types.
    """
    assigned: dict[str, str] = {}
    unknown: list[str] = []
    invalid: list[str] = []
    ignored: dict[str, list[str]] = {}
    for answer, written in answers:
        mention = resolve_mention(answer, candidates)
        label = to_label(written)
        if mention is None:
            unknown.append(answer)
        elif label is None:
            invalid.append(written)
        elif mention in assigned and assigned[mention] != label:
            ignored.setdefault(mention, []).append(label)
        else:
            assigned.setdefault(mention, label)
    diagnostics: list[Diagnostic] = []
    if unknown:
        diagnostics.append(
            Diagnostic(
                stage=stage,
                kind="hallucination",
                message=f"answers about mentions it was not asked about, ignored: {unknown}",
            )
        )
    if invalid:
        diagnostics.append(
            Diagnostic(
                stage=stage,
                kind="label_out_of_schema",
                message=f"types outside the schema, ignored: {list(dict.fromkeys(invalid))}",
            )
        )
    if ignored:
        kept = {m: assigned[m] for m in ignored}
        diagnostics.append(
            Diagnostic(
                stage=stage,
                kind="duplicate_assignment",
                message=f"mentions given several types; kept the first {kept}, ignored {ignored}",
            )
        )
    return assigned, diagnostics


def assign_asked(
    answers: Iterable[tuple[str, str]],
    asked: Sequence[str],
    *,
    stage: str,
    to_label: Callable[[str], str | None],
) -> tuple[dict[str, str], list[str], list[Diagnostic]]:
    """:func:`assign_types` for the mentions a stage asked about, with those left without a type.

    Returns:
        The assignments, the mentions of ``asked`` that got no valid type (in ``asked``
        order), and the diagnostics of :func:`assign_types`.
    """
    assigned, diagnostics = assign_types(answers, asked, stage=stage, to_label=to_label)
    return assigned, [m for m in asked if m not in assigned], diagnostics


__all__ = ["assign_asked", "assign_types", "resolve_mention"]
