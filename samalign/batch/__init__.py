"""Batch jobs: input and output records, the resumable JSONL file, running a graph over many.

* :mod:`samalign.batch.records` — reading JSONL/plain-text input robustly, output records,
  resuming ``samalign extract``'s output;
* :mod:`samalign.batch.jsonl` — the resumable JSONL file (shared with ``samalign eval``);
* :mod:`samalign.batch.outputs` — checking ``--out``, the job manifest and lock both engines
  keep beside their output;
* :mod:`samalign.batch.local_job` — ``samalign extract`` in this process: one JSONL line per
  input record, in input order, resumable;
* :mod:`samalign.batch.run` — :func:`run_records`: a graph over many records, in input order,
  losing none;
* :mod:`samalign.batch.job` — :class:`ExtractJob`: what ``samalign extract`` runs, as data;
* :mod:`samalign.batch.rows` — output records as rows with one fixed Arrow schema;
* :mod:`samalign.batch.ray_stage` — the Ray Data stage (``Dataset.map_batches``);
* :mod:`samalign.batch.ray_job` — ``samalign extract --engine ray``: shards, exactly once,
  resume (docs/scale.md). The Ray modules need ``samalign[ray]``.
"""

from samalign.batch.job import ExtractJob
from samalign.batch.jsonl import JsonlAppender, read_lines
from samalign.batch.records import (
    DroppedTripletRecord,
    EntityRecord,
    InputFormat,
    InputRecord,
    JsonlWriter,
    OutputRecord,
    TripletRecord,
    completed_ids,
    read_inputs,
    read_records,
)
from samalign.batch.run import run_records, to_output

__all__ = [
    "DroppedTripletRecord",
    "EntityRecord",
    "ExtractJob",
    "InputFormat",
    "InputRecord",
    "JsonlAppender",
    "JsonlWriter",
    "OutputRecord",
    "TripletRecord",
    "completed_ids",
    "read_inputs",
    "read_lines",
    "read_records",
    "run_records",
    "to_output",
]
