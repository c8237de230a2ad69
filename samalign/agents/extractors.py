"""The anchor and explorer extractor nodes (SAM-NER §3.1, Eq. 1–2, Figures 5–6).

Both extract type-agnostic mention strings for the domain's target types; the types they
assign are not used downstream (archetype mediation re-types every candidate). A mention
that cannot be found in the text is dropped and recorded as a hallucination Diagnostic.

Each mention is grounded here, once (:func:`ground_extracted`): the state keeps the text's
spelling (``anchor_mentions``, what CCR compares) and its spans and matching tier
(``anchor_grounded``), which consensus, merge and the relation stages reuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.runnables import RunnableLambda

from samalign.agents.base import (
    AgentSettings,
    Prepared,
    StageContext,
    prompt_request,
    stage_node,
    validate_text,
)
from samalign.agents.grounding import find_occurrences, ground_mentions, word_spans
from samalign.agents.runner import StageResult
from samalign.agents.state import ExtractorUpdate, NerState
from samalign.prompts.formats import ParsedTypedMentions
from samalign.prompts.profiles import PromptProfile, prompt_profile, resolve_profile
from samalign.types import Diagnostic, GroundedMention, Span

MAX_ENUM_MENTIONS = 3000
"""Upper bound on the number of candidate strings in a constrained-decoding schema."""


def text_ngrams(text: str, max_tokens: int) -> list[str] | None:
    """Every substring of ``text`` spanning 1..max_tokens word/punctuation tokens.

    Used to restrict extractor answers to strings that occur in the text (constrained
    decoding), so a mention can always be grounded. Tokens are those of the grounding module
    (each CJK character is a token). N-grams that start with punctuation (except a lone
    symbol) are left out.

    Returns:
        The strings, or ``None`` when there would be more than ``MAX_ENUM_MENTIONS`` (then the
        answer is not restricted and grounding alone catches hallucinated mentions).
    """
    tokens = word_spans(text)
    seen: dict[str, None] = {}
    for i, (start, _) in enumerate(tokens):
        first_is_word = text[start].isalnum() or text[start] == "_"
        for j in range(i, min(i + max_tokens, len(tokens))):
            if not first_is_word and j > i:
                break
            seen.setdefault(text[start : tokens[j][1]], None)
            if len(seen) > MAX_ENUM_MENTIONS:
                return None
    return list(seen)


def ground_extracted(
    text: str, mentions: Sequence[str], *, fuzzy_threshold: float = 0.8
) -> tuple[list[GroundedMention], list[str]]:
    """Ground an extractor's mention strings once, for every later stage.

    Each mention found in the text becomes the text's own spelling of its first occurrence
    (``"lstm"`` found as ``"LSTM"`` becomes ``"LSTM"``), with every occurrence of that spelling
    (the spans consensus, merge and the relation stages use) and the tier that found the
    model's string.

    Args:
        text: The sentence.
        mentions: The model's mention strings.
        fuzzy_threshold: Word-level LCS score needed for fuzzy grounding.

    Returns:
        ``(grounded, missing)``: one grounded mention per distinct spelling, in answer order,
        and the mentions not found in the text.
    """
    grounded: dict[str, GroundedMention] = {}
    missing: list[str] = []
    for found in ground_mentions(text, mentions, mode="nested", fuzzy_threshold=fuzzy_threshold):
        if not found.spans:
            missing.append(found.mention)
            continue
        spelling = found.spans[0].text
        if spelling in grounded:
            continue
        spans: Sequence[Span] = found.spans
        if found.tier != "exact":  # the occurrences of the text's spelling, not of the answer
            spans, _ = find_occurrences(text, spelling, fuzzy_threshold=fuzzy_threshold)
        grounded[spelling] = GroundedMention(mention=spelling, spans=tuple(spans), tier=found.tier)
    return list(grounded.values()), missing


def sentence_mentions(text: str, settings: AgentSettings) -> list[str] | None:
    """Check a sentence for a stage that reads it, and give what answers may mention.

    Returns:
        With ``settings.constrain_mentions``, the text's n-grams (see :func:`text_ngrams`);
        else ``None`` (answers are not restricted).

    Raises:
        InputError: If no sentence-level stage can process the text (see ``validate_text``).
    """
    validate_text(text, settings)
    if not settings.constrain_mentions:
        return None
    return text_ngrams(text, settings.max_mention_tokens)


def extraction_request(
    stage: str,
    ctx: StageContext,
    settings: AgentSettings,
    *,
    text: str,
    names: list[str],
    mentions: list[str] | None,
    max_items: int | None = None,
    adapter_stage: str | None = None,
    extra: Any = None,
    profile: PromptProfile | None = None,
) -> Prepared[ParsedTypedMentions]:
    """A request in an extractor's answer format (``{type name: [mentions]}``).

    The format of both extractors and of the anchor as the recovery's verifier. The prompt is
    the ``profile``'s (default: the ``default`` profile, JSON-schema constrained); the
    ``reference`` profile renders the authors' extractor prompts and sends no schema.

    Args:
        stage: The stage whose prompt spec is used (``anchor``, ``explorer``).
        ctx: The run context.
        settings: The node's settings.
        text: The text the prompt shows.
        names: The type names to ask about.
        mentions: Strings the answer's mentions are restricted to, or ``None``.
        max_items: Mentions per type in the schema (default ``settings.max_mentions_per_type``).
        adapter_stage: The stage whose adapter override applies (default: ``stage``).
        extra: Passed through to the finish step.
        profile: The prompt profile that renders the request (default: ``default``).
    """
    rendered = (profile or prompt_profile("default")).extractor(
        stage,
        ctx.domain,
        names,
        text,
        mentions=mentions,
        max_items=max_items or settings.max_mentions_per_type,
    )
    return prompt_request(stage, ctx, settings, rendered, adapter_stage=adapter_stage, extra=extra)


def extractor_node(
    stage: Literal["anchor", "explorer"], settings: AgentSettings
) -> RunnableLambda[NerState, dict[str, Any]]:
    """Build the ``anchor`` or ``explorer`` node."""

    def request_for(
        state: NerState, ctx: StageContext, names: list[str], mentions: list[str] | None
    ) -> Prepared[ParsedTypedMentions]:
        profile = resolve_profile(ctx.domain, settings.prompt_profile)
        return extraction_request(
            stage, ctx, settings, text=state.text, names=names, mentions=mentions, profile=profile
        )

    def prepare(
        state: NerState, ctx: StageContext
    ) -> Prepared[ParsedTypedMentions] | list[Prepared[ParsedTypedMentions]]:
        mentions = sentence_mentions(state.text, settings)
        names = resolve_profile(ctx.domain, settings.prompt_profile).extraction_types(ctx.domain)
        chunk = settings.anchor_schema_chunk if stage == "anchor" else None
        if chunk is None or len(names) <= chunk:
            return request_for(state, ctx, names, mentions)
        ordered = sorted(names)  # IEPile's evaluation: sorted schema, split into chunks
        return [
            request_for(state, ctx, ordered[i : i + chunk], mentions)
            for i in range(0, len(ordered), chunk)
        ]

    def update(grounded: list[GroundedMention], **fields: Any) -> ExtractorUpdate:
        mentions = [g.mention for g in grounded]
        if stage == "anchor":
            return ExtractorUpdate(anchor_mentions=mentions, anchor_grounded=grounded, **fields)
        return ExtractorUpdate(explorer_mentions=mentions, explorer_grounded=grounded, **fields)

    def finish(
        state: NerState, ctx: StageContext, prepared: Prepared[Any], result: StageResult[Any]
    ) -> ExtractorUpdate:
        values = result.value if isinstance(result.value, list) else [result.value]
        answers: list[ParsedTypedMentions] = [v for v in values if v is not None]
        if not answers:
            return update([], failed_stages=[stage])
        parsed = ParsedTypedMentions(
            pairs=tuple(p for a in answers for p in a.pairs),
            out_of_schema=tuple(dict.fromkeys(t for a in answers for t in a.out_of_schema)),
            dropped=tuple(p for a in answers for p in a.dropped),
        )
        raw_mentions = list(dict.fromkeys(m for _, m in (*parsed.pairs, *parsed.dropped)))
        diagnostics: list[Diagnostic] = []
        if parsed.out_of_schema:
            diagnostics.append(
                result.diagnostic(
                    stage,
                    "label_out_of_schema",
                    f"types outside the schema {list(parsed.out_of_schema)}; "
                    "their mentions are kept as type-agnostic candidates",
                )
            )
        grounded, missing = ground_extracted(
            state.text, raw_mentions, fuzzy_threshold=settings.fuzzy_threshold
        )
        if missing:
            diagnostics.append(
                result.diagnostic(
                    stage, "hallucination", f"mentions not found in the text, dropped: {missing}"
                )
            )
        return update(grounded, diagnostics=diagnostics)

    return stage_node(stage, prepare, finish, settings)


__all__ = [
    "MAX_ENUM_MENTIONS",
    "extraction_request",
    "extractor_node",
    "ground_extracted",
    "sentence_mentions",
    "text_ngrams",
]
