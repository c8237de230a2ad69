"""samalign: zero-shot NER (SAM-NER) as LangGraph graphs over vLLM LoRA adapters.

Quick start::

    from samalign import NerResult, RunContext, build_ner_graph, vllm_server_models

    graph = build_ner_graph()
    context = RunContext(domain="crossner_ai", models=vllm_server_models("http://127.0.0.1:8000"))
    state = graph.invoke({"text": "LSTM was proposed by Sepp Hochreiter."}, context=context)
    result = NerResult.from_state(state)  # LangGraph returns a dict; read it typed
    for entity in result.entities:
        print(entity.start, entity.end, entity.text, entity.label, entity.archetype)

The joint graph (``build_joint_graph``) returns a :class:`JointResult` the same way (its
``triplets`` are the kept relation triplets, ``dropped_triplets`` what the anchor filter
removed, with the reason); the document graph a :class:`DocumentResult`.
"""

from samalign.agents.cache import MemoryCache, SqliteCache
from samalign.errors import (
    BackendError,
    ConfigError,
    InputError,
    OutputParseError,
    SamalignError,
)
from samalign.graphs import (
    DocumentResult,
    DocumentState,
    JointResult,
    JointState,
    NerResult,
    NerState,
    PipelineOptions,
    RunContext,
    build_document_graph,
    build_joint_graph,
    build_ner_graph,
)
from samalign.graphs.tools import as_tool
from samalign.prompts import Domain, EntityType, RelationType, builtin_domains, load_domain
from samalign.serving import (
    StageModel,
    StageModels,
    check_server,
    transformers_models,
    vllm_inprocess_models,
    vllm_server_models,
)
from samalign.types import (
    Archetype,
    Diagnostic,
    DroppedTriplet,
    Entity,
    GroundedMention,
    NoiseRecord,
    Span,
    StageUsage,
    Triplet,
)
from samalign.view import View, visualize

__version__ = "0.1.0"

__all__ = [
    "Archetype",
    "BackendError",
    "ConfigError",
    "Diagnostic",
    "DocumentResult",
    "DocumentState",
    "Domain",
    "DroppedTriplet",
    "Entity",
    "EntityType",
    "GroundedMention",
    "InputError",
    "JointResult",
    "JointState",
    "MemoryCache",
    "NerResult",
    "NerState",
    "NoiseRecord",
    "OutputParseError",
    "PipelineOptions",
    "RelationType",
    "RunContext",
    "SamalignError",
    "Span",
    "SqliteCache",
    "StageModel",
    "StageModels",
    "StageUsage",
    "Triplet",
    "View",
    "__version__",
    "as_tool",
    "build_document_graph",
    "build_joint_graph",
    "build_ner_graph",
    "builtin_domains",
    "check_server",
    "load_domain",
    "transformers_models",
    "visualize",
    "vllm_inprocess_models",
    "vllm_server_models",
]
