"""The resumable JSONL file both batch jobs write (``samalign extract`` and ``samalign eval``).

One JSON object per line, appended as results finish, flushed per line and synced to disk
(per line, or at most every ``sync_interval_s``). Reading it back for a resume keeps every
complete line, reports a damaged complete line as ``None`` (its record is redone), and cuts an
interrupted last line (a write killed half-way) off the file so the run can append again.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from samalign.errors import InputError


def read_lines(path: Path, *, repair: bool = True) -> list[Any]:
    """The JSON value of each complete line of ``path`` (``None`` for a damaged line).

    A trailing partial line (an interrupted write) is left out and, with ``repair``, cut off
    the file (``repair=False`` only reads). A missing file has no lines.

    Raises:
        InputError: If the file cannot be read or repaired.
    """
    if not path.exists():
        return []
    values: list[Any] = []
    valid_end = 0
    try:
        with open(path, "rb") as handle:
            offset = 0
            for raw in handle:
                offset += len(raw)
                if not raw.endswith(b"\n"):
                    break  # an interrupted last write
                valid_end = offset
                try:
                    values.append(json.loads(raw))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    values.append(None)  # a damaged complete line: its record is redone
        if repair and valid_end != path.stat().st_size:
            with open(path, "r+b") as handle:
                handle.truncate(valid_end)
    except OSError as err:
        raise InputError(f"cannot resume from {path}: {err.strerror or err}") from None
    return values


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
        self._handle.write(line + "\n")
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


__all__ = ["JsonlAppender", "read_lines"]
