"""The model directory: the one reader of its layout and the one "can vLLM serve this?" check.

Every user of a model directory goes through this module: ``samalign serve`` (and
:func:`~samalign.serving.server_process.running_vllm_server`), both in-process backends, the
finetune trainer (``check_servable``, ``samalign finetune check``) and the demo. The layout,
the manifest and the rules are documented once, in ``docs/model_dir.md``::

    MODEL_DIR/
      base/                 base model in Hugging Face format; its tokenizer has a chat template
      adapters/<name>/      one peft LoRA adapter per stage (adapter_config.json +
                            adapter_model.safetensors), used under <name>
      samalign-model.json   optional manifest: {"format": "samalign-model-dir", "version": 1,
                            "base": "base", "adapters": {name: relative path},
                            "identity_adapters": [names of adapters whose LoRA update is zero]}

Paths the directory points at (the manifest's ``base`` and adapter paths, and folders reached
through symbolic links) must stay inside it unless the caller passes ``allow_outside=True``
(``samalign serve --allow-outside-paths``): a model directory is often someone else's download.

Every adapter is checked before anything is loaded: :func:`check_servable` (what vLLM refuses:
added tokens, ``modules_to_save``, bias, DoRA, a rank above vLLM's largest, non-LoRA tensors)
and :func:`check_adapter_fits` (the layers it adapts exist in the base model with the sizes its
LoRA matrices expect). Plain Python (safetensors headers are read directly): no torch needed.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from samalign.errors import ConfigError

MANIFEST_NAME: Final = "samalign-model.json"
MANIFEST_FORMAT: Final = "samalign-model-dir"
MANIFEST_VERSION: Final = 1
ADAPTER_CONFIG: Final = "adapter_config.json"
ADAPTER_WEIGHTS: Final = "adapter_model.safetensors"

VLLM_LORA_RANKS: Final[tuple[int, ...]] = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM accepts for ``--max-lora-rank``."""

VLLM_UNSERVABLE_TARGETS: Final[frozenset[str]] = frozenset(
    {"embed_tokens", "lm_head", "wte", "wpe", "embed_in", "embed_out", "word_embeddings"}
)
"""Module names whose LoRA vLLM does not serve (embedding / output-head LoRA)."""

OUTSIDE_HINT: Final = (
    "Pass allow_outside=True (samalign serve --allow-outside-paths) if you trust this directory"
)

_MAX_MANIFEST_BYTES: Final = 1 << 20
_MAX_HEADER_BYTES: Final = 100_000_000  # the limit of the safetensors library itself
_LEGACY_WEIGHTS: Final = "adapter_model.bin"
_LORA_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$"
)
_FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})
_PLAIN_INITS = frozenset({"gaussian", "eva", "orthogonal"})

Shape = tuple[int, ...]
ModuleLookup = Callable[[str], tuple[int, int] | None]
"""Module path → (out_features, in_features) of the base layer, or None if it has none."""


@dataclass(frozen=True)
class ModelDir:
    """A checked model directory (or a base model with named adapters).

    Attributes:
        root: The directory; ``None`` for a base model and adapters given one by one.
        base: The base model folder.
        adapters: Adapter name → folder (the manifest's first, then ``adapters/<name>/``).
        identity_adapters: Adapters the manifest marks as identity (zero LoRA update) and whose
            ``lora_B`` weights are all zero.
        manifest: The manifest's content (empty without one).
    """

    root: Path | None
    base: Path
    adapters: dict[str, Path]
    identity_adapters: frozenset[str] = frozenset()
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def max_lora_rank(self) -> int:
        """The smallest ``--max-lora-rank`` vLLM accepts that covers every adapter."""
        return lora_rank_bucket(max(adapter_rank(p) for p in self.adapters.values()))

    def with_adapters(self, extra: Mapping[str, str | Path]) -> ModelDir:
        """This directory plus adapters given by path (they replace same-named ones).

        The added adapters are the caller's own choice, so they may live anywhere; they are
        checked like the directory's (servable, fitting the base model).

        Raises:
            ConfigError: If an added adapter cannot be served or does not fit the base model.
        """
        if not extra:
            return self
        added = {str(name): Path(p).expanduser().resolve() for name, p in extra.items()}
        _check_adapters(self.base, added)
        identity = self.identity_adapters - set(added)
        return replace(self, adapters={**self.adapters, **added}, identity_adapters=identity)


LocalModelDir = ModelDir
"""Former name of :class:`ModelDir` (kept for existing imports)."""


# ------------------------------------------------------------------------------------------
# safetensors headers
# ------------------------------------------------------------------------------------------


def safetensors_header_bytes(path: Path) -> bytes:
    """The raw JSON header of a safetensors file (the bytes after its 8-byte length).

    Raises:
        ConfigError: If the file is missing, truncated or not a safetensors file.
    """
    try:
        with open(path, "rb") as handle:
            size_bytes = handle.read(8)
            if len(size_bytes) != 8:
                raise ConfigError(f"{path} is not a safetensors file")
            (size,) = struct.unpack("<Q", size_bytes)
            if size > _MAX_HEADER_BYTES:
                raise ConfigError(f"{path} is not a safetensors file (header of {size} bytes)")
            header = handle.read(size)
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror or err}") from None
    if len(header) != size:
        raise ConfigError(f"{path} is truncated: its safetensors header is incomplete")
    return header


def _parse_header(raw: bytes, path: Path) -> dict[str, Any]:
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        raise ConfigError(f"{path} has an unreadable safetensors header") from None
    if not isinstance(header, dict):
        raise ConfigError(f"{path} has an unreadable safetensors header")
    header.pop("__metadata__", None)
    return header


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor name → dtype, shape, data_offsets).

    Raises:
        ConfigError: If the file is missing or not a safetensors file.
    """
    return _parse_header(safetensors_header_bytes(path), path)


def lora_b_is_zero(adapter_dir: Path) -> bool:
    """Whether every ``lora_B`` weight of a safetensors adapter is zero (an identity adapter)."""
    weights = adapter_dir / ADAPTER_WEIGHTS
    if not weights.is_file():
        return False
    raw = safetensors_header_bytes(weights)
    header = _parse_header(raw, weights)
    found = False
    with open(weights, "rb") as handle:
        for key, info in header.items():
            if ".lora_B." not in key:
                continue
            found = True
            begin, end = (int(x) for x in info["data_offsets"])
            handle.seek(8 + len(raw) + begin)
            if handle.read(end - begin).strip(b"\0"):
                return False
    return found


# ------------------------------------------------------------------------------------------
# servability (what vLLM refuses) and ranks
# ------------------------------------------------------------------------------------------


def _label(folder: Path, name: str | None) -> str:
    return f"adapter {name!r} at {folder}" if name else f"adapter {folder}"


def _adapter_config(folder: Path, name: str | None = None) -> dict[str, Any]:
    path = folder / ADAPTER_CONFIG
    if not path.is_file():
        raise ConfigError(
            f"{_label(folder, name)} has no {ADAPTER_CONFIG}; point it at a folder written by "
            "peft's save_pretrained"
        )
    try:
        config = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a JSON object (peft's LoRA config)")
    return config


def _config_rank(config: Mapping[str, Any], path: Path) -> int:
    try:
        ranks = [int(config.get("r", 8))]
        ranks += [int(v) for v in (config.get("rank_pattern") or {}).values()]
    except (TypeError, ValueError, AttributeError):
        raise ConfigError(f"{path}: 'r' and 'rank_pattern' must hold integers") from None
    return max(ranks)


def adapter_rank(adapter_dir: Path) -> int:
    """The largest LoRA rank of an adapter (``r`` and any ``rank_pattern`` entries).

    Raises:
        ConfigError: If ``adapter_config.json`` is missing or unreadable.
    """
    return _config_rank(_adapter_config(adapter_dir), adapter_dir / ADAPTER_CONFIG)


def lora_rank_bucket(rank: int) -> int:
    """The smallest ``--max-lora-rank`` value vLLM accepts that is ≥ ``rank``.

    Raises:
        ConfigError: If the rank exceeds vLLM's largest value.
    """
    for value in VLLM_LORA_RANKS:
        if value >= rank:
            return value
    raise ConfigError(f"LoRA rank {rank} exceeds vLLM's maximum {VLLM_LORA_RANKS[-1]}")


def _config_problems(config: Mapping[str, Any], path: Path) -> list[str]:
    problems: list[str] = []
    if config.get("peft_type") not in (None, "LORA"):
        problems.append(f"peft_type {config.get('peft_type')!r} (vLLM serves LoRA)")
    if config.get("bias", "none") != "none":
        problems.append(f"bias={config.get('bias')!r} (vLLM needs bias='none')")
    if config.get("use_dora"):
        problems.append("use_dora=true (vLLM does not serve DoRA)")
    if config.get("lora_bias"):
        problems.append("lora_bias=true (not served by vLLM)")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save={config['modules_to_save']} (vLLM rejects them)")
    if config.get("trainable_token_indices"):
        problems.append("trainable_token_indices (trained token embeddings: added tokens)")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in _PLAIN_INITS:
        problems.append(f"init_lora_weights={init!r} changes the base weights (not servable)")
    rank = _config_rank(config, path)
    if rank > VLLM_LORA_RANKS[-1]:
        problems.append(f"rank {rank} exceeds vLLM's largest --max-lora-rank {VLLM_LORA_RANKS[-1]}")
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    bad = sorted(VLLM_UNSERVABLE_TARGETS & {str(t).rsplit(".", 1)[-1] for t in targets})
    if bad:
        problems.append(f"LoRA on {bad} (vLLM does not serve embedding/head LoRA)")
    return problems


def _added_tokens(folder: Path) -> str | None:
    for extra in ("new_embeddings.safetensors", "new_embeddings.bin"):
        if (folder / extra).exists():
            return extra
    path = folder / "added_tokens.json"
    if not path.is_file():
        return None
    try:
        added = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError, RecursionError):
        return "added_tokens.json (unreadable)"
    return f"added_tokens.json: {len(added)} tokens" if added else None


def check_servable(adapter_dir: str | Path, *, name: str | None = None) -> None:
    """Check that an adapter folder is one vLLM (and peft) load unchanged.

    The one servability check: ``adapter_config.json`` (LoRA, bias ``none``, no DoRA, no
    ``lora_bias``, no ``modules_to_save``, no trained tokens, rank within vLLM's largest
    ``--max-lora-rank``, no LoRA on embeddings or the output head, plain initialisation),
    no added tokens (``added_tokens.json``, ``new_embeddings.*``), and the weights (only
    ``lora_A``/``lora_B`` tensors: no embedding or output-head weights, which would mean added
    tokens or trained heads). ``adapter_model.bin`` is accepted as vLLM accepts it, but only a
    safetensors file's tensor names can be checked (a ``.bin`` file is never unpickled here).

    Args:
        adapter_dir: The adapter folder.
        name: The adapter's served name (for the message).

    Raises:
        ConfigError: Naming the adapter and listing every problem.
    """
    folder = Path(adapter_dir)
    config = _adapter_config(folder, name)
    problems = _config_problems(config, folder / ADAPTER_CONFIG)
    added = _added_tokens(folder)
    if added:
        problems.append(f"added tokens ({added}): vLLM serves only the base vocabulary")
    weights = folder / ADAPTER_WEIGHTS
    if weights.is_file():
        names = read_safetensors_header(weights)
        foreign = [k for k in names if ".lora_A." not in k and ".lora_B." not in k]
        if foreign:
            problems.append(f"non-LoRA tensors {foreign[:5]} (added tokens or trained modules)")
    elif not (folder / _LEGACY_WEIGHTS).is_file():
        problems.append(f"no {ADAPTER_WEIGHTS}")
    if problems:
        raise ConfigError(f"{_label(folder, name)} cannot be served by vLLM: {'; '.join(problems)}")


# ------------------------------------------------------------------------------------------
# fit against the base model
# ------------------------------------------------------------------------------------------


def base_weight_shapes(base: Path) -> dict[str, tuple[str, Shape]]:
    """Tensor name → (dtype, shape) of a base model's safetensors weights (empty if none)."""
    files: list[Path] = []
    index = base / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text("utf-8")).get("weight_map", {})
        except (OSError, ValueError, RecursionError, AttributeError) as err:
            raise ConfigError(f"cannot read {index}: {err}") from None
        files = [base / str(f) for f in sorted(set(weight_map.values()))]
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


def _fit_problems(weights: Path, lookup: ModuleLookup) -> list[str]:
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
    return problems


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
    weights = adapter_dir / ADAPTER_WEIGHTS
    if lookup is None or not weights.is_file():
        return
    problems = _fit_problems(weights, lookup)
    if not problems:
        return
    trained_on = "an unknown base model"
    try:
        config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text("utf-8"))
        trained_on = repr(config.get("base_model_name_or_path") or "an unknown base model")
    except (OSError, ValueError, RecursionError, AttributeError):
        pass
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    raise ConfigError(
        f"adapter {name!r} at {adapter_dir} does not match the base model {base}: "
        f"{'; '.join(problems[:3])}{more}. The adapter was trained on {trained_on}; use "
        "adapters trained on this base model."
    )


def _check_adapters(base: Path, adapters: Mapping[str, Path]) -> None:
    """Servability, then fit against the base model's weight headers, for each adapter."""
    for name, folder in adapters.items():
        check_servable(folder, name=name)
    lookup = header_lookup(base_weight_shapes(base))
    for name, folder in adapters.items():
        check_adapter_fits(name, folder, base, lookup)


# ------------------------------------------------------------------------------------------
# the directory
# ------------------------------------------------------------------------------------------


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        if path.stat().st_size > _MAX_MANIFEST_BYTES:
            raise ConfigError(
                f"{path}: the manifest is larger than {_MAX_MANIFEST_BYTES} bytes; a manifest "
                "names a base folder and a few adapters"
            )
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError, RecursionError) as err:
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
    if not isinstance(data.get("base", "base"), str):
        raise ConfigError(f"{path}: 'base' must be a folder path (a string)")
    listed = data.get("adapters") or {}
    if not isinstance(listed, Mapping) or not all(isinstance(v, str) for v in listed.values()):
        raise ConfigError(f"{path}: 'adapters' must map names to folders")
    declared = data.get("identity_adapters") or []
    if not isinstance(declared, list) or not all(isinstance(n, str) for n in declared):
        raise ConfigError(f"{path}: 'identity_adapters' must be a list of adapter names")
    return data


def _inside(root: Path, what: str, rel: str, allow_outside: bool) -> Path:
    """``root / rel`` resolved; refused when it leads outside ``root`` (unless allowed)."""
    path = (root / rel).resolve()
    if not allow_outside and not path.is_relative_to(root):
        raise ConfigError(
            f"{root}: {what} {rel!r} points outside the model directory (to {path}); a model "
            f"directory must hold its own files. {OUTSIDE_HINT}"
        )
    return path


def _listed_adapters(root: Path, manifest: Mapping[str, Any], allow: bool) -> dict[str, Path]:
    adapters: dict[str, Path] = {}
    for name, rel in (manifest.get("adapters") or {}).items():
        folder = _inside(root, f"adapter {name!r} in {MANIFEST_NAME}:", rel, allow)
        if not folder.is_dir():
            raise ConfigError(
                f"{root}: adapter {name!r} is listed in {MANIFEST_NAME} but its folder "
                f"{folder} is missing; restore it or remove it from the manifest"
            )
        adapters[str(name)] = folder
    if (root / "adapters").is_dir():
        for sub in sorted((root / "adapters").iterdir()):
            if sub.is_dir() and sub.name not in adapters:
                adapters[sub.name] = _inside(root, "adapter folder", f"adapters/{sub.name}", allow)
    return adapters


def load_model_dir(path: str | Path, *, allow_outside: bool = False) -> ModelDir:
    """Resolve and check a model directory (see ``docs/model_dir.md``).

    Args:
        path: The model directory.
        allow_outside: Follow manifest paths and symbolic links that lead outside the
            directory (refused by default).

    Raises:
        ConfigError: If the layout is wrong, a path leads outside the directory, an adapter
            named in the manifest is missing, cannot be served or does not fit the base
            model — each naming the adapter and what is wrong.
    """
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"model directory {root} does not exist")
    manifest = _read_manifest(root)
    base = _inside(root, "the base model", str(manifest.get("base", "base")), allow_outside)
    if not (base / "config.json").is_file():
        raise ConfigError(
            f"{root}: not a samalign model directory: expected the base model in {base} "
            "(with config.json) and adapters in adapters/<name>/"
        )
    adapters = _listed_adapters(root, manifest, allow_outside)
    if not adapters:
        raise ConfigError(f"{root}: no adapters found; expected adapters/<name>/ folders")
    declared = manifest.get("identity_adapters") or []
    unknown = sorted(set(declared) - set(adapters))
    if unknown:
        raise ConfigError(
            f"{root / MANIFEST_NAME}: identity adapters {unknown} are not among the "
            f"adapters {sorted(adapters)}"
        )
    _check_adapters(base, adapters)
    identity = frozenset(n for n in declared if lora_b_is_zero(adapters[n]))
    return ModelDir(
        root=root, base=base, adapters=adapters, identity_adapters=identity, manifest=manifest
    )


def model_from_base(base: str | Path, adapters: Mapping[str, str | Path]) -> ModelDir:
    """A base model folder and adapters given by path, checked like a model directory's.

    Raises:
        ConfigError: No adapter, no ``config.json`` in ``base``, or an adapter that cannot be
            served or does not fit the base model.
    """
    if not adapters:
        raise ConfigError("give at least one adapter (--adapter NAME=PATH)")
    base_dir = Path(base).expanduser().resolve()
    if not (base_dir / "config.json").is_file():
        raise ConfigError(f"base model folder {base_dir} has no config.json")
    return ModelDir(root=None, base=base_dir, adapters={}).with_adapters(adapters)


__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "OUTSIDE_HINT",
    "VLLM_LORA_RANKS",
    "VLLM_UNSERVABLE_TARGETS",
    "LocalModelDir",
    "ModelDir",
    "ModuleLookup",
    "adapter_rank",
    "base_weight_shapes",
    "check_adapter_fits",
    "check_servable",
    "header_lookup",
    "load_model_dir",
    "lora_b_is_zero",
    "lora_rank_bucket",
    "model_from_base",
    "read_safetensors_header",
    "safetensors_header_bytes",
]
