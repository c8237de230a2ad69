"""UniversalNER conversations (the Pile-NER-type instruction data and UniNER's test files).

A JSON array of ``{"id": ..., "conversations": [...]}``; the turns are ``Text: <passage>``,
``I've read this text.``, then question/answer pairs ``What describes <type> in the text?`` /
``["mention", ...]`` (a JSON list of strings). Conversations over the same text are grouped into
one record; every type asked is in :attr:`~samalign.datasets.records.Record.asked` (an empty
answer is an explicit negative). The label set is open (``label_set`` is ``None``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from samalign.datasets.files import json_array, mention_list, read_text, unicode_text
from samalign.datasets.records import DataFile, EntityMention, Origin, Record, unique_ids
from samalign.errors import InputError, quoted

_QUESTION = re.compile(r"^What describes (?P<type>.+?) in the text\?$", re.DOTALL)
_TEXT = "Text: "


def _turns(item: Any, where: str) -> list[str]:
    if not isinstance(item, dict) or not isinstance(item.get("conversations"), list):
        raise InputError(f"{where}: expected an object with a 'conversations' list")
    values: list[str] = []
    for number, turn in enumerate(item["conversations"]):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise InputError(f"{where}: turn {number} must be an object with a string 'value'")
        values.append(turn["value"])
    if not values or not values[0].startswith(_TEXT):
        raise InputError(f"{where}: the first turn must be 'Text: <passage>'")
    if not values[0][len(_TEXT) :].strip():
        raise InputError(f"{where}: the passage after 'Text: ' is empty")
    unicode_text(values[0][len(_TEXT) :], "the passage", where)
    return values


def read_uniner(path: str | Path) -> DataFile:
    """Read UniversalNER conversation records, grouping conversations over the same text.

    Returns:
        One record per distinct text (ids ``uniner:<id of its first conversation>``).

    Raises:
        InputError: A record has no ``conversations`` list, the first turn is not
            ``Text: ...``, a question is not ``What describes <type> in the text?``, or an
            answer is not a JSON list (naming the file and record).
    """
    file = Path(path)
    groups: dict[str, dict[str, Any]] = {}
    for index, item in enumerate(json_array(file, read_text(file))):
        where = f"{file} record {index}"
        if isinstance(item, dict) and "id" in item:
            where += f" (id {quoted(item['id'])})"
        values = _turns(item, where)
        text = values[0][len(_TEXT) :]
        source = str(item["id"]) if "id" in item else None
        group = groups.setdefault(
            text,
            {
                "id": source if source is not None else str(index),
                "source": source,
                "asked": {},
                "m": {},
                "index": index,
            },
        )
        # turns: text, "I've read this text.", then (question, answer) pairs
        for q in range(2, len(values) - 1, 2):
            match = _QUESTION.match(values[q].strip())
            if match is None:
                raise InputError(
                    f"{where}: turn {q} must be 'What describes <type> in the text?', got "
                    f"{quoted(values[q])}"
                )
            type_ = match.group("type").strip()
            mentions = mention_list(values[q + 1], where, f"the answer in turn {q + 1}")
            group["asked"].setdefault(type_, None)
            group["m"].update(dict.fromkeys(EntityMention(type=type_, text=m) for m in mentions))
    records = [
        Record(
            id=f"uniner:{g['id']}",
            text=text,
            entities=tuple(g["m"]),
            asked=tuple(g["asked"]),
            source_id=g["source"],
            origin=Origin(file=str(file), index=g["index"]),
        )
        for text, g in groups.items()
    ]
    return DataFile(path=file, format="uniner", records=tuple(unique_ids(records)))


__all__ = ["read_uniner"]
