"""Stage-answer cache: never pay twice for the same model request.

Opt-in (``RunContext(..., cache=...)``, ``samalign eval/extract --cache``). A stage call's
answer is stored under a key made of everything that decides it: the chat model's identity
and sampling settings (class, served model, server URL, temperature, seed … as LangChain
reports them in ``_identifying_params``), the adapter, the messages (prompt, and any retry
feedback), the structured-output JSON schema and the token budget. Rerunning an evaluation
sweep, or extracting from texts that share sentences, then makes no repeated model call: a
cached answer is replayed through the same parsing and checks as a fresh one, and is counted
in the stage's usage as ``cached`` instead of ``calls``.

Why not LangGraph's node ``CachePolicy``: its key function sees only the node's input state,
not the run context, so one domain's answer would be served for another domain's request
with the same text (and one ablation's for another's). Keying on the stage request itself
is exact; the stores are bounded (least recently used entries go first).

Two stores: :class:`MemoryCache` (one process) and :class:`SqliteCache` (a file: survives
the process, shared by runs). A JSON run context names one with :class:`CacheConfig`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, Self, runtime_checkable

from langchain_core.messages import BaseMessage
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from samalign.errors import ConfigError, validation_problems

CACHE_VERSION = 1
"""Part of every key: bump it when the key or the stored answer changes meaning."""

DEFAULT_MAX_ENTRIES = 100_000
"""Entries a cache keeps by default (a stage answer is typically well under 1 KB)."""


@dataclass(frozen=True)
class CachedReply:
    """A stored model answer."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


@runtime_checkable
class StageCache(Protocol):
    """What the stage runner needs from a cache."""

    def get(self, key: str) -> CachedReply | None:
        """The answer stored under ``key``, if any."""

    def put(self, key: str, reply: CachedReply) -> None:
        """Store ``reply`` under ``key`` (evicting the least recently used beyond the bound)."""


@dataclass
class CacheStats:
    """Hits and misses of one cache."""

    hits: int = 0
    misses: int = 0


class MemoryCache:
    """A bounded in-memory LRU cache of stage answers (thread-safe).

    Args:
        max_entries: Entries kept; the least recently used go first.
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ConfigError("cache max_entries must be at least 1")
        self.max_entries = max_entries
        self.stats = CacheStats()
        self._data: OrderedDict[str, CachedReply] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> CachedReply | None:
        """The answer stored under ``key``, if any (marks it recently used)."""
        with self._lock:
            reply = self._data.get(key)
            if reply is None:
                self.stats.misses += 1
                return None
            self._data.move_to_end(key)
            self.stats.hits += 1
            return reply

    def put(self, key: str, reply: CachedReply) -> None:
        """Store ``reply``, evicting the least recently used entries beyond the bound."""
        with self._lock:
            self._data[key] = reply
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._data.clear()


class SqliteCache:
    """A bounded stage-answer cache in an SQLite file (survives the process; thread-safe).

    Several processes may share the file (SQLite locks it); each keeps at most
    ``max_entries`` rows, evicting the least recently used.

    Args:
        path: The database file (created with its folder if missing).
        max_entries: Entries kept.
    """

    def __init__(self, path: str | Path, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ConfigError("cache max_entries must be at least 1")
        self.path = Path(path)
        self.max_entries = max_entries
        self.stats = CacheStats()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS stage_answers (key TEXT PRIMARY KEY, "
                "answer TEXT NOT NULL, used REAL NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS by_use ON stage_answers(used)")
            self._db.commit()
        except (OSError, sqlite3.Error) as err:
            raise ConfigError(f"cannot open the stage cache {self.path}: {err}") from None
        self._writes = 0

    def get(self, key: str) -> CachedReply | None:
        """The answer stored under ``key``, if any (marks it recently used)."""
        with self._lock:
            row = self._db.execute(
                "SELECT answer FROM stage_answers WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                self.stats.misses += 1
                return None
            self._db.execute("UPDATE stage_answers SET used = ? WHERE key = ?", (time.time(), key))
            self._db.commit()
            self.stats.hits += 1
        data = json.loads(row[0])
        return CachedReply(**data)

    def put(self, key: str, reply: CachedReply) -> None:
        """Store ``reply``, evicting the least recently used rows beyond the bound."""
        answer = json.dumps(reply.__dict__, ensure_ascii=False)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO stage_answers (key, answer, used) VALUES (?, ?, ?)",
                (key, answer, time.time()),
            )
            self._writes += 1
            if self._writes % 64 == 0 or self.max_entries < 1024:
                self._evict()
            self._db.commit()

    def _evict(self) -> None:
        (count,) = self._db.execute("SELECT COUNT(*) FROM stage_answers").fetchone()
        if count > self.max_entries:
            self._db.execute(
                "DELETE FROM stage_answers WHERE key IN (SELECT key FROM stage_answers "
                "ORDER BY used LIMIT ?)",
                (count - self.max_entries,),
            )

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM stage_answers").fetchone()
        return int(count)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._db.execute("DELETE FROM stage_answers")
            self._db.commit()

    def close(self) -> None:
        """Trim to the bound and close the database."""
        with self._lock:
            self._evict()
            self._db.commit()
            self._db.close()


class CacheConfig(BaseModel):
    """A stage cache as plain data (the ``cache`` part of a JSON run context).

    Attributes:
        kind: ``memory`` (this process) or ``sqlite`` (a file).
        path: The SQLite file (``sqlite`` only).
        max_entries: Entries kept (least recently used go first).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["memory", "sqlite"] = "memory"
    path: str | None = None
    max_entries: int = Field(default=DEFAULT_MAX_ENTRIES, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        """``"memory"`` or ``"sqlite:PATH"`` as the mapping it stands for."""
        if not isinstance(data, str):
            return data
        kind, _, path = data.partition(":")
        return {"kind": kind, **({"path": path} if path else {})}

    @model_validator(mode="after")
    def _path_for_sqlite(self) -> Self:
        if (self.kind == "sqlite") != (self.path is not None):
            raise ValueError("'path' is required for kind 'sqlite' and only for it")
        return self

    @classmethod
    def parse(cls, data: object) -> CacheConfig:
        """A cache setting, validated.

        Args:
            data: A :class:`CacheConfig`, a mapping of its fields, ``"memory"`` or
                ``"sqlite:PATH"``.

        Raises:
            ConfigError: Naming what is wrong.
        """
        try:
            return data if isinstance(data, CacheConfig) else cls.model_validate(data)
        except ValidationError as err:
            raise ConfigError(
                f"invalid stage cache setting: {validation_problems(err, 'cache')}. Use 'memory', "
                "'sqlite:PATH' or "
                '{"kind": "sqlite", "path": "...", "max_entries": N}'
            ) from None

    def build(self) -> MemoryCache | SqliteCache:
        """A new cache with these settings."""
        if self.kind == "sqlite":
            assert self.path is not None
            return SqliteCache(self.path, self.max_entries)
        return MemoryCache(self.max_entries)


def _message(m: BaseMessage) -> list[Any]:
    return [m.type, m.content]


def request_key(
    chat_model: Any, adapter: str, messages: list[BaseMessage], kwargs: Mapping[str, Any]
) -> str:
    """The cache key of one model request (see the module docs for what it covers)."""
    try:
        params = dict(chat_model._identifying_params)
    except Exception:  # a chat model without identifying params: its class and repr
        params = {"repr": repr(chat_model)}
    base_url = getattr(chat_model, "openai_api_base", None) or getattr(chat_model, "base_url", None)
    if base_url:  # OpenAI-compatible clients: the server is part of the identity
        params["base_url"] = str(base_url)
    payload = {
        "v": CACHE_VERSION,
        "model": [type(chat_model).__module__, type(chat_model).__qualname__, params],
        "adapter": adapter,
        "messages": [_message(m) for m in messages],
        "kwargs": dict(kwargs),
    }
    text = json.dumps(payload, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


__all__ = [
    "CACHE_VERSION",
    "DEFAULT_MAX_ENTRIES",
    "CacheConfig",
    "CacheStats",
    "CachedReply",
    "MemoryCache",
    "SqliteCache",
    "StageCache",
    "request_key",
]
