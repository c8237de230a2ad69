"""Run the SAM-NER graph from Python against a vLLM server.

    python examples/ner_quickstart.py --server http://127.0.0.1:8000 --domain crossner_ai

The server must serve one adapter per stage (anchor, explorer, archetype, calibrate), e.g.
`samalign serve --model-dir DIR`. Without real weights, build a tiny model first:
`python -m samalign.testing build-tiny runs/tiny-model`.
"""

from __future__ import annotations

import argparse
import asyncio

from samalign import NerResult, PipelineOptions, RunContext, build_ner_graph, vllm_server_models

SENTENCES = [
    "Sepp Hochreiter and Jürgen Schmidhuber introduced long short-term memory networks in 1997 .",
    "The conference on Neural Information Processing Systems was held in Vancouver , Canada .",
]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", default="http://127.0.0.1:8000")
    parser.add_argument("--domain", default="crossner_ai")
    parser.add_argument("--max-tokens", type=int, default=None)
    args = parser.parse_args()

    graph = build_ner_graph(PipelineOptions(max_completion_tokens=args.max_tokens))
    context = RunContext(domain=args.domain, models=vllm_server_models(args.server))
    states = await graph.abatch([{"text": s} for s in SENTENCES], context=context)
    for state in states:
        result = NerResult.from_state(state)  # the graph returns a dict; read it typed
        print(result.text)
        for entity in result.entities:
            print(
                f"  [{entity.start}:{entity.end}] {entity.text!r} -> {entity.label} "
                f"(archetype {entity.archetype}, from {', '.join(entity.sources)})"
            )
        for diagnostic in result.diagnostics:
            print(f"  note ({diagnostic.stage}, {diagnostic.kind}): {diagnostic.message[:100]}")
        print(f"  {result.total_usage.calls} model calls")


if __name__ == "__main__":
    asyncio.run(main())
