"""``samalign view``: the review page of an extraction's output."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from samalign.batch.outputs import check_output_path
from samalign.cli.options import Subcommands, add_command
from samalign.view import View, read_view_records


def add_parser(sub: Subcommands) -> None:
    """Add ``samalign view``."""
    p = add_command(sub, "view", run)
    p.add_argument("input", type=Path, help="JSONL output of samalign extract")
    p.add_argument("-o", "--out", type=Path, help="HTML file to write (default: INPUT with .html)")
    p.add_argument("--title", help="page title (default: the input file's name)")


def run(args: argparse.Namespace) -> int:
    """Write a self-contained HTML page to review an extraction's output.

    Read the JSONL written by samalign extract and write one HTML file (no network needed to open
    it) showing each text with its entities highlighted and labelled, its triplets, the triplets the
    anchor filter removed with the reason, diagnostics and per-stage usage, with filters by label
    and by diagnostic kind (extract's JSONL does not keep what CCR dropped; samalign.visualize on
    graph results and the evaluation pages show it). samalign eval writes the same page for the
    sentences that lost or gained something (NAME.view.html beside its report).
    """
    out: Path = args.out or args.input.with_suffix(".html")
    check_output_path(out, [args.input], flag="--out")
    records = list(read_view_records(args.input))
    View(records, title=args.title or args.input.name).save(out)
    print(f"wrote {out} ({len(records)} records)", file=sys.stderr)
    return 0


__all__ = ["add_parser", "run"]
