"""AnchorAlign's supervised NER stage: its instruction and its answer format (Eq. 2).

In AnchorAlign's supervised setting the NER decoder is trained on the dataset and its typed
entities are final: there is no archetype mediation and no calibration. Its output is the
linearised entity sequence of Eq. 2, ``(m_1, <t_1>), …, (m_n, <t_n>)`` — written here as JSON
records in text order::

    [{"mention": "John Smith", "type": "person"}, {"mention": "IBM", "type": "organization"}]

AnchorAlign writes each type as a single special token; a served LoRA adapter must not add
tokens (vLLM rejects them), so types are written as the domain's type names and the JSON schema
restricts them to those names instead (as the relation formats do for relation labels).

The prompt (``templates/supervised_ner.j2``) has the IEPile instruction shape of the other
stages: ``{"instruction", "schema", "input"}`` with the domain's type names as the schema.
The same format object gives the JSON schema (inference), the gold renderer (training data,
gold replay) and the lenient parser.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from samalign.errors import InputError, OutputParseError
from samalign.prompts.formats import (
    ParsedTypedMentions,
    TypedMentionsFormat,
    mention_schema,
    typed_record_schema,
)

SUPERVISED_NER_INSTRUCTION = (
    "You are an expert in named entity recognition. Please extract every entity of the "
    "schema's types from the input, in the order they occur, as "
    '[{"mention": "...", "type": "..."}]. Copy each mention exactly from the input and give it '
    "one type of the schema. Return an empty list if there is no such entity. Please respond "
    "in the format of a JSON string."
)
"""The supervised NER stage's instruction (samalign's; AnchorAlign publishes no prompt)."""

_TYPED = TypedMentionsFormat()


class EntityRecordsFormat:
    """``[{"mention": "...", "type": "..."}, ...]`` — typed entities in text order (Eq. 2).

    The parser is the typed-mentions parser (:class:`~samalign.prompts.formats.
    TypedMentionsFormat`), which reads this record form and, leniently, the IEPile object
    form ``{"type": ["mention", ...]}`` and ``entity``/``entity_type`` keys.
    """

    def schema(
        self, types: Sequence[str], *, mentions: Sequence[str] | None = None, max_items: int = 128
    ) -> dict[str, Any]:
        """JSON schema of an answer: at most ``max_items`` records of a mention and its type.

        ``types`` are the allowed types (the domain's type names); ``mentions``, if given,
        restrict the mentions to these strings (``enum``), as in the typed-mentions format.

        Raises:
            InputError: If ``types`` is empty.
        """
        if not types:
            raise InputError("a supervised NER answer schema needs at least one type")
        schema: dict[str, Any] = {"type": "array"}
        mention = mention_schema(schema, mentions)
        schema["items"] = typed_record_schema("mention", mention, types)
        schema["maxItems"] = max_items
        return schema

    def render_gold(self, types: Sequence[str], entities: Iterable[tuple[str, str]]) -> str:
        """The gold answer text: one record per ``(mention, type)``, in the given order.

        A repeated ``(mention, type)`` pair is written once.

        Raises:
            InputError: A type outside ``types``, or an empty mention.
        """
        allowed = set(types)
        records: dict[tuple[str, str], None] = {}
        for mention, type_ in entities:
            if type_ not in allowed:
                raise InputError(
                    f"gold entity ({mention!r}, {type_!r}) uses a type that is not in the "
                    f"schema {sorted(allowed)}"
                )
            if not mention.strip():
                raise InputError(f"gold entity of type {type_!r} has an empty mention")
            records.setdefault((mention, type_), None)
        return json.dumps([{"mention": m, "type": t} for m, t in records], ensure_ascii=False)

    def parse(self, raw: str, types: Sequence[str]) -> ParsedTypedMentions:
        """Parse a model answer into ``(type, mention)`` pairs (types as in ``types``).

        Raises:
            OutputParseError: If the answer has no usable JSON list of records (or object).
        """
        try:
            return _TYPED.parse(raw, types)
        except OutputParseError as err:
            raise OutputParseError(
                f'expected a JSON list of {{"mention": ..., "type": ...}} records ({err.message})',
                raw=raw,
            ) from None


SUPERVISED_NER_FORMAT = EntityRecordsFormat()
"""Answer format of the supervised NER stage."""


__all__ = ["SUPERVISED_NER_FORMAT", "SUPERVISED_NER_INSTRUCTION", "EntityRecordsFormat"]
