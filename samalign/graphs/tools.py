"""The graphs as LangChain tools, for agents.

:func:`as_tool` wraps a compiled samalign graph (NER, joint or document) and a run context
into a :class:`~langchain_core.tools.StructuredTool` whose arguments an LLM fills in (the
text, and optionally the domain and the entity labels to look for) and whose answer an LLM
can read: a short JSON object with the entities (text, label, character offsets) and the
relation triplets. The full graph result travels beside it as the tool message's
``artifact``.

Example:
    >>> tool = as_tool(build_joint_graph(), RunContext("conll04", models))
    >>> agent = create_react_agent(chat_model, [tool])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import StructuredTool, ToolException
from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from samalign.errors import ConfigError, SamalignError, validation_problems
from samalign.graphs.context import RunContext
from samalign.graphs.results import DocumentResult, JointResult, read_result
from samalign.prompts.domain import Domain, load_domain
from samalign.types import Entity, Triplet

MAX_TOOL_TEXT_CHARS = 20_000
"""Longest text the tool accepts (longer texts are refused with a message the LLM reads)."""


class ToolEntity(BaseModel):
    """An entity in a tool answer: its text, label and character offsets (end exclusive)."""

    model_config = ConfigDict(frozen=True)

    text: str
    label: str | None
    start: int
    end: int


class ToolTriplet(BaseModel):
    """A relation triplet in a tool answer: head and tail entities and the relation."""

    model_config = ConfigDict(frozen=True)

    head: ToolEntity
    relation: str
    tail: ToolEntity


class ToolResult(BaseModel):
    """What the tool answers: the entities and (for relation graphs) the triplets.

    Attributes:
        entities: Entities in text order.
        triplets: Relation triplets (``None`` for an NER graph).
        notes: Problems worth telling the caller (stages that failed, sentences that
            failed), empty when all went well.
    """

    model_config = ConfigDict(frozen=True)

    entities: list[ToolEntity]
    triplets: list[ToolTriplet] | None = None
    notes: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, state: Mapping[str, Any], *, relations: bool) -> ToolResult:
        """The compact answer of a graph's final state."""
        result = read_result(state)
        entities = sorted(result.entities, key=lambda e: e.start)
        triplets: list[Triplet] = []
        if isinstance(result, JointResult | DocumentResult):
            triplets = result.triplets
        notes = [f"stage {s} gave no usable answer" for s in result.failed_stages]
        if isinstance(result, DocumentResult):
            notes += result.errors
        return cls(
            entities=[_entity(e) for e in entities],
            triplets=(
                [
                    ToolTriplet(head=_entity(t.head), relation=t.relation, tail=_entity(t.tail))
                    for t in triplets
                ]
                if relations
                else None
            ),
            notes=notes,
        )

    def content(self) -> str:
        """The answer as compact JSON (what the LLM reads)."""
        return self.model_dump_json(exclude_none=True, exclude_defaults=False)


def _entity(entity: Entity) -> ToolEntity:
    return ToolEntity(text=entity.text, label=entity.label, start=entity.start, end=entity.end)


def restrict_labels(domain: Domain, labels: Sequence[str]) -> Domain:
    """The domain with only the entity types ``labels`` (tags or names).

    Relation types that constrain an argument to a removed type are removed too.

    Raises:
        ConfigError: A label the domain does not have (naming the ones it has).
    """
    wanted: list[str] = []
    for label in labels:
        tag = label if label in domain.labels else domain.label_for_name(label)
        if tag is None:
            raise ConfigError(
                f"domain {domain.name!r} has no entity label {label!r}; its labels: {domain.labels}"
            )
        wanted.append(tag)
    keep = set(wanted)
    return domain.model_copy(
        update={
            "entity_types": tuple(t for t in domain.entity_types if t.label in keep),
            "relation_types": tuple(
                r
                for r in domain.relation_types
                if set(r.head_types) <= keep and set(r.tail_types) <= keep
            ),
        }
    )


def _graph_has_relations(graph: CompiledStateGraph[Any, Any, Any, Any]) -> bool:
    channels = graph.output_channels
    return "triplets" in (channels if isinstance(channels, list) else [channels])


def _describe(domain: Domain, relations: bool, domains: Sequence[str]) -> str:
    labels = ", ".join(
        f"{t.label} ({t.name})" if t.name != t.label else t.label for t in domain.entity_types
    )
    what = "named entities and the relations between them" if relations else "named entities"
    text = (
        f"Find the {what} in a text. Returns JSON: 'entities' (each with text, label and "
        "character offsets start/end, end exclusive, into the given text)"
        + (", 'triplets' (head entity, relation, tail entity)" if relations else "")
        + f". Default domain {domain.name!r}; entity labels: {labels}."
    )
    if relations and domain.relation_types:
        text += " Relations: " + ", ".join(r.label for r in domain.relation_types) + "."
    if len(domains) > 1:
        text += f" Other domains: {', '.join(d for d in domains if d != domain.name)}."
    return text


def as_tool(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    context: RunContext | Mapping[str, Any],
    *,
    name: str | None = None,
    description: str | None = None,
    domains: Mapping[str, Domain | str | Path] | Sequence[str] | None = None,
    allow_labels: bool = True,
    config: Mapping[str, Any] | None = None,
) -> StructuredTool:
    """A LangChain tool that runs ``graph`` on a text.

    The tool's arguments are ``text``, and optionally ``domain`` (only when ``domains``
    offers more than one) and ``labels`` (a subset of the domain's entity labels). Its answer
    (the tool message content) is a compact JSON :class:`ToolResult`; the full graph result is
    the message's ``artifact``. A bad argument (an unknown label, an empty text) comes back
    to the agent as an error message it can act on, never as an exception in the agent.

    Args:
        graph: A compiled samalign graph (``build_ner_graph``, ``build_joint_graph`` or
            ``build_document_graph``).
        context: The run context (or its JSON form, see :class:`RunContext`); its domain is
            the default domain.
        name: The tool name (default ``extract_entities`` or
            ``extract_entities_and_relations``).
        description: The tool description (default: what it returns and the domain's labels).
        domains: Domains the agent may choose from, by name (built-in names, or name →
            :class:`Domain` or YAML path). The agent can never load an arbitrary file.
        allow_labels: Offer the ``labels`` argument.
        config: A LangGraph config for every run (e.g. ``{"max_concurrency": 8}``).

    Returns:
        The tool (sync and async).

    Raises:
        ConfigError: An unknown domain in ``domains``, or a context that is not valid.
    """
    ctx = context if isinstance(context, RunContext) else RunContext(**dict(context))
    relations = _graph_has_relations(graph) and bool(ctx.domain.relation_types)
    offered: dict[str, Domain] = {ctx.domain.name: ctx.domain}
    if isinstance(domains, Mapping):
        for key, value in domains.items():
            offered[key] = value if isinstance(value, Domain) else load_domain(value)
    elif domains is not None:
        for key in domains:
            offered[key] = load_domain(key)
    names = list(offered)
    fields: dict[str, Any] = {
        "text": (
            str,
            Field(description="The text to analyse, exactly as written (offsets refer to it)."),
        )
    }
    if len(names) > 1:
        fields["domain"] = (
            Literal[tuple(names)] | None,
            Field(default=None, description=f"The label set to use (default {names[0]!r})."),
        )
    if allow_labels:
        fields["labels"] = (
            list[str] | None,
            Field(
                default=None,
                description="Only look for these entity labels (default: every label of the "
                "domain).",
            ),
        )
    args_schema = create_model("ExtractArgs", __config__=ConfigDict(extra="forbid"), **fields)
    run_config = cast(RunnableConfig, dict(config or {}))

    def prepare(text: str, domain: str | None, labels: list[str] | None) -> RunContext:
        if not isinstance(text, str) or not text.strip():
            raise ToolException("'text' is empty: give the text to analyse")
        if len(text) > MAX_TOOL_TEXT_CHARS:
            raise ToolException(
                f"'text' has {len(text)} characters, over the limit of {MAX_TOOL_TEXT_CHARS}"
            )
        chosen = offered[domain] if domain else ctx.domain
        if labels:
            try:
                chosen = restrict_labels(chosen, labels)
            except ConfigError as err:
                raise ToolException(str(err)) from None
        return ctx if chosen is ctx.domain else ctx.with_domain(chosen)

    def answer(state: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        return ToolResult.of(state, relations=relations).content(), dict(state)

    def run(
        text: str, domain: str | None = None, labels: list[str] | None = None
    ) -> tuple[str, dict[str, Any]]:
        run_context = prepare(text, domain, labels)
        try:
            state = graph.invoke({"text": text}, config=run_config, context=run_context)
        except SamalignError as err:
            raise ToolException(f"{type(err).__name__}: {err}") from None
        return answer(state)

    async def arun(
        text: str, domain: str | None = None, labels: list[str] | None = None
    ) -> tuple[str, dict[str, Any]]:
        run_context = prepare(text, domain, labels)
        try:
            state = await graph.ainvoke({"text": text}, config=run_config, context=run_context)
        except SamalignError as err:
            raise ToolException(f"{type(err).__name__}: {err}") from None
        return answer(state)

    def explain(err: ValidationError) -> str:
        problems = validation_problems(err, "arguments")
        return f"invalid arguments ({problems}); the arguments are: {', '.join(fields)}"

    default_name = "extract_entities_and_relations" if relations else "extract_entities"
    return StructuredTool.from_function(
        func=run,
        coroutine=arun,
        name=name or default_name,
        description=description or _describe(ctx.domain, relations, names),
        args_schema=args_schema,
        response_format="content_and_artifact",
        handle_tool_error=True,
        handle_validation_error=explain,
    )


__all__ = [
    "MAX_TOOL_TEXT_CHARS",
    "ToolEntity",
    "ToolResult",
    "ToolTriplet",
    "as_tool",
    "restrict_labels",
]
