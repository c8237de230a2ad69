"""Evaluation's dataset loading: built-in splits, ADE folds, paths (readers: test_datasets_*)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from samalign.errors import ConfigError
from samalign.evaluation.datasets import BUILTIN_DATASETS, DATA_ENV, data_dir, load_dataset
from samalign.evaluation.sentences import TokenIndex

# crossner/SOURCE.md: sentences and entity mentions per split
CROSSNER_COUNTS = {
    ("ai", "train"): (100, 532),
    ("ai", "dev"): (350, 1549),
    ("ai", "test"): (431, 1809),
    ("literature", "dev"): (400, 2130),
    ("literature", "test"): (416, 2266),
    ("music", "dev"): (380, 2679),
    ("music", "test"): (465, 3336),
    ("politics", "dev"): (541, 3482),
    ("politics", "test"): (651, 4209),
    ("science", "dev"): (450, 2538),
    ("science", "test"): (543, 3089),
}


@pytest.mark.parametrize(("domain", "split"), sorted(CROSSNER_COUNTS))
def test_crossner_counts_match_source(shared_data: Path, domain: str, split: str) -> None:
    dataset = load_dataset(f"crossner_{domain}", split, data_dir_path=shared_data)
    sentences, mentions = CROSSNER_COUNTS[(domain, split)]
    assert len(dataset.sentences) == sentences
    assert sum(len(s.entities) for s in dataset.sentences) == mentions
    for s in dataset.sentences:
        assert s.text == " ".join(s.tokens)
        for e in s.entities:
            assert s.text[e.span.start : e.span.end] == e.text
            assert e.text == " ".join(s.tokens[e.token_start : e.token_end])
            assert s.tags[e.token_start] == f"B-{e.label}"


SPERT_COUNTS = {
    ("conll04", "train"): (922, 3377, 1283),
    ("conll04", "dev"): (231, 893, 343),
    ("conll04", "test"): (288, 1079, 422),
    ("scierc", "train"): (1861, 5598, 3215),  # SOURCE.md: 3,219 with 4 exact repeats
    ("scierc", "dev"): (275, 811, 455),
    ("scierc", "test"): (551, 1685, 974),
}


@pytest.mark.parametrize(("name", "split"), sorted(SPERT_COUNTS))
def test_spert_counts_match_source(shared_data: Path, name: str, split: str) -> None:
    dataset = load_dataset(name, split, data_dir_path=shared_data)
    sentences, entities, relations = SPERT_COUNTS[(name, split)]
    assert len(dataset.sentences) == sentences
    assert sum(len(s.entities) for s in dataset.sentences) == entities
    assert sum(len(s.triplets) for s in dataset.sentences) == relations
    assert dataset.relations
    for s in dataset.sentences:
        for t in s.triplets:
            assert t.head in s.entities and t.tail in s.entities


def test_ade_folds(shared_data: Path) -> None:
    test = load_dataset("ade", "test", fold=3, data_dir_path=shared_data)
    train = load_dataset("ade", "train", fold=3, data_dir_path=shared_data)
    assert len(test.sentences) == 427
    assert len(test.sentences) + len(train.sentences) == 4272
    assert test.entity_labels == ["Adverse-Effect", "Drug"]
    assert test.relation_labels == ["Adverse-Effect"]
    nested = [
        (a, b)
        for s in test.sentences
        for a in s.entities
        for b in s.entities
        if a is not b and a.token_start < b.token_end and b.token_start < a.token_end
    ]
    assert nested, "ADE has overlapping entities"
    with pytest.raises(ConfigError, match=r"fold must be 0\.\.9"):
        load_dataset("ade", "test", fold=10, data_dir_path=shared_data)
    with pytest.raises(ConfigError, match="no split 'dev'"):
        load_dataset("ade", "dev", data_dir_path=shared_data)


def test_token_index_maps_only_token_aligned_spans() -> None:
    index = TokenIndex(["New", "York", "-", "based", "U.S."])
    text = "New York - based U.S."
    assert index.to_tokens(0, 8) == (0, 2)
    assert index.to_tokens(text.index("U.S."), len(text)) == (4, 5)
    assert index.to_tokens(0, 3) == (0, 1)
    assert index.to_tokens(1, 8) is None  # starts inside a token
    assert index.to_tokens(text.index("U.S."), len(text) - 1) is None  # "U.S" cuts "U.S."
    assert index.to_tokens(4, 3) is None


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _spert(path: Path, records: object) -> Path:
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def test_load_dataset_by_path_and_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spert_record: dict[str, object]
) -> None:
    _write(tmp_path / "dev.txt", "EU\tB-org\nrejects\tO\n")
    by_folder = load_dataset(tmp_path, "dev")
    assert by_folder.name == tmp_path.name and by_folder.domain is None
    assert not by_folder.relations
    by_file = load_dataset(tmp_path / "dev.txt")
    assert [s.id for s in by_file.sentences] == ["dev-0"]
    _spert(tmp_path / "test_triples.json", [spert_record])
    spert = load_dataset(tmp_path, "test")
    assert spert.relations and spert.sentences[0].triplets
    with pytest.raises(ConfigError, match=r"no train\.txt"):
        load_dataset(tmp_path, "train")
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        load_dataset("nope")
    with pytest.raises(ConfigError, match="has no split 'validation'"):
        load_dataset("conll04", "validation", data_dir_path=tmp_path)
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="SAMALIGN_DATA_DIR"):
        data_dir()
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert data_dir() == tmp_path


def test_builtin_datasets_have_builtin_domains() -> None:
    from samalign.prompts import builtin_domains

    assert set(BUILTIN_DATASETS) <= set(builtin_domains())
