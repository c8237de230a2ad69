"""The definition-guided calibrator node (SAM-NER §3.3, Eq. 12, Figure 8).

A frozen LLM (served through an identity adapter) maps each archetype-typed mention to one
target-domain type, given the archetype definitions (Table 5) and the target type definitions.
The prompt profile (:mod:`samalign.prompts.profiles`) renders the prompt and reads the answer;
the default profile restricts answers to the domain's types by the JSON schema.
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableLambda

from samalign.agents.base import AgentSettings, Prepared, StageContext, prompt_request, stage_node
from samalign.agents.matching import assign_asked
from samalign.agents.runner import StageResult
from samalign.agents.state import NerState, TypingUpdate
from samalign.prompts.formats import ParsedAssignments
from samalign.prompts.profiles import resolve_profile
from samalign.types import Archetype

STAGE = "calibrate"
CALIBRATION_MAX_ITEMS = 64
"""Records per calibrator answer (fixed so the schema is the same for every request)."""


def calibrate_node(settings: AgentSettings) -> RunnableLambda[NerState, dict[str, Any]]:
    """Build the ``calibrate`` node."""

    def prepare(state: NerState, ctx: StageContext) -> Prepared[ParsedAssignments] | TypingUpdate:
        if not state.archetyped:
            return TypingUpdate(entities=[])
        domain = ctx.domain
        initial: dict[str, Archetype] = {}
        for ent in state.archetyped:
            if ent.archetype is not None:
                initial.setdefault(ent.text, ent.archetype)
        rendered = resolve_profile(domain, settings.prompt_profile).calibrator(
            domain,
            state.text,
            initial,
            mentions=list(initial) if settings.constrain_mentions else None,
            max_items=max(CALIBRATION_MAX_ITEMS, len(initial)),
        )
        return prompt_request(STAGE, ctx, settings, rendered, extra=list(initial))

    def finish(
        state: NerState, ctx: StageContext, prepared: Prepared[Any], result: StageResult[Any]
    ) -> TypingUpdate:
        mentions: list[str] = prepared.extra
        parsed: ParsedAssignments | None = result.value
        labels, missing, diagnostics = assign_asked(
            parsed.assignments if parsed is not None else [],
            mentions,
            stage=STAGE,
            to_label=ctx.domain.label_for_name,
        )
        if missing:
            diagnostics.append(
                result.diagnostic(
                    STAGE, "unclassified", f"no valid target type for {missing}; dropped"
                )
            )
        entities = [
            ent.model_copy(update={"label": labels[ent.text]})
            for ent in state.archetyped
            if ent.text in labels
        ]
        return TypingUpdate(entities=entities, diagnostics=diagnostics)

    return stage_node(STAGE, prepare, finish, settings)


__all__ = ["calibrate_node"]
