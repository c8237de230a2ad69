"""What the benchmarks share: their sentences and their domains."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from samalign import load_domain
from samalign.evaluation import read_crossner, read_spert
from samalign.prompts.domain import Domain

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""The shared data folder beside the checkout (``../shared/data``)."""

LLAMA3_8B: dict[str, Any] = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "rope_theta": 500000.0,
    "max_position_embeddings": 8192,
}
"""Llama-3-8B's shape (for randomly initialised GPU benchmark models)."""


def bench_texts(data: Path, domain: str, n: int) -> list[tuple[str, str]]:
    """The first ``n`` distinct sentences of the domain's dev split (then test, if needed).

    CrossNER for ``crossner_*`` domains; the SpERT files (``dev_triples.json``) of CoNLL04,
    SciERC or ADE for their domains (``demo``: CoNLL04). Returns ``(id, text)`` pairs.
    """
    out: dict[str, str] = {}
    if domain.startswith("crossner_"):
        folder = data / "crossner" / domain.removeprefix("crossner_")
        for split in ("dev", "test"):
            for s in read_crossner(folder / f"{split}.txt"):
                out.setdefault(s.text, s.id)
    else:
        name = "conll04" if domain == "demo" else domain
        for split in ("dev", "test"):
            path = data / name / f"{split}_triples.json"
            if path.is_file():
                for s in read_spert(path, prefix=f"{name}-{split}"):
                    out.setdefault(s.text, s.id)
    return [(sid, text) for text, sid in list(out.items())[:n]]


def bench_domain(name: str) -> Domain:
    """A domain by name or YAML path; ``demo``: the demo's CoNLL04 domain (compact prompts)."""
    if name == "demo":
        from samalign.demo import demo_domain

        return demo_domain()
    return load_domain(name)


_TAGS = re.compile(r"</?ENT>")


def sentence_keys(texts: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(sentence id, needle) pairs that find a sentence in a prompt, longest needle first.

    Each sentence has two needles: its raw text (the calibrator's ``Text:`` line) and its
    JSON-escaped text (the JSON prompts); longest first, so a sentence contained in another
    is not matched by mistake.
    """
    keys = {(sid, t) for sid, t in texts} | {
        (sid, json.dumps(t, ensure_ascii=False)[1:-1]) for sid, t in texts
    }
    return sorted(keys, key=lambda k: (-len(k[1]), k[0]))


def sentence_of(body: dict[str, Any], keys: Sequence[tuple[str, str]]) -> str:
    """The id of the sentence a recorded request is about.

    Raises:
        ValueError: No sentence occurs in the request's messages.
    """
    content = _TAGS.sub("", "".join(str(m.get("content", "")) for m in body["messages"]))
    for sid, needle in keys:
        if needle in content:
            return sid
    raise ValueError(f"cannot tell which sentence a {body['model']} request is about")
