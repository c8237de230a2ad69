"""Document-graph scale benchmark: a 1 MB document, with a model-free sentence graph.

Assembles a document of ``--chars`` characters from CrossNER dev sentences (repeated), runs
the document graph over it with a sentence graph that needs no model (every capitalised word
is an entity), and compares with ``abatch`` of the same sentences through the same sentence
graph. This isolates what the document machinery costs (splitting, ``Send`` fan-out in waves,
offset shifting, merging) and how much memory it holds. Prints one JSON object.

    python benchmarks/document_scale.py --chars 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from langgraph.graph import END, START, StateGraph

from samalign.evaluation import read_crossner
from samalign.graphs import build_document_graph
from samalign.graphs.sentences import iter_sentences
from samalign.graphs.state import NerState
from samalign.types import Entity, Span

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "crossner"
_WORD = re.compile(r"\b[A-Z][A-Za-z]+\b")


def word_graph() -> Any:
    """A sentence graph without a model: capitalised words are entities."""

    def extract(state: NerState) -> dict[str, Any]:
        return {
            "entities": [
                Entity(span=Span.of(state.text, m.start(), m.end()), label="word")
                for m in _WORD.finditer(state.text)
            ]
        }

    graph: StateGraph[NerState, Any, Any, Any] = StateGraph(NerState)
    graph.add_node("extract", extract)
    graph.add_edge(START, "extract")
    graph.add_edge("extract", END)
    return graph.compile()


def document(chars: int, data: Path) -> str:
    sentences = [s.text for s in read_crossner(data / "ai" / "dev.txt")]
    parts: list[str] = []
    size = 0
    i = 0
    while size < chars:
        text = sentences[i % len(sentences)]
        parts.append(text)
        size += len(text) + 1
        i += 1
    return " ".join(parts)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    doc = document(args.chars, args.data)
    sentences = [s.text for s in iter_sentences(doc)]
    sentence_graph = word_graph()
    graph = build_document_graph(sentence_graph, wave_size=args.wave_size)
    config: Any = {"max_concurrency": args.concurrency}

    start = time.perf_counter()
    batch = await sentence_graph.abatch([{"text": t} for t in sentences], config)
    abatch_s = time.perf_counter() - start
    del batch

    start = time.perf_counter()
    result = await graph.ainvoke({"text": doc}, config)
    document_s = time.perf_counter() - start
    del result
    # A second pass under tracemalloc (slower) measures the peak memory the graph holds.
    tracemalloc.start()
    result = await graph.ainvoke({"text": doc}, config)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    entities = result["entities"]
    bad = sum(doc[e.start : e.end] != e.text for e in entities)
    return {
        "document_chars": len(doc),
        "sentences": len(sentences),
        "wave_size": args.wave_size,
        "concurrency": args.concurrency,
        "entities": len(entities),
        "entities_off_text": bad,
        "abatch_seconds": round(abatch_s, 3),
        "document_seconds": round(document_s, 3),
        "document_vs_abatch": round(abatch_s / document_s, 4),
        "document_peak_traced_mb": round(peak / 2**20, 1),
        "document_mb": round(len(doc.encode()) / 2**20, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=1_000_000)
    parser.add_argument("--wave-size", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--data", type=Path, default=DATA, help="CrossNER folder")
    args = parser.parse_args()
    json.dump(asyncio.run(main_async(args)), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
