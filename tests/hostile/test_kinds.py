"""The suite's own bookkeeping: enough kinds, and docs/reliability.md counts them right."""

from __future__ import annotations

import importlib
import re
from collections import Counter
from pathlib import Path

from harness import AREAS, KINDS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


def setup_module() -> None:
    """Import every case module (they register their kinds), also when run alone."""
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        importlib.import_module(path.stem)


def test_at_least_60_distinct_kinds() -> None:
    assert len(KINDS) >= 60, len(KINDS)
    assert all(area in AREAS for area in KINDS.values())


def test_reliability_doc_table_matches_the_suite() -> None:
    counts = Counter(KINDS.values())
    text = DOCS.read_text(encoding="utf-8")
    table = dict(re.findall(r"^\| `(\w+)` \| (\d+) \|", text, flags=re.MULTILINE))
    assert {area: int(n) for area, n in table.items()} == dict(counts), (
        "update the table of docs/reliability.md: " + str(dict(counts))
    )
    total = re.search(r"^\| \*\*total\*\* \| \*\*(\d+)\*\* \|", text, flags=re.MULTILINE)
    assert total is not None and int(total.group(1)) == len(KINDS)
