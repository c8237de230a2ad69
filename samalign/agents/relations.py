"""The forward and reverse relation decoder nodes (AnchorAlign §3.2, Eq. 3).

Each node asks its model for the sentence's relation triples in its own block order
(subject-centric or object-centric), then checks every triple:

* the relation must be one of the domain's (the parser already drops others, with a
  Diagnostic ``label_out_of_schema``);
* both arguments must occur in the text (else ``hallucination``);
* head and tail must be different spans (else ``self_relation``);
* when NER typed an argument, its type must satisfy the relation's argument-type
  constraint (else ``argument_type``);
* an unreadable block or pair is reported as ``malformed``.

An argument whose text is an NER entity takes that entity (span, label, archetype,
sources), so a kept triplet carries the entity types relation strict F1 needs. An argument
NER did not recognise is grounded to the text and left untyped, unless the relation admits a
single type for it. When a mention occurs several times, the pair of occurrences closest to
each other is used (with ``relation_arguments="all"``: every pair of occurrences). Whatever
is dropped here never reaches the anchor filter; the sentence always keeps its entities.

When to ask (the ``schedule`` of :func:`relation_node`, from
``PipelineOptions.relation_schedule``):

* ``needed``: after NER, and only when :func:`relations_possible` — with the anchor filter
  on and recovery off, a kept triplet links two NER entities of different spans whose types
  the relation admits, so a sentence without such a pair cannot keep any triplet and its
  requests could not change the output;
* ``always``: after NER, for every sentence;
* ``parallel``: the request does not depend on NER (the prompt holds the text and the
  relation schema only), so the decoders are asked together with the extractors and write
  their parsed answer (:class:`~samalign.agents.state.RelationAnswer`);
  :func:`relation_check_node` checks it against the entities once NER is done, with the same
  rules and the same result as ``always``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from langchain_core.runnables import RunnableLambda

from samalign.agents.base import (
    AgentSettings,
    Prepared,
    StageContext,
    current_context,
    pure_node,
    stage_node,
    stage_request,
)
from samalign.agents.extractors import sentence_mentions
from samalign.agents.grounding import ground_mentions
from samalign.agents.runner import StageResult
from samalign.agents.state import (
    JointState,
    ParallelJointState,
    RelationAnswer,
    RelationAnswerUpdate,
    RelationUpdate,
)
from samalign.errors import ConfigError
from samalign.prompts.domain import Domain, RelationType
from samalign.prompts.relations import ParsedTriplets
from samalign.prompts.specs import RELATION_FORMATS
from samalign.types import Diagnostic, Entity, RelationSource, Span, Triplet

RelationStage = Literal["relations_forward", "relations_reverse"]

SOURCE_OF: dict[str, RelationSource] = {
    "relations_forward": "forward",
    "relations_reverse": "reverse",
}
"""The ``Triplet.sources`` value of each relation stage."""

STATE_KEY: dict[str, str] = {
    "relations_forward": "forward_triplets",
    "relations_reverse": "reverse_triplets",
}
"""The state key each relation stage writes."""

ANSWER_KEY: dict[str, str] = {
    "relations_forward": "forward_answer",
    "relations_reverse": "reverse_answer",
}
"""The state key each relation stage writes its unchecked answer to (``parallel`` schedule)."""

RelationSchedule = Literal["needed", "always", "parallel"]
"""When the relation decoders are asked (see the module docs)."""


def require_relations(domain: Domain) -> None:
    """Raise a :class:`ConfigError` unless the domain defines relation types."""
    if not domain.relation_types:
        raise ConfigError(
            f"domain {domain.name!r} has no relation_types; joint extraction needs them. Use a "
            "domain with relations (e.g. conll04, scierc, ade) or add relation_types to the "
            "domain file, or run the NER graph."
        )


def _allowed(entity: Entity, types: Sequence[str]) -> bool:
    return not types or entity.label is None or entity.label in types


def _untyped(entity: Entity, types: Sequence[str]) -> Entity:
    """An argument NER did not recognise; typed only when the relation admits one type."""
    if entity.label is None and len(types) == 1:
        return entity.model_copy(update={"label": types[0]})
    return entity


def _closest_pair(heads: list[Entity], tails: list[Entity]) -> tuple[Entity, Entity] | None:
    """The (head, tail) pair of different spans closest to each other, preferring disjoint."""
    best: tuple[tuple[int, int, int, int], Entity, Entity] | None = None
    for h in heads:
        for t in tails:
            if h.span == t.span:
                continue
            overlap = 1 if h.span.overlaps(t.span) else 0
            gap = max(t.start - h.end, h.start - t.end, 0)
            key = (overlap, gap, h.start, t.start)
            if best is None or key < best[0]:
                best = (key, h, t)
    return None if best is None else (best[1], best[2])


def relations_possible(entities: Sequence[Entity], domain: Domain) -> bool:
    """Whether the anchor filter could keep a triplet among these NER entities.

    A kept triplet's head and tail are NER entities (the filter drops any other argument) of
    different spans, typed as the relation allows. So some relation must admit some ordered
    pair of entities with different spans; without one, no relation request can change the
    sentence's output.
    """
    for relation in domain.relation_types:
        heads = [e for e in entities if _allowed(e, relation.head_types)]
        if not heads:
            continue
        for tail in entities:
            if _allowed(tail, relation.tail_types) and any(h.span != tail.span for h in heads):
                return True
    return False


def check_triplets(
    text: str,
    parsed: ParsedTriplets,
    entities: Sequence[Entity],
    domain: Domain,
    *,
    stage: str,
    fuzzy_threshold: float = 0.8,
    raw: str | None = None,
    arguments: Literal["closest", "all"] = "closest",
    grounded: Mapping[str, Sequence[Span]] | None = None,
) -> tuple[list[Triplet], list[Diagnostic]]:
    """Ground, type and validate parsed triples.

    Args:
        text: The sentence.
        parsed: The parsed answer (relations already restricted to the domain's names).
        entities: The NER entities of the sentence.
        domain: The domain (relation types and argument constraints).
        stage: The relation stage (for diagnostics and ``sources``).
        fuzzy_threshold: Word-level LCS score needed for fuzzy grounding.
        raw: The raw answer, attached to diagnostics.
        arguments: Which occurrences of a repeated mention a triple relates: ``closest``
            (the pair of occurrences closest to each other) or ``all`` (every pair of
            different spans; the annotation convention of CoNLL04's SpERT release).
        grounded: Mention → every occurrence, for strings grounded already (the extractors'
            mentions, from the state); only the other mentions are grounded here.

    Returns:
        The valid triplets (de-duplicated, answer order) and the diagnostics.
    """
    source = SOURCE_OF[stage]
    diagnostics: list[Diagnostic] = []
    problems: dict[str, list[str]] = {
        "hallucination": [],
        "self_relation": [],
        "argument_type": [],
    }
    by_text: dict[str, list[Entity]] = {}
    for entity in entities:
        by_text.setdefault(entity.text, []).append(entity)
    known = grounded or {}
    mentions = list(dict.fromkeys(m for h, _, t in parsed.triplets for m in (h, t)))
    arguments_at: dict[str, list[Entity]] = {
        m: [Entity(span=s) for s in known[m]] for m in mentions if m in known
    }
    arguments_at.update(
        (g.mention, [Entity(span=s) for s in g.spans])
        for g in ground_mentions(
            text,
            [m for m in mentions if m not in known],
            mode="nested",
            fuzzy_threshold=fuzzy_threshold,
        )
    )

    def candidates(mention: str) -> list[Entity]:
        spans = arguments_at.get(mention, [])
        recognised = [e for s in spans for e in by_text.get(s.text, [])]
        return recognised or spans

    out: dict[tuple[int, int, str, int, int], Triplet] = {}
    for head, name, tail in parsed.triplets:
        relation: RelationType | None = domain.relation_for_name(name)
        if relation is None:  # the parser restricts names; defensive
            continue
        shown = f"({head!r}, {relation.label}, {tail!r})"
        heads, tails = candidates(head), candidates(tail)
        missing = [m for m, c in ((head, heads), (tail, tails)) if not c]
        if missing:
            problems["hallucination"].append(f"{shown}: {missing} not in the text")
            continue
        typed_heads = [e for e in heads if _allowed(e, relation.head_types)]
        typed_tails = [e for e in tails if _allowed(e, relation.tail_types)]
        if not typed_heads or not typed_tails:
            bad = []
            if not typed_heads:
                bad.append(
                    f"subject typed {sorted({str(e.label) for e in heads})}, allowed "
                    f"{list(relation.head_types)}"
                )
            if not typed_tails:
                bad.append(
                    f"object typed {sorted({str(e.label) for e in tails})}, allowed "
                    f"{list(relation.tail_types)}"
                )
            problems["argument_type"].append(f"{shown}: {'; '.join(bad)}")
            continue
        if arguments == "all":
            pairs = [(h, t) for h in typed_heads for t in typed_tails if h.span != t.span]
        else:
            closest = _closest_pair(typed_heads, typed_tails)
            pairs = [] if closest is None else [closest]
        if not pairs:
            problems["self_relation"].append(f"{shown}: subject and object are the same span")
            continue
        for head_entity, tail_entity in pairs:
            h = _untyped(head_entity, relation.head_types)
            t = _untyped(tail_entity, relation.tail_types)
            key = (h.start, h.end, relation.label, t.start, t.end)
            if key not in out:
                out[key] = Triplet(head=h, relation=relation.label, tail=t, sources=(source,))
    messages = {
        "hallucination": "arguments not found in the text, triples dropped",
        "self_relation": "subject and object are the same span, triples dropped",
        "argument_type": "argument types violate the relation's constraint, triples dropped",
    }
    for kind, items in problems.items():
        if items:
            diagnostics.append(
                Diagnostic(
                    stage=stage,
                    kind=kind,
                    message=f"{messages[kind]}: {'; '.join(items)}",
                    raw=raw,
                )
            )
    return list(out.values()), diagnostics


def answer_diagnostics(stage: str, parsed: ParsedTriplets | None, raw: str) -> list[Diagnostic]:
    """What the parser noticed in a relation answer (independent of the NER entities).

    Relations outside the domain and unreadable blocks or pairs, each one Diagnostic.
    """
    diagnostics: list[Diagnostic] = []
    if parsed is None:
        return diagnostics
    if parsed.out_of_schema:
        diagnostics.append(
            Diagnostic(
                stage=stage,
                kind="label_out_of_schema",
                message=f"relations outside the domain {list(parsed.out_of_schema)}, "
                f"triples dropped: {[list(t) for t in parsed.dropped]}",
                raw=raw,
            )
        )
    if parsed.malformed:
        diagnostics.append(
            Diagnostic(
                stage=stage,
                kind="malformed",
                message=f"unreadable parts of the answer skipped: {list(parsed.malformed)}",
                raw=raw,
            )
        )
    return diagnostics


def checked_triplets(
    stage: str,
    state: JointState,
    domain: Domain,
    settings: AgentSettings,
    parsed: ParsedTriplets,
    raw: str,
) -> tuple[list[Triplet], list[Diagnostic]]:
    """The stage's checked triplets and the check's diagnostics (see :func:`check_triplets`).

    Mentions the extractors grounded already (in the state) are not grounded again.
    """
    return check_triplets(
        state.text,
        parsed,
        state.entities,
        domain,
        stage=stage,
        fuzzy_threshold=settings.fuzzy_threshold,
        arguments=settings.relation_arguments,
        raw=raw,
        grounded={g.mention: g.spans for g in (*state.anchor_grounded, *state.explorer_grounded)},
    )


def _relation_update(stage: str, triplets: list[Triplet], **fields: Any) -> RelationUpdate:
    if stage == "relations_forward":
        return RelationUpdate(forward_triplets=triplets, **fields)
    return RelationUpdate(reverse_triplets=triplets, **fields)


def relation_check_node(
    stages: Sequence[RelationStage], settings: AgentSettings
) -> RunnableLambda[ParallelJointState, dict[str, Any]]:
    """The ``relations_check`` node of the ``parallel`` schedule.

    Checks the answers the decoders wrote while NER ran against the NER entities, as the
    decoders themselves do in the other schedules (the parser's diagnostics were written with
    the answer).
    """

    def run(state: ParallelJointState) -> RelationUpdate:
        domain = current_context().domain
        fields: dict[str, Any] = {}
        diagnostics: list[Diagnostic] = []
        for stage in stages:
            answer: RelationAnswer | None = getattr(state, ANSWER_KEY[stage])
            triplets: list[Triplet] = []
            if answer is not None and answer.parsed is not None:
                triplets, checked = checked_triplets(
                    stage, state, domain, settings, answer.parsed, answer.raw
                )
                diagnostics += checked
            fields[STATE_KEY[stage]] = triplets
        return RelationUpdate(diagnostics=diagnostics, **fields)

    return pure_node("relations_check", run)


def relation_node(
    stage: RelationStage, settings: AgentSettings, schedule: RelationSchedule = "always"
) -> RunnableLambda[JointState, dict[str, Any]]:
    """Build the ``relations_forward`` or ``relations_reverse`` node.

    Args:
        stage: Which decoder.
        settings: The agent settings.
        schedule: When the node asks its model (see the module docs); ``needed`` is lossless
            only with the anchor filter on and recovery off
            (``PipelineOptions.effective_relation_schedule`` says which applies).
    """
    fmt = RELATION_FORMATS[stage]

    def prepare(state: JointState, ctx: StageContext) -> Prepared[ParsedTriplets] | RelationUpdate:
        mentions = sentence_mentions(state.text, settings)
        domain = ctx.domain
        require_relations(domain)
        if schedule == "needed" and not relations_possible(state.entities, domain):
            return _relation_update(stage, [])  # no triplet could survive the filter: no request
        names = domain.relation_names
        return stage_request(
            stage,
            ctx,
            settings,
            variables={"relations": domain.relation_schema(), "text": state.text},
            schema=fmt.schema(
                names,
                mentions=mentions,
                max_blocks=settings.max_relation_blocks,
                max_pairs=settings.max_relation_blocks,
            ),
            parse=lambda raw: fmt.parse(raw, names),
        )

    def finish(
        state: JointState, ctx: StageContext, prepared: Prepared[Any], result: StageResult[Any]
    ) -> RelationUpdate | RelationAnswerUpdate:
        parsed: ParsedTriplets | None = result.value
        failed = {} if parsed is not None else {"failed_stages": [stage]}
        found = answer_diagnostics(stage, parsed, result.raw)
        if schedule == "parallel":  # checked by relations_check once NER is done
            answer = RelationAnswer(parsed=parsed, raw=result.raw)
            return RelationAnswerUpdate(**{ANSWER_KEY[stage]: answer}, diagnostics=found, **failed)
        if parsed is None:
            return _relation_update(stage, [], **failed)
        triplets, checked = checked_triplets(stage, state, ctx.domain, settings, parsed, result.raw)
        return _relation_update(stage, triplets, diagnostics=[*found, *checked])

    return stage_node(stage, prepare, finish, settings)


__all__ = [
    "ANSWER_KEY",
    "SOURCE_OF",
    "STATE_KEY",
    "RelationSchedule",
    "RelationStage",
    "answer_diagnostics",
    "check_triplets",
    "checked_triplets",
    "relation_check_node",
    "relation_node",
    "relations_possible",
    "require_relations",
]
