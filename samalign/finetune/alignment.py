"""AnchorAlign's training-time alignment terms (Eq. 4–10) as losses on a plain LoRA adapter.

AnchorAlign aligns its decoders in the *output probability space*: the terms compare the
predictive distributions of the NER decoder and the two relation decoders where they write
the same entity or the same triplet. Here the three decoders are three prompts of one model
(``supervised_ner`` or an extractor, ``relations_forward``, ``relations_reverse``), and a
sentence's three examples are teacher-forced in the same micro-batch (the trainer's
``sentence_groups``), so every distribution the equations name is a row of that micro-batch's
logits. The terms are training losses only: the adapter stays a plain, servable LoRA.

For one sentence (one ``group``):

* **NER–RE alignment** (Eq. 4–5). For each entity occurrence ``e`` in a relation decoder's
  target (a subject or object string) and the NER target's occurrence ``e'`` of the same
  string: the KL divergence ``D_KL(p_NER(·|e') || p_d(·|e))`` between the next-token
  distributions at the mention's tokens, averaged over its tokens, then over the decoder's
  entities; ``L_NER-RE`` is the mean over the decoders present. The NER distribution is the
  target (no gradient flows into it), as "align … with the NER target distributions" says.
* **Forward–reverse alignment** (Eq. 6–7). For each gold triplet both relation targets hold:
  the symmetric KL between the two decoders' distributions at the triplet's tokens (head,
  relation, tail), averaged over those tokens, then over the triplets.
* **Negative suppression** (Eq. 8–10). The restricted vocabulary is the token ids of the
  sentence's prompts (input sentence, label names, instruction and the chat template's
  special tokens) and targets; the negative set is what is in no target of the sentence. For
  each relation decoder: the mean over its target steps of the mean over negative tokens of
  ``-log(1 - p(v))``; ``L_suppress`` is the mean over the decoders present.

A mention or triplet is aligned only where both targets tokenise it to the same token ids
(the same string inside a JSON string, which the answer formats guarantee in practice);
anything else is left out and counted (:attr:`GroupPlan.skipped`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from samalign.prompts.relations import relation_format

RELATION_STAGES: tuple[str, str] = ("relations_forward", "relations_reverse")
LABEL_KEYS = frozenset({"type", "entity_type", "label", "relation"})
"""JSON keys whose values are labels, not mentions."""


@dataclass(frozen=True)
class StringSpan:
    """A JSON string literal: its decoded value and where its content is in the text."""

    start: int
    end: int
    value: str
    is_key: bool


def json_strings(text: str) -> list[StringSpan]:
    """Every string literal of a JSON text, in order (``start``/``end`` exclude the quotes)."""
    out: list[StringSpan] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] != '"':
            i += 1
            continue
        j = i + 1
        while j < n and text[j] != '"':
            j += 2 if text[j] == "\\" else 1
        if j >= n:
            break
        value = json.loads(text[i : j + 1])
        k = j + 1
        while k < n and text[k] in " \t\r\n":
            k += 1
        out.append(StringSpan(i + 1, j, value, k < n and text[k] == ":"))
        i = j + 1
    return out


def keyed_strings(answer: str) -> list[tuple[str | None, StringSpan]] | None:
    """Each string *value* of a JSON answer with the key it belongs to, in document order.

    Array elements belong to the array's key. ``None`` when the answer is not JSON or its
    literals cannot be matched to the parsed value (e.g. a repeated key).
    """
    try:
        value = json.loads(answer)
    except ValueError:
        return None
    spans = iter(json_strings(answer))
    out: list[tuple[str | None, StringSpan]] = []

    def walk(item: Any, key: str | None) -> None:
        if isinstance(item, str):
            span = next(spans)
            if span.is_key or span.value != item:
                raise ValueError("literal mismatch")
            out.append((key, span))
        elif isinstance(item, list):
            for element in item:
                walk(element, key)
        elif isinstance(item, dict):
            for name, element in item.items():
                span = next(spans)
                if not span.is_key or span.value != name:
                    raise ValueError("key mismatch")
                walk(element, name)

    try:
        walk(value, None)
    except (StopIteration, ValueError):
        return None
    if next(spans, None) is not None:
        return None
    return out


CharSpan = tuple[int, int]
Triple = tuple[str, str, str]


@dataclass(frozen=True)
class AnswerItems:
    """The entity mentions and triplets of one gold answer, as character spans of the answer.

    Attributes:
        mentions: ``(mention, span)`` for every entity occurrence, in answer order.
        triplets: ``((head, relation, tail), (head span, relation span, tail span))`` for a
            relation answer.
    """

    mentions: tuple[tuple[str, CharSpan], ...] = ()
    triplets: tuple[tuple[Triple, tuple[CharSpan, CharSpan, CharSpan]], ...] = ()


def answer_items(stage: str, answer: str) -> AnswerItems | None:
    """Where the entities (and, for a relation stage, the triplets) are in a gold answer.

    NER answers (``supervised_ner``'s records, the extractors' ``{type: [mention]}``): every
    string value that is not a label. Relation answers: the block's own entity, each pair's
    other entity and relation. ``None`` when the answer cannot be read.
    """
    keyed = keyed_strings(answer)
    if keyed is None:
        return None
    if stage not in RELATION_STAGES:
        mentions = tuple(
            (s.value, (s.start, s.end)) for key, s in keyed if key not in LABEL_KEYS and s.value
        )
        return AnswerItems(mentions=mentions)
    fmt = relation_format(stage)
    forward = fmt.direction == "forward"
    own: StringSpan | None = None
    other: StringSpan | None = None
    mentions_list: list[tuple[str, CharSpan]] = []
    triplets: list[tuple[Triple, tuple[CharSpan, CharSpan, CharSpan]]] = []
    for key, span in keyed:
        if key == fmt.anchor_key:
            own, other = span, None
            mentions_list.append((span.value, (span.start, span.end)))
        elif key == fmt.other_key:
            other = span
            mentions_list.append((span.value, (span.start, span.end)))
        elif key == "relation" and own is not None and other is not None:
            head, tail = (own, other) if forward else (other, own)
            triplets.append(
                (
                    (head.value, span.value, tail.value),
                    ((head.start, head.end), (span.start, span.end), (tail.start, tail.end)),
                )
            )
    return AnswerItems(mentions=tuple(mentions_list), triplets=tuple(triplets))


def token_positions(
    span: CharSpan, offsets: Sequence[tuple[int, int]], first: int
) -> tuple[int, ...]:
    """Token positions (indices into the example's ``input_ids``) covering a character span.

    Args:
        span: Characters of the answer.
        offsets: Per completion token, its characters relative to the answer's start.
        first: Index of the first completion token in ``input_ids``.
    """
    start, end = span
    return tuple(first + j for j, (a, b) in enumerate(offsets) if b > a and a < end and b > start)


@dataclass(frozen=True)
class Member:
    """What the alignment terms need of one tokenised example of a sentence."""

    stage: str
    task: str
    input_ids: Sequence[int]
    labels: Sequence[int]
    answer: str
    offsets: Sequence[tuple[int, int]] | None
    """Per completion token, its characters relative to the answer (``None``: unknown)."""

    @property
    def first_target(self) -> int:
        """Index of the first completion token."""
        return next((i for i, t in enumerate(self.labels) if t != -100), len(self.labels))


Pair = tuple[int, tuple[int, ...], int, tuple[int, ...]]
"""``(member a, positions in a, member b, positions in b)``: the same tokens in two targets."""


@dataclass(frozen=True)
class GroupPlan:
    """The alignments of one sentence, as member indices and token positions.

    Attributes:
        ner_re: Per relation decoder present (``relations_forward``, ``relations_reverse``),
            its entity occurrences paired with the NER target's (Eq. 4).
        fwd_rev: The gold triplets both relation targets hold (Eq. 7).
        suppress: Per relation decoder present, ``(member, target positions)`` (Eq. 9).
        negatives: The negative token set of Eq. 8.
        skipped: Occurrences left out because the two targets tokenise them differently
            or the other target lacks them (``ner_re``, ``fwd_rev``), per term.
    """

    ner_re: dict[str, tuple[Pair, ...]] = field(default_factory=dict)
    fwd_rev: tuple[Pair, ...] = ()
    suppress: dict[str, tuple[int, tuple[int, ...]]] = field(default_factory=dict)
    negatives: tuple[int, ...] = ()
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """Whether no term has anything to compare in this sentence."""
        return not (any(self.ner_re.values()) or self.fwd_rev or self.suppress)


def _positions(member: Member, span: CharSpan) -> tuple[int, ...]:
    assert member.offsets is not None
    return token_positions(span, member.offsets, member.first_target)


def _same_tokens(a: Member, pa: tuple[int, ...], b: Member, pb: tuple[int, ...]) -> bool:
    return bool(pa) and [a.input_ids[p] for p in pa] == [b.input_ids[p] for p in pb]


def group_plan(members: Sequence[Member]) -> GroupPlan:
    """The alignments of one sentence's examples (see the module docs).

    The NER member is the first ``task: ner`` example; the relation members are the first
    ``relations_forward`` and ``relations_reverse`` examples. Members whose answers cannot be
    read (or without token offsets) take part in no term.
    """
    items: dict[int, AnswerItems] = {}
    for index, member in enumerate(members):
        if member.offsets is None:
            continue
        found = answer_items(member.stage, member.answer)
        if found is not None:
            items[index] = found
    ner = next((i for i, m in enumerate(members) if m.task == "ner" and i in items), None)
    decoders = {
        stage: next((i for i, m in enumerate(members) if m.stage == stage and i in items), None)
        for stage in RELATION_STAGES
    }
    skipped = {"ner_re": 0, "fwd_rev": 0}
    ner_re: dict[str, tuple[Pair, ...]] = {}
    if ner is not None:
        first: dict[str, tuple[int, ...]] = {}
        for mention, span in items[ner].mentions:
            first.setdefault(mention, _positions(members[ner], span))
        for stage, d in decoders.items():
            if d is None:
                continue
            pairs: list[Pair] = []
            for mention, span in items[d].mentions:
                positions = _positions(members[d], span)
                target = first.get(mention)
                if target is not None and _same_tokens(members[ner], target, members[d], positions):
                    pairs.append((ner, target, d, positions))
                else:
                    skipped["ner_re"] += 1
            ner_re[stage] = tuple(pairs)
    fwd_rev: list[Pair] = []
    f, r = decoders["relations_forward"], decoders["relations_reverse"]
    if f is not None and r is not None:
        reverse = {
            triple: tuple(p for span in spans for p in _positions(members[r], span))
            for triple, spans in reversed(items[r].triplets)
        }
        for triple, spans in items[f].triplets:
            positions = tuple(p for span in spans for p in _positions(members[f], span))
            other = reverse.get(triple)
            if other is not None and _same_tokens(members[f], positions, members[r], other):
                fwd_rev.append((f, positions, r, other))
            else:
                skipped["fwd_rev"] += 1
    suppress: dict[str, tuple[int, tuple[int, ...]]] = {}
    for stage, d in decoders.items():
        if d is not None:
            labels = members[d].labels
            suppress[stage] = (d, tuple(i for i, t in enumerate(labels) if t != -100))
    targets = {t for m in members for t in m.labels if t != -100}
    restricted = {
        t for m in members for t, lab in zip(m.input_ids, m.labels, strict=True) if lab == -100
    }
    negatives = tuple(sorted(restricted - targets))
    return GroupPlan(
        ner_re=ner_re,
        fwd_rev=tuple(fwd_rev),
        suppress=suppress if negatives else {},
        negatives=negatives,
        skipped=skipped,
    )


@dataclass(frozen=True)
class AlignmentWeights:
    """α, β, γ of Eq. 12."""

    alpha: float = 0.0
    beta: float = 0.0
    gamma: float = 0.0

    @property
    def active(self) -> bool:
        """Whether any term is on."""
        return (self.alpha, self.beta, self.gamma) != (0.0, 0.0, 0.0)


def _rows(logits: Any, row: int, positions: Sequence[int]) -> Any:
    """Log-probabilities predicting the tokens at ``positions`` of micro-batch row ``row``."""
    import torch

    index = torch.tensor([p - 1 for p in positions], device=logits.device)
    return torch.log_softmax(logits[row].index_select(0, index).float(), dim=-1)


def _kl(log_p: Any, log_q: Any) -> Any:
    """Per-row ``D_KL(p || q)`` from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def alignment_terms(
    logits: Any, rows: Sequence[int], plan: GroupPlan, weights: AlignmentWeights
) -> dict[str, Any]:
    """The terms of one sentence (tensors), for the weights that are on.

    Args:
        logits: The micro-batch's logits (rows × positions × vocabulary), unshifted.
        rows: The micro-batch row of each member of the sentence's group.
        plan: The sentence's :func:`group_plan`.
        weights: Which terms to compute (a zero weight's term is not computed).

    Returns:
        ``ner_re``, ``fwd_rev``, ``suppress``: each term present in this sentence.
    """
    import torch

    out: dict[str, Any] = {}
    if weights.alpha:
        per_decoder = []
        for pairs in plan.ner_re.values():
            if not pairs:
                continue
            kls = [
                _kl(_rows(logits, rows[a], pa).detach(), _rows(logits, rows[b], pb)).mean()
                for a, pa, b, pb in pairs
            ]
            per_decoder.append(torch.stack(kls).mean())
        if per_decoder:
            out["ner_re"] = torch.stack(per_decoder).mean()
    if weights.beta and plan.fwd_rev:
        sym = []
        for a, pa, b, pb in plan.fwd_rev:
            log_f, log_r = _rows(logits, rows[a], pa), _rows(logits, rows[b], pb)
            sym.append((0.5 * (_kl(log_f, log_r) + _kl(log_r, log_f))).mean())
        out["fwd_rev"] = torch.stack(sym).mean()
    if weights.gamma and plan.suppress:
        negatives = torch.tensor(plan.negatives, device=logits.device)
        per_decoder = []
        for member, positions in plan.suppress.values():
            probs = _rows(logits, rows[member], positions).exp().index_select(1, negatives)
            per_decoder.append(-torch.log1p(-probs.clamp(max=1.0 - 1e-6)).mean())
        out["suppress"] = torch.stack(per_decoder).mean()
    return out


def weighted_sum(terms: dict[str, Any], weights: AlignmentWeights) -> Any:
    """``α·L_NER-RE + β·L_RE-Align + γ·L_suppress`` of the terms present (0 if none)."""
    factor = {"ner_re": weights.alpha, "fwd_rev": weights.beta, "suppress": weights.gamma}
    total: Any = 0.0
    for name, value in terms.items():
        total = total + factor[name] * value
    return total


TERMS: tuple[str, ...] = ("ner_re", "fwd_rev", "suppress")
"""The terms' names (loss-log keys ``align_<name>``)."""


__all__ = [
    "LABEL_KEYS",
    "TERMS",
    "AlignmentWeights",
    "AnswerItems",
    "GroupPlan",
    "Member",
    "StringSpan",
    "alignment_terms",
    "answer_items",
    "group_plan",
    "json_strings",
    "keyed_strings",
    "token_positions",
    "weighted_sum",
]
