"""An extraction job as data: which graph, options, domain and backend ``samalign extract`` runs.

:class:`ExtractJob` is what ``samalign extract`` decides from its flags, once, for both engines:
the local engine builds the graph and models from it in this process, the Ray engine ships it to
every actor (it is plain pydantic data, picklable), which builds its own graph and models once.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel, ConfigDict, Field

from samalign.errors import ConfigError
from samalign.graphs import (
    PipelineOptions,
    RunContext,
    build_document_graph,
    build_joint_graph,
    build_ner_graph,
)
from samalign.prompts import Domain
from samalign.serving.models import StageModels
from samalign.serving.spec import BackendSpec

GraphKind = Literal["ner", "joint", "document"]
SentenceGraphKind = Literal["ner", "joint"]


def sentence_graph_of(
    domain: Domain, graph: GraphKind, sentence_graph: SentenceGraphKind | None = None
) -> SentenceGraphKind:
    """The sentence graph a job runs: ``ner`` for ``graph="ner"``; for ``joint`` and
    ``document`` the one asked for, else joint when the domain has relation types.

    Raises:
        ConfigError: A joint sentence graph for a domain without relation types.
    """  # noqa: D205
    chosen: SentenceGraphKind = sentence_graph or (
        "joint" if graph == "joint" or domain.relation_types else "ner"
    )
    if graph == "ner":
        chosen = "ner"
    if chosen == "joint" and not domain.relation_types:
        raise ConfigError(
            f"domain {domain.name!r} has no relation types; joint extraction needs them (use "
            "a domain such as conll04, scierc or ade, or --graph ner)"
        )
    return chosen


class ExtractJob(BaseModel):
    """What an extraction runs (see module docs).

    Attributes:
        domain: The target domain (its ``adapters`` already name each stage's adapter).
        graph: ``ner``, ``joint`` or ``document``.
        sentence_graph: The sentence graph (see :func:`sentence_graph_of`).
        options: The pipeline options.
        adapters: Stage → adapter name, for every stage the pipeline runs.
        backend: Where the stage models come from.
        concurrency: Records in flight at once (per process; per actor on Ray).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    domain: Domain
    graph: GraphKind = "ner"
    sentence_graph: SentenceGraphKind = "ner"
    options: PipelineOptions = PipelineOptions()
    adapters: dict[str, str]
    backend: BackendSpec
    concurrency: int = Field(default=16, ge=1)

    @property
    def stages(self) -> list[str]:
        """The stages whose models the pipeline calls."""
        if self.sentence_graph == "joint":
            return self.options.joint_model_stages
        return self.options.model_stages

    def build_graph(self) -> CompiledStateGraph[Any, RunContext, Any, Any]:
        """Compile the job's graph."""
        joint = self.sentence_graph == "joint"
        inner = build_joint_graph(self.options) if joint else build_ner_graph(self.options)
        if self.graph == "document":
            document: CompiledStateGraph[Any, RunContext, Any, Any] = build_document_graph(
                inner, max_sentence_chars=min(2000, self.options.max_text_chars)
            )
            return document
        return inner

    def check_backend(self) -> None:
        """Fail early unless the backend serves every adapter (servers: up, adapters served).

        Raises:
            BackendError: No server answers, or one lacks an adapter.
        """
        self.backend.check(self.adapters)

    def build_models(self) -> StageModels:
        """Build the stage models in this process."""
        return self.backend.models(self.stages, self.adapters)

    def fingerprint(self) -> str:
        """A hash of everything that decides the results (not the backend's whereabouts).

        Two jobs with the same fingerprint write the same kind of output, so a resumed run may
        mix their records; the backend's servers, timeout and the concurrency are left out.
        """
        data = self.model_dump(mode="json", exclude={"backend", "concurrency"})
        data["backend"] = self.backend.model_dump(mode="json", include={"kind", "model_dir"})
        text = json.dumps(data, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


__all__ = ["ExtractJob", "GraphKind", "SentenceGraphKind", "sentence_graph_of"]
