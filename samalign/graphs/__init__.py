"""Graph state, run context, options and graph builders."""

from samalign.graphs.context import RunContext
from samalign.graphs.document import DocumentGraph, DocumentState, build_document_graph
from samalign.graphs.joint import JointGraph, build_joint_graph
from samalign.graphs.ner import NerGraph, build_ner_graph
from samalign.graphs.options import PipelineOptions
from samalign.graphs.results import DocumentResult, JointResult, NerResult, read_result
from samalign.graphs.state import JointState, NerState

__all__ = [
    "DocumentGraph",
    "DocumentResult",
    "DocumentState",
    "JointGraph",
    "JointResult",
    "JointState",
    "NerGraph",
    "NerResult",
    "NerState",
    "PipelineOptions",
    "RunContext",
    "build_document_graph",
    "build_joint_graph",
    "build_ner_graph",
    "read_result",
]
