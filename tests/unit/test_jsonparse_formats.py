"""Lenient JSON parsing and the answer formats (schema, gold rendering, parsing)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from samalign.errors import InputError, OutputParseError, SamalignError
from samalign.prompts.formats import (
    MAX_MENTION_CHARS,
    AssignmentsFormat,
    ParsedTypedMentions,
    TypedMentionsFormat,
)
from samalign.prompts.jsonparse import loads_lenient
from samalign.prompts.specs import CALIBRATION_FORMAT, EXTRACTION_FORMAT


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


# ---------------------------------------------------------------------------------------------
# loads_lenient
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ('{"person": ["Ada Lovelace"]}', {"person": ["Ada Lovelace"]}),
        (
            '[{"entity": "Ada", "entity_type": "person"}]',
            [{"entity": "Ada", "entity_type": "person"}],
        ),
        ('```json\n{"a": ["b"]}\n```', {"a": ["b"]}),
        ('```JSON\n{"a": ["b"]}\n```', {"a": ["b"]}),
        ('```\n{"a": ["b"]}\n```\nThat is all.', {"a": ["b"]}),
        ('Here is the answer:\n```json\n{"a": ["b"]}\n```', {"a": ["b"]}),
        ('{"a": ["b"]}\nI hope this helps! {not json}', {"a": ["b"]}),
        ('Sure. {"a": ["b"]} Done.', {"a": ["b"]}),
        ("[1, 2] trailing", [1, 2]),
        ("{'a': ['b', 'c']}", {"a": ["b", "c"]}),
        ("{'a': \"it's\", 'b': None, 'c': True}", {"a": "it's", "b": None, "c": True}),
        ('{"a": ["b", "c",],}', {"a": ["b", "c"]}),
        ('{"a": ["b",\n  ],\n}', {"a": ["b"]}),
        ("{'a': ['b',], }", {"a": ["b"]}),
        ('{"a": "x, ]"}', {"a": "x, ]"}),
        ('{"Jürgen": "東京"}', {"Jürgen": "東京"}),
    ],
)
def test_loads_lenient_recovers_value(raw: str, value: Any) -> None:
    result = loads_lenient(raw)
    assert result.value == value
    assert result.repaired is False


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        # cut inside a string: the incomplete mention is dropped
        ('{"person": ["Sepp Hochreiter", "Yann Le', {"person": ["Sepp Hochreiter"]}),
        ('```json\n{"person": ["Sepp Hochreiter", "Yann Le', {"person": ["Sepp Hochreiter"]}),
        # cut after a comma / inside the next key
        ('{"a": ["b"], "c": ["d"], ', {"a": ["b"], "c": ["d"]}),
        ('{"a": ["b"], "loc', {"a": ["b"]}),
        ('{"a": ["b"], "c": [', {"a": ["b"], "c": []}),
    ],
)
def test_loads_lenient_repairs_truncated_answers(raw: str, value: Any) -> None:
    result = loads_lenient(raw)
    assert result.value == value
    assert result.repaired is True


def test_loads_lenient_repairs_truncated_list_of_records() -> None:
    result = loads_lenient('[{"x": "1"}, {"y": "2"}, {"z": "tru')
    assert result.repaired is True
    assert result.value[:2] == [{"x": "1"}, {"y": "2"}]
    assert all("z" not in rec for rec in result.value)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (
            '{"LSTM": "algorithm", "Sepp Hochreiter": "researcher"',
            {"LSTM": "algorithm", "Sepp Hochreiter": "researcher"},
        ),
        ('{"person": ["Ada Lovelace"', {"person": ["Ada Lovelace"]}),
    ],
)
def test_loads_lenient_truncation_keeps_complete_last_value(raw: str, value: Any) -> None:
    result = loads_lenient(raw)
    assert result.value == value
    assert result.repaired is True


@pytest.mark.parametrize(
    "raw",
    [
        'Entities [JSON]:\n{"person": ["Ada"]}',
        'The text mentions {Ada}. Answer: {"person": ["Ada"]}',
    ],
)
def test_loads_lenient_skips_brackets_in_leading_prose(raw: str) -> None:
    assert loads_lenient(raw).value == {"person": ["Ada"]}


@pytest.mark.parametrize(
    "raw",
    ["", "   ", "I could not find any entities.", "null", "42", '"just a string"', "<|eot_id|>"],
)
def test_loads_lenient_garbage_raises_with_raw(raw: str) -> None:
    with pytest.raises(OutputParseError) as info:
        loads_lenient(raw)
    assert info.value.raw == raw
    assert isinstance(info.value, SamalignError)
    assert "no JSON" in str(info.value)


def test_loads_lenient_error_message_is_bounded_but_raw_is_complete() -> None:
    raw = "x" * 5000
    with pytest.raises(OutputParseError) as info:
        loads_lenient(raw)
    assert info.value.raw == raw
    assert len(str(info.value)) < 400


# ---------------------------------------------------------------------------------------------
# TypedMentionsFormat
# ---------------------------------------------------------------------------------------------

TYPES = ["person", "programming language", "algorithm"]


def test_typed_mentions_schema_free_text() -> None:
    schema = TypedMentionsFormat().schema(TYPES, max_items=5)
    v = validator(schema)
    assert schema["type"] == "object"
    assert schema["required"] == TYPES
    assert list(schema["properties"]) == TYPES
    assert schema["additionalProperties"] is False
    assert "$defs" not in schema
    for t in TYPES:
        prop = schema["properties"][t]
        assert prop["type"] == "array"
        assert prop["maxItems"] == 5
        assert prop["items"]["type"] == "string"
        assert prop["items"]["maxLength"] == MAX_MENTION_CHARS
    ok = {"person": ["Ada"], "programming language": [], "algorithm": ["LSTM"]}
    v.validate(ok)
    with pytest.raises(ValidationError):
        v.validate({"person": ["Ada"]})  # missing required types
    with pytest.raises(ValidationError):
        v.validate({**ok, "location": []})  # extra type
    with pytest.raises(ValidationError):
        v.validate({**ok, "person": ["a"] * 6})  # maxItems
    with pytest.raises(ValidationError):
        v.validate({**ok, "person": [""]})  # minLength


def test_typed_mentions_schema_with_mention_enum() -> None:
    mentions = ["Ada", "LSTM", "Ada", "Python"]
    schema = TypedMentionsFormat().schema(TYPES, mentions=mentions, max_items=3)
    v = validator(schema)
    assert schema["$defs"]["mention"]["enum"] == ["Ada", "LSTM", "Python"]
    for t in TYPES:
        assert schema["properties"][t]["items"] == {"$ref": "#/$defs/mention"}
        assert schema["properties"][t]["maxItems"] == 3
    v.validate({"person": ["Ada"], "programming language": ["Python"], "algorithm": []})
    with pytest.raises(ValidationError):
        v.validate({"person": ["Grace"], "programming language": [], "algorithm": []})


def test_typed_mentions_schema_is_json_serialisable() -> None:
    schema = EXTRACTION_FORMAT.schema(TYPES, mentions=["東京"], max_items=2)
    assert json.loads(json.dumps(schema, ensure_ascii=False)) == schema


def test_typed_mentions_gold_has_all_types_in_order_and_matches_schema() -> None:
    fmt = TypedMentionsFormat()
    gold = fmt.render_gold(TYPES, {"algorithm": ["LSTM"], "person": ["Jürgen Schmidhuber"]})
    value = json.loads(gold)
    assert list(value) == TYPES
    assert value == {
        "person": ["Jürgen Schmidhuber"],
        "programming language": [],
        "algorithm": ["LSTM"],
    }
    assert "Jürgen" in gold  # not \u-escaped
    validator(fmt.schema(TYPES)).validate(value)
    validator(fmt.schema(TYPES, mentions=["LSTM", "Jürgen Schmidhuber"])).validate(value)
    # gold answers round-trip through the parser
    parsed = fmt.parse(gold, TYPES)
    assert parsed.pairs == (("person", "Jürgen Schmidhuber"), ("algorithm", "LSTM"))


def test_typed_mentions_gold_rejects_unknown_types() -> None:
    with pytest.raises(InputError, match="location"):
        TypedMentionsFormat().render_gold(TYPES, {"location": ["Paris"]})


def test_typed_mentions_parse_object_form() -> None:
    raw = (
        '{"person": ["Ada Lovelace", " Alan Turing "], "algorithm": [], '
        '"programming language": ["Python"]}'
    )
    parsed = TypedMentionsFormat().parse(raw, TYPES)
    assert parsed.pairs == (
        ("person", "Ada Lovelace"),
        ("person", "Alan Turing"),
        ("programming language", "Python"),
    )
    assert parsed.out_of_schema == ()
    assert parsed.dropped == ()
    assert parsed.repaired is False


def test_typed_mentions_parse_iepile_list_form() -> None:
    raw = json.dumps(
        [
            {"entity": "Ada Lovelace", "entity_type": "person"},
            {"entity": "LSTM", "type": "algorithm"},
            {"mention": "Python", "label": "programming language"},
            "junk",
        ]
    )
    parsed = TypedMentionsFormat().parse(raw, TYPES)
    assert parsed.pairs == (
        ("person", "Ada Lovelace"),
        ("algorithm", "LSTM"),
        ("programming language", "Python"),
    )


def test_typed_mentions_types_are_case_insensitive() -> None:
    raw = '{"PERSON": ["Ada"], "Programming Language ": ["Python"]}'
    parsed = TypedMentionsFormat().parse(raw, TYPES)
    assert parsed.pairs == (("person", "Ada"), ("programming language", "Python"))
    assert parsed.out_of_schema == ()


def test_typed_mentions_out_of_schema_types_are_reported() -> None:
    raw = '{"person": ["Ada"], "location": ["London", "Paris"], "city": "Rome"}'
    parsed = TypedMentionsFormat().parse(raw, TYPES)
    assert parsed.pairs == (("person", "Ada"),)
    assert parsed.out_of_schema == ("location", "city")
    assert parsed.dropped == (("location", "London"), ("location", "Paris"), ("city", "Rome"))


def test_typed_mentions_scalar_and_blank_mentions() -> None:
    raw = '{"person": "Ada", "algorithm": ["", "  ", 42, null, {"x": 1}]}'
    parsed = TypedMentionsFormat().parse(raw, TYPES)
    assert parsed.pairs == (("person", "Ada"), ("algorithm", "42"))


def test_typed_mentions_truncated_answer_is_flagged() -> None:
    parsed = TypedMentionsFormat().parse('{"person": ["Ada", "Gra', TYPES)
    assert parsed.pairs == (("person", "Ada"),)
    assert parsed.repaired is True


def test_typed_mentions_parse_garbage_raises() -> None:
    with pytest.raises(OutputParseError) as info:
        TypedMentionsFormat().parse("no entities here", TYPES)
    assert info.value.raw == "no entities here"


def test_typed_mentions_list_of_strings_is_a_parse_error() -> None:
    with pytest.raises(OutputParseError):
        TypedMentionsFormat().parse('["Ada Lovelace", "LSTM"]', TYPES)


def test_typed_mentions_empty_answer_is_valid() -> None:
    parsed = TypedMentionsFormat().parse('{"person": [], "algorithm": []}', TYPES)
    assert parsed == ParsedTypedMentions(pairs=())


# ---------------------------------------------------------------------------------------------
# AssignmentsFormat
# ---------------------------------------------------------------------------------------------

NAMES = ["researcher", "algorithm", "programming language"]


def test_assignments_schema_is_request_invariant_and_restricts_types() -> None:
    schema = AssignmentsFormat().schema(NAMES)
    assert schema == AssignmentsFormat().schema(NAMES), "same schema for every request"
    v = validator(schema)
    assert schema["type"] == "array"
    record = schema["items"]
    assert record["required"] == ["entity", "type"]
    assert record["additionalProperties"] is False
    assert record["properties"]["type"] == {"type": "string", "enum": NAMES}
    assert "enum" not in record["properties"]["entity"]
    v.validate([{"entity": "LSTM", "type": "algorithm"}])
    with pytest.raises(ValidationError):
        v.validate([{"entity": "LSTM", "type": "Computer_Science"}])
    with pytest.raises(ValidationError):
        v.validate([{"entity": "LSTM"}])
    with pytest.raises(ValidationError):
        v.validate([{"entity": "LSTM", "type": "algorithm", "extra": 1}])


def test_assignments_schema_constrained_mentions() -> None:
    schema = AssignmentsFormat().schema(NAMES, mentions=["LSTM", "Sepp Hochreiter", "LSTM"])
    entity = schema["items"]["properties"]["entity"]
    assert entity == {"type": "string", "enum": ["LSTM", "Sepp Hochreiter"]}
    v = validator(schema)
    v.validate([{"entity": "Sepp Hochreiter", "type": "researcher"}])
    with pytest.raises(ValidationError):
        v.validate([{"entity": "GRU", "type": "algorithm"}])


def test_assignments_gold_matches_schema_and_round_trips() -> None:
    fmt = AssignmentsFormat()
    gold = fmt.render_gold({"LSTM": "algorithm", "Jürgen Schmidhuber": "researcher"})
    assert "Jürgen" in gold
    validator(fmt.schema(NAMES, mentions=["LSTM", "Jürgen Schmidhuber"])).validate(json.loads(gold))
    assert fmt.parse(gold).assignments == (
        ("LSTM", "algorithm"),
        ("Jürgen Schmidhuber", "researcher"),
    )


def test_assignments_parse_object_form() -> None:
    parsed = CALIBRATION_FORMAT.parse(
        'Output:\n```json\n{"LSTM": "algorithm", "Sepp Hochreiter": "researcher"}\n```'
    )
    assert parsed.assignments == (("LSTM", "algorithm"), ("Sepp Hochreiter", "researcher"))
    assert parsed.repaired is False


def test_assignments_parse_figure8_list_of_one_key_dicts() -> None:
    raw = '[{"LSTM": "algorithm"}, {"Sepp Hochreiter": "researcher"}, {"GRU": "algorithm"}]'
    parsed = AssignmentsFormat().parse(raw)
    assert parsed.assignments == (
        ("LSTM", "algorithm"),
        ("Sepp Hochreiter", "researcher"),
        ("GRU", "algorithm"),
    )


def test_assignments_parse_entity_type_records() -> None:
    raw = (
        '[{"entity": "LSTM", "type": "algorithm"}, {"entity": "Ada", "entity_type": "researcher"}]'
    )
    assert AssignmentsFormat().parse(raw).assignments == (
        ("LSTM", "algorithm"),
        ("Ada", "researcher"),
    )


def test_assignments_parse_empty_is_valid() -> None:
    assert AssignmentsFormat().parse("{}").assignments == ()
    assert AssignmentsFormat().parse("[]").assignments == ()


def test_assignments_parse_without_assignments_raises() -> None:
    with pytest.raises(OutputParseError) as info:
        AssignmentsFormat().parse('{"LSTM": ["algorithm"]}')
    assert info.value.raw == '{"LSTM": ["algorithm"]}'
    with pytest.raises(OutputParseError):
        AssignmentsFormat().parse("the answer is algorithm")


def test_assignments_truncated_answer_is_flagged() -> None:
    parsed = AssignmentsFormat().parse('{"LSTM": "algorithm", "Sepp Hochreiter": "resea')
    assert parsed.assignments == (("LSTM", "algorithm"),)
    assert parsed.repaired is True


def test_assignments_cut_off_record_is_not_read_as_a_mention() -> None:
    raw = '[{"entity":"LSTM","type":"algorithm"},{"entity":"Sepp Hochreiter","ty'
    parsed = AssignmentsFormat().parse(raw)
    assert parsed.assignments == (("LSTM", "algorithm"),)
