"""What the review page shows for one text, and how results of every kind become it.

A :class:`ViewRecord` is an output line of ``samalign extract`` (:class:`OutputRecord`: the
text, entities with offsets, triplets, dropped triplets, diagnostics, usage, error) plus what
CCR dropped and why (from graph results) and optional review notes (an evaluation's missed and
spurious predictions). Graph results
(the final state dicts of the NER, joint and document graphs), output records and their JSONL
files all convert to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from samalign.batch.jsonl import read_lines
from samalign.batch.records import InputRecord, OutputRecord
from samalign.batch.run import to_output
from samalign.errors import InputError
from samalign.graphs.state import JointState
from samalign.types import NoiseRecord


class ReviewItem(BaseModel):
    """A note on one record, e.g. an evaluation's missed gold entity with its reason.

    Attributes:
        kind: What it is (``missed``, ``spurious``, ``missed_triplet``, ``spurious_triplet``);
            the page's diagnostic filter offers it as ``review:<kind>``.
        text: The mention, or ``head —relation→ tail`` for a triplet.
        label: The entity label, if any.
        reason: The reason code (see :mod:`samalign.evaluation.analysis`).
        detail: A human-readable detail.
    """

    model_config = ConfigDict(frozen=True)

    kind: str
    text: str
    label: str | None = None
    reason: str = ""
    detail: str = ""


class ViewRecord(OutputRecord):
    """One text on the review page: an output record plus what CCR dropped and review notes.

    Attributes:
        noise: Explorer mentions CCR dropped, with the reason (from graph results; the JSONL
            of ``samalign extract`` does not carry them).
        review: Notes such as an evaluation's missed and spurious predictions.
    """

    noise: list[NoiseRecord] = Field(default_factory=list)
    review: list[ReviewItem] = Field(default_factory=list)


def _is_state(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("text"), str)


def record_of(result: Any, *, id: str | None = None) -> ViewRecord:
    """One result of any supported kind as a :class:`ViewRecord`.

    Args:
        result: A graph result (the dict ``invoke`` returns), an :class:`OutputRecord` (or its
            JSON dict), or a :class:`ViewRecord`.
        id: The record id (default: the result's own ``id``, else ``"0"``).

    Raises:
        InputError: The value is none of these, or a span does not match its text.
    """
    if isinstance(result, ViewRecord):
        return result if id is None else result.model_copy(update={"id": id})
    if isinstance(result, OutputRecord):
        return ViewRecord(**dict(result), **({"id": id} if id is not None else {}))
    if isinstance(result, BaseModel) and hasattr(result, "model_dump"):
        result = result.model_dump()  # a typed result: the same fields as the state
    if not _is_state(result):
        raise InputError(
            f"cannot show a {type(result).__name__}: give a graph result (the dict invoke "
            "returns, with 'text'), an output record of samalign extract, or a list of them"
        )
    rid = id if id is not None else str(result.get("id", "0"))
    entities = result.get("entities", [])
    if entities and isinstance(entities[0], Mapping) and "span" not in entities[0]:
        try:  # already flat (an output line)
            return ViewRecord.model_validate({**result, "id": rid})
        except ValidationError as err:
            raise InputError(f"record {rid!r} is not a valid output record: {err}") from None
    state = {key: value for key, value in result.items() if key != "text"}
    typed = _typed_state(state)
    output = to_output(InputRecord(id=rid, text=result["text"], line=0), typed)
    return ViewRecord(**dict(output), noise=list(typed.get("noise", [])))


def _typed_state(state: dict[str, Any]) -> dict[str, Any]:
    """The state with its items as typed models (a server's JSON answer holds plain dicts)."""
    fields = {k: v for k, v in state.items() if k in JointState.model_fields}
    try:
        typed = JointState.model_validate({"text": "", **fields})
    except ValidationError as err:
        raise InputError(f"not a samalign graph result: {err}") from None
    return {**state, **{k: getattr(typed, k) for k in fields}}


def records_of(results: Any) -> list[ViewRecord]:
    """Results of any supported kind (one, or an iterable of them) as view records.

    Records without an id are numbered in order.
    """
    if _is_state(results) or isinstance(results, BaseModel):
        return [record_of(results)]
    if isinstance(results, str | bytes) or not isinstance(results, Iterable):
        raise InputError(
            f"cannot show a {type(results).__name__}: give a graph result, an output record, "
            "or a list of them"
        )
    out = []
    for index, result in enumerate(results):
        has_id = (isinstance(result, Mapping) and "id" in result) or isinstance(result, BaseModel)
        out.append(record_of(result, id=None if has_id else str(index)))
    return out


def read_view_records(path: str | Path) -> Iterator[ViewRecord]:
    """Read the JSONL written by ``samalign extract`` (one output record per line).

    A damaged line is skipped (its line number is logged by the JSONL reader); a line that is
    JSON but not an output record raises.

    Raises:
        InputError: The file cannot be read, holds no record, or a line is not an output
            record (e.g. an evaluation's ``.sentences.jsonl``, whose lines have no text: open
            the ``.view.html`` the evaluation wrote instead).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} not found; give the JSONL that samalign extract wrote")
    found = False
    for number, data in enumerate(read_lines(path, repair=False), start=1):
        if data is None:
            continue
        if isinstance(data, dict) and ("config" in data or "session" in data):
            raise InputError(
                f"{path} is an evaluation's per-sentence results file (its lines have no text); "
                "open the .view.html that samalign eval wrote beside the report"
            )
        try:
            record = ViewRecord.model_validate(data)
        except ValidationError as err:
            raise InputError(
                f"{path} line {number} is not an output record of samalign extract: "
                f"{err.errors()[0]['msg']} at {err.errors()[0]['loc']}"
            ) from None
        found = True
        yield record
    if not found:
        raise InputError(f"{path} holds no record")


__all__ = ["ReviewItem", "ViewRecord", "read_view_records", "record_of", "records_of"]
