"""The NER graph: {anchor, explorer} → consensus → archetype → calibrate.

With ``ner_mode="supervised"`` the graph is the one ``supervised_ner`` stage instead
(AnchorAlign's supervised setting).
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer

from samalign.agents.archetype import archetype_node
from samalign.agents.calibrate import calibrate_node
from samalign.agents.candidates import consensus_node, merge_node
from samalign.agents.extractors import extractor_node
from samalign.agents.supervised import supervised_ner_node
from samalign.graphs.context import RunContext
from samalign.graphs.options import PipelineOptions
from samalign.graphs.schemas import NerOutput, OutputKind, TextInput
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
    graph.add_node(join, consensus_node(options) if join == "consensus" else merge_node(options))
    graph.add_edge(extractors if len(extractors) > 1 else extractors[0], join)
    graph.add_node("archetype", archetype_node(options, direct=not options.use_calibration))
    graph.add_edge(join, "archetype")
    if not options.use_calibration:
        return "archetype"
    graph.add_node("calibrate", calibrate_node(options))
    graph.add_edge("archetype", "calibrate")
    return "calibrate"


def build_ner_graph(
    options: PipelineOptions | None = None,
    *,
    checkpointer: Checkpointer = None,
    name: str = "samalign_ner",
    output: OutputKind = "state",
) -> NerGraph:
    """Build the SAM-NER graph.

    The anchor and explorer extractors run in parallel; their mentions are denoised by
    Collaborative Consensus Refinement, grounded to spans, classified into archetypes and
    calibrated to the domain's types. The options' ablation switches change the graph's shape;
    ``ner_mode="supervised"`` replaces all of it with the ``supervised_ner`` stage.

    Args:
        options: Ablation switches and agent settings (defaults: the full pipeline).
        checkpointer: Optional LangGraph checkpointer.
        name: Graph name (shown in traces and when used as a subgraph).
        output: ``state`` (default): ``invoke`` returns the whole state, every stage's
            intermediate result included; ``result``: only the :class:`NerOutput` fields (what a
            server shows).

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
    graph: StateGraph[NerState, RunContext, Any, Any] = StateGraph(
        NerState,
        context_schema=RunContext,
        input_schema=TextInput,
        output_schema=NerOutput if output == "result" else NerState,
    )
    last = add_ner_stages(graph, options)
    graph.add_edge(last, END)
    return graph.compile(checkpointer=checkpointer, name=name)


__all__ = ["NerGraph", "add_ner_stages", "build_ner_graph"]
