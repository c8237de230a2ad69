"""Output records as table rows with one fixed Arrow schema (Ray Data, Parquet).

A row holds the fields of :class:`~samalign.batch.records.OutputRecord` — the same fields as
``samalign extract``'s JSONL lines. Text fields (``id``, ``text``, ``error``) are string columns;
every nested field (``entities``, ``triplets``, ``usage`` …) is a string column holding exactly
the JSON value the JSONL line has for it. The schema is derived from ``OutputRecord`` and never
depends on the data, so a column that is empty or null in every early row cannot change type
between batches or Parquet files (``error`` is a nullable string from the first row on).
Read a nested field back with ``json.loads`` (pandas, pyarrow) or ``from_json`` (DuckDB, Spark),
or a whole row with :func:`row_to_output`.

pyarrow (installed with ``samalign[ray]``) is imported only when a table is built.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from samalign.batch.jsonl import encodable
from samalign.batch.records import OutputRecord


def _plain_text(annotation: Any) -> bool:
    return annotation in (str, str | None)


TEXT_FIELDS: tuple[str, ...] = tuple(
    name for name, field in OutputRecord.model_fields.items() if _plain_text(field.annotation)
)
"""Output fields stored as plain string columns (``id``, ``text``, ``error``)."""

JSON_FIELDS: tuple[str, ...] = tuple(
    name for name in OutputRecord.model_fields if name not in TEXT_FIELDS
)
"""Output fields stored as JSON text (``entities``, ``triplets``, ``diagnostics``, ``usage`` …)."""

ROW_FIELDS: tuple[str, ...] = tuple(OutputRecord.model_fields)
"""Every output column, in ``OutputRecord``'s field order."""


def row_schema(extra: Any = None) -> Any:
    """The fixed ``pyarrow.Schema`` of output rows (every column a nullable string).

    Args:
        extra: Further ``pyarrow`` fields appended after the output columns (e.g. the
            columns a caller passes through).
    """
    import pyarrow as pa

    fields = [
        pa.field(name, pa.string(), nullable=name not in ("id", "text")) for name in ROW_FIELDS
    ]
    return pa.schema([*fields, *(extra or [])])


def output_to_row(record: OutputRecord) -> dict[str, str | None]:
    """One output record as a row: text fields as they are, nested fields as JSON text.

    Every value is valid UTF-8 (Arrow strings must be): a lone surrogate in a text field is
    written as its escape, in a JSON field as its JSON escape (which reads back the same).
    """
    data = record.model_dump(mode="json")
    row: dict[str, str | None] = {
        name: None if data[name] is None else encodable(data[name]) for name in TEXT_FIELDS
    }
    for name in JSON_FIELDS:
        row[name] = encodable(json.dumps(data[name], ensure_ascii=False, separators=(",", ":")))
    return row


def row_to_output(row: Mapping[str, Any]) -> OutputRecord:
    """Read a row back into an :class:`~samalign.batch.records.OutputRecord`.

    Raises:
        pydantic.ValidationError: The row is not an output row.
    """
    data: dict[str, Any] = {name: row.get(name) for name in TEXT_FIELDS}
    for name in JSON_FIELDS:
        raw = row.get(name)
        if raw is not None:
            data[name] = json.loads(raw)
    return OutputRecord.model_validate(data)


def rows_table(
    records: Sequence[OutputRecord],
    extra: Mapping[str, Sequence[Any]] | None = None,
    extra_fields: Iterable[Any] = (),
) -> Any:
    """Output records as a ``pyarrow.Table`` with :func:`row_schema`.

    Args:
        records: The output records, in row order.
        extra: Further columns (name → one value per record), typed by ``extra_fields``.
        extra_fields: The ``pyarrow`` fields of the ``extra`` columns, in order.
    """
    import pyarrow as pa

    fields = list(extra_fields)
    schema = row_schema(fields)
    rows = [output_to_row(r) for r in records]
    columns: dict[str, Any] = {name: [row[name] for row in rows] for name in ROW_FIELDS}
    for field in fields:
        columns[field.name] = list((extra or {})[field.name])
    return pa.Table.from_pydict(columns, schema=schema)


def table_outputs(table: Any) -> list[OutputRecord]:
    """The output records of a table with the output columns (e.g. a Parquet shard)."""
    return [row_to_output(row) for row in table.select(list(ROW_FIELDS)).to_pylist()]


__all__ = [
    "JSON_FIELDS",
    "ROW_FIELDS",
    "TEXT_FIELDS",
    "output_to_row",
    "row_schema",
    "row_to_output",
    "rows_table",
    "table_outputs",
]
