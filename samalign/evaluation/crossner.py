"""CrossNER loader: CoNLL-style BIO files (``token<TAB>tag``, blank line between sentences)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from samalign.errors import InputError
from samalign.types import Span


class GoldEntity(BaseModel):
    """A gold mention: its character span in the space-joined sentence and its label."""

    model_config = ConfigDict(frozen=True)

    span: Span
    label: str


class CrossNERSentence(BaseModel):
    """One sentence: tokens, BIO tags, the space-joined text and the gold entities."""

    model_config = ConfigDict(frozen=True)

    id: str
    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    text: str
    entities: tuple[GoldEntity, ...]


def _sentence(sid: str, tokens: list[str], tags: list[str]) -> CrossNERSentence:
    starts: list[int] = []
    pos = 0
    for tok in tokens:
        starts.append(pos)
        pos += len(tok) + 1
    text = " ".join(tokens)
    entities: list[GoldEntity] = []
    current: tuple[int, int, str] | None = None  # (first token, last token, label)
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, label = tag.partition("-")
        continues = prefix == "I" and current is not None and current[2] == label
        if current is not None and not continues:
            first, last, lab = current
            start, end = starts[first], starts[last] + len(tokens[last])
            entities.append(GoldEntity(span=Span.of(text, start, end), label=lab))
            current = None
        if prefix in ("B", "I") and not continues:
            current = (i, i, label)
        elif continues and current is not None:
            current = (current[0], i, label)
    return CrossNERSentence(
        id=sid, tokens=tuple(tokens), tags=tuple(tags), text=text, entities=tuple(entities)
    )


def read_crossner(path: str | Path, *, prefix: str | None = None) -> list[CrossNERSentence]:
    """Read a CrossNER BIO file.

    Args:
        path: A ``train.txt``/``dev.txt``/``test.txt`` file.
        prefix: Id prefix (default: ``<domain>-<split>`` from the path).

    Raises:
        InputError: If a line is not ``token<TAB>tag``.
    """
    file = Path(path)
    prefix = prefix or f"{file.parent.name}-{file.stem}"
    sentences: list[CrossNERSentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    with open(file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                if tokens:
                    sentences.append(_sentence(f"{prefix}-{len(sentences)}", tokens, tags))
                    tokens, tags = [], []
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                raise InputError(f"{file}:{number}: expected 'token<TAB>tag', got {line!r}")
            tokens.append(parts[0])
            tags.append(parts[1])
    if tokens:
        sentences.append(_sentence(f"{prefix}-{len(sentences)}", tokens, tags))
    return sentences


__all__ = ["CrossNERSentence", "GoldEntity", "read_crossner"]
