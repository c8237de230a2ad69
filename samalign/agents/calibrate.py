"""The definition-guided calibrator node (SAM-NER §3.3, Eq. 12, Figure 8).

A frozen LLM (served through an identity adapter) maps each archetype-typed mention to one
target-domain type, given the archetype definitions (Table 5) and the target type definitions.
Answers are restricted to the domain's types by the JSON schema.
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableLambda

from samalign.agents.base import AgentSettings, Prepared, StageContext, stage_node, stage_request
from samalign.agents.matching import assign_types
from samalign.agents.runner import StageResult
from samalign.agents.state import NerState, TypingUpdate
from samalign.prompts.archetypes import archetype_table
from samalign.prompts.formats import ParsedAssignments
from samalign.prompts.specs import CALIBRATION_FORMAT
from samalign.types import Diagnostic

STAGE = "calibrate"
CALIBRATION_MAX_ITEMS = 64
"""Records per calibrator answer (fixed so the schema is the same for every request)."""


def calibrate_node(settings: AgentSettings) -> RunnableLambda[NerState, dict[str, Any]]:
    """Build the ``calibrate`` node."""
    table = archetype_table()
    archetype_definitions = [
        {"name": a.name.value, "definition": a.definition} for a in table.archetypes
    ]

    def prepare(state: NerState, ctx: StageContext) -> Prepared[ParsedAssignments] | TypingUpdate:
        if not state.archetyped:
            return TypingUpdate(entities=[])
        domain = ctx.domain
        initial: dict[str, str] = {}
        for ent in state.archetyped:
            if ent.archetype is not None:
                initial.setdefault(ent.text, ent.archetype.value)
        names = domain.names
        return stage_request(
            STAGE,
            ctx,
            settings,
            variables={
                "text": state.text,
                "initial_output": initial,
                "candidate_types": names,
                "archetype_definitions": archetype_definitions,
                "target_definitions": [
                    {"name": t.name, "definition": t.definition} for t in domain.entity_types
                ],
            },
            schema=CALIBRATION_FORMAT.schema(
                names,
                mentions=list(initial) if settings.constrain_mentions else None,
                max_items=max(CALIBRATION_MAX_ITEMS, len(initial)),
            ),
            parse=CALIBRATION_FORMAT.parse,
            extra=list(initial),
        )

    def finish(
        state: NerState, ctx: StageContext, prepared: Prepared[Any], result: StageResult[Any]
    ) -> TypingUpdate:
        archetyped = state.archetyped
        mentions: list[str] = prepared.extra
        parsed: ParsedAssignments | None = result.value
        labels, diagnostics = assign_types(
            parsed.assignments if parsed is not None else [],
            mentions,
            stage=STAGE,
            to_label=ctx.domain.label_for_name,
        )
        missing = [m for m in mentions if m not in labels]
        if missing:
            diagnostics.append(
                Diagnostic(
                    stage=STAGE,
                    kind="unclassified",
                    message=f"no valid target type for {missing}; dropped",
                    raw=result.raw,
                )
            )
        entities = [
            ent.model_copy(update={"label": labels[ent.text]})
            for ent in archetyped
            if ent.text in labels
        ]
        return TypingUpdate(entities=entities, diagnostics=diagnostics)

    return stage_node(STAGE, prepare, finish, settings)


__all__ = ["calibrate_node"]
