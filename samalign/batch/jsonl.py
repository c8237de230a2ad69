"""The resumable JSONL file both batch jobs write (``samalign extract`` and ``samalign eval``).

One JSON object per line, appended as results finish, flushed per line and synced to disk
(per line, or at most every ``sync_interval_s``). Reading it back for a resume keeps every
complete line, reports a damaged complete line as ``None`` (its record is redone), and cuts an
interrupted last line (a write killed half-way) off the file so the run can append again.
A line never fails to write: a lone surrogate in its text is written as its JSON escape.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from samalign.errors import InputError


def _value(raw: bytes) -> Any:
    """The JSON value of one line, or ``None`` if it is damaged (or nested absurdly deep)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, int limits
        return None


def cut_partial_tail(path: Path) -> None:
    """Cut a trailing partial line (an interrupted write) off ``path``; a missing file is fine.

    Raises:
        InputError: If the file cannot be read or repaired.
    """
    try:
        with open(path, "r+b") as handle:
            size = handle.seek(0, os.SEEK_END)
            end = size
            while end > 0:
                start = max(0, end - 65536)
                handle.seek(start)
                chunk = handle.read(end - start)
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    end = start + newline + 1
                    break
                end = start
            if end != size:
                handle.truncate(end)
    except FileNotFoundError:
        return
    except OSError as err:
        raise InputError(f"cannot resume from {path}: {err.strerror or err}") from None


def scan_lines(path: Path) -> Iterator[tuple[bytes, Any]]:
    """Each complete line of ``path`` (its bytes and JSON value, ``None`` if damaged), lazily.

    A trailing partial line (no newline) is not yielded; a missing file has no lines.

    Raises:
        InputError: If the file cannot be read.
    """
    try:
        with open(path, "rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    return  # an interrupted last write
                yield raw, _value(raw)
    except FileNotFoundError:
        return
    except OSError as err:
        raise InputError(f"cannot resume from {path}: {err.strerror or err}") from None


def read_lines(path: Path, *, repair: bool = True) -> list[Any]:
    """The JSON value of each complete line of ``path`` (``None`` for a damaged line).

    A trailing partial line (an interrupted write) is left out and, with ``repair``, cut off
    the file (``repair=False`` only reads). A missing file has no lines.

    Raises:
        InputError: If the file cannot be read or repaired.
    """
    if repair:
        cut_partial_tail(path)
    return [value for _, value in scan_lines(path)]


def encodable(line: str) -> str:
    r"""``line`` with every lone surrogate written as its escape (``\ud800``): valid UTF-8.

    Text from Python may hold lone surrogates (a model answer, a ``\ud800`` escape read from
    input), which UTF-8 cannot encode. Inside a JSON string the escape means the same
    character, so a JSON line stays valid, lossless JSON; elsewhere (an id, an Arrow string)
    the escape shows what was there.
    """
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return line.encode("utf-8", "backslashreplace").decode("utf-8")
    return line


class JsonlAppender:
    """Appends JSON lines to a stream, flushing every line and syncing real files to disk.

    Args:
        handle: A text stream opened for appending (or ``sys.stdout``).
        sync_interval_s: Sync at most this often (``0``: after every line).
    """

    def __init__(self, handle: IO[str], *, sync_interval_s: float = 0.0) -> None:
        self._handle = handle
        self._interval = sync_interval_s
        self._synced = time.monotonic()
        self._owned = False

    @classmethod
    def open(cls, path: Path, *, sync_interval_s: float = 0.0) -> JsonlAppender:
        """Open ``path`` for appending (its folder is created).

        Raises:
            InputError: If the file cannot be opened for writing.
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        except OSError as err:
            raise InputError(f"cannot write {path}: {err.strerror}") from None
        appender = cls(handle, sync_interval_s=sync_interval_s)
        appender._owned = True
        return appender

    def write_line(self, line: str, *, sync: bool | None = None) -> None:
        """Append one line (``line`` holds no newline).

        Args:
            line: The JSON text.
            sync: Force (``True``) or skip (``False``) the sync; ``None``: by the interval.
        """
        self._handle.write(encodable(line) + "\n")
        self._handle.flush()
        now = time.monotonic()
        if sync or (sync is None and now - self._synced >= self._interval):
            self._sync()
            self._synced = now

    def write_json(self, data: Mapping[str, Any], *, sync: bool | None = None) -> None:
        """Append one JSON object."""
        self.write_line(json.dumps(data, ensure_ascii=False), sync=sync)

    def _sync(self) -> None:
        try:
            descriptor = self._handle.fileno()
            if descriptor > 2:
                os.fsync(descriptor)
        except (OSError, AttributeError, io.UnsupportedOperation):
            pass  # not a real file (StringIO, notebook stream): nothing to sync

    def close(self) -> None:
        """Flush and sync; close the file if :meth:`open` opened it."""
        if self._handle.closed:
            return
        self._handle.flush()
        self._sync()
        if self._owned:
            self._handle.close()


__all__ = ["JsonlAppender", "cut_partial_tail", "encodable", "read_lines", "scan_lines"]
