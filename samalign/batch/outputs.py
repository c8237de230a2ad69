"""Where a batch job writes: checking ``--out``, the job manifest, one writer at a time.

Both engines of ``samalign extract`` keep a *manifest* beside their output — the local engine
``OUT.samalign.json`` next to the JSONL file ``OUT`` (so the JSONL stays one record per line),
the Ray engine ``_samalign_job.json`` inside its output folder. It holds the job's
:meth:`~samalign.batch.job.ExtractJob.fingerprint` (domain, graph, options, adapters, backend
kind: everything that decides the results) and how the output is laid out. A rerun resumes only
when the manifest matches; another configuration is refused with a message saying how to start
fresh (``--fresh``), so one output never mixes the results of two configurations.

The manifest file is also the output's lock: a run holds an exclusive ``flock`` on it from start
to end, so a second run on the same output is refused at once instead of interleaving its lines
with the first's (the lock goes with the process, also on ``kill -9``).

:func:`check_output_path` refuses outputs that would destroy or loop on their input: the input
file itself (same path, a hard link, a symlink to it), and anything that is not a regular file
(``/dev/zero``, a FIFO, a folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from samalign.errors import ConfigError, InputError

MANIFEST_VERSION = 1
"""Version of the manifest layout (``samalign_job`` key)."""


@dataclass
class JobSummary:
    """What a batch run did (both engines).

    Attributes:
        records: Input records (lines, or rows, of the finished output).
        resumed: Records found already written (kept).
        ran: Records run by this run.
        errors: Error records in the whole output.
        seconds: Wall time of this run.
    """

    records: int = 0
    resumed: int = 0
    ran: int = 0
    errors: int = 0
    seconds: float = 0.0


def manifest_path(out: Path) -> Path:
    """The manifest beside a local engine's JSONL output: ``OUT.samalign.json``."""
    return out.with_name(out.name + ".samalign.json")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_output_path(
    out: Path, inputs: Sequence[str | Path], *, folder: bool = False, flag: str = "--out"
) -> None:
    """Refuse an output that is an input, or that is not a regular file (or folder).

    Args:
        out: The output path.
        inputs: The input paths (``-`` for stdin is skipped).
        folder: The output is a folder (Ray shards) rather than a file.
        flag: The option's name, for messages.

    Raises:
        ConfigError: ``out`` is one of the inputs (same path, hard link or symlink), holds one
            (a folder output), or is not a regular file / folder.
    """
    try:
        info = out.stat()
    except FileNotFoundError:
        info = None
    except OSError as err:
        raise ConfigError(f"{flag} {out}: cannot use it ({err.strerror or err})") from None
    if info is not None:
        wanted = stat.S_ISDIR(info.st_mode) if folder else stat.S_ISREG(info.st_mode)
        if not wanted:
            what = "a folder" if folder else "a regular file"
            raise ConfigError(
                f"{flag} {out} is {_kind(info.st_mode)}; give the path of {what} "
                + ("(it is created)" if folder else "(it is created; leave --out out for stdout)")
            )
    for source in inputs:
        if str(source) == "-":
            continue
        path = Path(source)
        try:
            same = info is not None and os.path.samefile(out, path)
        except OSError:
            same = False
        if same:
            raise ConfigError(
                f"{flag} {out} is the input {source} itself (the same file, a hard link or a "
                "symlink to it): writing there would destroy the input; choose another path"
            )
        if folder:
            with contextlib.suppress(OSError):
                if out.resolve() in path.resolve().parents:
                    raise ConfigError(
                        f"{flag} {out} holds the input {source}; give an output folder of its own"
                    )


def redo(input_error: str | None, output_error: str | None, *, retry_errors: bool) -> bool:
    """Whether a resume redoes a record that has an output line (both engines' rule).

    Only with ``retry_errors``, and only a record whose *input* was readable: an input error
    (bad JSON, a duplicate id …) would come out the same again.
    """
    return retry_errors and output_error is not None and input_error is None


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Write ``path`` through a temporary file: synced, renamed, folder synced.

    A crash leaves either the old file or the new one, never a half-written one (a stale
    ``*.tmp`` beside it at most).
    """
    temp = path.with_name(path.name + ".tmp")
    write(temp)
    with open(temp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, path)
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """``fsync`` a folder, so a rename in it is on disk (a no-op where unsupported)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. a platform without directory handles
        return
    try:
        os.fsync(descriptor)
    except OSError:  # pragma: no cover - a filesystem without directory fsync
        pass
    finally:
        os.close(descriptor)


class OutputClaim:
    """A run's hold on one output: the manifest checked (or written) and locked.

    Use :func:`claim_output` to get one; :meth:`release` (or leaving the ``with`` block) frees
    the lock.
    """

    def __init__(self, handle: IO[bytes], path: Path, manifest: dict[str, Any]) -> None:
        self._handle = handle
        self.path = path
        self.manifest = manifest

    def release(self) -> None:
        """Unlock the output (closing the manifest file)."""
        if not self._handle.closed:
            self._handle.close()

    def __enter__(self) -> OutputClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock(handle: IO[bytes], label: str) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX: no lock
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(
            f"another samalign run is writing {label} right now; wait for it to finish, or "
            "write to another --out"
        ) from None
    except OSError:  # pragma: no cover - a filesystem without locks: run unlocked
        pass


def _write_manifest(handle: IO[bytes], manifest: Mapping[str, Any]) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    handle.flush()
    os.fsync(handle.fileno())


def claim_output(
    path: Path,
    wanted: Mapping[str, Any],
    *,
    label: str,
    has_output: Callable[[], bool],
    fresh: bool = False,
    clear: Callable[[], None] | None = None,
) -> OutputClaim:
    """Lock an output and check that it belongs to this job (see the module docs).

    Args:
        path: The manifest file.
        wanted: The manifest this run writes (``samalign_job``, ``fingerprint`` …).
        label: The output, for messages (``runs/out.jsonl``).
        has_output: Whether the output already holds records.
        fresh: Start over: ``clear`` the output and write a new manifest.
        clear: Deletes the output (what ``fresh`` discards).

    Returns:
        The claim; keep it until the run ends.

    Raises:
        ConfigError: Another run holds the output, or it holds another job's output (or output
            without a manifest), unless ``fresh``.
        InputError: The manifest cannot be opened.
    """
    manifest = {"samalign_job": MANIFEST_VERSION, **wanted}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror or err}") from None
    handle = os.fdopen(descriptor, "r+b")
    _lock(handle, label)
    try:
        if fresh:
            if clear is not None:
                clear()
            _write_manifest(handle, manifest)
            return OutputClaim(handle, path, manifest)
        raw = handle.read(1 << 20)
        try:
            found = json.loads(raw) if raw.strip() else None
        except (ValueError, RecursionError):
            found = None
        if not isinstance(found, dict):
            if has_output():
                raise ConfigError(
                    f"{label} holds output but {path.name} beside it is missing or damaged, so "
                    "samalign cannot tell which configuration wrote it; pass --fresh to start "
                    "over (it is discarded), or use another --out"
                )
            _write_manifest(handle, manifest)
            return OutputClaim(handle, path, manifest)
        differs = sorted(k for k in manifest if found.get(k) != manifest[k])
        if differs:
            raise ConfigError(
                f"{label} holds the output of another configuration or other inputs "
                f"({', '.join(differs)} differ: another domain, graph, pipeline option, adapter "
                "or backend); rerun with the same settings to resume, pass --fresh to start over "
                "(the old output is discarded), or use another --out"
            )
        return OutputClaim(handle, path, manifest)
    except BaseException:
        handle.close()
        raise


__all__ = [
    "MANIFEST_VERSION",
    "JobSummary",
    "OutputClaim",
    "check_output_path",
    "claim_output",
    "manifest_path",
    "redo",
    "sync_folder",
    "write_atomic",
]
