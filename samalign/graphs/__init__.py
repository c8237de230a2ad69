"""Graph state, run context, options and graph builders."""

from samalign.graphs.context import RunContext
from samalign.graphs.ner import NerGraph, build_ner_graph
from samalign.graphs.options import PipelineOptions
from samalign.graphs.state import NerState

__all__ = ["NerGraph", "NerState", "PipelineOptions", "RunContext", "build_ner_graph"]
