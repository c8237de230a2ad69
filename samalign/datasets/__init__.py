"""Dataset readers: one reader per file format, one record type for all of them.

The layer below :mod:`samalign.evaluation` and :mod:`samalign.finetune` (it needs only
:mod:`samalign.errors`): nothing else in samalign parses a dataset file. Evaluation builds its
gold sentences and the training-data builders their source records from the
:class:`~samalign.datasets.records.Record` objects read here.

Formats (``docs/data.md`` documents each: fields, offsets, an example, how to convert):
``bio`` (:mod:`~samalign.datasets.bio`), ``spert`` (:mod:`~samalign.datasets.spert`),
``crossre`` (:mod:`~samalign.datasets.crossre`), ``pilener``
(:mod:`~samalign.datasets.pilener`), ``uniner`` (:mod:`~samalign.datasets.uniner`) and
``iepile`` (:mod:`~samalign.datasets.iepile`); :func:`read_file` reads any of them and
:func:`detect_format` tells them apart.
"""

from samalign.datasets.bio import BIO_COLUMNS, BioColumns, bio_to_spans, read_bio
from samalign.datasets.crossre import read_crossre
from samalign.datasets.iepile import read_iepile
from samalign.datasets.pilener import read_pilener
from samalign.datasets.read import detect_format, read_file
from samalign.datasets.records import (
    FORMATS,
    RELATION_FORMATS,
    TOKENISED_FORMATS,
    DataFile,
    DataFormat,
    EntityMention,
    Origin,
    Record,
    RelationMention,
)
from samalign.datasets.spert import read_label_map, read_spert
from samalign.datasets.uniner import read_uniner

__all__ = [
    "BIO_COLUMNS",
    "FORMATS",
    "RELATION_FORMATS",
    "TOKENISED_FORMATS",
    "BioColumns",
    "DataFile",
    "DataFormat",
    "EntityMention",
    "Origin",
    "Record",
    "RelationMention",
    "bio_to_spans",
    "detect_format",
    "read_bio",
    "read_crossre",
    "read_file",
    "read_iepile",
    "read_label_map",
    "read_pilener",
    "read_spert",
    "read_uniner",
]
