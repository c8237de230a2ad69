"""The archetype classifier node (SAM-NER §3.2, Eq. 9, Figure 7).

Every candidate occurrence is wrapped in ``<ENT></ENT>`` and the classifier assigns each
marked mention one type from the full archetype schema (14 archetypes). With calibration
disabled (the paper's "w/o cali." ablation) the same node types candidates directly with the
domain's target types and writes the final entities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.runnables import RunnableLambda

from samalign.agents.base import (
    AgentSettings,
    Prepared,
    StageContext,
    prompt_request,
    stage_node,
)
from samalign.agents.matching import assign_asked
from samalign.agents.runner import StageResult
from samalign.agents.state import NerState, TypingUpdate
from samalign.prompts.formats import ParsedTypedMentions
from samalign.prompts.profiles import resolve_profile
from samalign.types import DIRECT_TYPING_STAGE, Archetype, Diagnostic, Entity, Span

ENT_OPEN = "<ENT>"
ENT_CLOSE = "</ENT>"
STAGE = "archetype"


def tag_entities(text: str, spans: Sequence[Span]) -> str:
    """Wrap every span of ``text`` in ``<ENT></ENT>`` (nested spans nest properly)."""
    events: list[tuple[int, int, int, str]] = []
    for span in spans:
        # at one offset: closes before opens; outer opens first; inner closes first
        events.append((span.start, 1, -(span.end - span.start), ENT_OPEN))
        events.append((span.end, 0, span.end - span.start, ENT_CLOSE))
    events.sort()
    out: list[str] = []
    last = 0
    for pos, _, _, tag in events:
        out.append(text[last:pos])
        out.append(tag)
        last = pos
    out.append(text[last:])
    return "".join(out)


def archetype_node(
    settings: AgentSettings, *, direct: bool = False
) -> RunnableLambda[NerState, dict[str, Any]]:
    """Build the ``archetype`` node.

    Args:
        settings: Shared agent settings.
        direct: Type candidates with the domain's target types instead of archetypes (the
            "w/o calibration" ablation, served by the ``direct_typing`` stage model); the node
            then writes ``entities``.
    """
    model_stage = DIRECT_TYPING_STAGE if direct else STAGE

    def prepare(state: NerState, ctx: StageContext) -> Prepared[ParsedTypedMentions] | TypingUpdate:
        candidates = state.candidates
        if not candidates:
            return TypingUpdate(entities=[]) if direct else TypingUpdate(archetyped=[])
        domain = ctx.domain
        mentions = list(dict.fromkeys(c.text for c in candidates))
        tagged = tag_entities(state.text, [c.span for c in candidates])
        rendered = resolve_profile(domain, settings.prompt_profile).classifier(
            domain,
            tagged,
            direct=direct,
            mentions=mentions if settings.constrain_mentions else None,
            max_items=max(settings.max_mentions_per_type, len(mentions)),
        )
        return prompt_request(
            STAGE, ctx, settings, rendered, adapter_stage=model_stage, extra=mentions
        )

    def finish(
        state: NerState, ctx: StageContext, prepared: Prepared[Any], result: StageResult[Any]
    ) -> TypingUpdate:
        mentions: list[str] = prepared.extra
        parsed: ParsedTypedMentions | None = result.value
        profile = resolve_profile(ctx.domain, settings.prompt_profile)
        allowed = set(profile.classifier_types(ctx.domain, direct=direct))
        assigned, missing, diagnostics = assign_asked(
            [(m, t) for t, m in parsed.pairs] if parsed is not None else [],
            mentions,
            stage=STAGE,
            to_label=lambda t: t if t in allowed else None,
        )
        if parsed is not None and parsed.out_of_schema:
            diagnostics.append(
                Diagnostic(
                    stage=STAGE,
                    kind="label_out_of_schema",
                    message=f"types outside the schema {list(parsed.out_of_schema)} were ignored",
                )
            )
        out: list[Entity] = []
        for cand in state.candidates:
            type_ = assigned.get(cand.text)
            if direct:
                label = ctx.domain.label_for_name(type_) if type_ else None
                if label is not None:
                    out.append(cand.model_copy(update={"label": label}))
            else:
                archetype = (profile.archetype_of(type_) if type_ else None) or Archetype.MISC
                out.append(cand.model_copy(update={"archetype": archetype}))
        if missing:
            consequence = (
                "dropped (no target type)" if direct else "given the catch-all archetype Misc"
            )
            diagnostics.append(
                result.diagnostic(
                    STAGE,
                    "unclassified",
                    f"the classifier left {missing} unclassified; {consequence}",
                )
            )
        if direct:
            return TypingUpdate(entities=out, diagnostics=diagnostics)
        return TypingUpdate(archetyped=out, diagnostics=diagnostics)

    return stage_node(STAGE, prepare, finish, settings, model_stage=model_stage)


__all__ = ["ENT_CLOSE", "ENT_OPEN", "archetype_node", "tag_entities"]
