"""Training examples: the chat-example record, its JSONL file, and the builder report.

A training example is exactly what a stage node sends at inference (one user message, no
system message) plus the gold answer as the assistant turn::

    {"id": "...", "stage": "explorer", "task": "ner", "source": "...",
     "messages": [{"role": "user", "content": "<prompt>"},
                  {"role": "assistant", "content": "<gold answer>"}]}

``task`` is ``ner`` or ``re``; the trainer weights ``re`` examples by the joint-loss λ.
A ``group`` (written only when set, by ``build joint``) names the sentence an example belongs
to: the trainer keeps a group's examples — one sentence's NER, forward and reverse targets —
in one micro-batch (``sentence_groups``), so they share an optimisation step.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from samalign.batch.jsonl import encodable
from samalign.datasets.files import loads
from samalign.errors import InputError

Task = Literal["ner", "re"]
TASKS: tuple[str, ...] = ("ner", "re")


@dataclass(frozen=True)
class ChatExample:
    """One training example.

    Attributes:
        id: Stable id (source record id, plus a suffix when a record yields several).
        stage: The stage whose prompt rendered it (``explorer``, ``archetype`` …).
        task: ``ner`` or ``re`` (the joint loss weights ``re`` by λ).
        prompt: The user message, rendered by the stage spec.
        answer: The gold answer, rendered by the stage's answer format.
        source: Where the example came from (``<file>:<line or item>``).
        group: The sentence the example belongs to, shared by that sentence's other examples
            (NER, forward and reverse relations; ``""``: the example stands alone).
    """

    id: str
    stage: str
    task: Task
    prompt: str
    answer: str
    source: str = ""
    group: str = ""

    @property
    def messages(self) -> list[dict[str, str]]:
        """The chat messages: the user prompt and the assistant answer."""
        return [
            {"role": "user", "content": self.prompt},
            {"role": "assistant", "content": self.answer},
        ]

    def to_json(self) -> dict[str, Any]:
        """The JSONL record (``group`` only when set)."""
        record: dict[str, Any] = {
            "id": self.id,
            "stage": self.stage,
            "task": self.task,
            "source": self.source,
        }
        if self.group:
            record["group"] = self.group
        record["messages"] = self.messages
        return record


@dataclass
class BuildReport:
    """What a builder did: counts of records, examples and what was skipped and why."""

    stage: str
    records: int = 0
    examples: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)

    def skip(self, reason: str, n: int = 1) -> None:
        """Count ``n`` items skipped for ``reason``."""
        self.skipped[reason] += n

    def count(self, what: str, n: int = 1) -> None:
        """Count ``n`` more of ``what`` (mentions, negative types …)."""
        self.counts[what] += n

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "stage": self.stage,
            "records": self.records,
            "examples": self.examples,
            "skipped": dict(sorted(self.skipped.items())),
            **dict(sorted(self.counts.items())),
        }

    def summary(self) -> str:
        """One human-readable line."""
        parts = [f"{self.stage}: {self.examples} examples from {self.records} records"]
        parts += [f"{k} {v}" for k, v in sorted(self.counts.items())]
        if self.skipped:
            parts.append(
                "skipped: " + ", ".join(f"{v} {k}" for k, v in sorted(self.skipped.items()))
            )
        return "; ".join(parts)


BuildResult = tuple[list[ChatExample], BuildReport]
"""What a builder returns: the examples it made and the report of what it did."""


def write_examples(path: str | Path, examples: Iterable[ChatExample]) -> int:
    """Write examples as JSONL (UTF-8, one record per line); returns how many.

    Raises:
        InputError: If the file cannot be written.
    """
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        with open(out, "w", encoding="utf-8") as handle:
            for ex in examples:
                handle.write(encodable(json.dumps(ex.to_json(), ensure_ascii=False)) + "\n")
                n += 1
    except OSError as err:
        raise InputError(f"cannot write {out}: {err.strerror}") from None
    return n


def example_from_json(value: Any, origin: str) -> ChatExample:
    """Validate one JSONL record as a training example.

    Accepts the builders' records and plain ``{"messages": [user, assistant]}`` records
    (``id``, ``stage``, ``task`` and ``group`` optional; ``task`` defaults to ``ner``).

    Raises:
        InputError: Naming ``origin`` and what is wrong.
    """
    if not isinstance(value, Mapping):
        raise InputError(f"{origin}: expected a JSON object, got {type(value).__name__}")
    messages = value.get("messages")
    if not isinstance(messages, list) or len(messages) != 2:
        raise InputError(
            f"{origin}: 'messages' must be a list of two messages (user prompt, assistant "
            "answer) as the stage nodes send them"
        )
    roles = []
    for i, msg in enumerate(messages):
        if (
            not isinstance(msg, Mapping)
            or not isinstance(msg.get("role"), str)
            or not isinstance(msg.get("content"), str)
        ):
            raise InputError(f"{origin}: message {i} must have string 'role' and 'content'")
        roles.append(msg["role"])
    if roles != ["user", "assistant"]:
        raise InputError(f"{origin}: message roles must be ['user', 'assistant'], got {roles}")
    if not messages[0]["content"].strip() or not messages[1]["content"].strip():
        raise InputError(f"{origin}: the prompt and the answer must not be empty")
    task = value.get("task", "ner")
    if task not in TASKS:
        raise InputError(f"{origin}: 'task' must be one of {list(TASKS)}, got {task!r}")
    group = value.get("group", "")
    if not isinstance(group, str):
        raise InputError(f"{origin}: 'group' must be a string, got {type(group).__name__}")
    return ChatExample(
        id=str(value.get("id", origin)),
        stage=str(value.get("stage", "")),
        task=task,
        prompt=messages[0]["content"],
        answer=messages[1]["content"],
        source=str(value.get("source", "")),
        group=group,
    )


def iter_examples(path: str | Path) -> Iterator[ChatExample]:
    """Read a JSONL file of training examples, validating every line.

    Raises:
        InputError: The file is missing, or a line is not a valid example (named by line).
    """
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{file}: training file not found")
    try:
        with open(file, encoding="utf-8-sig") as handle:  # -sig: a leading BOM is dropped
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                origin = f"{file}:{number}"
                try:
                    value = loads(line, origin)  # nested too deeply, huge numbers: InputError
                except json.JSONDecodeError as err:
                    raise InputError(f"{origin}: not valid JSON ({err.msg})") from None
                yield example_from_json(value, origin)
    except UnicodeDecodeError as err:
        raise InputError(f"{file}: not UTF-8 text (byte {err.start})") from None


def read_examples(path: str | Path) -> list[ChatExample]:
    """All examples of a JSONL file (see :func:`iter_examples`)."""
    return list(iter_examples(path))


__all__ = [
    "TASKS",
    "BuildReport",
    "BuildResult",
    "ChatExample",
    "Task",
    "example_from_json",
    "iter_examples",
    "read_examples",
    "write_examples",
]
