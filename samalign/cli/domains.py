"""``samalign domains``: list the built-in domains, or show one."""

from __future__ import annotations

import argparse

from samalign.cli.options import Subcommands, add_command
from samalign.prompts import builtin_domains, load_domain


def add_parser(sub: Subcommands) -> None:
    """Add ``samalign domains``."""
    p = add_command(sub, "domains", run)
    p.add_argument("name", nargs="?", help="show this domain's types and definitions")


def run(args: argparse.Namespace) -> int:
    """List built-in domains, or show one."""
    if args.name:
        domain = load_domain(args.name)
        print(f"{domain.name}: {domain.description}")
        for t in domain.entity_types:
            arch = t.archetype.value if t.archetype else "-"
            print(f"  {t.label:<20} {t.name!r:<28} [{arch}] {t.definition}")
        if domain.relation_types:
            print("relations:")
        for r in domain.relation_types:
            kinds = f"{'|'.join(r.head_types) or '*'} -> {'|'.join(r.tail_types) or '*'}"
            print(f"  {r.label:<20} {r.name!r:<28} [{kinds}] {r.definition}")
        return 0
    for name in builtin_domains():
        domain = load_domain(name)
        print(
            f"{name:<22} {len(domain.entity_types):>3} entity types "
            f"{len(domain.relation_types):>3} relation types  {domain.description}"
        )
    return 0


__all__ = ["add_parser", "run"]
