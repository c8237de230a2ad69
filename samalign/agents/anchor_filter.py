"""The anchor-guided constraint filter (AnchorAlign §3.4, Eq. 13).

The relation decoders' outputs are pooled (T_cand = T_fwd ∪ T_rev) and a candidate
``(s, r, o)`` is kept only when both of its mentions were recognised by NER
(``{s_mention, o_mention} ⊆ E_NER``). The two published ablations are switches:
``aggregate=False`` pools the forward decoder only ("w/o decoder aggregation"),
``constrain=False`` keeps every candidate ("w/o generation constraint").

:func:`anchor_filter` is the pure definition on mention strings; :func:`anchor_filter_node`
applies the same rule to grounded :class:`~samalign.types.Triplet` objects and records why
each candidate was dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypedDict, Unpack

from langchain_core.runnables import RunnableLambda

from samalign.agents.base import pure_node
from samalign.agents.state import FilterUpdate, JointState
from samalign.types import DroppedTriplet, Entity, RelationSource, Triplet

MentionTriple = tuple[str, str, str]
"""``(head mention, relation, tail mention)``."""


class FilterSwitches(TypedDict, total=False):
    """The two published ablations of the filter (keyword options, both on by default).

    Attributes:
        aggregate: Pool ``forward ∪ reverse`` (True) or ``forward`` only (False: "w/o decoder
            aggregation").
        constrain: Keep a candidate only if both mentions were recognised (True), or keep
            every candidate (False: "w/o generation constraint").
    """

    aggregate: bool
    constrain: bool


def _switches(switches: FilterSwitches) -> tuple[bool, bool]:
    """``(aggregate, constrain)`` with their defaults."""
    return switches.get("aggregate", True), switches.get("constrain", True)


def anchor_filter(
    forward: Iterable[MentionTriple],
    reverse: Iterable[MentionTriple],
    entities: Iterable[str],
    **switches: Unpack[FilterSwitches],
) -> tuple[list[MentionTriple], list[MentionTriple]]:
    """Eq. 13: the final triplets and the candidates the constraint removed.

    Args:
        forward: The forward decoder's triplets ``(head, relation, tail)`` (T_fwd).
        reverse: The reverse decoder's triplets (T_rev).
        entities: The NER mention strings (E_NER).
        **switches: ``aggregate`` and ``constrain`` (:class:`FilterSwitches`).

    Returns:
        ``(kept, dropped)``: T_final and T_cand minus T_final, each de-duplicated, in pool order
        (forward first, then reverse).
    """
    aggregate, constrain = _switches(switches)
    pool: dict[MentionTriple, None] = {}
    for triple in forward:
        pool.setdefault(_triple(triple), None)
    if aggregate:
        for triple in reverse:
            pool.setdefault(_triple(triple), None)
    recognised = set(entities)
    kept: list[MentionTriple] = []
    dropped: list[MentionTriple] = []
    for triple in pool:
        head, _, tail = triple
        if not constrain or (head in recognised and tail in recognised):
            kept.append(triple)
        else:
            dropped.append(triple)
    return kept, dropped


def _triple(triple: Sequence[str]) -> MentionTriple:
    head, relation, tail = triple
    return (head, relation, tail)


def _key(t: Triplet) -> tuple[int, int, str, int, int]:
    return (t.head.start, t.head.end, t.relation, t.tail.start, t.tail.end)


def pool_triplets(forward: Iterable[Triplet], reverse: Iterable[Triplet]) -> list[Triplet]:
    """T_fwd ∪ T_rev on grounded triplets: one per (head span, relation, tail span).

    A triplet both decoders produced gets both sources; its arguments are the forward
    decoder's (they carry the same spans).
    """
    pool: dict[tuple[int, int, str, int, int], Triplet] = {}
    for triplet in (*forward, *reverse):
        key = _key(triplet)
        seen = pool.get(key)
        if seen is None:
            pool[key] = triplet
        else:
            sources: tuple[RelationSource, ...] = tuple(
                dict.fromkeys((*seen.sources, *triplet.sources))
            )
            pool[key] = seen.model_copy(update={"sources": sources})
    return list(pool.values())


def filter_triplets(
    forward: Sequence[Triplet],
    reverse: Sequence[Triplet],
    entities: Sequence[Entity],
    **switches: Unpack[FilterSwitches],
) -> tuple[list[Triplet], list[DroppedTriplet]]:
    """Eq. 13 on grounded triplets (the rule of :func:`anchor_filter`, with reasons)."""
    aggregate, constrain = _switches(switches)
    pool = pool_triplets(forward, reverse if aggregate else ())
    recognised = {e.text for e in entities}
    kept: list[Triplet] = []
    dropped: list[DroppedTriplet] = []
    for triplet in pool:
        missing = [
            f"{role} {arg.text!r}"
            for role, arg in (("head", triplet.head), ("tail", triplet.tail))
            if arg.text not in recognised
        ]
        if not constrain or not missing:
            kept.append(triplet)
        else:
            dropped.append(
                DroppedTriplet(
                    triplet=triplet, reason=f"{' and '.join(missing)} not recognised by NER"
                )
            )
    return kept, dropped


def anchor_filter_node(
    *, aggregate: bool, constrain: bool
) -> RunnableLambda[JointState, dict[str, Any]]:
    """The ``anchor_filter`` node: writes ``triplets`` (kept) and ``dropped_triplets``."""

    def run(state: JointState) -> FilterUpdate:
        kept, dropped = filter_triplets(
            state.forward_triplets,
            state.reverse_triplets,
            state.entities,
            aggregate=aggregate,
            constrain=constrain,
        )
        return FilterUpdate(triplets=kept, dropped_triplets=dropped)

    return pure_node("anchor_filter", run)


__all__ = [
    "FilterSwitches",
    "MentionTriple",
    "anchor_filter",
    "anchor_filter_node",
    "filter_triplets",
    "pool_triplets",
]
