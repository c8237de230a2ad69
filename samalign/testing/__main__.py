"""Command line for test helpers: ``python -m samalign.testing build-tiny OUT_DIR``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from samalign.errors import SamalignError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m samalign.testing",
        description="Helpers for samalign's tests and smoke checks.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tiny = commands.add_parser(
        "build-tiny",
        help="build a tiny random model directory (base model + LoRA adapters), offline",
        description=(
            "Build a tiny random Llama with a byte-level BPE tokenizer and one LoRA adapter per "
            "pipeline stage into OUT_DIR (which must not exist or be empty). Prints the path."
        ),
    )
    tiny.add_argument("out_dir", metavar="OUT_DIR", help="directory to create")
    tiny.add_argument("--seed", type=int, default=0, help="seed for all weights (default 0)")
    tiny.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        The process exit status: 0 on success, 2 on a samalign error.
    """
    args = _parser().parse_args(argv)
    if args.command == "build-tiny":
        from samalign.testing.tiny import build_tiny_model

        try:
            path = build_tiny_model(args.out_dir, seed=args.seed, rank=args.rank)
        except SamalignError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
