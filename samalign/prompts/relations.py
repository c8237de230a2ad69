"""The relation decoders' answer format (AnchorAlign §3.2, Eq. 3, paradigm 3).

The forward decoder is subject-centric: one block per subject entity, the subject written
once, followed by all of its (object, relation) pairs. The reverse decoder is the mirror:
one block per object, followed by all of its (subject, relation) pairs::

    forward: [{"subject": "John", "pairs": [{"object": "IBM", "relation": "work for"}]}]
    reverse: [{"object": "IBM", "pairs": [{"subject": "John", "relation": "work for"}]}]

AnchorAlign writes relation labels as single special tokens; a served LoRA adapter must not
add tokens (vLLM rejects them), so relations are written as their domain names and the JSON
schema restricts them to the domain's relation names instead.

As with the NER formats, the same object gives the JSON schema (inference), the gold
renderer (training data, gold replay) and the lenient parser.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from samalign.errors import InputError, OutputParseError
from samalign.prompts.formats import mention_schema
from samalign.prompts.jsonparse import loads_lenient

Direction = Literal["forward", "reverse"]
"""``forward``: subject-centric blocks; ``reverse``: object-centric blocks."""

Triple = tuple[str, str, str]
"""``(head mention, relation, tail mention)``."""

_SUBJECT_KEYS = ("subject", "head", "subj", "source")
_OBJECT_KEYS = ("object", "tail", "obj", "target")
_RELATION_KEYS = ("relation", "relation_type", "type", "predicate", "rel")
_PAIR_KEYS = ("pairs", "relations", "objects", "subjects", "triples")
_WRAPPER_KEYS = ("blocks", "triples", "triplets", "relations")


class ParsedTriplets(BaseModel):
    """A parsed relation answer.

    Attributes:
        triplets: ``(head, relation, tail)`` in answer order; relations are the schema's
            spelling; heads are subjects and tails objects whatever the direction.
        out_of_schema: Relation names the model used that are not in the schema.
        dropped: Triplets whose relation is not in the schema.
        malformed: Human-readable descriptions of blocks or pairs that could not be read
            (missing subject/object/relation, wrong JSON type).
        repaired: Whether the answer was truncated and repaired.
    """

    model_config = ConfigDict(frozen=True)

    triplets: tuple[Triple, ...]
    out_of_schema: tuple[str, ...] = ()
    dropped: tuple[Triple, ...] = ()
    malformed: tuple[str, ...] = ()
    repaired: bool = False


def _first(record: dict[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        if key in record:
            return record[key]
    return None


def _mention(value: Any) -> str | None:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        text = str(value).strip()
        return text or None
    return None


class RelationsFormat:
    """Subject-centric (forward) or object-centric (reverse) relation blocks.

    Args:
        direction: Which decoder's format.
    """

    def __init__(self, direction: Direction) -> None:
        if direction not in ("forward", "reverse"):
            raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
        self.direction: Direction = direction
        self.anchor_key = "subject" if direction == "forward" else "object"
        """The key of a block's own entity."""
        self.other_key = "object" if direction == "forward" else "subject"
        """The key of the entity in each pair."""

    def __repr__(self) -> str:
        return f"RelationsFormat({self.direction!r})"

    def schema(
        self,
        relations: Sequence[str],
        *,
        mentions: Sequence[str] | None = None,
        max_blocks: int = 16,
        max_pairs: int = 16,
    ) -> dict[str, Any]:
        """JSON schema of an answer.

        Args:
            relations: The relation names allowed (the domain's).
            mentions: If given, subjects and objects are restricted to these strings.
            max_blocks: Upper bound on blocks.
            max_pairs: Upper bound on pairs per block.
        """
        if not relations:
            raise InputError("a relation answer schema needs at least one relation name")
        schema: dict[str, Any] = {"type": "array"}
        mention = mention_schema(schema, mentions)
        pair = {
            "type": "object",
            "properties": {
                self.other_key: mention,
                "relation": {"type": "string", "enum": list(dict.fromkeys(relations))},
            },
            "required": [self.other_key, "relation"],
            "additionalProperties": False,
        }
        block = {
            "type": "object",
            "properties": {
                self.anchor_key: mention,
                "pairs": {"type": "array", "items": pair, "minItems": 1, "maxItems": max_pairs},
            },
            "required": [self.anchor_key, "pairs"],
            "additionalProperties": False,
        }
        schema["items"] = block
        schema["maxItems"] = max_blocks
        return schema

    def blocks(self, triplets: Iterable[Triple]) -> list[dict[str, Any]]:
        """Group triplets into this direction's blocks, in first-appearance order.

        Duplicate triplets are written once.
        """
        grouped: dict[str, list[dict[str, str]]] = {}
        seen: set[Triple] = set()
        for head, relation, tail in triplets:
            if (head, relation, tail) in seen:
                continue
            seen.add((head, relation, tail))
            own, other = (head, tail) if self.direction == "forward" else (tail, head)
            grouped.setdefault(own, []).append({self.other_key: other, "relation": relation})
        return [{self.anchor_key: own, "pairs": pairs} for own, pairs in grouped.items()]

    def render_gold(self, triplets: Iterable[Triple], relations: Sequence[str]) -> str:
        """The gold answer text for training (and gold replay).

        Args:
            triplets: ``(head, relation, tail)`` with relations written as schema names.
            relations: The schema's relation names.

        Raises:
            InputError: If a triplet uses a relation outside ``relations`` or an empty mention.
        """
        allowed = set(relations)
        items = list(triplets)
        for head, relation, tail in items:
            if relation not in allowed:
                raise InputError(
                    f"gold triplet ({head!r}, {relation!r}, {tail!r}) uses relation "
                    f"{relation!r}, not in the schema {sorted(allowed)}"
                )
            if not head.strip() or not tail.strip():
                raise InputError(
                    f"gold triplet ({head!r}, {relation!r}, {tail!r}) has an empty mention"
                )
        return json.dumps(self.blocks(items), ensure_ascii=False)

    def parse(self, raw: str, relations: Sequence[str]) -> ParsedTriplets:
        """Parse a model answer.

        Reads this direction's blocks and, leniently, the mirror direction's blocks, flat
        ``{"subject"/"head", "relation", "object"/"tail"}`` records, and IEPile's
        ``{"relation": [{"subject", "object"}]}`` object; a list of blocks or records may
        come wrapped as ``{"triplets": [...]}``. Relation names are matched case-insensitively.

        Raises:
            OutputParseError: If the answer has no usable JSON of any of these forms.
        """
        result = loads_lenient(raw)
        value = result.value
        allowed = {r.casefold(): r for r in relations}
        triplets: list[Triple] = []
        dropped: list[Triple] = []
        out: list[str] = []
        malformed: list[str] = []

        def add(head: Any, relation: Any, tail: Any, where: str) -> None:
            h, t = _mention(head), _mention(tail)
            if h is None or t is None or not isinstance(relation, str) or not relation.strip():
                missing = [
                    n
                    for n, v in (("subject", h), ("relation", relation), ("object", t))
                    if v is None
                    or (isinstance(v, str) and not v.strip())
                    or (n == "relation" and not isinstance(v, str))
                ]
                malformed.append(f"{where}: missing or invalid {', '.join(missing)}")
                return
            key = relation.strip().casefold()
            if key not in allowed:
                if relation not in out:
                    out.append(relation)
                dropped.append((h, relation, t))
                return
            triplets.append((h, allowed[key], t))

        def read_record(rec: Any, where: str) -> None:
            if not isinstance(rec, dict):
                malformed.append(f"{where}: expected an object, got {type(rec).__name__}")
                return
            subject = _first(rec, _SUBJECT_KEYS)
            obj = _first(rec, _OBJECT_KEYS)
            pairs = _first(rec, _PAIR_KEYS)
            if isinstance(pairs, list):  # a block
                own_is_subject = subject is not None
                own = subject if own_is_subject else obj
                if own is None:
                    malformed.append(f"{where}: block without a subject or object")
                    return
                for j, pair in enumerate(pairs):
                    pwhere = f"{where}, pair {j + 1}"
                    if not isinstance(pair, dict):
                        malformed.append(f"{pwhere}: expected an object")
                        continue
                    relation = _first(pair, _RELATION_KEYS)
                    if own_is_subject:
                        add(own, relation, _first(pair, _OBJECT_KEYS), pwhere)
                    else:
                        add(_first(pair, _SUBJECT_KEYS), relation, own, pwhere)
                return
            if subject is not None or obj is not None:  # a flat record
                add(subject, _first(rec, _RELATION_KEYS), obj, where)
                return
            # IEPile's {"relation": [{"subject", "object"}, ...]}
            readable = False
            for relation, items in rec.items():
                if isinstance(items, list):
                    readable = True
                    for j, item in enumerate(items):
                        iwhere = f"{where}, {relation!r} item {j + 1}"
                        if isinstance(item, dict):
                            add(
                                _first(item, _SUBJECT_KEYS),
                                relation,
                                _first(item, _OBJECT_KEYS),
                                iwhere,
                            )
                        else:
                            malformed.append(f"{iwhere}: expected an object")
            if not readable and rec:
                malformed.append(f"{where}: no subject, object or pairs")

        if isinstance(value, list):
            for i, rec in enumerate(value):
                read_record(rec, f"block {i + 1}")
        elif isinstance(value, dict):
            # {"triplets": [...]} wraps the answer, also beside other keys ({"note": ...}),
            # unless the dict is itself a block ({"subject": ..., "relations": [pairs]})
            wrapper = next((k for k in _WRAPPER_KEYS if k in value), None)
            is_block = any(k in value for k in (*_SUBJECT_KEYS, *_OBJECT_KEYS))
            if wrapper is not None and isinstance(value[wrapper], list) and not is_block:
                for i, rec in enumerate(value[wrapper]):
                    read_record(rec, f"block {i + 1}")
            else:
                read_record(value, "block 1")
        else:
            raise OutputParseError(
                f"expected a JSON list of {self.anchor_key} blocks, got {type(value).__name__}",
                raw=raw,
            )
        if malformed and not triplets and not dropped:
            raise OutputParseError(
                f"no readable relation block in the answer ({'; '.join(malformed[:3])})", raw=raw
            )
        return ParsedTriplets(
            triplets=tuple(triplets),
            out_of_schema=tuple(out),
            dropped=tuple(dropped),
            malformed=tuple(malformed),
            repaired=result.repaired,
        )


FORWARD_FORMAT = RelationsFormat("forward")
"""Answer format of the forward (subject-centric) relation decoder."""

REVERSE_FORMAT = RelationsFormat("reverse")
"""Answer format of the reverse (object-centric) relation decoder."""


def relation_format(stage: str) -> RelationsFormat:
    """The answer format of a relation stage (``relations_forward`` / ``relations_reverse``).

    Raises:
        InputError: For any other stage name.
    """
    if stage == "relations_forward":
        return FORWARD_FORMAT
    if stage == "relations_reverse":
        return REVERSE_FORMAT
    raise InputError(f"{stage!r} is not a relation stage (relations_forward, relations_reverse)")


__all__ = [
    "FORWARD_FORMAT",
    "REVERSE_FORMAT",
    "Direction",
    "ParsedTriplets",
    "RelationsFormat",
    "Triple",
    "relation_format",
]
