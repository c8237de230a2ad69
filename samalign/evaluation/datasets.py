"""Built-in benchmark datasets and where their files are.

Built-in names: ``crossner_ai``, ``crossner_literature``, ``crossner_music``,
``crossner_politics``, ``crossner_science`` (BIO files; splits train/dev/test), ``conll04`` and
``scierc`` (SpERT JSON; train/dev/test) and ``ade`` (SpERT JSON in ten folds: ``test`` is
``ade_split_<fold>_test.json``; ``train`` is every other record of ``ade_full.json``; no dev
split). Each is evaluated with the built-in domain of the same name unless told otherwise.

A path works too: a file in any tokenised format :mod:`samalign.datasets` reads (BIO in either
column order, SpERT JSON, CrossRE JSON Lines; detected from the content, or named with
``fmt``), or a folder holding ``<split>.txt``, ``<split>_triples.json``, ``<split>.json`` or
``<split>.jsonl``. The files are read by :mod:`samalign.datasets`; this module only turns the
records into gold :class:`~samalign.evaluation.sentences.Sentence` objects.

The data folder is, in order: the ``data_dir`` argument, the ``SAMALIGN_DATA_DIR``
environment variable, ``../shared/data`` beside the source checkout, ``../shared/data`` beside
the working directory.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from samalign.datasets import (
    TOKENISED_FORMATS,
    BioColumns,
    DataFile,
    read_bio,
    read_file,
)
from samalign.datasets import read_spert as read_spert_file
from samalign.errors import ConfigError, InputError
from samalign.evaluation.sentences import Sentence, sentence_from_record

DATA_ENV = "SAMALIGN_DATA_DIR"
"""Environment variable naming the benchmark data folder."""

DatasetFormat = Literal["bio", "spert"]

CrossNERSentence = Sentence
"""Former name of :class:`~samalign.evaluation.sentences.Sentence`."""


@dataclass(frozen=True)
class DatasetInfo:
    """A built-in dataset.

    Attributes:
        name: Dataset name (also the default domain).
        format: ``bio`` or ``spert``.
        folder: Folder inside the data folder.
        splits: Available splits.
        relations: Whether the data has relation triplets.
        relation_arguments: The data's annotation convention for a relation between repeated
            mentions (the joint graph's ``relation_arguments`` the harness uses by default):
            ``all`` when a relation is annotated for every occurrence of a repeated mention
            (CoNLL04), ``closest`` when for one occurrence (ADE, SciERC).
    """

    name: str
    format: DatasetFormat
    folder: str
    splits: tuple[str, ...]
    relations: bool
    relation_arguments: Literal["closest", "all"] = "closest"


CROSSNER_DOMAINS = ("ai", "literature", "music", "politics", "science")

BUILTIN_DATASETS: dict[str, DatasetInfo] = {
    **{
        f"crossner_{d}": DatasetInfo(
            f"crossner_{d}", "bio", f"crossner/{d}", ("train", "dev", "test"), False
        )
        for d in CROSSNER_DOMAINS
    },
    "conll04": DatasetInfo("conll04", "spert", "conll04", ("train", "dev", "test"), True, "all"),
    "scierc": DatasetInfo("scierc", "spert", "scierc", ("train", "dev", "test"), True),
    "ade": DatasetInfo("ade", "spert", "ade", ("train", "test"), True),
}
"""Built-in datasets by name."""

ADE_FOLDS = 10


@dataclass(frozen=True)
class Dataset:
    """A loaded split.

    Attributes:
        name: The dataset name (built-in name, or the file/folder name of a path).
        split: The split.
        path: The file read.
        sentences: The gold sentences, in file order.
        relations: Whether the data has relation annotations.
        domain: The built-in domain of the same name, if there is one.
    """

    name: str
    split: str
    path: Path
    sentences: list[Sentence]
    relations: bool
    domain: str | None

    @property
    def entity_labels(self) -> list[str]:
        """Gold entity labels, sorted."""
        return sorted({e.label for s in self.sentences for e in s.entities})

    @property
    def relation_labels(self) -> list[str]:
        """Gold relation labels, sorted."""
        return sorted({t.relation for s in self.sentences for t in s.triplets})


def _candidates(explicit: str | Path | None) -> list[Path]:
    if explicit is not None:
        return [Path(explicit)]
    env = os.environ.get(DATA_ENV)
    if env:
        return [Path(env)]
    return [
        Path(__file__).resolve().parents[3] / "shared" / "data",  # beside the source checkout
        Path.cwd().resolve().parent / "shared" / "data",  # beside the working directory
    ]


def data_dir(explicit: str | Path | None = None) -> Path:
    """The benchmark data folder (see the module docs for the search order).

    Raises:
        ConfigError: If no candidate folder exists, naming those tried.
    """
    tried = _candidates(explicit)
    for path in tried:
        if path.is_dir():
            return path
    raise ConfigError(
        f"benchmark data folder not found (tried {[str(p) for p in tried]}); set "
        f"{DATA_ENV} or pass --data-dir"
    )


def gold_sentences(data: DataFile, prefix: str) -> list[Sentence]:
    """The gold sentences of a tokenised file's records, with ids ``<prefix>-<n>``.

    Raises:
        InputError: The file's format has no tokens (mention strings only).
    """
    if not data.tokenised:
        raise InputError(
            f"{data.path}: {data.format!r} records give mention strings without offsets, so "
            f"their spans cannot be scored; samalign eval reads {list(TOKENISED_FORMATS)} "
            "(see docs/data.md for how to convert)"
        )
    return [sentence_from_record(r, f"{prefix}-{i}") for i, r in enumerate(data.records)]


def read_crossner(
    path: str | Path,
    *,
    prefix: str | None = None,
    strict: bool = False,
    columns: BioColumns = "auto",
) -> list[Sentence]:
    """Gold sentences of a BIO file (CrossNER), read by :func:`samalign.datasets.read_bio`.

    Args:
        path: A ``train.txt``/``dev.txt``/``test.txt`` file.
        prefix: Id prefix (default: ``<folder>-<stem>``, e.g. ``ai-dev``); ids are
            ``<prefix>-<index>``.
        strict: Raise on invalid IOB2 instead of repairing it with a warning.
        columns: Which column holds the tags (``auto``, ``token-tag``, ``tag-token``).

    Raises:
        InputError: A malformed file (naming the file and line).
    """
    file = Path(path)
    data = read_bio(file, columns=columns, strict=strict)
    return gold_sentences(data, prefix or f"{file.parent.name}-{file.stem}")


def read_spert(
    path: str | Path,
    *,
    prefix: str | None = None,
    entity_labels: Collection[str] | None = None,
    relation_labels: Collection[str] | None = None,
    require_relations: bool = False,
) -> list[Sentence]:
    """Gold sentences of a SpERT JSON file, read by :func:`samalign.datasets.read_spert`.

    Args:
        path: The JSON file.
        prefix: Id prefix (default: the file's stem); ids are ``<prefix>-<index>``.
        entity_labels: The allowed entity types (default: ``ner2idx.json`` beside the file).
        relation_labels: The allowed relation types (default: ``rel2idx.json``).
        require_relations: Refuse a record without a ``relations`` field.

    Raises:
        InputError: A malformed file or record (naming the file, record, field and fix).
    """
    file = Path(path)
    data = read_spert_file(
        file,
        entity_labels=entity_labels,
        relation_labels=relation_labels,
        require_relations=require_relations,
    )
    return gold_sentences(data, prefix or file.stem)


SPLIT_FILES = ("{split}.txt", "{split}_triples.json", "{split}.json", "{split}.jsonl")
"""The file names a dataset folder may hold for a split, in the order tried."""


def _split_file(folder: Path, split: str) -> Path | None:
    for pattern in SPLIT_FILES:
        path = folder / pattern.format(split=split)
        if path.is_file():
            return path
    return None


def _load_ade(
    folder: Path, split: str, fold: int, require_relations: bool
) -> tuple[Path, list[Sentence]]:
    if not 0 <= fold < ADE_FOLDS:
        raise ConfigError(f"ADE fold must be 0..{ADE_FOLDS - 1}, got {fold}")
    test_path = folder / f"ade_split_{fold}_test.json"
    prefix = f"ade-fold{fold}-{split}"
    test = read_spert_file(test_path, require_relations=require_relations)
    if split == "test":
        return test_path, gold_sentences(test, prefix)
    full_path = folder / "ade_full.json"
    full = read_spert_file(full_path, require_relations=require_relations)
    held_out = {_orig_id(r.source_id, r.where) for r in test.records}
    train = [r for r in full.records if _orig_id(r.source_id, r.where) not in held_out]
    return full_path, gold_sentences(full.model_copy(update={"records": tuple(train)}), prefix)


def _orig_id(value: str | None, where: str) -> str:
    """A record's ``orig_id`` (ADE folds are matched by it)."""
    if value is None:
        raise InputError(f"{where}: an ADE record has no 'orig_id' (the folds are matched by it)")
    return value


def _read_split(
    path: Path,
    prefix: str,
    fmt: str,
    columns: BioColumns,
    require_relations: bool,
) -> tuple[list[Sentence], bool]:
    data = read_file(path, fmt, columns=columns, require_relations=require_relations)
    return gold_sentences(data, prefix), data.relations


def load_dataset(
    name_or_path: str | Path,
    split: str = "test",
    *,
    fold: int = 0,
    data_dir_path: str | Path | None = None,
    fmt: str = "auto",
    columns: BioColumns = "auto",
    require_relations: bool = False,
) -> Dataset:
    """Load one split of a built-in dataset or of a dataset at a path.

    Args:
        name_or_path: A built-in name (see :data:`BUILTIN_DATASETS`), a file in a tokenised
            format (BIO, SpERT JSON, CrossRE JSON Lines), or a folder holding one of
            :data:`SPLIT_FILES` for the split.
        split: ``train``, ``dev`` or ``test`` (ignored when a file is given).
        fold: ADE fold (0–9).
        data_dir_path: The benchmark data folder (default: see :func:`data_dir`).
        fmt: The file format for a path (``auto``: detect it from the content).
        columns: BIO: which column holds the tags (``auto``, ``token-tag``, ``tag-token``).
        require_relations: Refuse a SpERT or CrossRE record without a ``relations`` field
            (a joint evaluation scores relations).

    Raises:
        ConfigError: Unknown dataset or split, or data folder not found.
        InputError: Malformed data (naming the file, the line or record, the field and the
            fix), or a format without offsets.
    """
    text = str(name_or_path)
    info = BUILTIN_DATASETS.get(text)
    if info is not None:
        if split not in info.splits:
            raise ConfigError(
                f"dataset {info.name!r} has no split {split!r}; splits: {list(info.splits)}"
            )
        folder = data_dir(data_dir_path) / info.folder
        if info.name == "ade":
            path, sentences = _load_ade(folder, split, fold, require_relations)
        else:
            found = _split_file(folder, split)
            if found is None:
                raise ConfigError(f"no {split} file for {info.name!r} in {folder}")
            path = found
            sentences, _ = _read_split(
                path, f"{info.name}-{split}", info.format, columns, require_relations
            )
        return Dataset(info.name, split, path, sentences, info.relations, info.name)
    path = Path(text)
    if path.is_dir():
        found = _split_file(path, split)
        if found is None:
            names = [p.format(split=split) for p in SPLIT_FILES]
            raise ConfigError(f"{path}: no {', '.join(names[:-1])} or {names[-1]} in this folder")
        sentences, relations = _read_split(
            found, f"{path.name}-{split}", fmt, columns, require_relations
        )
        return Dataset(path.name, split, found, sentences, relations, None)
    if path.is_file():
        sentences, relations = _read_split(path, path.stem, fmt, columns, require_relations)
        return Dataset(path.stem, path.stem, path, sentences, relations, None)
    raise ConfigError(
        f"unknown dataset {text!r}: not a built-in name ({sorted(BUILTIN_DATASETS)}) and no "
        "such file or folder"
    )


__all__ = [
    "ADE_FOLDS",
    "BUILTIN_DATASETS",
    "DATA_ENV",
    "SPLIT_FILES",
    "CrossNERSentence",
    "Dataset",
    "DatasetInfo",
    "data_dir",
    "gold_sentences",
    "load_dataset",
    "read_crossner",
    "read_spert",
]
