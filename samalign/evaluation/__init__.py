"""Evaluation harness: dataset loaders, metrics, gold replay, noise simulation, runner, reports.

See ``docs/evaluation.md`` for the protocols and how to reproduce the papers' tables.
"""

from samalign.evaluation.backends import (
    EvalBackend,
    gold_backend,
    server_backend,
    simulated_backend,
)
from samalign.evaluation.datasets import (
    BUILTIN_DATASETS,
    CrossNERSentence,
    Dataset,
    data_dir,
    load_dataset,
    read_crossner,
    read_spert,
)
from samalign.evaluation.metrics import (
    PRF,
    bio_to_spans,
    normalize_mention,
    relation_prf,
    span_prf,
    string_pairs,
    string_prf,
)
from samalign.evaluation.report import EvalReport, write_report
from samalign.evaluation.runner import aevaluate, asweep, evaluate
from samalign.evaluation.sentences import GoldEntity, GoldTriplet, Sentence, TokenIndex
from samalign.evaluation.simulate import NoiseModel

__all__ = [
    "BUILTIN_DATASETS",
    "PRF",
    "CrossNERSentence",
    "Dataset",
    "EvalBackend",
    "EvalReport",
    "GoldEntity",
    "GoldTriplet",
    "NoiseModel",
    "Sentence",
    "TokenIndex",
    "aevaluate",
    "asweep",
    "bio_to_spans",
    "data_dir",
    "evaluate",
    "gold_backend",
    "load_dataset",
    "normalize_mention",
    "read_crossner",
    "read_spert",
    "relation_prf",
    "server_backend",
    "simulated_backend",
    "span_prf",
    "string_pairs",
    "string_prf",
    "write_report",
]
