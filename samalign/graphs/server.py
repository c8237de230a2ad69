"""The graphs for LangGraph's server (``langgraph.json``): one factory per graph.

``langgraph.json`` at the repository root declares them::

    "graphs": {
      "samalign_ner": "samalign.graphs.server:ner",
      "samalign_joint": "samalign.graphs.server:joint",
      "samalign_document": "samalign.graphs.server:document"
    }

Each factory builds the graph for the run's options (any
:class:`~samalign.graphs.PipelineOptions` field, the published ablations included, e.g.
``{"use_calibration": false}``; the document graph also takes ``sentence_graph``: ``ner`` or
``joint``), once per distinct options per process. The options come from the run context's
``options`` (a run that sends a context cannot also send ``configurable``), else from
``configurable.options`` (an assistant's saved config, or a run without context), else from
the deployment's defaults (``$SAMALIGN_CONTEXT``). The graphs return only their result
(``output="result"``), so the server, Studio and the MCP endpoint show a clean form: input
``{text, id}``, output entities, triplets, dropped triplets, CCR noise, diagnostics, usage.

The run context travels as JSON (see :mod:`samalign.graphs.context`); what a run leaves out
comes from ``$SAMALIGN_CONTEXT``, the deployment's defaults (where the vLLM server is).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph_sdk.runtime import ServerRuntime

from samalign.errors import ConfigError
from samalign.graphs.context import RunContext, deployment_defaults
from samalign.graphs.document import build_document_graph
from samalign.graphs.joint import build_joint_graph
from samalign.graphs.ner import build_ner_graph
from samalign.graphs.options import PipelineOptions

Graph = CompiledStateGraph[Any, Any, Any, Any]


def _options_of(config: Mapping[str, Any] | None, runtime: Any = None) -> dict[str, Any]:
    context = getattr(runtime, "context", None)
    if isinstance(context, RunContext):
        options: Any = context.options
    elif isinstance(context, Mapping) and context.get("options"):
        options = context["options"]
    else:
        configurable = (config or {}).get("configurable") or {}
        options = configurable.get("options") or deployment_defaults().get("options") or {}
    if not isinstance(options, Mapping):
        raise ConfigError(
            f"configurable.options must be an object of PipelineOptions fields, got "
            f"{type(options).__name__}"
        )
    return dict(options)


@functools.lru_cache(maxsize=64)
def _build(kind: str, options_json: str) -> Graph:
    options = json.loads(options_json)
    sentence = options.pop("sentence_graph", "joint") if kind == "document" else kind
    if sentence not in ("ner", "joint"):
        raise ConfigError(f"sentence_graph must be 'ner' or 'joint', got {sentence!r}")
    pipeline = PipelineOptions(**options)
    name = f"samalign_{kind}"
    if kind == "ner":
        return build_ner_graph(pipeline, name=name, output="result")
    inner = (
        build_joint_graph(pipeline, output="result")
        if sentence == "joint"
        else build_ner_graph(pipeline, output="result")
    )
    if kind == "joint":
        return build_joint_graph(pipeline, name=name, output="result")
    return build_document_graph(
        inner, max_sentence_chars=min(2000, pipeline.max_text_chars), name=name, output="result"
    )


def graph_for(kind: str, config: Mapping[str, Any] | None = None, runtime: Any = None) -> Graph:
    """The ``ner``, ``joint`` or ``document`` graph for a run (cached per options).

    Args:
        kind: ``ner``, ``joint`` or ``document``.
        config: The run's config (``configurable.options``).
        runtime: The server runtime (its ``context`` may hold ``options``; they win).

    Raises:
        ConfigError: An unknown kind or invalid options.
    """
    if kind not in ("ner", "joint", "document"):
        raise ConfigError(f"unknown graph {kind!r}; expected ner, joint or document")
    options = _options_of(config, runtime)
    return _build(kind, json.dumps(options, sort_keys=True))


def ner(config: RunnableConfig, runtime: ServerRuntime[Any] | None = None) -> Graph:
    """Server factory: the SAM-NER graph for the run's options."""
    return graph_for("ner", config, runtime)


def joint(config: RunnableConfig, runtime: ServerRuntime[Any] | None = None) -> Graph:
    """Server factory: the joint entity + relation graph for the run's options."""
    return graph_for("joint", config, runtime)


def document(config: RunnableConfig, runtime: ServerRuntime[Any] | None = None) -> Graph:
    """Server factory: the document graph (joint sentences unless ``sentence_graph: ner``)."""
    return graph_for("document", config, runtime)


__all__ = ["document", "graph_for", "joint", "ner"]
