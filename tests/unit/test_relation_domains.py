"""Built-in relation domains (CoNLL04, SciERC, ADE) against their benchmark data.

The label sets must equal the datasets' ``ner2idx.json`` / ``rel2idx.json`` keys, and the
argument-type constraints must admit every gold triplet (a constraint that rejects gold would
silently cap recall). The data lives beside the checkout in ``../shared/data``; tests that need
it skip when it is missing.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from samalign.prompts import Domain, builtin_domains, load_domain

# domain name -> (data folder, SpERT JSON files holding every gold sentence exactly once)
DATASETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "conll04": ("conll04", ("train_triples.json", "dev_triples.json", "test_triples.json")),
    "scierc": ("scierc", ("train_triples.json", "dev_triples.json", "test_triples.json")),
    "ade": ("ade", tuple(f"ade_split_{i}_test.json" for i in range(10))),  # disjoint folds
}
# Gold triplet counts per relation over the files above (quoted in the YAML comments).
GOLD_COUNTS: dict[str, dict[str, int]] = {
    "conll04": {
        "Kill": 268,
        "Live_In": 521,
        "Located_In": 406,
        "OrgBased_In": 452,
        "Work_For": 401,
    },
    "scierc": {
        "Used-for": 2437,
        "Feature-of": 264,
        "Evaluate-for": 454,
        "Conjunction": 582,
        "Part-of": 269,
        "Hyponym-of": 409,
        "Compare": 233,
    },
    "ade": {"Adverse-Effect": 6821},
}
NAMES = sorted(DATASETS)


def _folder(shared_data: Path, name: str) -> Path:
    folder = shared_data / DATASETS[name][0]
    if not folder.is_dir():
        pytest.skip(f"benchmark data {folder} not found")
    return folder


def _keys(path: Path) -> set[str]:
    return set(json.loads(path.read_text(encoding="utf-8")))


def _sentences(folder: Path, files: tuple[str, ...]) -> list[dict[str, Any]]:
    sentences: list[dict[str, Any]] = []
    for file in files:
        sentences.extend(json.loads((folder / file).read_text(encoding="utf-8")))
    return sentences


def _triplets(name: str, shared_data: Path) -> list[tuple[str, str, str]]:
    """Every gold ``(head type, relation, tail type)`` of the dataset, one per gold triplet."""
    folder = _folder(shared_data, name)
    out: list[tuple[str, str, str]] = []
    for sentence in _sentences(folder, DATASETS[name][1]):
        entities = sentence["entities"]
        for rel in sentence["relations"]:
            head, tail = entities[rel["head"]], entities[rel["tail"]]
            out.append((head["type"], rel["type"], tail["type"]))
    return out


def _admits(domain: Domain, triplet: tuple[str, str, str]) -> bool:
    head, label, tail = triplet
    rel = next(r for r in domain.relation_types if r.label == label)
    return (not rel.head_types or head in rel.head_types) and (
        not rel.tail_types or tail in rel.tail_types
    )


# ---------------------------------------------------------------------------------------------
# the files themselves (no data needed)
# ---------------------------------------------------------------------------------------------


def test_relation_domains_are_builtin() -> None:
    assert set(NAMES) <= set(builtin_domains())


@pytest.mark.parametrize("name", NAMES)
def test_relation_domain_loads_complete(name: str) -> None:
    domain = load_domain(name)
    assert domain.name == name
    assert domain.description
    assert domain.source
    assert domain.relation_types
    for entity_type in domain.entity_types:
        assert entity_type.definition.strip(), entity_type.label
        assert entity_type.archetype is not None, entity_type.label
    for rel in domain.relation_types:
        assert rel.definition.strip(), rel.label
        # both argument roles are named, so the model knows the direction
        assert "subject" in rel.definition, rel.label
        assert "object" in rel.definition, rel.label


@pytest.mark.parametrize("name", NAMES)
def test_relation_domain_names_are_unique_and_readable(name: str) -> None:
    domain = load_domain(name)
    for kind in (domain.entity_types, domain.relation_types):
        names = [t.name.casefold() for t in kind]
        assert len(names) == len(set(names)), names
        for t in kind:
            # a verbalised name, not the dataset tag (Work_For, Adverse-Effect, ...)
            assert t.name == t.name.lower(), t.name
            assert "_" not in t.name, t.name
            assert "-" not in t.name, t.name


def test_ade_relation_name_differs_from_the_entity_name() -> None:
    domain = load_domain("ade")
    (rel,) = domain.relation_types
    assert rel.label == "Adverse-Effect" == domain.entity_type("Adverse-Effect").label
    assert rel.name not in domain.names


# ---------------------------------------------------------------------------------------------
# against the benchmark data
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_labels_equal_the_dataset_labels(name: str, shared_data: Path) -> None:
    folder = _folder(shared_data, name)
    domain = load_domain(name)
    assert set(domain.labels) == _keys(folder / "ner2idx.json")
    assert {r.label for r in domain.relation_types} == _keys(folder / "rel2idx.json")


@pytest.mark.parametrize("name", NAMES)
def test_gold_counts_match_the_yaml_comments(name: str, shared_data: Path) -> None:
    counts = Counter(rel for _, rel, _ in _triplets(name, shared_data))
    assert dict(counts) == GOLD_COUNTS[name]


@pytest.mark.parametrize("name", NAMES)
def test_constraints_admit_every_gold_triplet(name: str, shared_data: Path) -> None:
    domain = load_domain(name)
    triplets = _triplets(name, shared_data)
    assert triplets
    rejected = Counter(t for t in triplets if not _admits(domain, t))
    assert not rejected, f"{name}: constraints reject gold triplets {dict(rejected)}"
    entity_labels = set(domain.labels)
    assert {h for h, _, _ in triplets} | {t for _, _, t in triplets} <= entity_labels


@pytest.mark.parametrize("name", NAMES)
def test_uniform_relations_are_constrained(name: str, shared_data: Path) -> None:
    """A relation whose gold triplets all share one type pair is constrained to exactly it."""
    domain = load_domain(name)
    pairs: dict[str, set[tuple[str, str]]] = {}
    for head, rel, tail in _triplets(name, shared_data):
        pairs.setdefault(rel, set()).add((head, tail))
    for rel in domain.relation_types:
        seen = pairs[rel.label]
        if len(seen) == 1:
            ((head, tail),) = seen
            assert (rel.head_types, rel.tail_types) == ((head,), (tail,)), rel.label


def test_ade_folds_cover_the_full_file(shared_data: Path) -> None:
    folder = _folder(shared_data, "ade")
    folds = _sentences(folder, DATASETS["ade"][1])
    full = _sentences(folder, ("ade_full.json",))
    assert sorted(str(s["orig_id"]) for s in folds) == sorted(str(s["orig_id"]) for s in full)
