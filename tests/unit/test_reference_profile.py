"""The ``reference`` prompt profile: the SAM-NER authors' prompts, answers, data and mapping.

The expected prompts below are written by hand from the authors' scripts
(DMIRLAB-Group/SAM-NER@d9e41bc67b733ada3d7b703ec2d41b276d6595d7): what their f-strings and
``json.dumps`` calls produce for the same inputs, character for character.

* anchor — ``src/EntityDiscovery/getTestData.py``: ``json.dumps({"instruction": instruct,
  "schema": schema, "input": sentence}, ensure_ascii=False)``;
* explorer — ``src/EntityExplor/getTestData.py``: ``instruction + f"Schema:{schema}. Passage:
  {sentence}"`` (``schema`` a Python list, printed by ``str``);
* classifier — ``src/EntityClassification/getTestData.py``: ``instruction +
  f"sentence:{sentence} schema:{schema}"``;
* calibrator — ``src/EntityCalibration/getTestData.py``: its triple-quoted f-string (16 spaces
  of indentation; its leading newline and trailing indentation stripped, as Llama 3's chat
  template trims a message), ``output_pre`` = ``json.dumps`` of the classifier's records,
  ``f"{value}:{definition}."`` concatenated for the archetypes of the output and for every
  target type.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from samalign.errors import ConfigError, OutputParseError
from samalign.evaluation.gold import GoldOracle
from samalign.evaluation.sentences import Sentence, make_entity, token_offsets
from samalign.graphs import PipelineOptions, RunContext, build_ner_graph
from samalign.prompts import load_domain
from samalign.prompts.archetypes import archetype_table
from samalign.prompts.domain import domain_from_mapping
from samalign.prompts.formats import MarkedAssignmentsFormat, MentionRecordsFormat
from samalign.prompts.profiles import (
    definitions_for,
    prompt_profile,
    resolve_profile,
)
from samalign.prompts.reference import reference_data
from samalign.testing.fakes import fake_stage_models
from samalign.types import Archetype

REF = prompt_profile("reference")
COMMIT = "d9e41bc67b733ada3d7b703ec2d41b276d6595d7"
SAMNER = Path(__file__).resolve().parents[2] / "samalign" / "prompts" / "samner"

ANCHOR_INSTRUCTION = (
    "You are an expert in named entity recognition. Please extract entities that match the "
    "schema definition from the input. Return an empty list if the entity type does not exist. "
    "Please respond in the format of a JSON string."
)
EXPLORER_INSTRUCTION = (
    "You are a helpful assistant for extracting named entities. Given a passage and a schema, "
    "your task is to extract all named entities that conform to the schema type."
)
CLASSIFIER_INSTRUCTION = (
    "You are an expert in entity classification. Your task is to classify each entity marked "
    "with <ENT></ENT> without omission and strictly select the most appropriate and unique "
    "entity type from the given schema based on the sentence semantics."
)
ARCHETYPE_SCHEMA = (
    "['person', 'organization', 'location', 'biology', 'medicine', 'food', 'vehicle', "
    "'creative_work', 'event', 'artifact', 'computer_science', 'political', 'science', 'misc']"
)
POLITICS_SCHEMA = (
    "['person', 'politician', 'organisation', 'politicalparty', 'event', 'election', "
    "'location', 'country']"
)
SENTENCE = 'Angela Merkel met "Obama" in Zürich .'

# the calibrator's f-string around its five placeholders (16 spaces of indentation)
CAL_HEAD = (
    "\n"
    "                You are a highly proficient expert in named entity recognition in semantic "
    "type mapping. Based on the given information, you need to strictly select the appropriate "
    'target domain type from the "Candidate Types" for each named entity of the '
    '"Initial Output".\n'
    "\n"
    "                # Information\n"
)
CAL_RULES = (
    "                # Rules\n"
    "                1. First, you should review the `Text`, `Source Domain Type Definitions`, "
    "and `Target Domain Type Definitions`, and then select the target type from the candidate "
    "types based on this information.\n"
    "                1. If an entity could belong to multiple target types, choose the most "
    "specific one. For example:\n"
    '                   - If the entity could be both "researcher" and "person", choose '
    '"researcher";\n'
    '                   - If it could be both "country" and "location", choose "country";\n'
    '                   - If the entity could be both "organisation" and "university", choose '
    '"university".\n'
    "                3. The entity names in your answer must exist in the `Initial Output`.\n"
    "                2. The entity types in your answer must be selected from the "
    "`Candidate Types`.\n"
    "                4. You need to give your final correction result after `final answer:` "
    "and add `@@` before and after the final correction result.\n"
    "                5. Your answer is list and does not require any explanations or "
    "clarifications.\n"
    "                # Check\n"
    "                Check whether all entity types belong to the types in the given candidate "
    "list. If there are any situations that do not fall under this category, corrections shall "
    "be made in accordance with Rule 1.\n"
    "                # output format\n"
    "                final answer:\n"
    "                @@\n"
    '                [{"entity name": "corrected type"}, {"entity name": "corrected type"}, '
    "...]\n"
    "                @@\n"
    "            "
)
PERSON_DEF = (
    "Entities representing specific individuals identified by their proper names, including "
    "real people, fictional characters, nicknames, and aliases."
)
LOCATION_DEF = (
    "Entities representing spatial or geographic regions, including countries, cities, "
    "administrative divisions, physical facilities, landmarks, and public spaces."
)
MEDICINE_DEF = (
    "Entities related to healthcare and biomedical sciences, including diseases, drugs, medical "
    "procedures, anatomical structures, physiological processes, and clinical concepts."
)
POLITICS_DEFINITIONS = (
    "person:The name of a person should be annotated as a person entity.."
    "politician:The name of politician. It should be a person entity and if a person entity is "
    "a politician, you should label this person as a politician entity instead of a person "
    "entity.."
    "organisation:The name of organization.."
    "politicalparty:The name of political party. If an organization entity is a political "
    "party, you should label it as a political entity instead of an organization entity.."
    "event:Name of event, which includes festival, war, summit, Campaign, and etc.."
    "election:The name of election. If an event entity is an election event, you should label "
    "it as an election entity instead of an event entity.."
    "location:The name of location, including place, bridge, city, county and etc.."
    "country:The name of country. If a location belongs to country, you should label it as "
    "`country` instead of `location`.."
    "misc:An entity needs to be classified as the miscellaneous type if it does not belong to "
    "any other category.."
)

LAB = {
    "name": "lab",
    "profile": "reference",
    "entity_types": [
        {"label": "drug", "definition": "A medication", "archetype": "Medicine"},
        {"label": "it's", "name": "symptom", "definition": "What a patient feels"},
    ],
}


def lab_domain(**changes: Any) -> Any:
    return domain_from_mapping({**LAB, **changes}, origin="test")


# ------------------------------------------------------------------------------ data and mapping


def test_data_files_are_the_authors_files_and_name_their_source() -> None:
    data = reference_data()
    assert data.source.repository == "DMIRLAB-Group/SAM-NER"
    assert data.source.commit == COMMIT
    sizes = {  # characters of each file in the repository at that commit
        "schema_define_IEPile.json": 2583,
        "schema_define_crossNER.json": 8246,
        "schema_crossner.json": 824,
        "schema_mapping.json": 2112,
    }
    for file, size in sizes.items():
        assert len((SAMNER / file).read_text(encoding="utf-8")) == size, file
    assert {f.file for f in data.source.files.values()} == set(sizes)
    assert data.citation("mapping").endswith(f"@{COMMIT}:data/IEPile/schema/schema_mapping.json")
    assert set(data.domains) == {f"crossner_{d}" for d in ("ai", "literature", "music")} | {
        "crossner_politics",
        "crossner_science",
    }


def test_archetypes_yaml_matches_the_authors_mapping_type_for_type() -> None:
    authors: dict[str, list[str]] = json.loads(
        (SAMNER / "schema_mapping.json").read_text(encoding="utf-8")
    )
    table = archetype_table()
    for info in table.archetypes:
        key = info.name.value.lower()  # their keys: person, creative_work, computer_science …
        theirs = authors[key]
        if info.name is Archetype.MISC:  # the one difference in order: Table 4 vs their file
            assert list(info.fine_grained_types) == ["misc", "else"]
            assert theirs == ["else", "misc"]
        else:
            assert list(info.fine_grained_types) == theirs, key
    english = {a.value.lower() for a in Archetype}
    chinese = set(authors) - english
    # their other keys map IEPile's Chinese types onto Chinese archetypes (not samalign's 14)
    assert chinese == {"人", "组织机构", "位置", "作品", "政治", "科学", "其他"}
    projected = {t for key in english for t in authors[key]}
    assert all(table.project(t, exact=True) is not None for t in projected)
    # the value types their classifier data drops (getTrainingData.py's `number` list)
    number = [
        "cardinal",
        "ordinal",
        "percent",
        "money",
        "Price",
        "quantity",
        "average ratings",
        "Rating",
        "rating",
        "date",
        "time",
        "year",
        "Hours",
    ]
    assert list(table.dropped_types) == number
    assert not any(table.project(t, exact=True) for t in number)
    assert table.is_dropped("Price") and not table.is_dropped("price")


def test_the_authors_archetype_definitions_are_table_5_plus_time() -> None:
    data = reference_data()
    table = archetype_table()
    for info in table.archetypes:
        assert data.archetype_definitions[info.name.value.lower()] == info.definition
    assert list(data.archetype_definitions)[3] == "time"  # the 15th, in their file order
    assert len(data.archetype_definitions) == 15
    assert REF.archetype_names == [a.value.lower() for a in Archetype]


@pytest.mark.parametrize("name", sorted(reference_data().domains))
def test_reference_definitions_cover_the_builtin_crossner_domains(name: str) -> None:
    domain = load_domain(name)
    ref = reference_data().domains[name]
    assert set(ref.labels) == set(domain.labels)  # CrossNER's labels, misc included
    assert ref.labels[-1] == "misc"
    assert list(ref.extraction_labels) == ref.labels[:-1]  # the extractors are not asked misc
    definitions = definitions_for(domain, "reference")
    assert definitions.name == "reference"
    assert definitions.targets == ref.definitions
    assert definitions_for(domain, "default").name == "domain"


# ------------------------------------------------------------------------------ prompts


def test_anchor_prompt_is_the_iepile_json_of_their_script() -> None:
    domain = load_domain("crossner_politics")
    types = REF.extraction_types(domain)
    assert REF.extractor("anchor", domain, types, SENTENCE).prompt == (
        '{"instruction": "' + ANCHOR_INSTRUCTION + '", "schema": ["person", "politician", '
        '"organisation", "politicalparty", "event", "election", "location", "country"], '
        '"input": "Angela Merkel met \\"Obama\\" in Zürich ."}'
    )
    lab = lab_domain()
    assert REF.extractor("anchor", lab, REF.extraction_types(lab), "Aspirin .").prompt == (
        '{"instruction": "' + ANCHOR_INSTRUCTION + '", "schema": ["drug", "it\'s"], '
        '"input": "Aspirin ."}'
    )


def test_explorer_prompt_is_their_instruction_schema_and_passage() -> None:
    domain = load_domain("crossner_politics")
    rendered = REF.extractor("explorer", domain, REF.extraction_types(domain), SENTENCE)
    assert rendered.prompt == (
        EXPLORER_INSTRUCTION + "Schema:" + POLITICS_SCHEMA + ". Passage: Angela Merkel met "
        '"Obama" in Zürich .'
    )
    assert rendered.schema is None  # the authors decoded freely
    lab = lab_domain()
    assert REF.extractor("explorer", lab, ["drug", "it's"], "Aspirin cures it .").prompt == (
        EXPLORER_INSTRUCTION + "Schema:['drug', \"it's\"]. Passage: Aspirin cures it ."
    )


def test_classifier_prompt_is_their_instruction_sentence_and_schema() -> None:
    domain = load_domain("crossner_politics")
    tagged = '<ENT>Angela Merkel</ENT> met "<ENT>Obama</ENT>" in <ENT>Zürich</ENT> .'
    rendered = REF.classifier(domain, tagged)
    assert rendered.prompt == (
        CLASSIFIER_INSTRUCTION + 'sentence:<ENT>Angela Merkel</ENT> met "<ENT>Obama</ENT>" in '
        "<ENT>Zürich</ENT> . schema:" + ARCHETYPE_SCHEMA
    )
    assert rendered.schema is None
    direct = REF.classifier(domain, "<ENT>Obama</ENT> spoke .", direct=True)
    assert direct.prompt == (
        CLASSIFIER_INSTRUCTION + "sentence:<ENT>Obama</ENT> spoke . schema:['person', "
        "'politician', 'organisation', 'politicalparty', 'event', 'election', 'location', "
        "'country', 'misc']"
    )


def test_calibrator_prompt_is_their_f_string() -> None:
    domain = load_domain("crossner_politics")
    initial = {
        "Angela Merkel": Archetype.PERSON,
        "Obama": Archetype.PERSON,
        "Zürich": Archetype.LOCATION,
    }
    rendered = REF.calibrator(domain, SENTENCE, initial)
    authors = (
        CAL_HEAD
        + '                Text: Angela Merkel met "Obama" in Zürich .\n'
        + '                Initial Output: [{"Angela Merkel": "person"}, {"Obama": "person"}, '
        '{"Zürich": "location"}]\n'
        + "                Candidate Types: ['person', 'politician', 'organisation', "
        "'politicalparty', 'event', 'election', 'location', 'country', 'misc']\n"
        # only the archetypes of this output, in order of first occurrence
        + "                Source Domain Type Definitions: person:"
        + PERSON_DEF
        + ".location:"
        + LOCATION_DEF
        + ".\n"
        + "                Target Domain Type Definitions: "
        + POLITICS_DEFINITIONS
        + "\n"
        + CAL_RULES
    )
    assert rendered.prompt == authors.strip()
    assert rendered.schema is None  # the answer is not JSON: no json_schema
    assert rendered.max_tokens == 4096  # the authors' max_new_tokens (ETC_predict.yaml)


def test_calibrator_prompt_for_a_domain_of_ones_own() -> None:
    lab = lab_domain()  # reference profile, the domain's own definitions
    assert definitions_for(lab, "reference").name == "domain"
    rendered = REF.calibrator(lab, "Aspirin helps .", {"Aspirin": Archetype.MEDICINE})
    authors = (
        CAL_HEAD
        + "                Text: Aspirin helps .\n"
        + '                Initial Output: [{"Aspirin": "medicine"}]\n'
        + "                Candidate Types: ['drug', \"it's\"]\n"
        + "                Source Domain Type Definitions: medicine:"
        + MEDICINE_DEF
        + ".\n"
        + "                Target Domain Type Definitions: drug:A medication.it's:What a "
        "patient feels.\n" + CAL_RULES
    )
    assert rendered.prompt == authors.strip()


def test_default_profile_is_unchanged_and_can_take_the_reference_definitions() -> None:
    default = prompt_profile("default")
    ai = load_domain("crossner_ai")
    rendered = default.calibrator(ai, "LSTM .", {"LSTM": Archetype.COMPUTER_SCIENCE})
    assert rendered.schema is not None
    assert "- Computer_Science: " in rendered.prompt and "- Food: " in rendered.prompt
    assert "- programming language: The name of a programming language" in rendered.prompt
    authors = domain_from_mapping(
        {**ai.model_dump(mode="json"), "definitions": "reference"}, origin="test"
    )
    again = default.calibrator(authors, "LSTM .", {"LSTM": Archetype.COMPUTER_SCIENCE})
    assert "- programming language: The name of programming language, such as Java" in (
        again.prompt
    )
    with pytest.raises(ConfigError, match="definitions: reference"):
        lab_domain(definitions="reference")


# ------------------------------------------------------------------------------ answers


def test_calibrator_parser_reads_the_marked_answer_with_text_around_it() -> None:
    fmt = MarkedAssignmentsFormat()
    cases = {
        'Angela Merkel is a politician and Zürich a city.\nfinal answer:\n@@\n[{"Angela Merkel":'
        ' "politician"}, {"<ENT>Zürich</ENT>": "location"}]\n@@\nNo more explanations.': [
            ("Angela Merkel", "politician"),
            ("Zürich", "location"),
        ],
        'Final Answer: @@[{"Obama": "politician"}]@@': [("Obama", "politician")],
        '@@\n[{"Obama": "person"}]\n@@': [("Obama", "person")],
        '[{"Obama": "person"}]': [("Obama", "person")],
        # the initial output echoed before the answer: the marked answer wins
        'Initial Output: [{"Obama": "person"}]\nfinal answer:\n@@\n[{"Obama": "politician"}]\n@@': [
            ("Obama", "politician")
        ],
        "final answer:\n@@\n[]\n@@": [],
        # no markers: what follows the last "final answer:", not the JSON of the reasoning
        'Maybe [{"Obama": "person"}]? No.\nFinal answer: [{"Obama": "politician"}]': [
            ("Obama", "politician")
        ],
    }
    for raw, expected in cases.items():
        assert list(fmt.parse(raw).assignments) == expected, raw
    cut = fmt.parse('final answer:\n@@\n[{"Obama": "politician"}, {"Merk')
    assert list(cut.assignments) == [("Obama", "politician")] and cut.repaired
    with pytest.raises(OutputParseError, match="final answer"):
        fmt.parse("I cannot tell.")
    gold = fmt.render_gold({"Obama": "politician", "Zürich": "location"})
    assert gold == 'final answer:\n@@\n[{"Obama": "politician"}, {"Zürich": "location"}]\n@@'
    assert list(fmt.parse(gold).assignments) == [("Obama", "politician"), ("Zürich", "location")]


def test_classifier_parser_reads_mention_records() -> None:
    fmt = MentionRecordsFormat()
    types = REF.archetype_names
    parsed = fmt.parse(
        'Here: [{"Angela Merkel": "person"}, {"<ENT>Obama</ENT>": "Person"}, '
        '{"Zürich": "location"}, {"1990": "time"}]',
        types,
    )
    assert list(parsed.pairs) == [
        ("person", "Angela Merkel"),
        ("person", "Obama"),
        ("location", "Zürich"),
    ]
    assert parsed.out_of_schema == ("time",) and parsed.dropped == (("time", "1990"),)
    # the object form and the default profile's record form are read too
    assert list(fmt.parse('{"person": ["Obama"]}', types).pairs) == [("person", "Obama")]
    record_form = '[{"entity": "Obama", "type": "person"}]'
    assert list(fmt.parse(record_form, types).pairs) == [("person", "Obama")]
    with pytest.raises(OutputParseError):
        fmt.parse('["Obama"]', types)
    gold = REF.classifier_answer(types, {"person": ["Angela Merkel", "Obama"], "location": ["X"]})
    assert gold == '[{"Angela Merkel": "person"}, {"Obama": "person"}, {"X": "location"}]'


# ------------------------------------------------------------------------------ in the graph


def _sentence(tokens: list[str], entities: list[tuple[int, int, str]]) -> Sentence:
    text = " ".join(tokens)
    offsets = token_offsets(tokens)
    ents = [make_entity(text, offsets, s, e, label) for s, e, label in entities]
    return Sentence(id="s-0", tokens=tuple(tokens), text=text, entities=tuple(ents))


POLITICS_TEXT = "Angela Merkel of the CDU met Obama in Zürich , a Swiss city ."
POLITICS = _sentence(
    POLITICS_TEXT.split(" "),
    [
        (0, 2, "politician"),
        (4, 5, "politicalparty"),
        (6, 7, "politician"),
        (8, 9, "location"),
        (11, 12, "misc"),
    ],
)


def _scripted(sentence: Sentence) -> Any:
    """Fake models answering like the authors' models, reasoning around the calibrator's."""

    def calibrate(messages: Any) -> str:
        return (
            "Angela Merkel and Obama are politicians.\nfinal answer:\n@@\n"
            '[{"Angela Merkel": "politician"}, {"CDU": "politicalparty"}, {"Obama": '
            '"politician"}, {"Zürich": "location"}, {"Swiss": "misc"}]\n@@'
        )

    return fake_stage_models(
        {
            "anchor": '{"person": ["Angela Merkel", "Obama"], "politicalparty": ["CDU"], '
            '"location": ["Zürich"], "misc": ["Swiss"]}',
            "explorer": '{"politician": ["Angela Merkel", "Obama"], "misc": ["Swiss"], '
            '"location": ["Zürich", "city"]}',
            "archetype": 'The types: [{"Angela Merkel": "person"}, {"CDU": "organization"}, '
            '{"Obama": "person"}, {"Zürich": "location"}, {"Swiss": "misc"}]',
            "calibrate": calibrate,
        }
    )


@pytest.mark.parametrize("how", ["domain", "options"])
def test_graph_runs_the_reference_profile_per_domain_or_per_call(how: str) -> None:
    domain = load_domain("crossner_politics")
    if how == "domain":
        domain = domain.model_copy(update={"profile": "reference"})
        options = PipelineOptions()
    else:
        options = PipelineOptions(prompt_profile="reference")
    models = _scripted(POLITICS)
    result = build_ner_graph(options).invoke(
        {"text": POLITICS.text}, context=RunContext(domain, models)
    )
    got = {(e.text, e.label, e.archetype) for e in result["entities"]}
    assert got == {
        ("Angela Merkel", "politician", Archetype.PERSON),
        ("CDU", "politicalparty", Archetype.ORGANIZATION),
        ("Obama", "politician", Archetype.PERSON),
        ("Zürich", "location", Archetype.LOCATION),
        ("Swiss", "misc", Archetype.MISC),  # CCR drops "city" (one word the anchor lacks)
    }
    for stage in ("anchor", "explorer", "archetype", "calibrate"):
        (call,) = models[stage].chat_model.calls  # type: ignore[attr-defined]
        assert "response_format" not in call["kwargs"], stage  # no schema: decoded freely
    explorer = models["explorer"].chat_model.calls[0]["messages"][0].content  # type: ignore[attr-defined]
    assert explorer.startswith(EXPLORER_INSTRUCTION + "Schema:" + POLITICS_SCHEMA)
    calibrate = models["calibrate"].chat_model.calls[0]["messages"][0].content  # type: ignore[attr-defined]
    expected = REF.calibrator(
        domain,
        POLITICS.text,
        {
            "Angela Merkel": Archetype.PERSON,
            "CDU": Archetype.ORGANIZATION,
            "Obama": Archetype.PERSON,
            "Zürich": Archetype.LOCATION,
            "Swiss": Archetype.MISC,
        },
    )
    assert calibrate == expected.prompt


def test_options_override_a_domains_profile() -> None:
    domain = load_domain("crossner_politics").model_copy(update={"profile": "reference"})
    assert resolve_profile(domain).name == "reference"
    assert resolve_profile(domain, "default").name == "default"
    models = fake_stage_models({"anchor": "{}", "explorer": "{}"})
    build_ner_graph(PipelineOptions(prompt_profile="default")).invoke(
        {"text": POLITICS.text}, context=RunContext(domain, models)
    )
    (call,) = models["explorer"].chat_model.calls  # type: ignore[attr-defined]
    assert call["kwargs"]["response_format"]["type"] == "json_schema"
    with pytest.raises(ConfigError, match="prompt_profile"):
        PipelineOptions(prompt_profile="authors")  # type: ignore[arg-type]


def test_gold_oracle_answers_in_the_reference_formats() -> None:
    domain = load_domain("crossner_politics")
    oracle = GoldOracle([POLITICS], domain, profile=REF)
    explorer = REF.extractor("explorer", domain, REF.extraction_types(domain), POLITICS.text)
    answer = json.loads(oracle.answer("explorer", explorer.prompt, None))
    assert answer["misc"] == ["Swiss"]  # not asked, answered: the extractors keep it
    assert answer["politician"] == ["Angela Merkel", "Obama"]
    tagged = "<ENT>Angela Merkel</ENT> of the <ENT>CDU</ENT> met Obama in Zürich , a Swiss city ."
    classifier = REF.classifier(domain, tagged)
    assert oracle.answer("archetype", classifier.prompt, None) == (
        '[{"Angela Merkel": "person"}, {"CDU": "organization"}]'
    )
    calibrator = REF.calibrator(
        domain, POLITICS.text, {"Obama": Archetype.PERSON, "city": Archetype.LOCATION}
    )
    assert oracle.answer("calibrate", calibrator.prompt, None) == (
        'final answer:\n@@\n[{"Obama": "politician"}]\n@@'
    )
