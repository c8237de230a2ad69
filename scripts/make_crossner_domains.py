#!/usr/bin/env python
"""Drafting and checking aid for the built-in CrossNER domain files.

The product is the hand-checked YAML in ``samalign/prompts/domains/crossner_*.yaml``; this
script does not write it. It has two commands:

``show``  print, per CrossNER label, the two source definitions side by side (GoLLIE
          guideline, SLIMER ``Definition``), flagging the GoLLIE entries known to be wrong
          and the SLIMER answers that are truncated JSON, plus frequent gold entities from the
          data, so a definition can be drafted and checked by hand.
``check`` validate the YAML files: label set and order equal the CrossNER BIO label set,
          every archetype is one of the 14, labels and names unique, definitions non-empty
          and short, archetypes.yaml has the 14 archetypes of Table 5 in order.

Usage::

    python scripts/make_crossner_domains.py show ai [--data /work/shared/data]
    python scripts/make_crossner_domains.py check [--data /work/shared/data]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

import yaml

from samalign.types import Archetype

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "samalign" / "prompts"
DOMAINS = ("ai", "literature", "music", "politics", "science")
ARCHETYPES = tuple(a.value for a in Archetype)  # Table 5, in order
# GoLLIE key naming differs from the CrossNER tags (see crossner_label_definitions/SOURCE.md).
GOLLIE_DOMAIN = {"science": "naturalscience"}
GOLLIE_LABEL = {
    "organisation": "organization",
    "misc": "miscellaneous",
    "programlang": "programminglanguage",
    "metrics": "metric",
}
GOLLIE_WRONG = {("music", "song"), ("music", "band"), ("music", "award")}
MAX_WORDS = 60


def bio_spans(path: Path) -> list[tuple[str, str]]:
    """(label, surface) of every entity span in a CrossNER BIO file."""
    spans: list[tuple[str, str]] = []
    label: str | None = None
    toks: list[str] = []
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        token, tag = line.split("\t") if line else ("", "O")
        if tag.startswith("I-") and label == tag[2:]:
            toks.append(token)
            continue
        if label:
            spans.append((label, " ".join(toks)))
        label, toks = (tag[2:], [token]) if tag != "O" else (None, [])
    return spans


def data_labels(data: Path, domain: str) -> tuple[set[str], dict[str, Counter[str]]]:
    labels: set[str] = set()
    examples: dict[str, Counter[str]] = defaultdict(Counter)
    for split in ("train", "dev", "test"):
        path = data / "crossner" / domain / f"{split}.txt"
        for line in path.read_text(encoding="utf-8").splitlines():
            if line and line.split("\t")[1] != "O":
                labels.add(line.split("\t")[1][2:])
        for label, surface in bio_spans(data / "crossner" / domain / f"{split}.txt"):
            examples[label][surface] += 1
    return labels, examples


def source_order(data: Path, domain: str) -> list[str]:
    """The label list of ``crossner/SOURCE.md`` for one domain."""
    text = (data / "crossner" / "SOURCE.md").read_text(encoding="utf-8")
    m = re.search(rf"^- {domain} \(\d+\): (.+)$", text, re.MULTILINE)
    if not m:
        raise SystemExit(f"no label list for {domain} in crossner/SOURCE.md")
    return [x.strip() for x in m.group(1).split(",")]


def slimer_definition(gpt_answer: str) -> tuple[str, bool]:
    """SLIMER's ``Definition`` and whether the answer was valid JSON (6 are truncated)."""
    try:
        return json.loads(gpt_answer)["Definition"], True
    except json.JSONDecodeError:
        m = re.search(r'"Definition"\s*:\s*"((?:[^"\\]|\\.)*)"', gpt_answer)
        if not m:
            raise
        return json.loads(f'"{m.group(1)}"'), False


def cmd_show(data: Path, domain: str) -> None:
    defs = data / "crossner_label_definitions"
    gollie_path = defs / "gollie" / "crossner_guidelines_gold.json"
    gollie = json.loads(gollie_path.read_text())["GUIDELINES"]
    slimer_path = defs / "slimer" / f"{domain}_NE_definitions.json"
    slimer = {o["named_entity"]: o for o in json.loads(slimer_path.read_text())}
    _, examples = data_labels(data, domain)
    for label in source_order(data, domain):
        key = f"crossner_{GOLLIE_DOMAIN.get(domain, domain)}_{GOLLIE_LABEL.get(label, label)}"
        s_def, ok = slimer_definition(slimer[label]["gpt_answer"])
        wrong = " [WRONG upstream: do not use]" if (domain, label) in GOLLIE_WRONG else ""
        print(f"== {label}  (SLIMER real_name: {slimer[label]['real_name']!r})")
        print(f"   GoLLIE{wrong}: {gollie[key]['en'][0].strip()}")
        print(f"   SLIMER{'' if ok else ' [truncated JSON]'}: {s_def}")
        print(f"   data: {', '.join(s for s, _ in examples[label].most_common(12))}")


def cmd_check(data: Path) -> int:
    errors: list[str] = []
    table = yaml.safe_load((PROMPTS / "archetypes.yaml").read_text(encoding="utf-8"))
    if [a["name"] for a in table["archetypes"]] != list(ARCHETYPES):
        errors.append("archetypes.yaml: names/order differ from Table 5")
    seen: dict[str, str] = {}
    for a in table["archetypes"]:
        if not a.get("definition", "").strip() or not a.get("fine_grained_types"):
            errors.append(f"archetypes.yaml: {a['name']} lacks definition or fine_grained_types")
        for t in a["fine_grained_types"]:
            if seen.setdefault(t.casefold(), a["name"]) != a["name"]:
                errors.append(f"archetypes.yaml: {t!r} mapped to two archetypes")
    for domain in DOMAINS:
        path = PROMPTS / "domains" / f"crossner_{domain}.yaml"
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        types = doc["entity_types"]
        labels = [t["label"] for t in types]
        names = [t["name"].casefold() for t in types]
        data_set, _ = data_labels(data, domain)
        if doc.get("name") != f"crossner_{domain}":
            errors.append(f"{path.name}: name is {doc.get('name')!r}")
        if set(labels) != data_set or len(labels) != len(data_set):
            errors.append(f"{path.name}: labels {sorted(labels)} != data {sorted(data_set)}")
        if labels != source_order(data, domain):
            errors.append(f"{path.name}: label order differs from crossner/SOURCE.md")
        if len(set(names)) != len(names):
            errors.append(f"{path.name}: duplicate names")
        for t in types:
            if set(t) != {"label", "name", "definition", "archetype"}:
                errors.append(f"{path.name}: {t.get('label')}: fields {sorted(t)}")
            if t.get("archetype") not in ARCHETYPES:
                errors.append(f"{path.name}: {t['label']}: archetype {t.get('archetype')!r}")
            words = len(str(t.get("definition", "")).split())
            if not 3 <= words <= MAX_WORDS:
                errors.append(f"{path.name}: {t['label']}: definition has {words} words")
        pairs = ", ".join(f"{t['label']}={t['archetype']}" for t in types)
        print(f"{domain:10s} {len(labels):2d} labels: {pairs}")
    for e in errors:
        print("ERROR", e, file=sys.stderr)
    print("OK" if not errors else f"{len(errors)} error(s)")
    return 1 if errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("show", "check"))
    parser.add_argument("domain", nargs="?", choices=DOMAINS)
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    args = parser.parse_args()
    if args.command == "show":
        if not args.domain:
            parser.error("show needs a domain")
        cmd_show(args.data, args.domain)
        return 0
    return cmd_check(args.data)


if __name__ == "__main__":
    sys.exit(main())
