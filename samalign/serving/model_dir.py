"""Read and check a samalign model directory for the in-process backends.

Layout (written by ``python -m samalign.testing build-tiny`` and by the finetune trainer)::

    MODEL_DIR/
      base/                 base model in Hugging Face format; its tokenizer has a chat template
      adapters/<name>/      one peft LoRA adapter per stage (adapter_config.json +
                            adapter_model.safetensors), used under <name>
      samalign-model.json   optional manifest: {"format": "samalign-model-dir", "version": 1,
                            "base": "base", "adapters": {name: relative path},
                            "identity_adapters": [names of adapters whose LoRA update is zero]}

Adapters named in the manifest must exist; folders under ``adapters/`` are served too. Every
adapter is checked against the base model before anything is loaded: the layers it adapts
must exist in the base model with the input/output sizes its LoRA matrices expect, so an
adapter trained on another base model fails at load time with an error naming it.
Plain Python (safetensors headers are read directly): no torch needed.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from samalign.errors import ConfigError
from samalign.serving.launcher import check_adapter

MANIFEST_NAME: Final = "samalign-model.json"
MANIFEST_FORMAT: Final = "samalign-model-dir"
MANIFEST_VERSION: Final = 1

_WEIGHTS = "adapter_model.safetensors"
_LORA_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$"
)
_FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})

Shape = tuple[int, ...]
ModuleLookup = Callable[[str], tuple[int, int] | None]
"""Module path → (out_features, in_features) of the base layer, or None if it has none."""


@dataclass(frozen=True)
class LocalModelDir:
    """A checked model directory.

    Attributes:
        root: The directory.
        base: The base model folder.
        adapters: Adapter name → folder.
        identity_adapters: Adapters the manifest marks as identity (zero LoRA update) and whose
            ``lora_B`` weights are all zero.
        manifest: The manifest's content (empty without one).
    """

    root: Path
    base: Path
    adapters: dict[str, Path]
    identity_adapters: frozenset[str]
    manifest: dict[str, Any]


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor name → dtype, shape, data_offsets).

    Raises:
        ConfigError: If the file is missing or not a safetensors file.
    """
    try:
        with open(path, "rb") as handle:
            size_bytes = handle.read(8)
            if len(size_bytes) != 8:
                raise ConfigError(f"{path} is not a safetensors file")
            (size,) = struct.unpack("<Q", size_bytes)
            header: dict[str, Any] = json.loads(handle.read(size))
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror or err}") from None
    except ValueError:
        raise ConfigError(f"{path} has an unreadable safetensors header") from None
    header.pop("__metadata__", None)
    return header


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read the manifest {path}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the manifest must be a JSON object")
    if data.get("format", MANIFEST_FORMAT) != MANIFEST_FORMAT:
        raise ConfigError(f"{path}: format is {data.get('format')!r}, not {MANIFEST_FORMAT!r}")
    version = data.get("version", MANIFEST_VERSION)
    if not isinstance(version, int) or version > MANIFEST_VERSION:
        raise ConfigError(
            f"{path}: manifest version {version!r} is newer than this samalign understands "
            f"({MANIFEST_VERSION}); upgrade samalign"
        )
    return data


def lora_b_is_zero(adapter_dir: Path) -> bool:
    """Whether every ``lora_B`` weight of a safetensors adapter is zero (an identity adapter)."""
    weights = adapter_dir / _WEIGHTS
    if not weights.is_file():
        return False
    header = read_safetensors_header(weights)
    with open(weights, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        start = 8 + size
        found = False
        for key, info in header.items():
            if ".lora_B." not in key:
                continue
            found = True
            begin, end = (int(x) for x in info["data_offsets"])
            handle.seek(start + begin)
            if handle.read(end - begin).strip(b"\0"):
                return False
    return found


def load_model_dir(path: str | Path) -> LocalModelDir:
    """Resolve and check a model directory (see module docs).

    Raises:
        ConfigError: If the layout is wrong, an adapter named in the manifest is missing or
            cannot be served, or an adapter does not fit the base model — each naming the
            adapter and what is wrong.
    """
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"model directory {root} does not exist")
    manifest = _read_manifest(root)
    base = (root / str(manifest.get("base", "base"))).resolve()
    if not (base / "config.json").is_file():
        raise ConfigError(
            f"{root}: not a samalign model directory: expected the base model in {base} "
            "(with config.json) and adapters in adapters/<name>/"
        )
    listed = manifest.get("adapters") or {}
    if not isinstance(listed, Mapping):
        raise ConfigError(f"{root / MANIFEST_NAME}: 'adapters' must map names to folders")
    adapters: dict[str, Path] = {}
    for name, rel in listed.items():
        folder = (root / str(rel)).resolve()
        if not folder.is_dir():
            raise ConfigError(
                f"{root}: adapter {name!r} is listed in {MANIFEST_NAME} but its folder "
                f"{folder} is missing; restore it or remove it from the manifest"
            )
        adapters[str(name)] = folder
    if (root / "adapters").is_dir():
        for sub in sorted((root / "adapters").iterdir()):
            if sub.is_dir():
                adapters.setdefault(sub.name, sub.resolve())
    if not adapters:
        raise ConfigError(f"{root}: no adapters found; expected adapters/<name>/ folders")
    for name, folder in adapters.items():
        check_adapter(name, folder)
    declared = manifest.get("identity_adapters") or []
    unknown = sorted(set(declared) - set(adapters))
    if unknown:
        raise ConfigError(
            f"{root / MANIFEST_NAME}: identity adapters {unknown} are not among the "
            f"adapters {sorted(adapters)}"
        )
    identity = frozenset(n for n in declared if lora_b_is_zero(adapters[n]))
    shapes = base_weight_shapes(base)
    for name, folder in adapters.items():
        check_adapter_fits(name, folder, base, header_lookup(shapes))
    return LocalModelDir(
        root=root,
        base=base,
        adapters=adapters,
        identity_adapters=identity,
        manifest=manifest,
    )


def base_weight_shapes(base: Path) -> dict[str, tuple[str, Shape]]:
    """Tensor name → (dtype, shape) of a base model's safetensors weights (empty if none)."""
    files: list[Path] = []
    index = base / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text("utf-8")).get("weight_map", {})
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read {index}: {err}") from None
        files = [base / f for f in sorted(set(weight_map.values()))]
    elif (base / "model.safetensors").is_file():
        files = [base / "model.safetensors"]
    shapes: dict[str, tuple[str, Shape]] = {}
    for file in files:
        for key, info in read_safetensors_header(file).items():
            shapes[key] = (str(info.get("dtype")), tuple(int(x) for x in info.get("shape", ())))
    return shapes


def header_lookup(shapes: Mapping[str, tuple[str, Shape]]) -> ModuleLookup | None:
    """A :data:`ModuleLookup` over base weight shapes (None when there are none to check)."""
    if not shapes:
        return None
    by_suffix: dict[str, str] = {}
    for key in shapes:
        if key.endswith(".weight"):
            parts = key[: -len(".weight")].split(".")
            for i in range(1, len(parts)):
                by_suffix.setdefault(".".join(parts[i:]), key)

    def lookup(module: str) -> tuple[int, int] | None:
        key = module + ".weight"
        if key not in shapes:
            key = by_suffix.get(module, "")
            if not key:
                trimmed = module.split(".", 1)[-1]
                key = by_suffix.get(trimmed, "")
        if not key:
            return None
        dtype, shape = shapes[key]
        if len(shape) != 2 or dtype not in _FLOAT_DTYPES:
            return (-1, -1)  # packed or quantised: sizes cannot be compared
        return shape[0], shape[1]

    return lookup


def check_adapter_fits(
    name: str, adapter_dir: Path, base: Path, lookup: ModuleLookup | None
) -> None:
    """Check that an adapter's LoRA matrices fit the base model's layers.

    Args:
        name: Adapter name (for the message).
        adapter_dir: The adapter folder.
        base: The base model folder (for the message).
        lookup: Base layer sizes by module path; ``None`` skips the check.

    Raises:
        ConfigError: Naming the adapter, the first mismatching layers and the base model the
            adapter says it was trained on.
    """
    weights = adapter_dir / _WEIGHTS
    if lookup is None or not weights.is_file():
        return
    problems: list[str] = []
    for key, info in read_safetensors_header(weights).items():
        match = _LORA_KEY.match(key)
        if match is None:
            continue
        module, ab = match.group("module"), match.group("ab")
        shape = tuple(int(x) for x in info.get("shape", ()))
        sizes = lookup(module)
        if sizes is None:
            problems.append(f"it adapts layer {module}, which the base model does not have")
            continue
        out_features, in_features = sizes
        if out_features < 0 or len(shape) != 2:
            continue
        if ab == "A" and shape[1] != in_features:
            problems.append(
                f"layer {module}: lora_A expects {shape[1]} input features, the base layer "
                f"has {in_features}"
            )
        elif ab == "B" and shape[0] != out_features:
            problems.append(
                f"layer {module}: lora_B produces {shape[0]} output features, the base layer "
                f"has {out_features}"
            )
    if not problems:
        return
    trained_on = "an unknown base model"
    try:
        config = json.loads((adapter_dir / "adapter_config.json").read_text("utf-8"))
        trained_on = repr(config.get("base_model_name_or_path") or "an unknown base model")
    except (OSError, ValueError):
        pass
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    raise ConfigError(
        f"adapter {name!r} at {adapter_dir} does not match the base model {base}: "
        f"{'; '.join(problems[:3])}{more}. The adapter was trained on {trained_on}; use "
        "adapters trained on this base model."
    )


__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "LocalModelDir",
    "ModuleLookup",
    "base_weight_shapes",
    "check_adapter_fits",
    "header_lookup",
    "load_model_dir",
    "lora_b_is_zero",
    "read_safetensors_header",
]
