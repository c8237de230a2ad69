"""The NER graph: {anchor, explorer} → consensus → archetype → calibrate.

With ``ner_mode="supervised"`` the graph is the one ``supervised_ner`` stage instead
(AnchorAlign's supervised setting).
"""

from __future__ import annotations

from typing import Any, Unpack

from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from samalign.agents.archetype import archetype_node
from samalign.agents.calibrate import calibrate_node
from samalign.agents.candidates import consensus_node, merge_node
from samalign.agents.extractors import extractor_node
from samalign.agents.supervised import supervised_ner_node
from samalign.graphs.compile import CompileOptions, add_step, compile_graph
from samalign.graphs.context import RunContext
from samalign.graphs.options import PipelineOptions
from samalign.graphs.schemas import NerOutput
from samalign.graphs.state import NerState

NerGraph = CompiledStateGraph[NerState, RunContext, Any, Any]


def add_ner_stages(graph: StateGraph[Any, RunContext, Any, Any], options: PipelineOptions) -> str:
    """Add the NER nodes to ``graph``, wired from START; return the name of the last node.

    ``ner_mode="supervised"`` adds the one ``supervised_ner`` node (AnchorAlign's supervised
    NER, whose types are final) instead of the SAM-NER stages.
    """
    if options.supervised:
        graph.add_node("supervised_ner", supervised_ner_node(options))
        graph.add_edge(START, "supervised_ner")
        return "supervised_ner"
    extractors: list[str] = []
    if options.use_anchor:
        graph.add_node("anchor", extractor_node("anchor", options))
        extractors.append("anchor")
    if options.use_explorer:
        graph.add_node("explorer", extractor_node("explorer", options))
        extractors.append("explorer")
    for name in extractors:
        graph.add_edge(START, name)
    join = "consensus" if options.runs_consensus else "merge"
    join_node = consensus_node(options) if join == "consensus" else merge_node(options)
    last = add_step(graph, extractors, join, join_node)
    typing = archetype_node(options, direct=not options.use_calibration)
    last = add_step(graph, last, "archetype", typing)
    if options.use_calibration:
        last = add_step(graph, last, "calibrate", calibrate_node(options))
    return last


def build_ner_graph(
    options: PipelineOptions | None = None, **compile: Unpack[CompileOptions]
) -> NerGraph:
    """Build the SAM-NER graph.

    The anchor and explorer extractors run in parallel; their mentions are denoised by
    Collaborative Consensus Refinement, grounded to spans, classified into archetypes and
    calibrated to the domain's types. The options' ablation switches change the graph's shape;
    ``ner_mode="supervised"`` replaces all of it with the ``supervised_ner`` stage.

    Args:
        options: Ablation switches and agent settings (defaults: the full pipeline).
        **compile: :class:`~samalign.graphs.compile.CompileOptions` (the name defaults to
            ``samalign_ner``; ``output="result"`` returns only the :class:`NerOutput` fields).

    Returns:
        A compiled graph. Invoke it with ``{"text": ...}`` and
        ``context=RunContext(domain, models)``; the result's ``entities`` are grounded spans
        with ``label``, ``archetype`` and ``sources``.

    Example:
        >>> graph = build_ner_graph()
        >>> ctx = RunContext(domain="crossner_ai", models=vllm_server_models(url))
        >>> graph.invoke({"text": "LSTM was proposed by Sepp Hochreiter."}, context=ctx)
    """
    options = options or PipelineOptions()
    return compile_graph(
        NerState,
        NerOutput,
        lambda graph: add_ner_stages(graph, options),
        compile,
        name="samalign_ner",
    )


__all__ = ["NerGraph", "add_ner_stages", "build_ner_graph"]
