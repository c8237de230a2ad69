"""The joint entity + relation graph: SAM-NER, then the AnchorAlign relation decoders."""

from __future__ import annotations

from typing import Any, Unpack

from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from samalign.agents.anchor_filter import anchor_filter_node
from samalign.agents.recover import recover_node
from samalign.agents.relations import relation_check_node, relation_node
from samalign.graphs.compile import CompileOptions, add_step, compile_graph
from samalign.graphs.context import RunContext
from samalign.graphs.ner import add_ner_stages
from samalign.graphs.options import PipelineOptions
from samalign.graphs.schemas import JointOutput
from samalign.graphs.state import JointState, ParallelJointState

JointGraph = CompiledStateGraph[JointState, RunContext, Any, Any]


def add_relation_stages(
    graph: StateGraph[Any, RunContext, Any, Any], options: PipelineOptions, after: str
) -> str:
    """Add the relation nodes after node ``after``; return the name of the last node.

    With ``options.relation_schedule="parallel"`` the decoders start at START (the graph's
    state must be :class:`~samalign.graphs.state.ParallelJointState`) and a
    ``relations_check`` node joins them with node ``after``.
    """
    schedule = options.effective_relation_schedule
    parallel = schedule == "parallel"
    decoders: list[str] = []
    for stage in options.relation_stages:
        graph.add_node(stage, relation_node(stage, options, schedule))  # type: ignore[arg-type]
        graph.add_edge(START if parallel else after, stage)
        decoders.append(stage)
    if parallel:
        graph.add_node(
            "relations_check",
            relation_check_node(options.relation_stages, options),  # type: ignore[arg-type]
        )
        graph.add_edge([after, *decoders], "relations_check")
        decoders = ["relations_check"]
    constraint = anchor_filter_node(
        aggregate=options.aggregate_relations, constrain=options.anchor_constraint
    )
    last = add_step(graph, decoders, "anchor_filter", constraint)
    return (
        add_step(graph, last, "recover", recover_node(options)) if options.recover_dropped else last
    )


def build_joint_graph(
    options: PipelineOptions | None = None, **compile: Unpack[CompileOptions]
) -> JointGraph:
    """Build the joint entity + relation graph.

    The SAM-NER stages (with any of their ablations) run first; then the forward
    (subject-centric) and reverse (object-centric) relation decoders run in parallel on the
    sentence, each checking its triples against the text, the domain's relation types and
    argument constraints and the NER entities; the anchor filter pools them and keeps the
    triplets whose two mentions NER recognised (AnchorAlign Eq. 13).
    ``options.aggregate_relations=False`` removes the reverse decoder,
    ``options.anchor_constraint=False`` keeps every candidate, and
    ``options.recover_dropped=True`` adds the ``recover`` node.
    ``options.relation_schedule`` says when the decoders are asked: by default only for a
    sentence whose entities could form a triplet the filter keeps (the others' requests
    could not change the output); ``always``; or ``parallel`` with the NER extractors (lower
    latency, more requests), their answers checked by a ``relations_check`` node.

    Args:
        options: Ablation switches and agent settings (defaults: the full pipelines).
        **compile: :class:`~samalign.graphs.compile.CompileOptions` (the name defaults to
            ``samalign_joint``; ``output="result"`` returns only the :class:`JointOutput` fields).

    Returns:
        A compiled graph. Invoke it with ``{"text": ...}`` and
        ``context=RunContext(domain, models)`` (a domain with relation types, and models for
        ``options.joint_model_stages``); the result holds ``entities``, ``triplets`` (kept),
        ``dropped_triplets`` (with reasons), ``forward_triplets`` and ``reverse_triplets``.

    Example:
        >>> graph = build_joint_graph()
        >>> models = vllm_server_models(url, stages=PipelineOptions().joint_model_stages)
        >>> ctx = RunContext(domain="conll04", models=models)
        >>> graph.invoke({"text": "John Smith works for IBM in Armonk."}, context=ctx)
    """
    options = options or PipelineOptions()
    state = ParallelJointState if options.relation_schedule == "parallel" else JointState

    def wire(graph: StateGraph[Any, RunContext, Any, Any]) -> str:
        return add_relation_stages(graph, options, add_ner_stages(graph, options))

    return compile_graph(state, JointOutput, wire, compile, name="samalign_joint")


__all__ = ["JointGraph", "add_relation_stages", "build_joint_graph"]
