"""Command line: ``samalign extract | eval | serve | domains | finetune | demo | view``.

One module per command (:mod:`samalign.cli.extract`, :mod:`~samalign.cli.eval`,
:mod:`~samalign.cli.serve`, :mod:`~samalign.cli.domains`, :mod:`~samalign.cli.finetune`,
:mod:`~samalign.cli.demo`, :mod:`~samalign.cli.view`); the flags several commands share are
defined once in :mod:`samalign.cli.options`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from samalign.cli import demo, domains, extract, finetune, serve, view
from samalign.cli import eval as eval_command
from samalign.cli.options import MODEL_DIR_ENV, check_numbers
from samalign.errors import SamalignError


def build_parser() -> argparse.ArgumentParser:
    """The ``samalign`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="samalign",
        description="Zero-shot NER with SAM-NER graphs over vLLM LoRA adapters.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (extract, eval_command, serve, domains, finetune, demo, view):
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 on a samalign error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        check_numbers(parser, args)
        status: int = args.func(args)
    except SamalignError as err:
        print(f"samalign: error: {err}", file=sys.stderr)
        return 2
    except RecursionError:  # a reader that did not bound its input's nesting: still no traceback
        print(
            "samalign: error: an input is nested too deeply to read (more levels of brackets or "
            "indentation than Python handles); check the files given to this command",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("samalign: interrupted; rerun with the same --out to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `samalign domains | head`: the reader went away
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["MODEL_DIR_ENV", "build_parser", "main"]
