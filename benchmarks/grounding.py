"""Grounding speed: how long ``find_occurrences`` takes, per matching tier and text length.

The worst case of grounding is the fuzzy tier (word-level LCS over every window of the text)
on a long, repetitive text, where many windows come close. This script times each tier on
synthetic texts of the given lengths (best of ``--repeat`` runs, so a busy machine shows less)
and prints one JSON object. It was a timed unit test once; speed belongs here.

    python benchmarks/grounding.py --words 100 1000 --repeat 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

from samalign.agents.grounding import find_occurrences


def _case(tier: str, n_words: int, rng: random.Random) -> tuple[str, str]:
    """A text of ``n_words`` words over an 8-word vocabulary and a mention for ``tier``."""
    vocab = [f"w{i}" for i in range(8)]
    words = [rng.choice(vocab) for _ in range(n_words)]
    middle = n_words // 2 - 5
    window = words[middle : middle + 10]
    if tier == "exact":
        mention = " ".join(window)
    elif tier == "normalized":
        mention = " ".join(window).upper()
    else:  # fuzzy: one word of ten is wrong
        mention = " ".join([*window[:5], "zzz", *window[6:]])
    return " ".join(words), mention


def time_tier(tier: str, n_words: int, repeat: int) -> dict[str, object]:
    """Best and median milliseconds of ``find_occurrences`` for one tier and length."""
    text, mention = _case(tier, n_words, random.Random(7))
    timings_ms: list[float] = []
    found = None
    for _ in range(repeat):
        started = time.perf_counter()
        spans, found = find_occurrences(text, mention)
        timings_ms.append((time.perf_counter() - started) * 1000)
    if found != tier or not spans:
        raise SystemExit(f"{tier} case on {n_words} words matched {found!r}, not {tier!r}")
    timings_ms.sort()
    return {
        "tier": tier,
        "words": n_words,
        "best_ms": round(timings_ms[0], 3),
        "median_ms": round(timings_ms[len(timings_ms) // 2], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    rows = [
        time_tier(tier, n, args.repeat)
        for n in args.words
        for tier in ("exact", "normalized", "fuzzy")
    ]
    print(json.dumps({"load_average": os.getloadavg(), "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
