"""Built-in domains, the archetype table, and validation of user domain files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from samalign.errors import ConfigError
from samalign.graphs import RunContext, build_ner_graph
from samalign.prompts import (
    KNOWN_STAGES,
    Domain,
    archetype_table,
    builtin_domains,
    default_specs,
    domain_from_mapping,
    load_domain,
)
from samalign.types import Archetype

CROSSNER = ["ai", "literature", "music", "politics", "science"]
TABLE5_ORDER = [
    "Person",
    "Organization",
    "Location",
    "Biology",
    "Medicine",
    "Food",
    "Vehicle",
    "Creative_Work",
    "Event",
    "Artifact",
    "Computer_Science",
    "Political",
    "Science",
    "Misc",
]
SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def minimal(**extra: Any) -> dict[str, Any]:
    return {
        "name": "pharma",
        "entity_types": [
            {"label": "drug", "definition": "A medication.", "archetype": "Medicine"},
            {"label": "company", "name": "pharma company", "definition": "A drug maker."},
        ],
        **extra,
    }


# ---------------------------------------------------------------------------------------------
# built-in domains
# ---------------------------------------------------------------------------------------------


def test_builtin_domain_names() -> None:
    assert {f"crossner_{d}" for d in CROSSNER} <= set(builtin_domains())
    assert builtin_domains() == sorted(builtin_domains())


@pytest.mark.parametrize("name", [f"crossner_{d}" for d in CROSSNER])
def test_builtin_domain_loads_with_definitions_and_archetypes(name: str) -> None:
    domain = load_domain(name)
    assert isinstance(domain, Domain)
    assert domain.name == name
    assert domain.description
    assert domain.source
    assert len(domain.labels) == len(set(domain.labels))
    for entity_type in domain.entity_types:
        assert entity_type.definition.strip(), entity_type.label
        assert len(entity_type.definition) > 20, entity_type.label
        assert isinstance(entity_type.archetype, Archetype), entity_type.label
        assert entity_type.name, entity_type.label
        assert domain.label_for_name(entity_type.name) == entity_type.label
        assert domain.label_for_name(entity_type.label.upper()) == entity_type.label
    assert domain.prompts == {}
    assert domain.adapters == {}


def _bio_labels(folder: Path) -> set[str]:
    labels: set[str] = set()
    for split in ("train", "dev", "test"):
        for line in (folder / f"{split}.txt").read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            tag = line.split("\t")[-1].strip()
            if tag != "O":
                assert re.fullmatch(r"[BI]-\S+", tag), line
                labels.add(tag[2:])
    return labels


@pytest.mark.parametrize("short", CROSSNER)
def test_builtin_label_set_equals_crossner_bio_tags(short: str, shared_data: Path) -> None:
    folder = shared_data / "crossner" / short
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    assert set(load_domain(f"crossner_{short}").labels) == _bio_labels(folder)


@pytest.mark.parametrize(
    ("name", "label", "archetype"),
    [
        ("crossner_ai", "researcher", Archetype.PERSON),
        ("crossner_ai", "programlang", Archetype.COMPUTER_SCIENCE),
        ("crossner_ai", "country", Archetype.LOCATION),
        ("crossner_music", "musicalartist", Archetype.PERSON),
        ("crossner_politics", "politicalparty", Archetype.ORGANIZATION),
        ("crossner_science", "protein", Archetype.MEDICINE),
    ],
)
def test_builtin_archetype_assignments(name: str, label: str, archetype: Archetype) -> None:
    assert load_domain(name).entity_type(label).archetype is archetype


def test_entity_type_lookup_unknown_label() -> None:
    with pytest.raises(ConfigError, match="no entity type 'nope'"):
        load_domain("crossner_ai").entity_type("nope")


def test_adapter_for_defaults_to_stage_name() -> None:
    domain = domain_from_mapping(minimal(adapters={"anchor": "iepile"}), origin="t")
    assert domain.adapter_for("anchor") == "iepile"
    assert domain.adapter_for("explorer") == "explorer"


# ---------------------------------------------------------------------------------------------
# archetypes.yaml (Tables 4–5)
# ---------------------------------------------------------------------------------------------


def test_archetype_table_has_table5_order() -> None:
    table = archetype_table()
    assert [a.name.value for a in table.archetypes] == TABLE5_ORDER
    assert [a.value for a in Archetype] == TABLE5_ORDER
    assert table.source
    for info in table.archetypes:
        assert info.definition.startswith("Entities")
        assert info.fine_grained_types


def test_archetype_definitions_match_the_paper() -> None:
    paper = sorted(SEEDS.glob("004_*.txt"))
    if not paper:
        pytest.skip("SAM-NER paper text not found")
    text = paper[0].read_text(encoding="utf-8")
    block = text.split("Archetype\tArchetype Definition", 1)[1].split("Table 5", 1)[0]
    rows = dict(line.split("\t", 1) for line in block.strip().splitlines() if "\t" in line)
    table = archetype_table()
    assert list(rows) == TABLE5_ORDER
    for info in table.archetypes:
        assert info.definition == rows[info.name.value].strip()


@pytest.mark.parametrize(
    ("fine", "archetype"),
    [
        ("actor", Archetype.PERSON),
        ("mythical figure", Archetype.PERSON),
        ("protein", Archetype.MEDICINE),
        ("GENE", Archetype.MEDICINE),
        ("gene", Archetype.MEDICINE),  # case-insensitive fallback
        ("genre", Archetype.CREATIVE_WORK),
        ("Amenity", Archetype.LOCATION),
        ("machanical property", Archetype.COMPUTER_SCIENCE),  # the paper's spelling
        ("Restaurant Name", Archetype.FOOD),
        ("national religious political", Archetype.POLITICAL),
        ("astronomical object", Archetype.SCIENCE),
        ("else", Archetype.MISC),
        ("sports car", Archetype.VEHICLE),
    ],
)
def test_mapping_m_projects(fine: str, archetype: Archetype) -> None:
    assert archetype_table().project(fine) is archetype


def test_mapping_m_unknown_type() -> None:
    assert archetype_table().project("quasar nebula") is None


def test_mapping_m_is_a_function() -> None:
    seen: dict[str, str] = {}
    for info in archetype_table().archetypes:
        for fine in info.fine_grained_types:
            assert fine not in seen, f"{fine!r} maps to {seen.get(fine)} and {info.name}"
            seen[fine] = info.name.value


def test_archetype_definition_lookup() -> None:
    table = archetype_table()
    assert "individuals" in table.definition(Archetype.PERSON)


# ---------------------------------------------------------------------------------------------
# user domain files
# ---------------------------------------------------------------------------------------------


def test_valid_user_domain(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "pharma.yaml", minimal())
    domain = load_domain(path)
    assert domain.labels == ["drug", "company"]
    assert domain.names == ["drug", "pharma company"]
    assert domain.entity_type("drug").archetype is Archetype.MEDICINE
    assert domain.entity_type("company").archetype is None
    assert load_domain(str(path)) == domain


def test_broken_entity_type_reports_only_the_real_problem(tmp_path: Path) -> None:
    data = {
        "name": "one",
        "entity_types": [{"label": "drug", "definition": "A drug.", "archetype": "Medecine"}],
    }
    with pytest.raises(ConfigError) as info:
        load_domain(write_yaml(tmp_path / "bad.yaml", data))
    assert "at least 1 item" not in str(info.value)


def _set(*path: Any, value: Any) -> Any:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path
        for key in parents:
            data = data[key]
        data[last] = value

    return mutate


def _delete(*path: Any) -> Any:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path
        for key in parents:
            data = data[key]
        del data[last]

    return mutate


MAKES = {
    "label": "makes",
    "definition": "The subject company makes the object drug.",
    "head_types": ["company"],
    "tail_types": ["drug"],
}

BROKEN_FILES = [
    pytest.param(
        _set("entity_types", 0, "archetype", value="Medecine"),
        "entity_types.0.archetype",
        ["Medecine", "Medicine"],  # the allowed values tell the user what to write
        id="archetype-typo",
    ),
    pytest.param(
        _delete("entity_types", 1, "definition"),
        "entity_types.1.definition",
        ["missing"],
        id="missing-definition",
    ),
    pytest.param(
        _set("entity_type", value=[]),
        "'entity_type'",
        [
            "did you mean 'entity_types'?",
            "Valid fields here: name, description, source, entity_types, relation_types, "
            "prompts, adapters",
        ],
        id="unknown-top-level-field",
    ),
    pytest.param(
        _set("entity_types", 0, "defintion", value="typo"),
        "entity_types.0.defintion",
        [
            "spelling",
            "did you mean 'definition'?",
            "Valid fields here: label, name, definition, archetype",
        ],
        id="unknown-entity-type-field",
    ),
    pytest.param(
        _set("relation_types", value=[{**MAKES, "head_type": ["company"]}]),
        "relation_types.0.head_type",
        [
            "did you mean 'head_types'?",
            "Valid fields here: label, name, definition, head_types, tail_types",
        ],
        id="unknown-relation-type-field",
    ),
    pytest.param(
        _set("prompts", value={"explorer": "Find {{ labels | join(', ') }} entities."}),
        "prompts.explorer",
        ["text"],
        id="prompt-without-text",
    ),
]


@pytest.mark.parametrize(("mutate", "field", "fix"), BROKEN_FILES)
def test_broken_domain_file_names_file_field_and_fix(
    tmp_path: Path, mutate: Any, field: str, fix: list[str]
) -> None:
    data = minimal()
    mutate(data)
    path = write_yaml(tmp_path / "bad.yaml", data)
    with pytest.raises(ConfigError) as info:
        load_domain(path)
    message = str(info.value)
    assert str(path) in message
    assert field in message
    for words in fix:
        assert words in message


def test_relation_types_with_argument_constraints_load() -> None:
    domain = domain_from_mapping(minimal(relation_types=[MAKES]), origin="t")
    (makes,) = domain.relation_types
    assert (makes.name, makes.head_types, makes.tail_types) == ("makes", ("company",), ("drug",))


@pytest.mark.parametrize(
    "content",
    ["name: x\nentity_types: [\n", "- just\n- a list\n", "42\n"],
)
def test_not_a_domain_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_domain(path)
    assert str(path) in str(info.value)


def test_no_entity_types(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="entity_types"):
        load_domain(write_yaml(tmp_path / "d.yaml", {"name": "x", "entity_types": []}))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_domain(tmp_path / "absent.yaml")


def test_unknown_domain_name_lists_builtins() -> None:
    with pytest.raises(ConfigError) as info:
        load_domain("crossner_biology")
    message = str(info.value)
    assert "crossner_biology" in message
    assert builtin_domains()
    for name in builtin_domains():
        assert name in message


@pytest.mark.parametrize("field", ["label", "name"])
def test_duplicate_labels_or_names(tmp_path: Path, field: str) -> None:
    data = minimal()
    if field == "label":
        data["entity_types"][1]["label"] = "drug"
    else:
        data["entity_types"][1]["name"] = "DRUG"  # names clash case-insensitively
    with pytest.raises(ConfigError) as info:
        load_domain(write_yaml(tmp_path / "d.yaml", data))
    assert "duplicate" in str(info.value)
    assert "drug" in str(info.value).casefold()


@pytest.mark.parametrize("section", ["prompts", "adapters"])
def test_unknown_stage(tmp_path: Path, section: str) -> None:
    data = minimal(**{section: {"anchr": "{{ text }}"}})
    with pytest.raises(ConfigError) as info:
        load_domain(write_yaml(tmp_path / "d.yaml", data))
    message = str(info.value)
    assert section in message
    assert "anchr" in message
    assert "anchor" in message  # lists the valid stage names


def test_every_known_stage_is_accepted_for_adapters() -> None:
    adapters = {stage: f"{stage}-v2" for stage in KNOWN_STAGES}
    domain = domain_from_mapping(minimal(adapters=adapters), origin="t")
    assert dict(domain.adapters) == adapters


@pytest.mark.parametrize(
    "template",
    ["{{ text ", "{% for x in labels %}{{ text }}", "{{ text }} {{ undefined_variable }}"],
)
def test_prompt_override_broken_template(tmp_path: Path, template: str) -> None:
    path = write_yaml(tmp_path / "d.yaml", minimal(prompts={"anchor": template}))
    with pytest.raises(ConfigError) as info:
        load_domain(path)
    assert str(path) in str(info.value)
    assert "prompts.anchor" in str(info.value)


@pytest.mark.parametrize(
    "template",
    [
        "{{ text }} {{ ''.__class__.__mro__ }}",
        "{{ text }} {{ text.__class__.__mro__[1].__subclasses__() }}",
        "{% if labels.__class__ %}x{% endif %}{{ text }}",
        "{{ text }}{{ cycler.__init__.__globals__.os }}",
        "{{ text }}{{ labels.append('x') }}",
    ],
)
def test_sandbox_blocks_unsafe_templates(tmp_path: Path, template: str) -> None:
    path = write_yaml(tmp_path / "d.yaml", minimal(prompts={"anchor": template}))
    with pytest.raises(ConfigError) as info:
        load_domain(path)
    assert "prompts.anchor" in str(info.value)


def test_sandbox_blocks_unsafe_access_at_render_time() -> None:
    spec = default_specs()["anchor"].with_template("{{ text.__class__.__base__ }}")
    with pytest.raises(ConfigError, match="unsafe"):
        spec.render({"labels": ["a"], "text": "x"})


def test_valid_prompt_override_is_used_by_the_graph(
    tmp_path: Path, fake_ner: Any, stage_calls: Any
) -> None:
    template = "CUSTOM ANCHOR\nTypes: {{ labels | join(', ') }}\nSentence: {{ text }}"
    path = write_yaml(tmp_path / "d.yaml", minimal(prompts={"anchor": template}))
    domain = load_domain(path)
    text = "Pfizer makes Paxlovid ."
    fakes = fake_ner(
        anchor={text: ["Paxlovid"]},
        explorer={text: ["Pfizer"]},
        gold={"Paxlovid": ("Medicine", "drug"), "Pfizer": ("Organization", "pharma company")},
        default_type="drug",
    )
    models = fakes.models()
    result = build_ner_graph().invoke({"text": text}, context=RunContext(domain, models))
    prompt = stage_calls(models, "anchor")[0]["messages"][0].content
    assert prompt == "CUSTOM ANCHOR\nTypes: drug, pharma company\nSentence: Pfizer makes Paxlovid ."
    # other stages keep their default prompt
    explorer_prompt = stage_calls(models, "explorer")[0]["messages"][0].content
    assert "CUSTOM" not in explorer_prompt
    assert '"Input": "Pfizer makes Paxlovid ."' in explorer_prompt
    labels = {(e.text, e.label) for e in result["entities"]}
    assert ("Paxlovid", "drug") in labels
