"""Pile-NER instruction records in SLIMER's JSON Lines form.

One line per (passage, entity type)::

    {"doc_question_pairID": "41753:6", "tagName": "name", "input": "<passage>",
     "instruction": "Extract the Named Entities of type NAME ...", "output": ["map-stream"]}

``output`` is a JSON list of mention strings (a list or a JSON string holding one). The lines of
one passage (same document id before the ``:`` and same ``input``) are grouped into one record;
every ``tagName`` asked is in :attr:`~samalign.datasets.records.Record.asked`, so a type asked
with an empty answer is an explicit negative. Pile-NER's label set is open (``label_set`` is
``None``): a type a passage is not asked about may still occur in it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from samalign.datasets.files import json_lines, mention_list, read_text, str_field
from samalign.datasets.records import DataFile, EntityMention, Origin, Record, unique_ids


def read_pilener(path: str | Path) -> DataFile:
    """Read SLIMER's Pile-NER JSON Lines, grouping the per-type lines of each passage.

    Returns:
        One record per passage (ids ``pilener:<document id>``), mentions without offsets.

    Raises:
        InputError: A line is not JSON or lacks ``tagName``/``input``, or ``output`` is not a
            JSON list of strings (naming the file and line).
    """
    file = Path(path)
    groups: dict[str, dict[str, Any]] = {}
    for number, rec in json_lines(file, read_text(file)):
        where = f"{file}:{number}"
        text = str_field(rec, "input", where)
        tag = str_field(rec, "tagName", where).strip()
        mentions = mention_list(rec.get("output", "[]"), where, "field 'output'")
        pair = rec.get("doc_question_pairID")
        doc = str(pair).split(":", 1)[0] if pair is not None else None
        group = groups.setdefault(
            f"{doc or f'line{number}'}\u0000{text}",
            {"doc": doc, "text": text, "asked": {}, "m": {}, "line": number},
        )
        group["asked"].setdefault(tag, None)
        group["m"].update(dict.fromkeys(EntityMention(type=tag, text=m) for m in mentions))
    records = [
        Record(
            id=f"pilener:{g['doc'] or 'line' + str(g['line'])}",
            text=g["text"],
            entities=tuple(g["m"]),
            asked=tuple(g["asked"]),
            source_id=g["doc"],
            origin=Origin(file=str(file), index=index, line=g["line"]),
        )
        for index, g in enumerate(groups.values())
    ]
    return DataFile(path=file, format="pilener", records=tuple(unique_ids(records)))


__all__ = ["read_pilener"]
