"""How every samalign graph is put together: its schemas, its wiring helpers, its compile options.

Each builder (``build_ner_graph``, ``build_joint_graph``, ``build_document_graph``) wires its
nodes with :func:`add_step` and hands them to :func:`compile_graph`, which gives the graph
its state, the run context, :class:`~samalign.graphs.schemas.TextInput` as input, the whole
state or only the result as output, and compiles it with the caller's
:class:`CompileOptions`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict, TypeVar

from langgraph.graph import END, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer
from pydantic import BaseModel

from samalign.graphs.context import RunContext
from samalign.graphs.schemas import OutputKind, TextInput

StateT = TypeVar("StateT", bound=BaseModel)


class CompileOptions(TypedDict, total=False):
    """How a graph builder compiles its graph (every key optional).

    Attributes:
        checkpointer: Optional LangGraph checkpointer.
        name: Graph name (shown in traces and when used as a subgraph; default: the
            graph's own, e.g. ``samalign_ner``).
        output: ``state`` (default): ``invoke`` returns the whole state, every stage's
            intermediate result included; ``result``: only the fields of the graph's output
            schema (what a server shows).
    """

    checkpointer: Checkpointer
    name: str
    output: OutputKind


def add_step(
    graph: StateGraph[Any, RunContext, Any, Any], after: str | list[str], name: str, node: Any
) -> str:
    """Add ``node`` as ``name``, run after node(s) ``after`` (all of them); return ``name``."""
    graph.add_node(name, node)
    graph.add_edge(after if isinstance(after, str) or len(after) > 1 else after[0], name)
    return name


def compile_graph(
    state: type[StateT],
    result: type[BaseModel],
    wire: Callable[[StateGraph[Any, RunContext, Any, Any]], str],
    options: CompileOptions,
    *,
    name: str,
) -> CompiledStateGraph[StateT, RunContext, Any, Any]:
    """A compiled graph over ``state``, its nodes added by ``wire``.

    Args:
        state: The graph's state model.
        result: The output schema with ``output="result"``.
        wire: Adds the nodes (from START) and returns the name of the last, which ends at END.
        options: The caller's compile options.
        name: The graph's default name.
    """
    graph: StateGraph[StateT, RunContext, Any, Any] = StateGraph(
        state,
        context_schema=RunContext,
        input_schema=TextInput,
        output_schema=result if options.get("output", "state") == "result" else state,
    )
    graph.add_edge(wire(graph), END)
    return graph.compile(checkpointer=options.get("checkpointer"), name=options.get("name", name))


__all__ = ["CompileOptions", "add_step", "compile_graph"]
