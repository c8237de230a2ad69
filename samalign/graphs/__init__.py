"""Graph state, run context, options and graph builders."""

from samalign.graphs.context import ContextConfig, RunContext
from samalign.graphs.document import DocumentGraph, DocumentState, build_document_graph
from samalign.graphs.joint import JointGraph, build_joint_graph
from samalign.graphs.ner import NerGraph, build_ner_graph
from samalign.graphs.options import PipelineOptions
from samalign.graphs.results import DocumentResult, JointResult, NerResult, read_result
from samalign.graphs.schemas import DocumentOutput, JointOutput, NerOutput, TextInput
from samalign.graphs.state import JointState, NerState
from samalign.graphs.tools import ToolResult, as_tool

__all__ = [
    "ContextConfig",
    "DocumentGraph",
    "DocumentOutput",
    "DocumentResult",
    "DocumentState",
    "JointGraph",
    "JointOutput",
    "JointResult",
    "JointState",
    "NerGraph",
    "NerOutput",
    "NerResult",
    "NerState",
    "PipelineOptions",
    "RunContext",
    "TextInput",
    "ToolResult",
    "as_tool",
    "build_document_graph",
    "build_joint_graph",
    "build_ner_graph",
    "read_result",
]
