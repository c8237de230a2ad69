"""Built-in benchmark datasets and where their files are.

Built-in names: ``crossner_ai``, ``crossner_literature``, ``crossner_music``,
``crossner_politics``, ``crossner_science`` (BIO files; splits train/dev/test), ``conll04`` and
``scierc`` (SpERT JSON; train/dev/test) and ``ade`` (SpERT JSON in ten folds: ``test`` is
``ade_split_<fold>_test.json``; ``train`` is every other record of ``ade_full.json``; no dev
split). Each is evaluated with the built-in domain of the same name unless told otherwise.

The data folder is, in order: the ``data_dir`` argument, the ``SAMALIGN_DATA_DIR``
environment variable, ``../shared/data`` beside the source checkout, ``../shared/data`` beside
the working directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from samalign.errors import ConfigError, InputError
from samalign.evaluation.crossner import read_crossner
from samalign.evaluation.sentences import Sentence
from samalign.evaluation.spert import read_label_map, read_spert, read_spert_records

DATA_ENV = "SAMALIGN_DATA_DIR"
"""Environment variable naming the benchmark data folder."""

DatasetFormat = Literal["bio", "spert"]


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


def _split_file(folder: Path, split: str) -> Path | None:
    for name in (f"{split}.txt", f"{split}_triples.json", f"{split}.json"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_file(path: Path, prefix: str) -> tuple[list[Sentence], bool]:
    if path.suffix == ".json":
        sentences = read_spert(path, prefix=prefix)
        return sentences, True
    return read_crossner(path, prefix=prefix), False


def _load_ade(folder: Path, split: str, fold: int) -> tuple[Path, list[Sentence]]:
    if not 0 <= fold < ADE_FOLDS:
        raise ConfigError(f"ADE fold must be 0..{ADE_FOLDS - 1}, got {fold}")
    test = folder / f"ade_split_{fold}_test.json"
    prefix = f"ade-fold{fold}-{split}"
    if split == "test":
        return test, read_spert(test, prefix=prefix)
    full = folder / "ade_full.json"
    held_out = {json_key(r) for r in read_spert_records(test)}
    records = [r for r in read_spert_records(full) if json_key(r) not in held_out]
    entity_labels = read_label_map(folder / "ner2idx.json")
    relation_labels = read_label_map(folder / "rel2idx.json")
    sentences = read_spert(
        full,
        prefix=prefix,
        records=records,
        entity_labels=entity_labels,
        relation_labels=relation_labels,
    )
    return full, sentences


def json_key(record: object) -> str:
    """A record's ``orig_id`` (ADE folds are matched by it)."""
    if isinstance(record, dict) and "orig_id" in record:
        return str(record["orig_id"])
    raise InputError(f"an ADE record has no 'orig_id': {str(record)[:80]}")


def load_dataset(
    name_or_path: str | Path,
    split: str = "test",
    *,
    fold: int = 0,
    data_dir_path: str | Path | None = None,
) -> Dataset:
    """Load one split of a built-in dataset or of a dataset at a path.

    Args:
        name_or_path: A built-in name (see :data:`BUILTIN_DATASETS`), a BIO file
            (``.txt``), a SpERT JSON file (``.json``), or a folder holding ``<split>.txt``,
            ``<split>_triples.json`` or ``<split>.json``.
        split: ``train``, ``dev`` or ``test`` (ignored when a file is given).
        fold: ADE fold (0–9).
        data_dir_path: The benchmark data folder (default: see :func:`data_dir`).

    Raises:
        ConfigError: Unknown dataset or split, or data folder not found.
        InputError: Malformed data (naming the file and line or record).
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
            path, sentences = _load_ade(folder, split, fold)
        else:
            found = _split_file(folder, split)
            if found is None:
                raise ConfigError(f"no {split} file for {info.name!r} in {folder}")
            path = found
            sentences, _ = _read_file(path, f"{info.name}-{split}")
        return Dataset(info.name, split, path, sentences, info.relations, info.name)
    path = Path(text)
    if path.is_dir():
        found = _split_file(path, split)
        if found is None:
            raise ConfigError(
                f"{path}: no {split}.txt, {split}_triples.json or {split}.json in this folder"
            )
        sentences, relations = _read_file(found, f"{path.name}-{split}")
        return Dataset(path.name, split, found, sentences, relations, None)
    if path.is_file():
        sentences, relations = _read_file(path, path.stem)
        return Dataset(path.stem, path.stem, path, sentences, relations, None)
    raise ConfigError(
        f"unknown dataset {text!r}: not a built-in name ({sorted(BUILTIN_DATASETS)}) and no "
        "such file or folder"
    )


__all__ = [
    "ADE_FOLDS",
    "BUILTIN_DATASETS",
    "DATA_ENV",
    "Dataset",
    "DatasetInfo",
    "data_dir",
    "load_dataset",
]
