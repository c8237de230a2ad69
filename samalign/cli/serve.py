"""``samalign serve``: a vLLM OpenAI-compatible server with one LoRA adapter per stage."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from samalign.cli.options import Subcommands, add_command, bounded, parse_pairs
from samalign.errors import ConfigError
from samalign.serving.launcher import IDENTITY_STAGE, build_serve_command, serve_target


def add_parser(sub: Subcommands) -> None:
    """Add ``samalign serve``."""
    p = add_command(sub, "serve", run)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--model-dir", type=Path, help="model directory (base/ + adapters/<name>/ + manifest)"
    )
    src.add_argument("--base", type=Path, help="base model folder (use with --adapter)")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH")
    p.add_argument("--host", default="127.0.0.1")
    bounded(p.add_argument("--port", type=int, default=8000), minimum=1, maximum=65535)
    p.add_argument("--python", help="interpreter of the environment vLLM is installed in")
    bounded(p.add_argument("--max-model-len", type=int, help="context length limit"), minimum=1)
    p.add_argument(
        "--allow-json-whitespace",
        action="store_true",
        help="let constrained JSON contain free whitespace (default: compact JSON, which keeps "
        "weak models from running away on whitespace)",
    )
    p.add_argument(
        "--no-identity",
        action="store_true",
        help="do not add an identity adapter as 'calibrate' when none is given",
    )
    p.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="let the model directory's manifest (or links in it) point outside the directory "
        "(refused by default: a downloaded directory could point anywhere on this machine)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the command, do not run it")
    p.add_argument("vllm_args", nargs=argparse.REMAINDER, help="-- then extra vLLM arguments")


def run(args: argparse.Namespace) -> int:
    """Start a vLLM OpenAI-compatible server with one LoRA adapter per stage.

    Serve a samalign model directory (base/ + adapters/<name>/ + optional samalign-model.json, see
    docs/model_dir.md) or a base model with named adapters through vLLM. Binds 127.0.0.1 unless
    --host says otherwise.
    """
    extra = [a for a in args.vllm_args if a != "--"]
    model, identity = serve_target(
        args.model_dir,
        base=args.base,
        adapters=parse_pairs(args.adapter, "--adapter"),
        identity=not args.no_identity,
        allow_outside=args.allow_outside_paths,
    )
    if identity is not None:
        like = next(iter(model.adapters.values()))
        print(
            f"samalign: no {IDENTITY_STAGE!r} adapter given; serving an identity adapter (zero "
            f"LoRA update, shaped like {like}) as {IDENTITY_STAGE!r}",
            file=sys.stderr,
        )
    command = build_serve_command(
        model,
        python=args.python,
        host=args.host,
        port=args.port,
        max_model_len=args.max_model_len,
        compact_json=not args.allow_json_whitespace,
        extra_args=extra,
    )
    if args.dry_run:
        print(command.shell())
        return 0
    env = dict(os.environ)
    for key, value in command.env.items():
        env.setdefault(key, value)
    print(f"samalign: starting {command.shell()}", file=sys.stderr, flush=True)
    try:
        os.execvpe(command.argv[0], command.argv, env)
    except OSError as err:
        raise ConfigError(
            f"cannot run {command.argv[0]}: {err.strerror}; pass --python with the interpreter "
            "of the environment vLLM is installed in"
        ) from None


__all__ = ["add_parser", "run"]
