"""CrossNER loader: CoNLL-style BIO files (``token<TAB>tag``, blank line between sentences).

Bad input is never scored silently:

* a line that is not ``token<TAB>tag`` (a token without a tag, extra columns), and a tag that
  is not ``O``, ``B-<label>`` or ``I-<label>``, raise :class:`~samalign.errors.InputError`
  naming the file and line;
* an ``I-`` tag that continues no entity (after ``O`` or another label; invalid IOB2) is
  repaired by the conlleval convention, as if it were ``B-``, with a warning naming the file
  and line (``strict=True`` makes it an error instead). The released CrossNER files have none.
"""

from __future__ import annotations

import logging
from pathlib import Path

from samalign.errors import InputError
from samalign.evaluation.metrics import bio_to_spans, invalid_bio_positions
from samalign.evaluation.sentences import GoldEntity, Sentence, make_entity, token_offsets

log = logging.getLogger(__name__)

CrossNERSentence = Sentence
"""Former name of :class:`~samalign.evaluation.sentences.Sentence`."""


def _sentence(
    sid: str, tokens: list[str], tags: list[str], lines: list[int], file: Path, strict: bool
) -> Sentence:
    text = " ".join(tokens)
    for pos in invalid_bio_positions(tags):
        where = f"{file}:{lines[pos]}"
        if strict:
            raise InputError(
                f"{where}: tag {tags[pos]!r} continues no entity (invalid IOB2: an I- tag must "
                "follow B- or I- of the same label)"
            )
        log.warning(
            "%s: tag %r continues no entity (invalid IOB2); read as B-%s (conlleval convention)",
            where,
            tags[pos],
            tags[pos][2:],
        )
    offsets = token_offsets(tokens)
    entities: list[GoldEntity] = [
        make_entity(text, offsets, start, end, label)
        for start, end, label in sorted(bio_to_spans(tags, repair=True))
    ]
    return Sentence(
        id=sid,
        tokens=tuple(tokens),
        tags=tuple(tags),
        text=text,
        entities=tuple(entities),
        origin=f"{file}:{lines[0]}",
    )


def read_crossner(
    path: str | Path, *, prefix: str | None = None, strict: bool = False
) -> list[Sentence]:
    """Read a CrossNER (CoNLL BIO) file.

    Args:
        path: A ``train.txt``/``dev.txt``/``test.txt`` file.
        prefix: Id prefix (default: ``<domain>-<split>`` from the path); ids are
            ``<prefix>-<index>``.
        strict: Raise on invalid IOB2 (an ``I-`` tag continuing no entity) instead of
            repairing it with a warning.

    Raises:
        InputError: If the file cannot be read, a line is not ``token<TAB>tag``, or a tag is
            malformed (the message names the file and line).
    """
    file = Path(path)
    prefix = prefix or f"{file.parent.name}-{file.stem}"
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []

    def flush() -> None:
        if tokens:
            sid = f"{prefix}-{len(sentences)}"
            sentences.append(_sentence(sid, tokens, tags, lines, file, strict))
            tokens.clear()
            tags.clear()
            lines.clear()

    try:
        handle = open(file, encoding="utf-8-sig")  # noqa: SIM115 - closed below; BOM dropped
    except OSError as err:
        raise InputError(f"cannot read {file}: {err.strerror}") from None
    with handle:
        try:
            for number, raw in enumerate(handle, start=1):
                line = raw.rstrip("\r\n")
                if not line.strip():
                    flush()
                    continue
                parts = line.split("\t")
                if len(parts) != 2 or not parts[0] or not parts[1].strip():
                    problem = (
                        "a token without a tag" if len(parts) == 1 or not parts[1].strip() else ""
                    )
                    raise InputError(
                        f"{file}:{number}: expected 'token<TAB>tag'"
                        + (f" ({problem})" if problem else "")
                        + f", got {line!r}"
                    )
                token, tag = parts[0], parts[1].strip()
                try:
                    bio_to_spans([tag])
                except InputError:
                    raise InputError(
                        f"{file}:{number}: tag {tag!r} is not 'O', 'B-<label>' or 'I-<label>'"
                    ) from None
                tokens.append(token)
                tags.append(tag)
                lines.append(number)
        except UnicodeDecodeError as err:
            raise InputError(f"{file}: not UTF-8 text (byte {err.start})") from None
    flush()
    return sentences


__all__ = ["CrossNERSentence", "GoldEntity", "read_crossner"]
