"""Answer formats: JSON schema for constrained decoding, gold-answer rendering, parsing.

Each format exists once and is used both at inference (schema + parser) and for building
training data (gold renderer), so training and serving always agree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from samalign.errors import InputError, OutputParseError
from samalign.prompts.jsonparse import loads_lenient

MAX_MENTION_CHARS = 300
"""Upper bound on a free-text mention in a schema (keeps weak models from running away)."""


def mention_schema(schema: dict[str, Any], mentions: Sequence[str] | None) -> dict[str, Any]:
    """The JSON schema of one mention of an answer schema (``schema`` gets its ``$defs``).

    With ``mentions``, a reference to an ``enum`` of those strings (defined once in
    ``schema["$defs"]``); otherwise a bounded free string.
    """
    if mentions is None:
        return {"type": "string", "minLength": 1, "maxLength": MAX_MENTION_CHARS}
    schema["$defs"] = {"mention": {"type": "string", "enum": list(dict.fromkeys(mentions))}}
    return {"$ref": "#/$defs/mention"}


class ParsedTypedMentions(BaseModel):
    """A parsed ``{type: [mention, ...]}`` answer."""

    model_config = ConfigDict(frozen=True)

    pairs: tuple[tuple[str, str], ...]
    """(type, mention) pairs in answer order, types as the model wrote them (schema names)."""
    out_of_schema: tuple[str, ...] = ()
    """Types the model used that are not in the schema."""
    dropped: tuple[tuple[str, str], ...] = ()
    """(type, mention) pairs whose type is not in the schema."""
    repaired: bool = False
    """Whether the answer was truncated and repaired."""


class ParsedAssignments(BaseModel):
    """A parsed ``{mention: type}`` answer."""

    model_config = ConfigDict(frozen=True)

    assignments: tuple[tuple[str, str], ...]
    repaired: bool = False


class TypedMentionsFormat:
    """``{"type": ["mention", ...], ...}`` — the IEPile NER answer format.

    Used by the anchor and explorer extractors (types = target type names) and by the
    archetype classifier (types = archetypes, mentions = the tagged candidates).
    """

    def schema(
        self,
        types: Sequence[str],
        *,
        mentions: Sequence[str] | None = None,
        max_items: int = 32,
    ) -> dict[str, Any]:
        """JSON schema of an answer.

        Args:
            types: The schema types; every one is a required key.
            mentions: If given, mentions are restricted to these strings (``enum``).
            max_items: Upper bound on mentions per type.
        """
        schema: dict[str, Any] = {"type": "object"}
        item = mention_schema(schema, mentions)
        array = {"type": "array", "items": item, "maxItems": max_items}
        schema["properties"] = {t: array for t in types}
        schema["required"] = list(types)
        schema["additionalProperties"] = False
        return schema

    def render_gold(self, types: Sequence[str], answer: Mapping[str, Sequence[str]]) -> str:
        """The gold answer text for training: every schema type present, in schema order."""
        unknown = sorted(set(answer) - set(types))
        if unknown:
            raise InputError(f"gold answer uses types {unknown} that are not in the schema")
        return json.dumps({t: list(answer.get(t, ())) for t in types}, ensure_ascii=False)

    def parse(self, raw: str, types: Sequence[str]) -> ParsedTypedMentions:
        """Parse a model answer.

        Accepts the object form and, leniently, a list of ``{"entity", "entity_type"}``
        or ``{"entity", "type"}`` records (the IEPile raw form).

        Raises:
            OutputParseError: If the answer has no usable JSON of either form.
        """
        result = loads_lenient(raw)
        value = result.value
        allowed = {t.casefold(): t for t in types}
        pairs: list[tuple[str, str]] = []
        dropped: list[tuple[str, str]] = []
        out: list[str] = []

        def add(type_: Any, mention: Any) -> None:
            if not isinstance(type_, str) or not isinstance(mention, str | int | float):
                return
            key = type_.strip().casefold()
            text = str(mention).strip()
            if key not in allowed:
                if type_ not in out:
                    out.append(type_)
                if text:
                    dropped.append((type_, text))
                return
            if text:
                pairs.append((allowed[key], text))

        if isinstance(value, dict):
            for type_, mentions in value.items():
                if isinstance(mentions, list):
                    for m in mentions:
                        add(type_, m)
                elif isinstance(mentions, str):
                    add(type_, mentions)
        elif isinstance(value, list):
            if value and not any(isinstance(rec, dict) for rec in value):
                raise OutputParseError(
                    "expected a JSON object mapping types to mention lists, got a list without "
                    "records",
                    raw=raw,
                )
            for rec in value:
                if not isinstance(rec, dict):
                    continue
                mention = rec.get("entity", rec.get("mention", rec.get("name")))
                type_ = rec.get("entity_type", rec.get("type", rec.get("label")))
                add(type_, mention)
        else:
            raise OutputParseError(
                "expected a JSON object mapping types to mention lists, "
                f"got {type(value).__name__}",
                raw=raw,
            )
        return ParsedTypedMentions(
            pairs=tuple(pairs),
            out_of_schema=tuple(out),
            dropped=tuple(dropped),
            repaired=result.repaired,
        )


class AssignmentsFormat:
    """``[{"entity": "mention", "type": "type"}, ...]`` — the calibrator's answer.

    Figure 8 asks for ``[{"entity name": "corrected type"}]``; naming the two fields lets the
    schema restrict the type to the domain's types while staying the same for every request
    of a domain (so the server compiles its grammar once). The parser accepts Figure 8's
    one-key objects and a plain ``{"mention": "type"}`` object too.
    """

    def schema(
        self, types: Sequence[str], *, mentions: Sequence[str] | None = None, max_items: int = 64
    ) -> dict[str, Any]:
        """JSON schema of an answer.

        Args:
            types: The allowed types.
            mentions: If given, ``entity`` is restricted to these strings (a per-request
                schema); otherwise it is a bounded free string.
            max_items: Upper bound on records.
        """
        entity: dict[str, Any]
        if mentions is not None:
            entity = {"type": "string", "enum": list(dict.fromkeys(mentions))}
        else:
            entity = {"type": "string", "minLength": 1, "maxLength": MAX_MENTION_CHARS}
        record = {
            "type": "object",
            "properties": {
                "entity": entity,
                "type": {"type": "string", "enum": list(dict.fromkeys(types))},
            },
            "required": ["entity", "type"],
            "additionalProperties": False,
        }
        return {"type": "array", "items": record, "maxItems": max_items}

    def render_gold(self, assignments: Mapping[str, str]) -> str:
        """The gold answer text for training (records in the given order)."""
        return json.dumps(
            [{"entity": m, "type": t} for m, t in assignments.items()], ensure_ascii=False
        )

    def parse(self, raw: str) -> ParsedAssignments:
        """Parse a model answer into (mention, type) assignments.

        Raises:
            OutputParseError: If the answer has no usable JSON.
        """
        result = loads_lenient(raw)
        value = result.value
        items: list[tuple[str, str]] = []
        records: list[Any] = [value] if isinstance(value, dict) else list(value)
        for rec in records:
            if not isinstance(rec, dict):
                continue
            if "entity" in rec:  # the record form; one without a type (cut off) says nothing
                m, t = rec.get("entity"), rec.get("type", rec.get("entity_type"))
                if isinstance(m, str) and isinstance(t, str):
                    items.append((m, t))
                continue
            for m, t in rec.items():
                if isinstance(m, str) and isinstance(t, str):
                    items.append((m, t))
        if not items and records and not all(isinstance(r, dict) and not r for r in records):
            raise OutputParseError("no (entity, type) assignments found in the answer", raw=raw)
        return ParsedAssignments(assignments=tuple(items), repaired=result.repaired)


__all__ = [
    "MAX_MENTION_CHARS",
    "AssignmentsFormat",
    "ParsedAssignments",
    "ParsedTypedMentions",
    "TypedMentionsFormat",
    "mention_schema",
]
