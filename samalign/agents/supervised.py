"""The supervised NER node: AnchorAlign's dataset-trained NER decoder (§3.2, Eq. 2).

In AnchorAlign's supervised setting one decoder, trained on the dataset, writes every entity
with its type, and those types are final: no archetype mediation, no calibration. The node
asks the ``supervised_ner`` stage model for ``[{"mention", "type"}]`` over the domain's type
names, grounds every typed mention to the text the way candidates are grounded (flat or
nested, exact → normalised → fuzzy) and writes

* ``candidates``: the grounded spans, untyped (what the extractor found; the evaluation's
  ``candidates`` protocol), and
* ``entities``: the same spans with their labels (``sources=("supervised_ner",)``).

A mention given a type outside the schema is dropped (``label_out_of_schema``); a mention
given several types keeps the first (``duplicate_assignment``); a mention not in the text is
dropped (``hallucination``).
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableLambda

from samalign.agents.base import AgentSettings, Prepared, StageContext, stage_node, stage_request
from samalign.agents.candidates import ground_candidates
from samalign.agents.extractors import sentence_mentions
from samalign.agents.matching import assign_types
from samalign.agents.runner import StageResult
from samalign.agents.state import NerState, SupervisedNerUpdate
from samalign.prompts.formats import ParsedTypedMentions
from samalign.prompts.supervised import SUPERVISED_NER_FORMAT
from samalign.types import SUPERVISED_NER_STAGE, Diagnostic, Entity

STAGE = SUPERVISED_NER_STAGE


def typed_mentions(
    parsed: ParsedTypedMentions, *, raw: str | None = None
) -> tuple[dict[str, str], list[Diagnostic]]:
    """Each mention string's type (the first one given), and what was left out.

    Args:
        parsed: The parsed answer (types already restricted to the schema's names).
        raw: The raw answer, attached to diagnostics.

    Returns:
        mention → type name, in answer order, and the diagnostics (types outside the schema,
        mentions given several types).
    """
    mentions = list(dict.fromkeys(m for _, m in parsed.pairs))
    types, diagnostics = assign_types(
        [(m, t) for t, m in parsed.pairs], mentions, stage=STAGE, to_label=lambda t: t
    )
    if parsed.out_of_schema:
        diagnostics.append(
            Diagnostic(
                stage=STAGE,
                kind="label_out_of_schema",
                message=f"types outside the schema {list(parsed.out_of_schema)}; their "
                f"mentions were dropped: {[m for _, m in parsed.dropped]}",
                raw=raw,
            )
        )
    return types, diagnostics


def supervised_ner_node(settings: AgentSettings) -> RunnableLambda[NerState, dict[str, Any]]:
    """Build the ``supervised_ner`` node (see the module docs)."""

    def prepare(state: NerState, ctx: StageContext) -> Prepared[ParsedTypedMentions]:
        mentions = sentence_mentions(state.text, settings)
        names = ctx.domain.names
        return stage_request(
            STAGE,
            ctx,
            settings,
            variables={"labels": names, "text": state.text},
            schema=SUPERVISED_NER_FORMAT.schema(
                names, mentions=mentions, max_items=settings.max_mentions_per_type * len(names)
            ),
            parse=lambda raw: SUPERVISED_NER_FORMAT.parse(raw, names),
        )

    def finish(
        state: NerState, ctx: StageContext, prepared: Prepared[Any], result: StageResult[Any]
    ) -> SupervisedNerUpdate:
        parsed: ParsedTypedMentions | None = result.value
        if parsed is None:
            return SupervisedNerUpdate(candidates=[], entities=[], failed_stages=[STAGE])
        types, diagnostics = typed_mentions(parsed, raw=result.raw)
        kept, grounding = ground_candidates(state.text, list(types), settings, stage=STAGE)
        domain = ctx.domain
        entities: list[Entity] = []
        for grounded in kept:
            label = domain.label_for_name(types[grounded.mention])
            if label is not None:  # the parser restricts types to the schema; defensive
                entities.extend(
                    Entity(span=span, label=label, sources=("supervised_ner",))
                    for span in grounded.spans
                )
        entities.sort(key=lambda e: (e.start, -e.end))
        candidates = [e.model_copy(update={"label": None}) for e in entities]
        return SupervisedNerUpdate(
            candidates=candidates, entities=entities, diagnostics=[*diagnostics, *grounding]
        )

    return stage_node(STAGE, prepare, finish, settings)


__all__ = ["supervised_ner_node", "typed_mentions"]
