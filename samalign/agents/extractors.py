"""The anchor and explorer extractor nodes (SAM-NER §3.1, Eq. 1–2, Figures 5–6).

Both extract type-agnostic mention strings for the domain's target types; the types they
assign are not used downstream (archetype mediation re-types every candidate). A mention
that cannot be found in the text is dropped and recorded as a hallucination Diagnostic.
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableLambda

from samalign.agents.base import (
    AgentSettings,
    Prepared,
    StageContext,
    Update,
    stage_node,
    validate_text,
)
from samalign.agents.grounding import ground_mentions, word_spans
from samalign.agents.runner import StageRequest, StageResult
from samalign.prompts.formats import ParsedTypedMentions
from samalign.prompts.profiles import resolve_profile
from samalign.types import Diagnostic

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


def extractor_node(
    stage: Literal["anchor", "explorer"], settings: AgentSettings
) -> RunnableLambda[Any, Update]:
    """Build the ``anchor`` or ``explorer`` node."""
    key = f"{stage}_mentions"

    def request_for(
        state: Any, ctx: StageContext, names: list[str], mentions: list[str] | None
    ) -> Prepared:
        domain = ctx.domain
        rendered = resolve_profile(domain, settings.prompt_profile).extractor(
            stage,
            domain,
            names,
            state.text,
            mentions=mentions,
            max_items=settings.max_mentions_per_type,
        )
        request = StageRequest(
            stage=stage,
            messages=[HumanMessage(content=rendered.prompt)],
            schema=rendered.schema,
            max_tokens=settings.max_completion_tokens or rendered.max_tokens,
            adapter=domain.adapters.get(stage),
        )
        return Prepared(request, rendered.parse)

    def prepare(state: Any, ctx: StageContext) -> Prepared | list[Prepared] | Update:
        validate_text(state.text, settings)
        names = resolve_profile(ctx.domain, settings.prompt_profile).extraction_types(ctx.domain)
        mentions = (
            text_ngrams(state.text, settings.max_mention_tokens)
            if settings.constrain_mentions
            else None
        )
        chunk = settings.anchor_schema_chunk if stage == "anchor" else None
        if chunk is None or len(names) <= chunk:
            return request_for(state, ctx, names, mentions)
        ordered = sorted(names)  # IEPile's evaluation: sorted schema, split into chunks
        return [
            request_for(state, ctx, ordered[i : i + chunk], mentions)
            for i in range(0, len(ordered), chunk)
        ]

    def finish(
        state: Any, ctx: StageContext, prepared: Prepared, result: StageResult[Any]
    ) -> Update:
        values = result.value if isinstance(result.value, list) else [result.value]
        answers: list[ParsedTypedMentions] = [v for v in values if v is not None]
        if not answers:
            return {key: [], "failed_stages": [stage]}
        parsed = ParsedTypedMentions(
            pairs=tuple(p for a in answers for p in a.pairs),
            out_of_schema=tuple(dict.fromkeys(t for a in answers for t in a.out_of_schema)),
            dropped=tuple(p for a in answers for p in a.dropped),
        )
        raw_mentions = list(dict.fromkeys(m for _, m in (*parsed.pairs, *parsed.dropped)))
        diagnostics: list[Diagnostic] = []
        if parsed.out_of_schema:
            diagnostics.append(
                Diagnostic(
                    stage=stage,
                    kind="label_out_of_schema",
                    message=f"types outside the schema {list(parsed.out_of_schema)}; "
                    "their mentions are kept as type-agnostic candidates",
                    raw=result.raw,
                )
            )
        found: list[str] = []
        missing: list[str] = []
        for grounded in ground_mentions(
            state.text, raw_mentions, mode="nested", fuzzy_threshold=settings.fuzzy_threshold
        ):
            if grounded.spans:
                found.append(grounded.spans[0].text)
            else:
                missing.append(grounded.mention)
        if missing:
            diagnostics.append(
                Diagnostic(
                    stage=stage,
                    kind="hallucination",
                    message=f"mentions not found in the text, dropped: {missing}",
                    raw=result.raw,
                )
            )
        return {key: list(dict.fromkeys(found)), "diagnostics": diagnostics}

    return stage_node(stage, prepare, finish, settings)


__all__ = ["MAX_ENUM_MENTIONS", "extractor_node", "text_ngrams"]
