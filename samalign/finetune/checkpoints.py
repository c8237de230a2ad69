"""Training checkpoints: written as safetensors + JSON, never as a pickle.

A checkpoint ``output_dir/checkpoints/step-N/`` holds the adapter (peft's
``adapter_config.json`` + ``adapter_model.safetensors``), the training config, and the trainer
state in two files:

- ``trainer_state.safetensors``: the tensors — the optimizer state (``optimizer.<param>.<key>``)
  and the torch RNG states (``rng.torch``, ``rng.cuda``);
- ``trainer_state.json``: everything else — step, loss history, the optimizer's parameter
  groups and non-tensor state, the learning-rate scheduler, the Python RNG state.

Neither format can run code when loaded. A ``trainer_state.pt`` (a torch pickle, written by
samalign before this format) is never opened: resuming from such a checkpoint is refused with
a :class:`~samalign.errors.ConfigError`, because a crafted pickle runs arbitrary code.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from samalign.errors import ConfigError

CHECKPOINTS_DIR: Final = "checkpoints"
STATE_JSON: Final = "trainer_state.json"
STATE_TENSORS: Final = "trainer_state.safetensors"
LEGACY_STATE: Final = "trainer_state.pt"
STATE_FORMAT: Final = "samalign-trainer-state"
STATE_VERSION: Final = 1
_MAX_STATE_JSON_BYTES: Final = 64 << 20


def _step_of(folder: Path) -> int | None:
    """N of a ``step-N`` folder name (None for other names, e.g. ``step-N.partial``)."""
    digits = folder.name.removeprefix("step-")
    return int(digits) if folder.name.startswith("step-") and digits.isdigit() else None


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest checkpoint under ``output_dir/checkpoints``, if any.

    A checkpoint in the old pickle format counts too (so that ``--resume`` refuses it instead
    of silently starting over).
    """
    folder = Path(output_dir) / CHECKPOINTS_DIR
    found = sorted(
        (
            (step, p)
            for p in folder.glob("step-*")
            if (step := _step_of(p)) is not None
            and ((p / STATE_JSON).is_file() or (p / LEGACY_STATE).is_file())
        ),
    )
    return found[-1][1] if found else None


@dataclass
class TrainerState:
    """What resuming restores besides the adapter weights.

    Attributes:
        step: Optimizer steps taken.
        history: The loss log so far.
        optimizer: ``optimizer.state_dict()``.
        scheduler: ``scheduler.state_dict()``.
        python_rng: ``random.getstate()``.
        torch_rng: ``torch.get_rng_state()``.
        cuda_rng: ``torch.cuda.get_rng_state(device)`` when training on CUDA.
    """

    step: int
    history: list[dict[str, Any]]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    python_rng: tuple[Any, ...]
    torch_rng: Any
    cuda_rng: Any = None


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def write_trainer_state(folder: Path, state: TrainerState) -> None:
    """Write ``trainer_state.safetensors`` + ``trainer_state.json`` into ``folder``."""
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {"rng.torch": state.torch_rng}
    if state.cuda_rng is not None:
        tensors["rng.cuda"] = state.cuda_rng
    entries: dict[str, dict[str, Any]] = {}
    for param, entry in state.optimizer["state"].items():
        values: dict[str, Any] = {}
        names: list[str] = []
        for key, value in entry.items():
            if _is_tensor(value):
                tensors[f"optimizer.{param}.{key}"] = value.detach().contiguous()
                names.append(str(key))
            else:
                values[str(key)] = value
        entries[str(param)] = {"tensors": names, "values": values}
    version, internal, gauss = state.python_rng
    meta = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "step": state.step,
        "history": state.history,
        "optimizer": {"param_groups": state.optimizer["param_groups"], "state": entries},
        "scheduler": state.scheduler,
        "python_rng": [version, list(internal), gauss],
    }
    save_file(tensors, str(folder / STATE_TENSORS))
    (folder / STATE_JSON).write_text(json.dumps(meta) + "\n", encoding="utf-8")


def _invalid(folder: Path, what: str) -> ConfigError:
    return ConfigError(
        f"{folder}: the trainer state is not one samalign wrote ({what}); resume from another "
        "checkpoint or start over in a new output_dir"
    )


def _read_meta(folder: Path) -> dict[str, Any]:
    path = folder / STATE_JSON
    try:
        if path.stat().st_size > _MAX_STATE_JSON_BYTES:
            raise _invalid(folder, f"{STATE_JSON} is larger than {_MAX_STATE_JSON_BYTES} bytes")
        meta = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise _invalid(folder, f"cannot read {STATE_JSON}: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise _invalid(folder, f"{STATE_JSON} has no format {STATE_FORMAT!r}")
    if not isinstance(meta.get("version"), int) or meta["version"] > STATE_VERSION:
        raise _invalid(folder, f"version {meta.get('version')!r}; upgrade samalign")
    checks: dict[str, Callable[[Any], bool]] = {
        "step": lambda v: isinstance(v, int) and v >= 0,
        "history": lambda v: isinstance(v, list) and all(isinstance(h, dict) for h in v),
        "optimizer": lambda v: (
            isinstance(v, dict)
            and isinstance(v.get("param_groups"), list)
            and isinstance(v.get("state"), dict)
        ),
        "scheduler": lambda v: isinstance(v, dict),
        "python_rng": lambda v: (
            isinstance(v, list)
            and len(v) == 3
            and isinstance(v[1], list)
            and all(isinstance(x, int) for x in v[1])
        ),
    }
    for key, valid in checks.items():
        if not valid(meta.get(key)):
            raise _invalid(folder, f"field {key!r} is missing or malformed")
    return meta


def _checked_meta(folder: Path) -> dict[str, Any]:
    if not (folder / STATE_JSON).is_file() and (folder / LEGACY_STATE).exists():
        raise ConfigError(
            f"cannot resume from {folder}: it holds {LEGACY_STATE}, a pickle file (written by "
            "an older samalign), and samalign never unpickles checkpoints because a crafted "
            f"pickle runs code when loaded. Start over in a new output_dir (checkpoints are now "
            f"written as {STATE_TENSORS} + {STATE_JSON})."
        )
    if not (folder / STATE_JSON).is_file() or not (folder / STATE_TENSORS).is_file():
        raise ConfigError(
            f"{folder} is not a samalign training checkpoint (it needs {STATE_JSON} and "
            f"{STATE_TENSORS})"
        )
    return _read_meta(folder)


def read_trainer_state(folder: Path) -> TrainerState:
    """Read a checkpoint's trainer state (safetensors + JSON; nothing is unpickled).

    Raises:
        ConfigError: The folder is not a samalign checkpoint, holds only the old pickle
            format, or its state files are malformed.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = _checked_meta(folder)
    try:
        tensors = load_file(str(folder / STATE_TENSORS))
    except (OSError, SafetensorError, ValueError) as err:
        raise _invalid(folder, f"cannot read {STATE_TENSORS}: {err}") from None
    if "rng.torch" not in tensors:
        raise _invalid(folder, "no torch RNG state")
    state: dict[Any, dict[str, Any]] = {}
    for param, entry in meta["optimizer"]["state"].items():
        try:
            restored = dict(entry["values"])
            for key in entry["tensors"]:
                restored[key] = tensors[f"optimizer.{param}.{key}"]
            state[int(param)] = restored
        except (KeyError, TypeError, ValueError):
            raise _invalid(folder, f"optimizer state of parameter {param!r}") from None
    version, internal, gauss = meta["python_rng"]
    return TrainerState(
        step=meta["step"],
        history=meta["history"],
        optimizer={"state": state, "param_groups": meta["optimizer"]["param_groups"]},
        scheduler=meta["scheduler"],
        python_rng=(version, tuple(internal), gauss),
        torch_rng=tensors["rng.torch"],
        cuda_rng=tensors.get("rng.cuda"),
    )


def check_checkpoint(folder: Path) -> None:
    """Refuse a folder that is not a resumable checkpoint, before anything is loaded.

    Raises:
        ConfigError: As :func:`read_trainer_state`, from the JSON part alone.
    """
    _checked_meta(folder)


def like_groups(saved: list[dict[str, Any]], current: list[dict[str, Any]]) -> list[Any]:
    """Saved parameter groups with JSON lists turned back into tuples where torch had tuples."""
    out: list[Any] = []
    for group, now in zip(saved, current, strict=False):
        out.append(
            {
                k: tuple(v) if isinstance(now.get(k), tuple) and isinstance(v, list) else v
                for k, v in group.items()
            }
        )
    return out + saved[len(out) :]


def save_checkpoint(output_dir: Path, step: int, keep: int, write: Callable[[Path], None]) -> Path:
    """Write ``checkpoints/step-N`` atomically and keep only the newest ``keep`` checkpoints.

    Args:
        output_dir: The run's output folder.
        step: The step number (the folder name).
        keep: How many checkpoints to keep.
        write: Fills the (temporary) folder: adapter, config, trainer state.

    Returns:
        The checkpoint folder.
    """
    folder = output_dir / CHECKPOINTS_DIR / f"step-{step:06d}"
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    kept = sorted(
        (p for p in (output_dir / CHECKPOINTS_DIR).glob("step-*") if p.is_dir()),
        key=lambda p: int(p.name.split("-", 1)[1].split(".")[0]),
    )
    for old in kept[: max(0, len(kept) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


__all__ = [
    "CHECKPOINTS_DIR",
    "LEGACY_STATE",
    "STATE_JSON",
    "STATE_TENSORS",
    "TrainerState",
    "check_checkpoint",
    "latest_checkpoint",
    "like_groups",
    "read_trainer_state",
    "save_checkpoint",
    "write_trainer_state",
]
