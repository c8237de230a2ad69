"""The relation decoders' answer format (AnchorAlign §3.2, Eq. 3): schema, gold, parser."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from samalign.errors import InputError, OutputParseError
from samalign.prompts.formats import MAX_MENTION_CHARS
from samalign.prompts.relations import (
    FORWARD_FORMAT,
    REVERSE_FORMAT,
    RelationsFormat,
    Triple,
    relation_format,
)

RELATIONS = ["work for", "live in", "located in", "OrgBased_In"]
FORMATS = [FORWARD_FORMAT, REVERSE_FORMAT]
BOTH = pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.direction)

JOHN_IBM = ("John", "work for", "IBM")
JOHN_PARIS = ("John", "live in", "Paris")
MARY_IBM = ("Mary", "work for", "IBM")
IBM_PARIS = ("IBM", "located in", "Paris")


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def is_valid(schema: dict[str, Any], answer: Any) -> bool:
    return validator(schema).is_valid(answer)


def forward_block(subject: str, *pairs: tuple[str, str]) -> dict[str, Any]:
    return {"subject": subject, "pairs": [{"object": o, "relation": r} for o, r in pairs]}


def reverse_block(obj: str, *pairs: tuple[str, str]) -> dict[str, Any]:
    return {"object": obj, "pairs": [{"subject": s, "relation": r} for s, r in pairs]}


# ---------------------------------------------------------------------------------------------
# construction
# ---------------------------------------------------------------------------------------------


def test_directions_and_stage_lookup() -> None:
    assert (FORWARD_FORMAT.anchor_key, FORWARD_FORMAT.other_key) == ("subject", "object")
    assert (REVERSE_FORMAT.anchor_key, REVERSE_FORMAT.other_key) == ("object", "subject")
    assert relation_format("relations_forward") is FORWARD_FORMAT
    assert relation_format("relations_reverse") is REVERSE_FORMAT
    assert repr(REVERSE_FORMAT) == "RelationsFormat('reverse')"
    with pytest.raises(InputError, match="not a relation stage"):
        relation_format("anchor")
    with pytest.raises(ValueError, match="direction"):
        RelationsFormat("sideways")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# schema
# ---------------------------------------------------------------------------------------------


@BOTH
def test_schema_is_a_valid_draft_2020_12_schema(fmt: RelationsFormat) -> None:
    validator(fmt.schema(RELATIONS))
    validator(fmt.schema(RELATIONS, mentions=["John", "IBM"]))


def test_schema_accepts_each_directions_gold_and_only_its_own_blocks() -> None:
    triples = [JOHN_IBM, JOHN_PARIS, MARY_IBM, IBM_PARIS]
    forward_gold = json.loads(FORWARD_FORMAT.render_gold(triples, RELATIONS))
    reverse_gold = json.loads(REVERSE_FORMAT.render_gold(triples, RELATIONS))
    forward_schema = FORWARD_FORMAT.schema(RELATIONS)
    reverse_schema = REVERSE_FORMAT.schema(RELATIONS)
    assert is_valid(forward_schema, forward_gold)
    assert is_valid(reverse_schema, reverse_gold)
    # the mirror direction's blocks are not this direction's answer
    assert not is_valid(forward_schema, reverse_gold)
    assert not is_valid(reverse_schema, forward_gold)
    assert is_valid(forward_schema, [])
    assert is_valid(reverse_schema, [])


def one_pair(pair: dict[str, Any], **block: Any) -> list[dict[str, Any]]:
    """An answer of one block (anchor ``John`` unless ``block`` says otherwise) with ``pair``.

    ``ANCHOR``/``OTHER`` stand for the direction's keys (:func:`test_schema_rejects` fills them).
    """
    return [{"ANCHOR": "John", **block, "pairs": [pair]}]


WORK_FOR_IBM = {"OTHER": "IBM", "relation": "work for"}


@BOTH
@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"X": "John"}, id="not-a-list"),
        pytest.param(["John"], id="block-not-an-object"),
        pytest.param([{"ANCHOR": "John", "pairs": []}], id="empty-pairs"),
        pytest.param([{"ANCHOR": "John"}], id="no-pairs"),
        pytest.param([{"pairs": [WORK_FOR_IBM]}], id="no-anchor"),
        pytest.param(one_pair({"OTHER": "IBM", "relation": "founded"}), id="relation-outside-enum"),
        pytest.param(one_pair({"OTHER": "IBM", "relation": "Work For"}), id="relation-other-case"),
        pytest.param(one_pair({"OTHER": "IBM"}), id="pair-without-relation"),
        pytest.param(one_pair({"relation": "work for"}), id="pair-without-mention"),
        pytest.param(
            one_pair({"ANCHOR": "IBM", "relation": "work for"}), id="pair-with-the-anchor-key"
        ),
        pytest.param(one_pair({**WORK_FOR_IBM, "x": 1}), id="extra-pair-key"),
        pytest.param(one_pair(WORK_FOR_IBM, OTHER="IBM"), id="extra-block-key"),
        pytest.param(one_pair(WORK_FOR_IBM, ANCHOR=""), id="empty-anchor"),
        pytest.param(one_pair({"OTHER": "", "relation": "work for"}), id="empty-mention"),
        pytest.param(
            one_pair({"OTHER": "I", "relation": "live in"}, ANCHOR="x" * (MAX_MENTION_CHARS + 1)),
            id="overlong-mention",
        ),
        pytest.param(one_pair(WORK_FOR_IBM, ANCHOR=3), id="number-anchor"),
        pytest.param(
            [{"subject": "John", "relation": "work for", "object": "IBM"}],
            id="flat-record",
        ),
    ],
)
def test_schema_rejects(fmt: RelationsFormat, answer: Any) -> None:
    def fill(value: Any) -> Any:
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            keys = {"ANCHOR": fmt.anchor_key, "OTHER": fmt.other_key}
            return {keys.get(k, k): fill(v) for k, v in value.items()}
        return value

    assert not is_valid(fmt.schema(RELATIONS), fill(answer))


@BOTH
def test_schema_bounds_blocks_and_pairs(fmt: RelationsFormat) -> None:
    schema = fmt.schema(RELATIONS, max_blocks=2, max_pairs=3)
    pair = {fmt.other_key: "IBM", "relation": "work for"}
    block = {fmt.anchor_key: "John", "pairs": [pair] * 3}
    assert is_valid(schema, [block, block])
    assert not is_valid(schema, [block, block, block])
    assert not is_valid(schema, [{fmt.anchor_key: "John", "pairs": [pair] * 4}])


@BOTH
def test_schema_relation_enum_is_the_deduplicated_relations_in_order(fmt: RelationsFormat) -> None:
    schema = fmt.schema(["b", "a", "b"])
    relation = schema["items"]["properties"]["pairs"]["items"]["properties"]["relation"]
    assert relation == {"type": "string", "enum": ["b", "a"]}
    with pytest.raises(InputError, match="at least one relation"):
        fmt.schema([])


@BOTH
def test_schema_pair_keys_are_ordered_as_eq_3(fmt: RelationsFormat) -> None:
    # Eq. 3 writes the anchor once, then (other entity, relation) pairs: constrained decoding
    # follows the schema's property order.
    schema = fmt.schema(RELATIONS)
    assert list(schema["items"]["properties"]) == [fmt.anchor_key, "pairs"]
    assert list(schema["items"]["properties"]["pairs"]["items"]["properties"]) == [
        fmt.other_key,
        "relation",
    ]
    assert schema["items"]["required"] == [fmt.anchor_key, "pairs"]
    assert schema["items"]["properties"]["pairs"]["items"]["required"] == [
        fmt.other_key,
        "relation",
    ]


@BOTH
def test_schema_mentions_become_an_enum_via_defs(fmt: RelationsFormat) -> None:
    schema = fmt.schema(RELATIONS, mentions=["John", "IBM", "John", "Paris"])
    assert schema["$defs"] == {"mention": {"type": "string", "enum": ["John", "IBM", "Paris"]}}
    block = schema["items"]
    assert block["properties"][fmt.anchor_key] == {"$ref": "#/$defs/mention"}
    assert block["properties"]["pairs"]["items"]["properties"][fmt.other_key] == {
        "$ref": "#/$defs/mention"
    }

    def answer(anchor: str, other: str) -> list[dict[str, Any]]:
        return [{fmt.anchor_key: anchor, "pairs": [{fmt.other_key: other, "relation": "work for"}]}]

    assert is_valid(schema, answer("John", "IBM"))
    assert not is_valid(schema, answer("Mary", "IBM"))  # anchor not a mention
    assert not is_valid(schema, answer("John", "Acme"))  # other entity not a mention
    assert not is_valid(schema, answer("john", "IBM"))  # enums are exact


@BOTH
def test_schema_without_mentions_depends_only_on_the_relations(fmt: RelationsFormat) -> None:
    first = fmt.schema(RELATIONS)
    assert "$defs" not in first
    assert "$defs" not in json.dumps(first)
    again = fmt.schema(list(RELATIONS))
    assert json.dumps(first, sort_keys=False) == json.dumps(again, sort_keys=False)
    # building other schemas in between does not leak into it (no shared mutable state)
    fmt.schema(RELATIONS, mentions=["John"])
    fmt.schema(["other"], max_blocks=1, max_pairs=1)
    assert fmt.schema(RELATIONS) == first
    first["items"]["maxItems"] = -1
    assert fmt.schema(RELATIONS) == again
    assert fmt.schema(RELATIONS) != fmt.schema([*RELATIONS, "founded"])


# ---------------------------------------------------------------------------------------------
# render_gold / blocks
# ---------------------------------------------------------------------------------------------


def test_forward_gold_groups_by_subject_in_first_appearance_order() -> None:
    triples = [JOHN_IBM, MARY_IBM, JOHN_PARIS, IBM_PARIS, JOHN_IBM, MARY_IBM]
    gold = json.loads(FORWARD_FORMAT.render_gold(triples, RELATIONS))
    assert gold == [
        forward_block("John", ("IBM", "work for"), ("Paris", "live in")),
        forward_block("Mary", ("IBM", "work for")),
        forward_block("IBM", ("Paris", "located in")),
    ]


def test_reverse_gold_groups_by_object_in_first_appearance_order() -> None:
    triples = [JOHN_IBM, MARY_IBM, JOHN_PARIS, IBM_PARIS, JOHN_IBM, MARY_IBM]
    gold = json.loads(REVERSE_FORMAT.render_gold(triples, RELATIONS))
    assert gold == [
        reverse_block("IBM", ("John", "work for"), ("Mary", "work for")),
        reverse_block("Paris", ("John", "live in"), ("IBM", "located in")),
    ]


def test_gold_keeps_an_entity_that_is_subject_and_object_in_separate_roles() -> None:
    # IBM is the object of (John, work for, IBM) and the subject of (IBM, located in, Paris)
    triples = [JOHN_IBM, IBM_PARIS]
    forward = json.loads(FORWARD_FORMAT.render_gold(triples, RELATIONS))
    reverse = json.loads(REVERSE_FORMAT.render_gold(triples, RELATIONS))
    assert forward == [
        forward_block("John", ("IBM", "work for")),
        forward_block("IBM", ("Paris", "located in")),
    ]
    assert reverse == [
        reverse_block("IBM", ("John", "work for")),
        reverse_block("Paris", ("IBM", "located in")),
    ]


@BOTH
def test_gold_writes_duplicates_once_but_keeps_other_relations_of_a_pair(
    fmt: RelationsFormat,
) -> None:
    # NYT-style multi-label pairs: the same (subject, object) with two relations is two pairs
    triples = [JOHN_IBM, JOHN_IBM, ("John", "live in", "IBM"), JOHN_IBM]
    gold = json.loads(fmt.render_gold(triples, RELATIONS))
    assert len(gold) == 1
    assert [p["relation"] for p in gold[0]["pairs"]] == ["work for", "live in"]
    assert fmt.blocks(triples) == gold


@BOTH
def test_gold_of_nothing_is_an_empty_list(fmt: RelationsFormat) -> None:
    assert fmt.render_gold([], RELATIONS) == "[]"
    assert fmt.render_gold(iter(()), RELATIONS) == "[]"


@BOTH
def test_gold_accepts_a_one_shot_iterator_and_keeps_unicode(fmt: RelationsFormat) -> None:
    triples = [("Jürgen", "live in", "東京"), ("Jürgen", "work for", 'Acme "Big" Corp')]
    text = fmt.render_gold(iter(triples), RELATIONS)
    assert "Jürgen" in text and "東京" in text
    assert set(fmt.parse(text, RELATIONS).triplets) == set(triples)


@BOTH
@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (("John", "founded", "IBM"), "not in the schema"),
        (("John", "Work For", "IBM"), "not in the schema"),
        (("John", "", "IBM"), "not in the schema"),
        (("", "work for", "IBM"), "empty mention"),
        (("John", "work for", ""), "empty mention"),
        (("  ", "work for", "IBM"), "empty mention"),
    ],
)
def test_gold_rejects_bad_triplets(fmt: RelationsFormat, bad: Triple, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        fmt.render_gold([JOHN_IBM, bad], RELATIONS)


@BOTH
def test_gold_validates_against_the_mention_restricted_schema(fmt: RelationsFormat) -> None:
    triples = [JOHN_IBM, JOHN_PARIS, MARY_IBM, IBM_PARIS]
    mentions = ["John", "Mary", "IBM", "Paris"]
    gold = json.loads(fmt.render_gold(triples, RELATIONS))
    assert is_valid(fmt.schema(RELATIONS, mentions=mentions), gold)
    assert not is_valid(fmt.schema(RELATIONS, mentions=mentions[:-1]), gold)


# ---------------------------------------------------------------------------------------------
# round trip (property)
# ---------------------------------------------------------------------------------------------

# Mentions never start or end with whitespace: the parser strips mentions (as the NER parser
# does), so " John" would come back as "John".
_MENTION = st.text(alphabet='ab é{"\\,]', min_size=1, max_size=4).filter(
    lambda s: s == s.strip() and s != ""
)
_RELATION_NAMES = ["work for", "Live_In", "part-of", "located in"]
_TRIPLES = st.lists(st.tuples(_MENTION, st.sampled_from(_RELATION_NAMES), _MENTION), max_size=10)
_PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)


@_PROPERTY
@given(triples=_TRIPLES)
def test_round_trip_both_directions(triples: list[Triple]) -> None:
    expected = set(triples)
    results = {}
    for writer in FORMATS:
        text = writer.render_gold(triples, _RELATION_NAMES)
        blocks = json.loads(text)
        # one block per distinct anchor, each triple written exactly once
        anchors = [b[writer.anchor_key] for b in blocks]
        assert len(anchors) == len(set(anchors))
        assert sum(len(b["pairs"]) for b in blocks) == len(expected)
        assert is_valid(writer.schema(_RELATION_NAMES, max_blocks=20, max_pairs=20), blocks)
        own = [t[0] if writer.direction == "forward" else t[2] for t in triples]
        assert anchors == list(dict.fromkeys(own))
        for reader in FORMATS:  # each reader accepts its own and the mirror direction's blocks
            parsed = reader.parse(text, _RELATION_NAMES)
            assert parsed.malformed == () and parsed.dropped == () and not parsed.repaired
            assert len(parsed.triplets) == len(expected)
            results[writer.direction, reader.direction] = set(parsed.triplets)
    assert all(result == expected for result in results.values())


@_PROPERTY
@given(triples=_TRIPLES)
def test_parse_keeps_the_order_of_the_blocks(triples: list[Triple]) -> None:
    for fmt in FORMATS:
        parsed = fmt.parse(fmt.render_gold(triples, _RELATION_NAMES), _RELATION_NAMES)
        flattened = [
            (b["subject"], p["relation"], p["object"])
            if fmt.direction == "forward"
            else (p["subject"], p["relation"], b["object"])
            for b in fmt.blocks(triples)
            for p in b["pairs"]
        ]
        assert list(parsed.triplets) == flattened


# ---------------------------------------------------------------------------------------------
# lenient parsing
# ---------------------------------------------------------------------------------------------

FORWARD_TEXT = json.dumps([forward_block("John", ("IBM", "work for"), ("Paris", "live in"))])
REVERSE_TEXT = json.dumps([reverse_block("IBM", ("John", "work for"), ("Mary", "work for"))])


@BOTH
@pytest.mark.parametrize(
    "raw",
    [
        FORWARD_TEXT,
        f"```json\n{FORWARD_TEXT}\n```",
        f"```\n{FORWARD_TEXT}\n```\nThese are all the relations.",
        f"Here are the relations:\n{FORWARD_TEXT}",
        f"{FORWARD_TEXT}\nI hope this helps! [1]",
        FORWARD_TEXT.replace('"', "'"),
        FORWARD_TEXT.replace("}]}]", "},]},]"),  # trailing commas
        json.dumps({"triplets": json.loads(FORWARD_TEXT)}),
        json.dumps({"blocks": json.loads(FORWARD_TEXT), "note": "two relations"}),
        json.dumps(forward_block("John", ("IBM", "work for"), ("Paris", "live in"))),
        json.dumps({"subject": "John", "relations": json.loads(FORWARD_TEXT)[0]["pairs"]}),
    ],
)
def test_parse_reads_forward_blocks_in_any_wrapping(fmt: RelationsFormat, raw: str) -> None:
    parsed = fmt.parse(raw, RELATIONS)
    assert parsed.triplets == (JOHN_IBM, JOHN_PARIS)
    assert parsed.malformed == () and parsed.out_of_schema == () and parsed.repaired is False


@BOTH
def test_parse_reads_the_mirror_directions_blocks(fmt: RelationsFormat) -> None:
    expected = (JOHN_IBM, MARY_IBM)
    assert fmt.parse(REVERSE_TEXT, RELATIONS).triplets == expected
    mixed = json.dumps(
        [reverse_block("IBM", ("John", "work for")), forward_block("John", ("Paris", "live in"))]
    )
    assert fmt.parse(mixed, RELATIONS).triplets == (JOHN_IBM, JOHN_PARIS)


@BOTH
@pytest.mark.parametrize(
    "records",
    [
        [
            {"subject": "John", "relation": "work for", "object": "IBM"},
            {"subject": "John", "relation": "live in", "object": "Paris"},
        ],
        [
            {"head": "John", "relation": "work for", "tail": "IBM"},
            {"head": "John", "relation": "live in", "tail": "Paris"},
        ],
        [
            {"head": "John", "type": "work for", "tail": "IBM"},
            {"subj": "John", "predicate": "live in", "obj": "Paris"},
        ],
    ],
    ids=["subject-object", "head-tail", "other-key-spellings"],
)
def test_parse_reads_flat_records(fmt: RelationsFormat, records: list[dict[str, str]]) -> None:
    assert fmt.parse(json.dumps(records), RELATIONS).triplets == (JOHN_IBM, JOHN_PARIS)
    wrapped = json.dumps({"relations": records})
    assert fmt.parse(wrapped, RELATIONS).triplets == (JOHN_IBM, JOHN_PARIS)


@BOTH
def test_parse_reads_iepile_relation_objects(fmt: RelationsFormat) -> None:
    raw = json.dumps(
        {
            "work for": [{"head": "John", "tail": "IBM"}, {"subject": "Mary", "object": "IBM"}],
            "live in": [{"head": "John", "tail": "Paris"}],
            "located in": [],
        }
    )
    parsed = fmt.parse(raw, RELATIONS)
    assert parsed.triplets == (JOHN_IBM, MARY_IBM, JOHN_PARIS)
    assert parsed.malformed == ()
    listed = fmt.parse(json.dumps([json.loads(raw)]), RELATIONS)
    assert listed.triplets == parsed.triplets


@BOTH
def test_parse_matches_relation_names_case_insensitively(fmt: RelationsFormat) -> None:
    raw = json.dumps(
        [
            forward_block("John", ("IBM", "WORK FOR"), ("Paris", " Live In ")),
            forward_block("Acme", ("Boston", "orgbased_in")),
        ]
    )
    parsed = fmt.parse(raw, RELATIONS)
    assert parsed.triplets == (JOHN_IBM, JOHN_PARIS, ("Acme", "OrgBased_In", "Boston"))
    assert parsed.out_of_schema == () and parsed.dropped == ()


@BOTH
def test_parse_strips_mentions(fmt: RelationsFormat) -> None:
    raw = json.dumps([forward_block("  John ", ("IBM\n", "work for"))])
    assert fmt.parse(raw, RELATIONS).triplets == (JOHN_IBM,)


@BOTH
def test_parse_drops_relations_outside_the_schema(fmt: RelationsFormat) -> None:
    raw = json.dumps(
        [
            forward_block("John", ("IBM", "work for"), ("IBM", "founded"), ("Acme", "founded")),
            {"head": "Mary", "relation": "married to", "tail": "John"},
        ]
    )
    parsed = fmt.parse(raw, RELATIONS)
    assert parsed.triplets == (JOHN_IBM,)
    assert parsed.out_of_schema == ("founded", "married to")
    assert parsed.dropped == (
        ("John", "founded", "IBM"),
        ("John", "founded", "Acme"),
        ("Mary", "married to", "John"),
    )
    assert parsed.malformed == ()


@BOTH
def test_parse_with_only_out_of_schema_relations_is_not_an_error(fmt: RelationsFormat) -> None:
    parsed = fmt.parse(json.dumps([forward_block("John", ("IBM", "founded"))]), RELATIONS)
    assert parsed.triplets == ()
    assert parsed.dropped == (("John", "founded", "IBM"),)


@BOTH
def test_parse_reports_malformed_blocks_and_pairs_and_keeps_good_ones(
    fmt: RelationsFormat,
) -> None:
    raw = json.dumps(
        [
            {"pairs": [{"object": "IBM", "relation": "work for"}]},  # no subject nor object
            forward_block("John", ("IBM", "work for")),
            {
                "subject": "Mary",
                "pairs": [
                    {"object": "IBM"},  # no relation
                    "IBM",  # not an object
                    {"relation": "work for"},  # no object
                    {"object": "IBM", "relation": 3},  # relation not a string
                    {"object": ["IBM"], "relation": "work for"},  # object not a mention
                    {"object": "IBM", "relation": "work for"},
                ],
            },
            "John works for IBM",  # not an object
            {"note": "nothing here"},
            {"head": "John", "tail": "Paris"},  # flat record without relation
        ]
    )
    parsed = fmt.parse(raw, RELATIONS)
    assert parsed.triplets == (JOHN_IBM, MARY_IBM)
    assert len(parsed.malformed) == 9
    text = "\n".join(parsed.malformed)
    assert "block 1: block without a subject or object" in text
    assert "block 3, pair 1: missing or invalid relation" in text
    assert "block 3, pair 2: expected an object" in text
    assert "block 3, pair 3: missing or invalid object" in text
    assert "block 3, pair 4: missing or invalid relation" in text
    assert "block 3, pair 5: missing or invalid object" in text
    assert "block 4: expected an object, got str" in text
    assert "block 5: no subject, object or pairs" in text
    assert "block 6: missing or invalid relation" in text


@BOTH
def test_parse_reverse_block_missing_subject_is_malformed(fmt: RelationsFormat) -> None:
    raw = json.dumps(
        [
            {
                "object": "IBM",
                "pairs": [{"relation": "work for"}, {"subject": "Mary", "relation": "work for"}],
            }
        ]
    )
    parsed = fmt.parse(raw, RELATIONS)
    assert parsed.triplets == (MARY_IBM,)
    assert parsed.malformed == ("block 1, pair 1: missing or invalid subject",)


@BOTH
def test_parse_repairs_a_truncated_answer(fmt: RelationsFormat) -> None:
    full = json.dumps(
        [
            forward_block("John", ("IBM", "work for"), ("Paris", "live in")),
            forward_block("Mary", ("IBM", "work for")),
        ]
    )
    cut = full[: full.index('"Mary"') + 3]  # inside the second block's subject
    parsed = fmt.parse(cut, RELATIONS)
    assert parsed.repaired is True
    assert parsed.triplets == (JOHN_IBM, JOHN_PARIS)

    cut_in_pair = full[: full.index('"Paris"') + 3]  # inside the second pair's object
    parsed = fmt.parse(cut_in_pair, RELATIONS)
    assert parsed.repaired is True
    assert parsed.triplets == (JOHN_IBM,)

    cut_after_pair = full[: full.index('"live in"}') + len('"live in"}')]
    parsed = fmt.parse(cut_after_pair, RELATIONS)
    assert parsed.repaired is True
    assert parsed.triplets == (JOHN_IBM, JOHN_PARIS)
    assert parsed.malformed == ()


@BOTH
def test_parse_truncated_before_any_complete_triple(fmt: RelationsFormat) -> None:
    # cut inside the first subject: the repaired value is an empty block, nothing to report
    parsed = fmt.parse('[{"subject": "John Sm', RELATIONS)
    assert parsed.repaired is True
    assert parsed.triplets == ()
    # cut inside the first pair: only an incomplete pair, which is unreadable
    with pytest.raises(OutputParseError, match="no readable relation block"):
        fmt.parse('[{"subject": "John", "pairs": [{"object": "IB', RELATIONS)


@BOTH
@pytest.mark.parametrize("raw", ["[]", "  []  ", "```json\n[]\n```", "{}", '{"triplets": []}'])
def test_parse_empty_answers_give_no_triplets(fmt: RelationsFormat, raw: str) -> None:
    parsed = fmt.parse(raw, RELATIONS)
    assert parsed == type(parsed)(triplets=())


@BOTH
@pytest.mark.parametrize(
    "raw",
    [
        '["John", "IBM"]',
        "[1, 2, 3]",
        '[{"note": "no relations"}]',
        '{"answer": "John works for IBM"}',
        '[{"subject": "John", "pairs": [{"object": "IBM"}]}]',
        '[{"subject": "John", "pairs": {"object": "IBM", "relation": "work for"}}]',
        '[{"subject": true, "pairs": [{"object": "IBM", "relation": "work for"}]}]',
        '[[["John", "work for", "IBM"]]]',
    ],
)
def test_parse_raises_when_nothing_is_readable(fmt: RelationsFormat, raw: str) -> None:
    with pytest.raises(OutputParseError, match="no readable relation block") as info:
        fmt.parse(raw, RELATIONS)
    assert info.value.raw == raw


@BOTH
@pytest.mark.parametrize(
    "raw", ["", "   ", "John works for IBM.", "null", "42", '"work for"', "<|eot_id|>"]
)
def test_parse_raises_on_non_json(fmt: RelationsFormat, raw: str) -> None:
    with pytest.raises(OutputParseError) as info:
        fmt.parse(raw, RELATIONS)
    assert info.value.raw == raw


@BOTH
def test_parse_numeric_mentions_become_strings(fmt: RelationsFormat) -> None:
    raw = json.dumps([{"subject": 1984, "pairs": [{"object": 2.5, "relation": "work for"}]}])
    assert fmt.parse(raw, RELATIONS).triplets == (("1984", "work for", "2.5"),)
