"""samalign: zero-shot NER (SAM-NER) as LangGraph graphs over vLLM LoRA adapters.

Quick start::

    from samalign import RunContext, build_ner_graph, vllm_server_models

    graph = build_ner_graph()
    context = RunContext(domain="crossner_ai", models=vllm_server_models("http://127.0.0.1:8000"))
    result = graph.invoke({"text": "LSTM was proposed by Sepp Hochreiter."}, context=context)
    for entity in result["entities"]:
        print(entity.span.start, entity.span.end, entity.text, entity.label)
"""

from samalign.agents.cache import MemoryCache, SqliteCache
from samalign.errors import (
    BackendError,
    ConfigError,
    InputError,
    ModelRequestBlockedError,
    OutputParseError,
    SamalignError,
)
from samalign.graphs import (
    DocumentState,
    JointState,
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
    "DocumentState",
    "Domain",
    "DroppedTriplet",
    "Entity",
    "EntityType",
    "InputError",
    "JointState",
    "MemoryCache",
    "ModelRequestBlockedError",
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
