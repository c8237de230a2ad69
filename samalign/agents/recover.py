"""Recover dropped triplets by asking the NER verifier (beyond AnchorAlign; off by default).

The anchor filter discards a triplet whose argument NER missed. This node instead asks the
anchor extractor — the precision-oriented NER model — about the missed argument mentions: one
request per sentence, with the types the relations allow for those arguments as the schema and
the answer restricted to the missed mention strings. A mention the anchor confirms with an
allowed type becomes an entity (``sources=("anchor",)``, no archetype) and every dropped
triplet whose missed arguments are all confirmed is kept. Information then flows back from
relations to entities, as RTE-GMoE argues for.
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableLambda

from samalign.agents.base import AgentSettings, Prepared, StageContext, stage_node
from samalign.agents.extractors import extraction_request
from samalign.agents.runner import StageResult
from samalign.agents.state import FilterUpdate, JointState
from samalign.prompts.domain import Domain
from samalign.prompts.formats import ParsedTypedMentions
from samalign.types import DroppedTriplet, Entity, Triplet

VERIFIER_STAGE = "anchor"
"""The stage model (and request format) the recovery asks."""


def _wanted(
    dropped: list[DroppedTriplet], entities: list[Entity], domain: Domain
) -> dict[str, set[str]]:
    """Missed argument mention → the entity labels the relations allow for it."""
    recognised = {e.text for e in entities}
    wanted: dict[str, set[str]] = {}
    for item in dropped:
        t = item.triplet
        relation = next((r for r in domain.relation_types if r.label == t.relation), None)
        head_types = relation.head_types if relation else ()
        tail_types = relation.tail_types if relation else ()
        for arg, types in ((t.head, head_types), (t.tail, tail_types)):
            if arg.text not in recognised:
                wanted.setdefault(arg.text, set()).update(types or domain.labels)
    return wanted


def recover_triplets(
    dropped: list[DroppedTriplet],
    entities: list[Entity],
    confirmed: dict[str, set[str]],
    domain: Domain,
) -> tuple[list[Triplet], list[DroppedTriplet], list[Entity]]:
    """Apply the verifier's confirmations.

    Args:
        dropped: The filter's dropped triplets.
        entities: The NER entities.
        confirmed: Mention → labels the verifier gave it.
        domain: The domain (argument constraints).

    Returns:
        ``(recovered triplets, still dropped, new entities)``.
    """
    recognised = {e.text for e in entities}
    known_spans = {(e.start, e.end) for e in entities}
    new_entities: dict[tuple[int, int], Entity] = {}
    recovered: list[Triplet] = []
    remaining: list[DroppedTriplet] = []
    for item in dropped:
        t = item.triplet
        relation = next((r for r in domain.relation_types if r.label == t.relation), None)
        args = []
        ok = True
        for arg, types in (
            (t.head, relation.head_types if relation else ()),
            (t.tail, relation.tail_types if relation else ()),
        ):
            if arg.text in recognised:
                args.append(arg)
                continue
            labels = [lab for lab in domain.labels if lab in confirmed.get(arg.text, set())]
            allowed = [lab for lab in labels if not types or lab in types]
            if not allowed:
                ok = False
                break
            entity = Entity(span=arg.span, label=allowed[0], sources=("anchor",))
            args.append(entity)
            if (arg.start, arg.end) not in known_spans:
                new_entities.setdefault((arg.start, arg.end), entity)
        if ok:
            recovered.append(t.model_copy(update={"head": args[0], "tail": args[1]}))
        else:
            remaining.append(item)
    return recovered, remaining, list(new_entities.values())


def recover_node(settings: AgentSettings) -> RunnableLambda[JointState, dict[str, Any]]:
    """The ``recover`` node (runs after ``anchor_filter`` when ``recover_dropped`` is on)."""

    def prepare(
        state: JointState, ctx: StageContext
    ) -> Prepared[ParsedTypedMentions] | FilterUpdate:
        domain = ctx.domain
        wanted = _wanted(state.dropped_triplets, state.entities, domain)
        if not wanted:
            return FilterUpdate()
        labels = [lab for lab in domain.labels if any(lab in s for s in wanted.values())]
        names = [domain.entity_type(lab).name for lab in labels]
        return extraction_request(
            VERIFIER_STAGE, ctx, settings, text=state.text, names=names, mentions=list(wanted)
        )

    def finish(
        state: JointState, ctx: StageContext, prepared: Prepared[Any], result: StageResult[Any]
    ) -> FilterUpdate:
        parsed: ParsedTypedMentions | None = result.value
        if parsed is None:
            return FilterUpdate(failed_stages=["recover"])
        domain = ctx.domain
        confirmed: dict[str, set[str]] = {}
        for name, mention in parsed.pairs:
            label = domain.label_for_name(name)
            if label is not None:
                confirmed.setdefault(mention, set()).add(label)
        recovered, remaining, new = recover_triplets(
            state.dropped_triplets, state.entities, confirmed, domain
        )
        if not recovered:
            return FilterUpdate()
        shown = [f"({t.head.text!r}, {t.relation}, {t.tail.text!r})" for t in recovered]
        return FilterUpdate(
            entities=[*state.entities, *new],
            triplets=[*state.triplets, *recovered],
            dropped_triplets=remaining,
            diagnostics=[
                result.diagnostic(
                    "recover",
                    "recovered",
                    f"the anchor confirmed {[e.text for e in new]} as entities; "
                    f"triplets kept: {shown}",
                )
            ],
        )

    return stage_node("recover", prepare, finish, settings, model_stage=VERIFIER_STAGE)


__all__ = ["VERIFIER_STAGE", "recover_node", "recover_triplets"]
