"""The hostile suite's shared pieces (see ``conftest.py`` for the rules every case follows)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fault_server import stage_answer
from langchain_core.messages import BaseMessage

from samalign.errors import SamalignError
from samalign.serving.models import StageModels
from samalign.testing.fakes import fake_stage_models

KINDS: dict[str, str] = {}
"""Every hostile kind the suite tries: name → area (``extract``, ``domains`` …)."""

AREAS = (
    "extract",
    "eval",
    "datasets",
    "domains",
    "templates",
    "finetune",
    "serve",
    "server",
    "api",
)


def kinds(area: str, *names: str) -> list[str]:
    """Register hostile kinds of ``area`` (names must be new); returns the names."""
    assert area in AREAS, area
    for name in names:
        assert name not in KINDS, f"hostile kind {name!r} registered twice"
        KINDS[name] = area
    return list(names)


def kind(area: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: the test is the hostile kind ``name`` of ``area``."""
    kinds(area, name)

    def mark(test: Callable[..., Any]) -> Callable[..., Any]:
        return test

    return mark


def cases(area: str, names: str, rows: Sequence[tuple[Any, ...]]) -> pytest.MarkDecorator:
    """Parametrize a test over ``rows``, one new hostile kind of ``area`` each.

    A row is the kind's name (registered with :func:`kinds`, and the case's id) followed by the
    values of the comma-separated arguments ``names``; the test gets the name too only when
    ``names`` starts with ``kind``.
    """
    ids = kinds(area, *(row[0] for row in rows))
    argnames = [name.strip() for name in names.split(",")]
    if argnames[0] == "kind":
        values: list[Any] = list(rows)
    elif len(argnames) == 1:
        values = [row[1] for row in rows]
    else:
        values = [row[1:] for row in rows]
    return pytest.mark.parametrize(argnames, values, ids=ids)


def each(argname: str, area: str, *names: str) -> pytest.MarkDecorator:
    """Parametrize the test's ``argname`` over the new hostile kinds ``names`` of ``area``."""
    return pytest.mark.parametrize(argname, kinds(area, *names), ids=list(names))


@dataclass
class Result:
    """What one ``samalign`` command did."""

    status: int
    out: str
    err: str


TRACEBACK = re.compile(r"Traceback \(most recent call last\)")


def api_error(
    call: Callable[[], Any], expected: type[SamalignError] = SamalignError, match: str = ""
) -> SamalignError:
    """Run a Python API call that must fail with a samalign error; return the error."""
    try:
        call()
    except SamalignError as err:
        assert isinstance(err, expected), (type(err), err)
        assert re.search(match, str(err)), str(err)
        assert len(str(err)) < 4000, "an error message must stay short"
        return err
    except BaseException as err:  # the suite's point: nothing else may escape
        raise AssertionError(f"not a SamalignError: {type(err).__name__}: {err}") from err
    raise AssertionError("no error raised")


def out_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL output, each a JSON object (the file is valid JSONL)."""
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), "the output ends with a complete line"
    rows = [json.loads(line) for line in raw.decode("utf-8").splitlines()]
    assert all(isinstance(r, dict) for r in rows)
    return rows


def accounted(path: Path, ids: Sequence[str]) -> list[dict[str, Any]]:
    """Assert the output has one line per input record, in input order; return the lines."""
    rows = out_lines(path)
    assert [r["id"] for r in rows] == list(ids)
    for row in rows:
        assert row.get("error") is None or not str(row["error"]).startswith("unexpected"), row
    return rows


def answering(messages: Sequence[BaseMessage], stage: str) -> str:
    return stage_answer(stage, str(messages[0].content))


def fake_models(stages: Sequence[str], script: Callable[..., str] | None = None) -> StageModels:
    """Scripted stage models answering like a model of the ``faults`` domain."""

    def responder(stage: str) -> Callable[[Sequence[BaseMessage]], str]:
        if script is not None:
            return lambda messages: script(messages, stage)
        return lambda messages: answering(messages, stage)

    return fake_stage_models({stage: responder(stage) for stage in stages})


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A 'billion laughs' document whose expansion lands in the enum field ``archetype``."""
    lines = ["a0: &a0 [" + ", ".join(['"x"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return (
        "\n".join(lines)
        + "\nname: bomb\nentity_types:\n  - label: x\n    definition: d\n"
        + f"    archetype: *a{levels - 1}\n"
    )
