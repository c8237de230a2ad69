"""Per-sentence evaluation results and the resumable results file.

A run writes one JSON line per finished sentence to ``<report>.sentences.jsonl`` as it goes
(flushed and fsync'ed), after a first line holding the run's configuration. Rerunning the same
command skips the sentences already there; a different configuration is refused rather than
mixed in. A trailing partial line (an interrupted write) is cut off; a damaged line's sentence
is redone.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from samalign.batch.jsonl import JsonlAppender, read_lines
from samalign.errors import ConfigError
from samalign.evaluation.sentences import Sentence, TokenIndex
from samalign.graphs.results import JointResult
from samalign.types import Diagnostic, Entity, StageUsage

SYNC_INTERVAL_S = 0.5
"""Results are flushed per line and synced to disk at least this often."""


class PredEntity(BaseModel):
    """A predicted entity: character span, label, and its token span (``None``: unaligned)."""

    model_config = ConfigDict(frozen=True)

    start: int
    end: int
    text: str
    label: str | None
    tokens: tuple[int, int] | None
    sources: tuple[str, ...] = ()


class PredTriplet(BaseModel):
    """A predicted relation triplet."""

    model_config = ConfigDict(frozen=True)

    head: PredEntity
    relation: str
    tail: PredEntity
    sources: tuple[str, ...] = ()


class SentenceResult(BaseModel):
    """What the graph produced for one sentence (or why it failed).

    Attributes:
        id: The sentence id.
        entities: Final entities.
        candidates: Type-agnostic candidates (after CCR or merge).
        noise: Explorer mentions CCR dropped.
        triplets: Final triplets (joint graph).
        diagnostics: Every diagnostic of the run.
        usage: Per-stage calls, tokens, latency.
        latency_s: Wall-clock seconds of the sentence's graph run.
        error: Why the sentence failed, or ``None``.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    entities: list[PredEntity] = []
    candidates: list[PredEntity] = []
    noise: list[str] = []
    triplets: list[PredTriplet] = []
    diagnostics: list[Diagnostic] = []
    usage: dict[str, StageUsage] = {}
    latency_s: float = 0.0
    error: str | None = None


def _pred_entity(entity: Entity, index: TokenIndex) -> PredEntity:
    return PredEntity(
        start=entity.start,
        end=entity.end,
        text=entity.text,
        label=entity.label,
        tokens=index.to_tokens(entity.start, entity.end),
        sources=tuple(entity.sources),
    )


def result_from_state(
    sentence: Sentence, state: Mapping[str, Any], latency_s: float
) -> SentenceResult:
    """Turn a graph's final state into a result, mapping spans to tokens.

    Raises:
        InputError: If an entity span does not match the sentence text (a grounding bug).
    """
    index = TokenIndex(sentence.tokens)
    result = JointResult.from_state({"text": sentence.text, **state})  # NER: no triplets
    for entity in result.entities:
        entity.span.check(sentence.text)
    return SentenceResult(
        id=sentence.id,
        entities=[_pred_entity(e, index) for e in result.entities],
        candidates=[_pred_entity(e, index) for e in result.candidates],
        noise=[n.mention for n in result.noise],
        triplets=[
            PredTriplet(
                head=_pred_entity(t.head, index),
                relation=t.relation,
                tail=_pred_entity(t.tail, index),
                sources=tuple(t.sources),
            )
            for t in result.triplets
        ],
        diagnostics=list(result.diagnostics),
        usage=dict(result.usage),
        latency_s=latency_s,
    )


class Session(BaseModel):
    """One (possibly resumed) run over the results file."""

    wall_s: float
    sentences: int


class ResultsFile:
    """The resumable JSONL of per-sentence results (see the module docs).

    Args:
        path: The JSONL path.
        config: The run configuration; must equal the one stored in an existing file.
        fresh: Start over, discarding an existing file.
    """

    def __init__(self, path: Path, config: Mapping[str, Any], *, fresh: bool = False) -> None:
        self.path = path
        self.config = json.loads(json.dumps(dict(config)))
        self.results: dict[str, SentenceResult] = {}
        self.sessions: list[Session] = []
        self._out: JsonlAppender | None = None
        if fresh and path.exists():
            path.unlink()
        if path.exists():
            self._load()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._append({"config": self.config})

    def _load(self) -> None:
        lines = read_lines(self.path)
        if not lines:
            self._append({"config": self.config})
            return
        if lines[0] is not None:
            self._check_config(lines[0])
        for data in lines[1:]:
            self._read_line(data)

    def _check_config(self, data: Any) -> None:
        stored = data.get("config") if isinstance(data, dict) else None
        if stored != self.config:
            changed = (
                sorted(
                    k for k in set(stored) | set(self.config) if stored.get(k) != self.config.get(k)
                )
                if isinstance(stored, dict)
                else ["(no configuration line)"]
            )
            raise ConfigError(
                f"{self.path} holds results of a different run (differs in {changed}); "
                "pass --fresh to start over, or another --out"
            )

    def _read_line(self, data: Any) -> None:
        if not isinstance(data, dict):
            return
        if "session" in data:
            with contextlib.suppress(ValidationError):
                self.sessions.append(Session.model_validate(data["session"]))
            return
        try:
            result = SentenceResult.model_validate(data)
        except ValidationError:
            return  # damaged: redone
        self.results[result.id] = result

    def _append(self, data: Mapping[str, Any], *, sync: bool = True) -> None:
        if self._out is None:
            self._out = JsonlAppender.open(self.path, sync_interval_s=SYNC_INTERVAL_S)
        self._out.write_json(data, sync=True if sync else None)

    def close(self) -> None:
        """Sync and close the file."""
        if self._out is not None:
            self._out.close()
            self._out = None

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def drop_errors(self) -> None:
        """Forget results with an error so they are redone."""
        self.results = {k: r for k, r in self.results.items() if r.error is None}

    def add(self, result: SentenceResult) -> None:
        """Record and persist one result."""
        self.results[result.id] = result
        self._append(result.model_dump(mode="json"), sync=False)

    def end_session(self, wall_s: float, sentences: int) -> None:
        """Record one session's wall time."""
        session = Session(wall_s=wall_s, sentences=sentences)
        self.sessions.append(session)
        self._append({"session": session.model_dump()})

    def ordered(self, sentences: Iterable[Sentence]) -> list[SentenceResult | None]:
        """Results in the order of ``sentences`` (``None`` for a sentence not run yet)."""
        return [self.results.get(s.id) for s in sentences]


__all__ = [
    "PredEntity",
    "PredTriplet",
    "ResultsFile",
    "SentenceResult",
    "Session",
    "result_from_state",
]
