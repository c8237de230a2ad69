"""Answer formats: JSON schema for constrained decoding, gold-answer rendering, parsing.

Each format exists once and is used both at inference (schema + parser) and for building
training data (gold renderer), so training and serving always agree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
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


def typed_record_schema(key: str, mention: dict[str, Any], types: Sequence[str]) -> dict[str, Any]:
    """The JSON schema of one ``{key: mention, "type": type}`` answer record.

    Args:
        key: The mention's key (``entity``, ``mention``).
        mention: The mention's schema (e.g. from :func:`mention_schema`).
        types: The allowed types (an ``enum``, in this order, each once).
    """
    return {
        "type": "object",
        "properties": {
            key: mention,
            "type": {"type": "string", "enum": list(dict.fromkeys(types))},
        },
        "required": [key, "type"],
        "additionalProperties": False,
    }


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
        found: list[tuple[Any, Any]] = []
        if isinstance(value, dict):
            for type_, mentions in value.items():
                if isinstance(mentions, list):
                    found.extend((type_, m) for m in mentions)
                elif isinstance(mentions, str):
                    found.append((type_, mentions))
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
                found.append((type_, mention))
        else:
            raise OutputParseError(
                "expected a JSON object mapping types to mention lists, "
                f"got {type(value).__name__}",
                raw=raw,
            )
        return _typed(found, types, repaired=result.repaired)


def _typed(
    found: Sequence[tuple[Any, Any]], types: Sequence[str], *, repaired: bool
) -> ParsedTypedMentions:
    """``(type, mention)`` pairs split into those of the schema (its spelling) and the rest."""
    allowed = {t.casefold(): t for t in types}
    pairs: list[tuple[str, str]] = []
    dropped: list[tuple[str, str]] = []
    out: list[str] = []
    for type_, mention in found:
        if not isinstance(type_, str) or not isinstance(mention, str | int | float):
            continue
        key = type_.strip().casefold()
        text = str(mention).strip()
        if key not in allowed:
            if type_ not in out:
                out.append(type_)
            if text:
                dropped.append((type_, text))
        elif text:
            pairs.append((allowed[key], text))
    return ParsedTypedMentions(
        pairs=tuple(pairs), out_of_schema=tuple(out), dropped=tuple(dropped), repaired=repaired
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
        record = typed_record_schema("entity", entity, types)
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


_ENT_TAG = re.compile(r"</?ENT>")


def _untag(mention: str) -> str:
    return _ENT_TAG.sub("", mention).strip()


def _records(value: Any, raw: str) -> list[dict[Any, Any]]:
    """The one-key records of a ``[{"mention": "type"}, ...]`` answer (a bare object is one)."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        records = [rec for rec in value if isinstance(rec, dict)]
        if value and not records:
            raise OutputParseError(
                'expected a JSON list of {"mention": "type"} objects, got a list without objects',
                raw=raw,
            )
        return records
    raise OutputParseError(
        f'expected a JSON list of {{"mention": "type"}} objects, got {type(value).__name__}',
        raw=raw,
    )


def _record_pairs(rec: Mapping[Any, Any]) -> Iterator[tuple[str, str]]:
    """``(mention, type)`` pairs of one record.

    A record is ``{"mention": "type"}`` (several keys allowed); ``{"entity": m, "type": t}``
    (the default profile's record form) is read too, so a mismatched answer is not misread.
    """
    if set(rec) == {"entity", "type"} and all(isinstance(v, str) for v in rec.values()):
        yield str(rec["entity"]), str(rec["type"])
        return
    for mention, type_ in rec.items():
        if isinstance(mention, str) and isinstance(type_, str):
            yield mention, type_


class MentionRecordsFormat:
    """``[{"mention": "type"}, ...]`` — the SAM-NER authors' archetype-classifier answer.

    Used by the ``reference`` profile's classifier (types = the lower-case archetype keys, or
    the target labels for direct typing). The authors decoded it without a schema, so
    :meth:`schema` is ``None``. The parser also reads the object form ``{"type": [mention]}``
    and strips ``<ENT>`` tags a model copies into a mention.
    """

    def schema(self, *_args: Any, **_kwargs: Any) -> None:
        """No JSON schema: the reference profile decodes freely, as the authors did."""
        return None

    def render_gold(self, types: Sequence[str], answer: Mapping[str, Sequence[str]]) -> str:
        """The gold answer: one ``{mention: type}`` record per mention, in ``answer`` order.

        Raises:
            InputError: The answer uses a type outside ``types``.
        """
        unknown = sorted(set(answer) - set(types))
        if unknown:
            raise InputError(f"gold answer uses types {unknown} that are not in the schema")
        records = [{m: t} for t, mentions in answer.items() for m in mentions]
        return json.dumps(records, ensure_ascii=False)

    def parse(self, raw: str, types: Sequence[str]) -> ParsedTypedMentions:
        """Parse a model answer into (type, mention) pairs (types as in ``types``).

        Raises:
            OutputParseError: The answer has no usable JSON list or object.
        """
        result = loads_lenient(raw)
        value = result.value
        found: list[tuple[str, str]] = []
        if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
            found = [(t, _untag(m)) for t, ms in value.items() for m in ms if isinstance(m, str)]
        else:
            for rec in _records(value, raw):
                found.extend((t, _untag(m)) for m, t in _record_pairs(rec))
        return _typed(found, types, repaired=result.repaired)


_FINAL_ANSWER = re.compile(
    r"final answer:\s*@{2,}\s*(.*?)(?=\s*@{2,}|$)", re.DOTALL | re.IGNORECASE
)
_FINAL_ONLY = re.compile(r"final answer:", re.IGNORECASE)
_MARKED = re.compile(r"@{2,}\s*(.*?)(?=\s*@{2,}|$)", re.DOTALL)


class MarkedAssignmentsFormat:
    """``final answer: @@ [{"entity name": "type"}] @@`` — the SAM-NER authors' calibrator.

    The answer may come with text around it (reasoning before ``final answer:``). The parser
    reads what the authors' ``getPredictResults.py`` reads: the text between the ``@@``
    markers after ``final answer:`` (any case), else between the first ``@@`` markers, else
    what follows the last ``final answer:``, else the first JSON value of the whole answer;
    names lose ``<ENT>`` tags. The answer is not pure JSON, so there is no JSON schema
    (:meth:`schema` is ``None``).
    """

    def schema(self, *_args: Any, **_kwargs: Any) -> None:
        """No JSON schema: a json_schema cannot express text before the marked answer."""
        return None

    def render_gold(self, assignments: Mapping[str, str]) -> str:
        """The gold answer, in the prompt's output format (records in the given order)."""
        records = json.dumps([{m: t} for m, t in assignments.items()], ensure_ascii=False)
        return f"final answer:\n@@\n{records}\n@@"

    @staticmethod
    def regions(raw: str) -> list[str]:
        """The texts that may hold the answer, most likely first."""
        regions = [m.group(1) for m in _FINAL_ANSWER.finditer(raw)]
        regions += [m.group(1) for m in _MARKED.finditer(raw)]
        # "final answer:" without markers: what follows its last occurrence
        regions += [raw[m.end() :] for m in reversed(list(_FINAL_ONLY.finditer(raw)))]
        regions.append(raw)
        return list(dict.fromkeys(regions))

    def parse(self, raw: str) -> ParsedAssignments:
        """Parse a model answer into (mention, type) assignments (types as written).

        Raises:
            OutputParseError: No region of the answer holds a JSON list or object.
        """
        problem: OutputParseError | None = None
        for region in self.regions(raw):
            try:
                result = loads_lenient(region)
                records = _records(result.value, raw)
            except OutputParseError as err:
                problem = problem or err
                continue
            items = [(_untag(m), t) for rec in records for m, t in _record_pairs(rec)]
            items = [(m, t) for m, t in items if m]
            if items or not records or all(not rec for rec in records):
                return ParsedAssignments(assignments=tuple(items), repaired=result.repaired)
        raise OutputParseError(
            'no [{"entity name": "type"}] answer found (expected it between @@ markers '
            "after 'final answer:')",
            raw=raw,
        ) from problem


ClassifierFormat = TypedMentionsFormat | MentionRecordsFormat
"""The answer formats of the archetype classifier (samalign's, the reference profile's)."""

CalibrationFormat = AssignmentsFormat | MarkedAssignmentsFormat
"""The answer formats of the calibrator (samalign's, the reference profile's)."""


__all__ = [
    "MAX_MENTION_CHARS",
    "AssignmentsFormat",
    "CalibrationFormat",
    "ClassifierFormat",
    "MarkedAssignmentsFormat",
    "MentionRecordsFormat",
    "ParsedAssignments",
    "ParsedTypedMentions",
    "TypedMentionsFormat",
    "mention_schema",
    "typed_record_schema",
]
