"""Identity LoRA adapters: a LoRA whose update is zero, so the adapter equals the base model.

The frozen calibrator is served through one, so that every request names an adapter (vLLM has
been seen to mix base-model rows and LoRA rows in one batch incorrectly). An identity adapter
is made from any adapter of the same base model: the same ``adapter_config.json`` and tensor
layout, every weight zero. Plain Python: no torch needed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
from pathlib import Path

from samalign.errors import ConfigError
from samalign.serving.model_dir import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    read_safetensors_header,
    safetensors_header_bytes,
)


def write_identity_adapter(like: str | Path, out: str | Path) -> Path:
    """Write an identity adapter shaped like the adapter at ``like``.

    Args:
        like: A peft LoRA adapter folder of the same base model (safetensors weights).
        out: The folder to create (must not exist or be empty).

    Returns:
        ``out`` as a path.

    Raises:
        ConfigError: If ``like`` is not a safetensors LoRA folder or ``out`` is not empty.
    """
    source, target = Path(like), Path(out)
    weights = source / ADAPTER_WEIGHTS
    if not (source / ADAPTER_CONFIG).is_file() or not weights.is_file():
        raise ConfigError(
            f"{source} is not a peft adapter folder with {ADAPTER_WEIGHTS}; identity adapters are "
            "made from an existing safetensors adapter of the same base model"
        )
    if target.exists() and any(target.iterdir()):
        raise ConfigError(f"{target} exists and is not empty")
    header = safetensors_header_bytes(weights)
    tensors = read_safetensors_header(weights)
    data_size = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / ADAPTER_CONFIG, target / ADAPTER_CONFIG)
    with open(target / ADAPTER_WEIGHTS, "wb") as handle:
        handle.write(struct.pack("<Q", len(header)))
        handle.write(header)
        handle.write(bytes(data_size))  # every weight zero: the LoRA update B·A is zero
    return target


def cached_identity_adapter(like: str | Path, *, cache_dir: str | Path | None = None) -> Path:
    """An identity adapter shaped like ``like``, made once and kept in a cache folder.

    Args:
        like: A peft LoRA adapter folder of the base model to serve.
        cache_dir: Where to keep it (default ``$XDG_CACHE_HOME/samalign/identity`` or
            ``~/.cache/samalign/identity``).
    """
    source = Path(like).expanduser().resolve()
    weights = source / ADAPTER_WEIGHTS
    stamp = f"{source}:{weights.stat().st_mtime_ns if weights.exists() else 0}"
    key = hashlib.sha256(stamp.encode()).hexdigest()[:16]
    if cache_dir is None:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        cache_dir = root / "samalign" / "identity"
    target = Path(cache_dir) / key
    if (target / ADAPTER_WEIGHTS).is_file():
        return target
    partial = Path(cache_dir) / f"{key}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    write_identity_adapter(source, partial)
    try:
        os.replace(partial, target)
    except OSError:  # another process won the race
        shutil.rmtree(partial, ignore_errors=True)
    return target


__all__ = ["cached_identity_adapter", "write_identity_adapter"]
