"""Hostile dataset files against the one home of dataset readers, ``samalign.datasets``.

``samalign eval`` and ``samalign finetune build`` read every format through
:func:`samalign.datasets.read_file`, so these cases call it directly (and
:func:`~samalign.datasets.detect_format`), for every format; ``test_eval_api.py`` and
``test_finetune_serve.py`` run the same files through the two commands.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from harness import api_error, each, kind, kinds

from samalign.datasets import detect_format, read_file
from samalign.errors import InputError

NESTED = "[" * 100_000
DIGITS = "1" + "0" * 5_000  # more digits than Python converts to an int
MB = "x" * 1_000_000

SPERT = {
    "tokens": ["Alice", "met", "Bob", "."],
    "entities": [{"type": "person", "start": 0, "end": 1}],
    "relations": [],
}
CROSSRE = {"doc_key": "d1", "sentence": ["Alice", "met", "Bob"], "ner": [[0, 0, "person"]]}
PILENER = {"doc_question_pairID": "d1:0", "tagName": "person", "input": "Alice met Bob"}
UNINER = {
    "id": "u1",
    "conversations": [
        {"from": "human", "value": "Text: Alice met Bob"},
        {"from": "gpt", "value": "I've read this text."},
        {"from": "human", "value": "What describes person in the text?"},
        {"from": "gpt", "value": '["Alice"]'},
    ],
}
IEPILE_RAW = {"text": "Alice met Bob", "entity": [{"entity": "Alice", "entity_type": "person"}]}


def iepile_instruction(text: str = "Alice met Bob", output: Any = None) -> dict[str, Any]:
    inner = {"instruction": "Extract.", "schema": ["person"], "input": text}
    return {
        "task": "NER",
        "instruction": json.dumps(inner),
        "output": json.dumps({"person": ["Alice"]}) if output is None else output,
    }


def line(record: dict[str, Any]) -> str:
    """One JSON Lines line, written raw (``ensure_ascii=False``) as many tools write it."""
    return json.dumps(record, ensure_ascii=False) + "\n"


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(
        content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass")
    )
    return path


def check_read(path: Path, fmt: str, match: str) -> InputError:
    """Both with the format given and detected: a short InputError naming the file."""
    err: InputError | None = None
    for given in (fmt, "auto"):
        err = api_error(partial(read_file, path, given), InputError, match)
        assert str(path) in str(err)
    assert err is not None
    return err


# ---------------------------------------------------------------------------------------------
# JSON the parser cannot read: nesting, huge numbers, also inside JSON strings
# ---------------------------------------------------------------------------------------------

NESTED_FILES: list[tuple[str, str, str]] = [
    ("spert", NESTED, "spert"),
    ("uniner", NESTED, "uniner"),
    ("crossre", line(CROSSRE) + '{"sentence": ' + NESTED + "\n", "crossre"),
    ("pilener", line(PILENER) + '{"tagName": ' + NESTED + "\n", "pilener"),
    ("iepile", line(IEPILE_RAW) + '{"text": ' + NESTED + "\n", "iepile"),
]


@pytest.mark.parametrize(
    ("fmt", "content", "name"),
    NESTED_FILES,
    ids=kinds("datasets", *(f"{f} file nested 100,000 levels" for f, _, _ in NESTED_FILES)),
)
def test_nested_too_deeply(tmp_path: Path, fmt: str, content: str, name: str) -> None:
    path = write(tmp_path / f"{name}.json", content)
    err = check_read(path, fmt, "nested too deeply")
    if "\n" in content:  # JSON Lines: the line is named
        assert f"{path}:2" in str(err)


HUGE_NUMBERS: list[tuple[str, str]] = [
    ("spert", '[{"tokens": ["a"], "entities": [], "n": ' + DIGITS + "}]"),
    ("uniner", '[{"id": ' + DIGITS + ', "conversations": []}]'),
    ("crossre", line(CROSSRE) + '{"doc_key": ' + DIGITS + "}\n"),
    ("pilener", line(PILENER) + '{"doc_question_pairID": ' + DIGITS + "}\n"),
    ("iepile", line(IEPILE_RAW) + '{"id": ' + DIGITS + "}\n"),
]


@pytest.mark.parametrize(
    ("fmt", "content"),
    HUGE_NUMBERS,
    ids=kinds("datasets", *(f"{f} file with a 5,000-digit integer" for f, _ in HUGE_NUMBERS)),
)
def test_integer_too_long(tmp_path: Path, fmt: str, content: str) -> None:
    check_read(write(tmp_path / "data.json", content), fmt, "too many digits")


INNER_NESTED: list[tuple[str, str, dict[str, Any]]] = [
    ("pilener", "pilener answer string nested 100,000 levels", {**PILENER, "output": NESTED}),
    (
        "uniner",
        "uniner answer string nested 100,000 levels",
        {
            **UNINER,
            "conversations": [*UNINER["conversations"][:3], {"from": "gpt", "value": NESTED}],
        },
    ),
    (
        "iepile",
        "iepile instruction string nested 100,000 levels",
        {**iepile_instruction(), "instruction": NESTED},
    ),
    ("iepile", "iepile output string nested 100,000 levels", iepile_instruction(output=NESTED)),
]


@pytest.mark.parametrize(
    ("fmt", "name", "record"),
    INNER_NESTED,
    ids=kinds("datasets", *(k for _, k, _ in INNER_NESTED)),
)
def test_json_string_nested_too_deeply(
    tmp_path: Path, fmt: str, name: str, record: dict[str, Any]
) -> None:
    content = json.dumps([record]) if fmt == "uniner" else line(record)
    check_read(write(tmp_path / "data.json", content), fmt, "nested too deeply")


@each("content", "datasets", "ner2idx.json nested 100,000 levels", "ner2idx.json that is a list")
def test_hostile_label_map(tmp_path: Path, content: str) -> None:
    (tmp_path / "ner2idx.json").write_text(
        NESTED if "nested" in content else "[1, 2]", encoding="utf-8"
    )
    data = write(tmp_path / "data.json", json.dumps([SPERT]))
    err = api_error(lambda: read_file(data, "spert"), InputError, "ner2idx.json")
    assert "nested too deeply" in str(err) or "{label: index}" in str(err)


# ---------------------------------------------------------------------------------------------
# text: lone surrogates, line separators inside JSON strings, CRLF, UTF-16
# ---------------------------------------------------------------------------------------------


def escaped(record: dict[str, Any]) -> str:
    """One JSON Lines line with non-ASCII written as escapes (a lone surrogate as ``\\ud800``)."""
    return json.dumps(record) + "\n"


SURROGATES: list[tuple[str, str, str]] = [
    (
        "pilener",
        "pilener input with a lone surrogate",
        escaped({**PILENER, "input": "Al\ud800ice"}),
    ),
    (
        "uniner",
        "uniner passage with a lone surrogate",
        json.dumps(
            [
                {
                    **UNINER,
                    "conversations": [
                        {"from": "human", "value": "Text: Al\ud800ice"},
                        *UNINER["conversations"][1:],
                    ],
                }
            ]
        ),
    ),
    ("iepile", "iepile text with a lone surrogate", escaped({**IEPILE_RAW, "text": "Al\ud800ice"})),
    (
        "iepile",
        "iepile instruction input with a lone surrogate",
        escaped(iepile_instruction("Al\ud800ice")),
    ),
]


@pytest.mark.parametrize(
    ("fmt", "name", "content"), SURROGATES, ids=kinds("datasets", *(k for _, k, _ in SURROGATES))
)
def test_lone_surrogate_text(tmp_path: Path, fmt: str, name: str, content: str) -> None:
    # json.dumps writes the surrogate as its \ud800 escape: the file is valid UTF-8 JSON
    path = write(tmp_path / "data.json", content)
    assert "\\ud800" in path.read_text(encoding="utf-8")
    check_read(path, fmt, "lone surrogate at character 2")


@kind("datasets", "SpERT token with a lone surrogate (read; eval fails that sentence only)")
def test_surrogate_token_is_read(tmp_path: Path) -> None:
    bad = {**SPERT, "tokens": ["Al\ud800ice", "met", "Bob", "."]}
    data = read_file(write(tmp_path / "data.json", json.dumps([SPERT, bad])), "spert")
    assert [r.text.startswith("Al\ud800") for r in data.records] == [False, True]


SEPARATORS = "\u2028\u2029\x85"
"""Characters ``str.splitlines`` breaks at that JSON strings may hold raw (unescaped)."""


@pytest.mark.parametrize(
    "fmt",
    ["pilener", "iepile", "crossre"],
    ids=kinds(
        "datasets",
        "pilener input holding raw U+2028, U+2029 and U+0085",
        "iepile text holding raw U+2028, U+2029 and U+0085",
        "crossre doc_key holding raw U+2028, U+2029 and U+0085",
    ),
)
def test_line_separators_inside_json_strings(tmp_path: Path, fmt: str) -> None:
    text = f"Alice{SEPARATORS}met Bob"
    record = {
        "pilener": {**PILENER, "input": text},
        "iepile": {**IEPILE_RAW, "text": text},
        "crossre": {**CROSSRE, "doc_key": text},
    }[fmt]
    path = write(tmp_path / "data.jsonl", line(record) + line(record))
    assert SEPARATORS in path.read_text(encoding="utf-8")  # written raw, not escaped
    for given in (fmt, "auto"):
        data = read_file(path, given)
        assert len(data.records) == (1 if fmt == "pilener" else 2)  # pilener groups a passage
        first = data.records[0]
        assert (first.id if fmt == "crossre" else first.text) == text
        assert first.origin.line == 1


FORMAT_FILES: dict[str, str] = {
    "bio": "Alice\tB-person\nmet\tO\n\nBob\tB-person\n",
    "spert": json.dumps([SPERT], indent=1),
    "crossre": line(CROSSRE) + line({**CROSSRE, "doc_key": "d2"}),
    "pilener": line(PILENER) + line({**PILENER, "doc_question_pairID": "d2:0"}),
    "uniner": json.dumps([UNINER], indent=1),
    "iepile": line(IEPILE_RAW) + line(iepile_instruction()),
}


@kind("datasets", "CRLF line ends, every format")
def test_crlf_every_format(tmp_path: Path) -> None:
    for fmt, content in FORMAT_FILES.items():
        plain = read_file(write(tmp_path / f"{fmt}.txt", content), fmt)
        crlf = write(tmp_path / f"{fmt}-crlf.txt", content.replace("\n", "\r\n"))
        assert detect_format(crlf) == fmt
        data = read_file(crlf, "auto")
        assert [r.text for r in data.records] == [r.text for r in plain.records], fmt
        assert data.records and not any("\r" in r.text for r in data.records), fmt


@kind("datasets", "UTF-16 file, every format")
def test_utf16_every_format(tmp_path: Path) -> None:
    for fmt, content in FORMAT_FILES.items():
        path = write(tmp_path / f"{fmt}.txt", content.encode("utf-16"))
        check_read(path, fmt, "not UTF-8 text")


# ---------------------------------------------------------------------------------------------
# paths that are not data files
# ---------------------------------------------------------------------------------------------


def finishes(call: Callable[[], Any], seconds: float = 20.0) -> None:
    """Run ``call`` in a thread; it must end (with any outcome) in time: nothing blocks."""
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the reader blocked"


def fifo(folder: Path) -> Path:
    path = folder / "pipe.jsonl"
    os.mkfifo(path)  # opening it to read would block until a writer comes: never
    return path


NOT_DATA: dict[str, tuple[Callable[[Path], Path], str]] = {
    "dataset path is a folder": (lambda tmp: tmp, "not a regular file"),
    "dataset path is a FIFO": (fifo, "not a regular file"),
    "dataset path is /dev/zero": (lambda tmp: Path("/dev/zero"), "not a regular file"),
    "dataset file missing": (lambda tmp: tmp / "absent.json", "cannot read .*absent.json"),
    "dataset file name too long": (lambda tmp: tmp / ("x" * 300), "cannot read .*too long"),
    "dataset path with a NUL byte": (
        lambda tmp: Path(f"{tmp}/a\x00b.json"),
        "cannot read '.*\\\\x00b.json'",  # the name is quoted, the NUL escaped
    ),
}
kinds("datasets", *NOT_DATA)


@pytest.mark.parametrize("target", NOT_DATA, ids=lambda k: k)
def test_not_a_data_file(tmp_path: Path, target: str) -> None:
    make, match = NOT_DATA[target]
    path = make(tmp_path)
    errors: list[BaseException] = []

    def read() -> None:
        for fmt in ("spert", "pilener", "bio", "auto"):
            try:
                api_error(partial(read_file, path, fmt), InputError, match)
            except BaseException as err:  # reported below, from the test's own thread
                errors.append(err)
        try:
            api_error(lambda: detect_format(path), InputError, match)
        except BaseException as err:
            errors.append(err)

    finishes(read)
    assert not errors, errors


# ---------------------------------------------------------------------------------------------
# huge values stay out of error messages
# ---------------------------------------------------------------------------------------------

HUGE: list[tuple[str, str, str, str]] = [
    (
        "SpERT entity type of 1 MB",
        "spert",
        json.dumps([{**SPERT, "entities": [{"type": MB, "start": 0, "end": 1}]}]),
        "is not in the label set",
    ),
    (
        "SpERT token of 1 MB holding a space",
        "spert",
        json.dumps([{**SPERT, "tokens": [MB + " x"]}]),
        "contains whitespace",
    ),
    (
        "SpERT entity that is a 1 MB string",
        "spert",
        json.dumps([{**SPERT, "entities": [MB]}]),
        "expected {'type', 'start', 'end'}",
    ),
    (
        "SpERT orig_id of 1 MB on a bad record",
        "spert",
        json.dumps([{**SPERT, "orig_id": MB, "entities": [{"type": "person", "start": 9}]}]),
        "must be an integer",
    ),
    (
        "SpERT start that is a 1 MB string",
        "spert",
        json.dumps([{**SPERT, "entities": [{"type": "person", "start": MB, "end": 1}]}]),
        "must be an integer",
    ),
    (
        "CrossRE ner item of 100,000 values",
        "crossre",
        line({**CROSSRE, "ner": [list(range(100_000))]}),
        "expected \\[start, end, type\\]",
    ),
    (
        "CrossRE doc_key of 1 MB on a bad record",
        "crossre",
        line({**CROSSRE, "doc_key": MB, "ner": [[0, 9, "person"]]}),
        "outside the record",
    ),
    ("BIO line of 1 MB with three columns", "bio", f"Alice\tO\n{MB}\tO\tO\n", "3 columns"),
    ("BIO tag of 1 MB", "bio", f"Alice\tO\nBob\tB{MB}\n", "is not 'O'"),
    (
        "IEPile output with 100,000 types outside the schema",
        "iepile",
        line(iepile_instruction(output=json.dumps({f"t{i}": [] for i in range(100_000)}))),
        "not in the schema",
    ),
    (
        "UniNER id of 1 MB on a bad record",
        "uniner",
        json.dumps([{"id": MB, "conversations": "none"}]),
        "'conversations' list",
    ),
]


@pytest.mark.parametrize(
    ("name", "fmt", "content", "match"), HUGE, ids=kinds("datasets", *(h[0] for h in HUGE))
)
def test_huge_values_are_quoted_short(
    tmp_path: Path, name: str, fmt: str, content: str, match: str
) -> None:
    (tmp_path / "ner2idx.json").write_text('{"person": 0}', encoding="utf-8")
    path = write(tmp_path / ("data.txt" if fmt == "bio" else "data.json"), content)
    check_read(path, fmt, match)  # api_error: the message stays under 4,000 characters


@kind("datasets", "label set of 100,000 types quoted in a message")
def test_huge_label_set_quoted_short(tmp_path: Path) -> None:
    labels = {f"type{i}": i for i in range(100_000)}
    (tmp_path / "ner2idx.json").write_text(json.dumps(labels), encoding="utf-8")
    data = write(tmp_path / "data.json", json.dumps([SPERT]))
    api_error(lambda: read_file(data, "spert"), InputError, "not in the label set")
