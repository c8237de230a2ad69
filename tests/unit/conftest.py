"""Unit-test kill-switch: no real model request and no network connection can happen.

Every unit test runs with

* ``SAMALIGN_BLOCK_MODEL_REQUESTS=1``: samalign's real backends (vLLM server models, the
  in-process engines' chat models) refuse every request (``ModelRequestBlockedError``); the
  fakes of :mod:`samalign.testing.fakes` make no request and run;
* ``socket.socket.connect`` / ``connect_ex`` replaced: any connection attempt raises
  :class:`NetworkBlockedError` (not an ``OSError``, so HTTP clients cannot swallow it as a
  retryable connection failure);
* ``socket.getaddrinfo`` refusing host names other than ``localhost`` and numeric addresses, so
  no DNS query leaves the machine.

A test that needs a *refused* connection (an unreachable server) asks the ``network_guard``
fixture to refuse one address: connecting to it then raises ``ConnectionRefusedError`` without
touching the network, exactly what the OS reports for a closed port.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage

from samalign.finetune.builders import SourceDataset, read_source
from samalign.prompts import load_domain
from samalign.prompts.domain import Domain
from samalign.serving.models import StageModels
from samalign.testing import BLOCK_ENV
from samalign.testing.fakes import ScriptedChatModel, fake_stage_models


class NetworkBlockedError(RuntimeError):
    """A unit test tried to open a network connection."""


def _address_key(address: Any) -> tuple[str, int] | None:
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return None


class NetworkGuard:
    """The installed kill-switch; lets a test simulate a refused connection to one address."""

    error_type = NetworkBlockedError

    def __init__(self) -> None:
        self.refused: set[tuple[str, int]] = set()
        self.attempts: list[Any] = []

    def refuse(self, host: str, port: int) -> None:
        """Connections to ``(host, port)`` fail with ``ConnectionRefusedError`` (simulated)."""
        self.refused.add((host, port))

    def check(self, address: Any) -> None:
        self.attempts.append(address)
        key = _address_key(address)
        if key is not None and key in self.refused:
            raise ConnectionRefusedError(111, "Connection refused (simulated by the kill-switch)")
        raise NetworkBlockedError(
            f"unit tests must not open network connections (tried to connect to {address!r})"
        )


def _is_local_name(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host in ("localhost", ""):
        return True
    try:
        ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return False
    return True


@pytest.fixture(autouse=True)
def network_guard(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NetworkGuard]:
    """Autouse kill-switch (see module docs); request it by name to refuse an address."""
    guard = NetworkGuard()
    monkeypatch.setenv(BLOCK_ENV, "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        guard.check(address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        guard.check(address)
        return 1  # pragma: no cover - check always raises

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_local_name(host):
            raise NetworkBlockedError(f"unit tests must not resolve host names (tried {host!r})")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield guard


# ---------------------------------------------------------------------------------------------
# A scripted "perfect" SAM-NER pipeline: fake stage models that answer from their prompt
# ---------------------------------------------------------------------------------------------

_ENT = re.compile(r"<ENT>(.*?)</ENT>")
_INITIAL = re.compile(r"Initial Output:\s*(\{.*\})", re.DOTALL)


def prompt_of(messages: Sequence[BaseMessage]) -> str:
    """The text of the first (user) message of a call."""
    content = messages[0].content
    return content if isinstance(content, str) else str(content)


@dataclass
class FakeNer:
    """Fake stage models answering like a pipeline that knows the gold answer.

    Attributes:
        anchor: Input text → mentions the anchor extractor emits.
        explorer: Input text → mentions the explorer extractor emits.
        gold: Mention → (archetype, target type *name*) used by the classifier and calibrator.
        scripts: Per-stage script overrides (any :class:`ScriptedChatModel` script).
    """

    anchor: Mapping[str, Sequence[str]] = field(default_factory=dict)
    explorer: Mapping[str, Sequence[str]] = field(default_factory=dict)
    gold: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    scripts: Mapping[str, Any] = field(default_factory=dict)
    default_type: str = "miscellaneous"

    def _extract(
        self, table: Mapping[str, Sequence[str]]
    ) -> Callable[[Sequence[BaseMessage]], str]:
        def answer(messages: Sequence[BaseMessage]) -> str:
            prompt = prompt_of(messages)
            texts = sorted(
                (
                    t
                    for t in table
                    if json.dumps(t, ensure_ascii=False)[1:-1] in prompt or t in prompt
                ),
                key=len,
            )
            out: dict[str, list[str]] = {}
            for mention in table[texts[-1]] if texts else ():
                name = self.gold.get(mention, ("Misc", self.default_type))[1]
                out.setdefault(name, []).append(mention)
            return json.dumps(out, ensure_ascii=False)

        return answer

    def _archetype(self, messages: Sequence[BaseMessage]) -> str:
        prompt = prompt_of(messages)
        direct = "Computer_Science" not in prompt  # schema lists target types, not archetypes
        out: dict[str, list[str]] = {}
        for mention in dict.fromkeys(_ENT.findall(prompt)):
            archetype, name = self.gold.get(mention, ("Misc", self.default_type))
            out.setdefault(name if direct else archetype, []).append(mention)
        return json.dumps(out, ensure_ascii=False)

    def _calibrate(self, messages: Sequence[BaseMessage]) -> str:
        match = _INITIAL.search(prompt_of(messages))
        initial: dict[str, str] = json.loads(match.group(1)) if match else {}
        answer = {m: self.gold.get(m, ("Misc", self.default_type))[1] for m in initial}
        return json.dumps(answer, ensure_ascii=False)

    def scripts_by_stage(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "anchor": self._extract(self.anchor),
            "explorer": self._extract(self.explorer),
            "archetype": self._archetype,
            "direct_typing": self._archetype,
            "calibrate": self._calibrate,
        }
        base.update(self.scripts)
        return base

    def models(self, **kwargs: Any) -> StageModels:
        return fake_stage_models(self.scripts_by_stage(), **kwargs)

    @staticmethod
    def gold_of(
        domain: str | Path | Domain, **mentions: Sequence[str]
    ) -> dict[str, tuple[str, str]]:
        """A ``gold`` table from a domain: each mention → its type's (archetype, name).

        Args:
            domain: The domain (or what :func:`load_domain` takes) whose types the mentions have.
            **mentions: Entity-type label → the mentions of that type (in table order).
        """
        spec = domain if isinstance(domain, Domain) else load_domain(domain)
        gold: dict[str, tuple[str, str]] = {}
        for label, names in mentions.items():
            entity_type = spec.entity_type(label)
            archetype = entity_type.archetype.value if entity_type.archetype else "Misc"
            gold.update(dict.fromkeys(names, (archetype, entity_type.name)))
        return gold


@pytest.fixture
def fake_ner() -> type[FakeNer]:
    """The :class:`FakeNer` class (build one per test)."""
    return FakeNer


def calls_of(models: StageModels, stage: str) -> list[dict[str, Any]]:
    """The recorded calls of a fake stage model."""
    chat = models[stage].chat_model
    assert isinstance(chat, ScriptedChatModel)
    return chat.calls


@pytest.fixture
def armonk_scripts() -> dict[str, Any]:
    """Every stage's answer for "John Smith works for IBM in Armonk ." (conll04 types, Work_For).

    Fixed strings, not a :class:`FakeNer`: every text gets the same answers, so a test can count
    requests whatever it sends.
    """
    return {
        "anchor": '{"person": ["John Smith"], "organization": ["IBM"], "location": ["Armonk"]}',
        "explorer": '{"person": ["John Smith"], "organization": ["IBM"], "location": ["Armonk"]}',
        "archetype": '{"Person": ["John Smith"], "Organization": ["IBM"], "Location": ["Armonk"]}',
        "direct_typing": (
            '{"person": ["John Smith"], "organization": ["IBM"], "location": ["Armonk"]}'
        ),
        "calibrate": '{"John Smith": "person", "IBM": "organization", "Armonk": "location"}',
        "relations_forward": json.dumps(
            [{"subject": "John Smith", "relations": [{"relation": "work for", "object": "IBM"}]}]
        ),
        "relations_reverse": "[]",
    }


@contextlib.contextmanager
def _raising(error: type[Exception], *fragments: str) -> Iterator[None]:
    with pytest.raises(error) as caught:
        yield
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message


@pytest.fixture
def raises_mentioning() -> Callable[..., AbstractContextManager[None]]:
    """``with raises_mentioning(Error, *fragments):`` the block raises ``Error`` naming each."""
    return _raising


@pytest.fixture
def stage_calls() -> Callable[[StageModels, str], list[dict[str, Any]]]:
    """``stage_calls(models, stage)``: the recorded calls of a fake stage model."""
    return calls_of


def _crossre(
    doc_key: str,
    text: str,
    ner: list[tuple[int, int, str]],
    relations: list[tuple[int, int, int, int, str, bool]],
) -> dict[str, Any]:
    """A record in CrossRE's published layout (mainlp/CrossRE, crossre_data/ai-test.json).

    ``ner`` rows are ``[start, end, type]``; a ``relations`` row ``(h_start, h_end, t_start,
    t_end, type, uncertain)`` is written as the published ``[h_start, h_end, t_start, t_end,
    type, explanation, uncertain, syntax-ambiguity]`` with no explanation and no ambiguity; ends
    are inclusive.
    """
    return {
        "doc_key": doc_key,
        "sentence": text.split(),
        "ner": [list(span) for span in ner],
        "relations": [
            [h0, h1, t0, t1, kind, "", uncertain, False]
            for h0, h1, t0, t1, kind, uncertain in relations
        ],
    }


_ELRA = (
    "Finally , every other year , ELRA organizes a major conference LREC , the "
    "International Language Resources and Evaluation Conference ."
)
_ADABOOST = (
    "Unlike neural network s and Support vector machine , the AdaBoost training "
    "process selects only those features known to improve the predictive power ."
)
CROSSRE_SAMPLE: list[dict[str, Any]] = [
    _crossre(
        "ai-test-2",
        _ELRA,
        [(6, 6, "organisation"), (11, 11, "conference"), (14, 19, "conference")],
        [(6, 6, 11, 11, "role", False), (14, 19, 11, 11, "named", False)],
    ),
    _crossre(
        "ai-test-4",
        _ADABOOST,
        [(1, 2, "algorithm"), (5, 7, "algorithm"), (10, 10, "algorithm")],
        [(1, 2, 10, 10, "compare", False), (5, 7, 10, 10, "compare", True)],
    ),
    _crossre(
        "ai-test-13",
        "Nonetheless , stemming reduces precision , or TRUE negative rate .",
        [(4, 4, "metrics"), (7, 9, "metrics")],
        [],
    ),
]
"""Three hand-made CrossRE records (sentences of CrossRE's AI test split)."""


@pytest.fixture
def crossre_records() -> list[dict[str, Any]]:
    """A fresh copy of three hand-made CrossRE records (published layout, inclusive ends)."""
    copied: list[dict[str, Any]] = json.loads(json.dumps(CROSSRE_SAMPLE))
    return copied


@pytest.fixture
def write_crossre() -> Callable[[Path, list[dict[str, Any]]], Path]:
    """``write_crossre(path, records)``: write records as CrossRE JSON Lines; returns ``path``."""

    def write(path: Path, records: list[dict[str, Any]]) -> Path:
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        return path

    return write


@pytest.fixture
def crossre_path(
    tmp_path: Path,
    crossre_records: list[dict[str, Any]],
    write_crossre: Callable[[Path, list[dict[str, Any]]], Path],
) -> Path:
    """The three :data:`CROSSRE_SAMPLE` records written to ``tmp_path / "ai-test.json"``."""
    return write_crossre(tmp_path / "ai-test.json", crossre_records)


@pytest.fixture
def crossner_ai_train(shared_data: Path) -> Callable[[int], SourceDataset]:
    """``crossner_ai_train(n)``: the first ``n`` records of CrossNER AI's BIO train split."""

    def head(n: int) -> SourceDataset:
        dataset = read_source(shared_data / "crossner" / "ai" / "train.txt")
        return SourceDataset(
            path=dataset.path,
            format="bio",
            records=dataset.records[:n],
            label_set=dataset.label_set,
        )

    return head


@pytest.fixture
def swap_bio_columns() -> Callable[..., Path]:
    """``swap_bio_columns(source, target, sep="\\t")``: write ``source``'s BIO lines tag first."""

    def swap(source: Path, target: Path, *, sep: str = "\t") -> Path:
        lines = []
        for line in source.read_text(encoding="utf-8").splitlines():
            token, tag = line.split("\t") if line.strip() else ("", "")
            lines.append(f"{tag}{sep}{token}" if line.strip() else "")
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return target

    return swap


@pytest.fixture
def ner_keyed_spert(shared_data: Path, tmp_path: Path) -> Path:
    """The first 5 CoNLL04 dev records with CrossRE's ``ner`` instead of SpERT's ``entities``."""
    records = json.loads((shared_data / "conll04" / "dev_triples.json").read_text())[:5]
    for r in records:
        r["ner"] = [[e["start"], e["end"] - 1, e["type"]] for e in r.pop("entities")]
    path = tmp_path / "ner_keyed.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.fixture
def spert_record() -> dict[str, Any]:
    """A valid SpERT record (``end`` exclusive): John works for IBM."""
    return {
        "tokens": ["John", "works", "for", "IBM"],
        "entities": [
            {"type": "Peop", "start": 0, "end": 1},
            {"type": "Org", "start": 3, "end": 4},
        ],
        "relations": [{"type": "Work_For", "head": 0, "tail": 1}],
        "orig_id": 7,
    }
