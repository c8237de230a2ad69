"""The anchor-guided constraint filter against AnchorAlign §3.4, Eq. 13 and Table 2."""

from __future__ import annotations

import re
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samalign.agents.anchor_filter import (
    MentionTriple,
    anchor_filter,
    filter_triplets,
    pool_triplets,
)
from samalign.types import DroppedTriplet, Entity, RelationSource, Span, Triplet

ABLATIONS = [
    pytest.param(True, True, id="full"),
    pytest.param(False, True, id="wo-aggregation"),
    pytest.param(True, False, id="wo-constraint"),
    pytest.param(False, False, id="wo-both"),
]


def eq13(
    forward: Iterable[MentionTriple],
    reverse: Iterable[MentionTriple],
    entities: Iterable[str],
    *,
    aggregate: bool = True,
    constrain: bool = True,
) -> tuple[set[MentionTriple], set[MentionTriple]]:
    """A literal transcription of §3.4: (T_final, T_cand minus T_final).

    T_cand = T_fwd ∪ T_rev (T_fwd alone "w/o decoder aggregation");
    T_final = {(s, r, o) ∈ T_cand | {s_mention, o_mention} ⊆ E_NER} (T_cand "w/o generation
    constraint").
    """
    t_fwd, t_rev, e_ner = set(forward), set(reverse), set(entities)
    t_cand = t_fwd | t_rev if aggregate else t_fwd
    t_final = {(s, r, o) for (s, r, o) in t_cand if not constrain or {s, o} <= e_ner}
    return t_final, t_cand - t_final


def first_appearance(*sequences: Iterable[MentionTriple]) -> list[MentionTriple]:
    return list(dict.fromkeys(t for seq in sequences for t in seq))


# ---------------------------------------------------------------------------------------------
# anchor_filter: hand-written cases
# ---------------------------------------------------------------------------------------------

NER = ["John", "Mary", "IBM", "Paris"]
J_IBM = ("John", "work for", "IBM")
M_IBM = ("Mary", "work for", "IBM")
J_PARIS = ("John", "live in", "Paris")
IBM_PARIS = ("IBM", "located in", "Paris")
J_ACME = ("John", "work for", "Acme")  # tail not recognised
BOB_IBM = ("Bob", "work for", "IBM")  # head not recognised
BOB_ACME = ("Bob", "work for", "Acme")  # neither recognised


def test_shared_subjects_and_objects_are_all_kept() -> None:
    forward = [J_IBM, J_PARIS, M_IBM, IBM_PARIS]
    kept, dropped = anchor_filter(forward, [], NER)
    assert kept == forward
    assert dropped == []


def test_reversed_duplicates_appear_once() -> None:
    forward = [J_IBM, M_IBM, J_IBM]
    reverse = [M_IBM, J_IBM, M_IBM]
    kept, dropped = anchor_filter(forward, reverse, NER)
    assert kept == [J_IBM, M_IBM]
    assert dropped == []
    kept, dropped = anchor_filter(forward, reverse, ["John"])
    assert kept == []
    assert dropped == [J_IBM, M_IBM]


def test_a_triple_only_the_reverse_decoder_found() -> None:
    forward = [J_IBM]
    reverse = [IBM_PARIS, J_IBM]
    assert anchor_filter(forward, reverse, NER) == ([J_IBM, IBM_PARIS], [])
    assert anchor_filter(forward, reverse, NER, aggregate=False) == ([J_IBM], [])
    # not in the pool without aggregation, so not "dropped" either
    assert anchor_filter(forward, reverse, ["John"], aggregate=False) == ([], [J_IBM])


@pytest.mark.parametrize(
    ("triple", "entities"),
    [
        pytest.param(J_ACME, NER, id="tail-unrecognised"),
        pytest.param(BOB_IBM, NER, id="head-unrecognised"),
        pytest.param(BOB_ACME, NER, id="both-unrecognised"),
        pytest.param(J_IBM, [], id="no-entities"),
        pytest.param(J_IBM, ["john", "ibm"], id="mentions-are-exact"),
        pytest.param(J_IBM, ["John Smith", "IBM Corp"], id="no-partial-match"),
        pytest.param(J_IBM, ["work for"], id="relation-is-not-a-mention"),
    ],
)
def test_an_unrecognised_mention_drops_the_triple(
    triple: MentionTriple, entities: list[str]
) -> None:
    for forward, reverse in (([triple], []), ([], [triple]), ([triple], [triple])):
        assert anchor_filter(forward, reverse, entities) == ([], [triple])
        assert anchor_filter(forward, reverse, entities, constrain=False) == ([triple], [])


def test_recognition_needs_both_mentions_not_the_pair() -> None:
    # a self-relation is kept when its one mention is recognised
    loop = ("IBM", "part of", "IBM")
    assert anchor_filter([loop], [], ["IBM"]) == ([loop], [])
    # relations differ: different triples even between the same mentions
    other = ("John", "live in", "IBM")
    assert anchor_filter([J_IBM], [other], NER) == ([J_IBM, other], [])
    # direction matters: (IBM, work for, John) is another triple
    flipped = ("IBM", "work for", "John")
    assert anchor_filter([J_IBM], [flipped], NER) == ([J_IBM, flipped], [])


@pytest.mark.parametrize(("aggregate", "constrain"), ABLATIONS)
def test_table_2_ablations_match_eq_13(aggregate: bool, constrain: bool) -> None:
    forward = [J_IBM, J_ACME, BOB_IBM, J_IBM]
    reverse = [M_IBM, BOB_ACME, J_IBM, IBM_PARIS, J_ACME]
    kept, dropped = anchor_filter(forward, reverse, NER, aggregate=aggregate, constrain=constrain)
    assert (set(kept), set(dropped)) == eq13(
        forward, reverse, NER, aggregate=aggregate, constrain=constrain
    )
    expected = {
        (True, True): ([J_IBM, M_IBM, IBM_PARIS], [J_ACME, BOB_IBM, BOB_ACME]),
        (False, True): ([J_IBM], [J_ACME, BOB_IBM]),
        (True, False): ([J_IBM, J_ACME, BOB_IBM, M_IBM, BOB_ACME, IBM_PARIS], []),
        (False, False): ([J_IBM, J_ACME, BOB_IBM], []),
    }
    assert (kept, dropped) == expected[aggregate, constrain]


def test_inputs_may_be_lists_generators_and_sets() -> None:
    kept, dropped = anchor_filter(
        (list(t) for t in [J_IBM, BOB_IBM]),  # type: ignore[misc]
        iter([M_IBM]),
        {"John", "IBM", "Mary"},
    )
    assert kept == [J_IBM, M_IBM]
    assert all(type(t) is tuple for t in kept + dropped)
    assert dropped == [BOB_IBM]


def test_empty_inputs() -> None:
    assert anchor_filter([], [], NER) == ([], [])
    assert anchor_filter([], [J_IBM], NER, aggregate=False) == ([], [])


# ---------------------------------------------------------------------------------------------
# anchor_filter: property against the set-builder definition
# ---------------------------------------------------------------------------------------------

_MENTIONS = st.sampled_from(["John", "Mary", "IBM", "Paris", "Acme", "Bob", "john", "IBM "])
_TRIPLE = st.tuples(_MENTIONS, st.sampled_from(["work for", "live in", "kill"]), _MENTIONS)
_TRIPLES = st.lists(_TRIPLE, max_size=12)
_ENTITIES = st.lists(_MENTIONS, max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    forward=_TRIPLES,
    reverse=_TRIPLES,
    entities=_ENTITIES,
    aggregate=st.booleans(),
    constrain=st.booleans(),
)
def test_anchor_filter_is_eq_13(
    forward: list[MentionTriple],
    reverse: list[MentionTriple],
    entities: list[str],
    aggregate: bool,
    constrain: bool,
) -> None:
    kept, dropped = anchor_filter(
        forward, reverse, entities, aggregate=aggregate, constrain=constrain
    )
    final, removed = eq13(forward, reverse, entities, aggregate=aggregate, constrain=constrain)
    assert set(kept) == final
    assert set(dropped) == removed
    # kept ∪ dropped is the pool, disjoint, no duplicates
    pool = first_appearance(forward, reverse if aggregate else [])
    assert set(kept) | set(dropped) == set(pool)
    assert not set(kept) & set(dropped)
    assert len(kept) == len(set(kept)) and len(dropped) == len(set(dropped))
    # first-appearance order, forward first
    assert kept == [t for t in pool if t in final]
    assert dropped == [t for t in pool if t in removed]
    if not constrain:
        assert dropped == [] and kept == pool


# ---------------------------------------------------------------------------------------------
# filter_triplets / pool_triplets on grounded triplets
# ---------------------------------------------------------------------------------------------

SENTENCE = "John met Mary at IBM in Paris , and John later left IBM for Acme ."
TOKENS = [(m.start(), m.end()) for m in re.finditer(r"\S+", SENTENCE)]


def entity(text: str, nth: int = 0, label: str | None = None) -> Entity:
    start = [m.start() for m in re.finditer(re.escape(text), SENTENCE)][nth]
    return Entity(span=Span.of(SENTENCE, start, start + len(text)), label=label)


def triplet(head: Entity, relation: str, tail: Entity, source: RelationSource) -> Triplet:
    return Triplet(head=head, relation=relation, tail=tail, sources=(source,))


def mentions(triplets: Iterable[Triplet]) -> list[MentionTriple]:
    return [(t.head.text, t.relation, t.tail.text) for t in triplets]


JOHN, MARY, IBM, PARIS, ACME = (
    entity("John", label="PER"),
    entity("Mary", label="PER"),
    entity("IBM", label="ORG"),
    entity("Paris", label="LOC"),
    entity("Acme"),
)


def test_filter_triplets_merges_sources_of_a_triple_from_both_decoders() -> None:
    forward = [triplet(JOHN, "work for", IBM, "forward"), triplet(MARY, "work for", IBM, "forward")]
    reverse = [
        triplet(IBM, "located in", PARIS, "reverse"),
        triplet(JOHN, "work for", IBM, "reverse"),
    ]
    kept, dropped = filter_triplets(forward, reverse, [JOHN, MARY, IBM, PARIS])
    assert mentions(kept) == [
        ("John", "work for", "IBM"),
        ("Mary", "work for", "IBM"),
        ("IBM", "located in", "Paris"),
    ]
    assert [t.sources for t in kept] == [("forward", "reverse"), ("forward",), ("reverse",)]
    assert kept[0].head == JOHN and kept[0].tail == IBM
    assert dropped == []
    # without aggregation the reverse decoder contributes nothing, not even a source
    kept, _ = filter_triplets(forward, reverse, [JOHN, MARY, IBM, PARIS], aggregate=False)
    assert [t.sources for t in kept] == [("forward",), ("forward",)]


def test_pool_triplets_merges_sources_once() -> None:
    t = triplet(JOHN, "work for", IBM, "forward")
    r = triplet(JOHN, "work for", IBM, "reverse")
    both = t.model_copy(update={"sources": ("forward", "reverse")})
    assert pool_triplets([t, t], [r, r, both]) == [both]
    assert pool_triplets([], [r, t]) == [r.model_copy(update={"sources": ("reverse", "forward")})]


@pytest.mark.parametrize(
    ("head", "tail", "entities", "reason"),
    [
        (JOHN, ACME, [JOHN, IBM], "tail 'Acme' not recognised by NER"),
        (ACME, IBM, [JOHN, IBM], "head 'Acme' not recognised by NER"),
        (MARY, ACME, [JOHN, IBM], "head 'Mary' and tail 'Acme' not recognised by NER"),
    ],
)
def test_filter_triplets_names_the_unrecognised_mentions(
    head: Entity, tail: Entity, entities: list[Entity], reason: str
) -> None:
    candidate = triplet(head, "work for", tail, "reverse")
    kept, dropped = filter_triplets([], [candidate], entities)
    assert kept == []
    assert dropped == [DroppedTriplet(triplet=candidate, reason=reason)]
    kept, dropped = filter_triplets([], [candidate], entities, constrain=False)
    assert kept == [candidate] and dropped == []


def test_filter_triplets_recognises_mentions_by_text() -> None:
    # Eq. 13 compares mentions: the second "John" is recognised through the first one's text
    second_john = entity("John", nth=1)
    candidate = triplet(second_john, "work for", IBM, "forward")
    kept, dropped = filter_triplets([candidate], [], [JOHN, IBM])
    assert kept == [candidate] and dropped == []


_SPANS = [
    Span.of(SENTENCE, s, e) for i, (s, _) in enumerate(TOKENS) for (_, e) in TOKENS[i : i + 2]
]
_SPAN = st.sampled_from(_SPANS)
_ARGUMENT = st.builds(
    lambda span, label: Entity(span=span, label=label),
    _SPAN,
    st.sampled_from([None, "PER", "ORG"]),
)


def _grounded(source: RelationSource) -> st.SearchStrategy[list[Triplet]]:
    return st.lists(
        st.builds(
            lambda h, r, t: Triplet(head=h, relation=r, tail=t, sources=(source,)),
            _ARGUMENT,
            st.sampled_from(["work for", "live in"]),
            _ARGUMENT,
        ),
        max_size=10,
    )


def _key(t: Triplet) -> tuple[int, int, str, int, int]:
    return (t.head.start, t.head.end, t.relation, t.tail.start, t.tail.end)


@settings(max_examples=200, deadline=None)
@given(
    forward=_grounded("forward"),
    reverse=_grounded("reverse"),
    recognised=st.lists(_ARGUMENT, max_size=8),
    aggregate=st.booleans(),
    constrain=st.booleans(),
)
def test_filter_triplets_agrees_with_anchor_filter(
    forward: list[Triplet],
    reverse: list[Triplet],
    recognised: list[Entity],
    aggregate: bool,
    constrain: bool,
) -> None:
    kept, dropped = filter_triplets(
        forward, reverse, recognised, aggregate=aggregate, constrain=constrain
    )
    ref_kept, ref_dropped = anchor_filter(
        mentions(forward),
        mentions(reverse),
        [e.text for e in recognised],
        aggregate=aggregate,
        constrain=constrain,
    )
    # the same rule on mention strings, in the same (first-appearance) order
    assert first_appearance(mentions(kept)) == ref_kept
    assert first_appearance(mentions(d.triplet for d in dropped)) == ref_dropped
    # pooled once per (head span, relation, tail span); kept ∪ dropped is the pool, disjoint
    pool = list(dict.fromkeys(_key(t) for t in [*forward, *(reverse if aggregate else [])]))
    result = [_key(t) for t in kept] + [_key(d.triplet) for d in dropped]
    assert sorted(result) == sorted(pool)
    assert [k for k in pool if k in {_key(t) for t in kept}] == [_key(t) for t in kept]
    # sources: which decoders produced the triple, forward first
    fwd_keys, rev_keys = {_key(t) for t in forward}, {_key(t) for t in reverse}
    for t in [*kept, *(d.triplet for d in dropped)]:
        expected: list[RelationSource] = []
        if _key(t) in fwd_keys:
            expected.append("forward")
        if aggregate and _key(t) in rev_keys:
            expected.append("reverse")
        assert t.sources == tuple(expected)
        # the arguments are those of the decoder that produced the triple first
        first = next(u for u in [*forward, *reverse] if _key(u) == _key(t))
        assert (t.head, t.tail) == (first.head, first.tail)
    # reasons name exactly the unrecognised mentions
    texts = {e.text for e in recognised}
    for d in dropped:
        missing = [
            f"{role} {arg.text!r}"
            for role, arg in (("head", d.triplet.head), ("tail", d.triplet.tail))
            if arg.text not in texts
        ]
        assert missing
        assert d.reason == f"{' and '.join(missing)} not recognised by NER"
