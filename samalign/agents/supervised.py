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
from samalign.agents.candidates import ground_candidates
from samalign.agents.extractors import text_ngrams
from samalign.agents.matching import assign_types
from samalign.agents.runner import StageRequest, StageResult
from samalign.prompts.formats import ParsedTypedMentions
from samalign.prompts.specs import default_specs
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


def supervised_ner_node(settings: AgentSettings) -> RunnableLambda[Any, Update]:
    """Build the ``supervised_ner`` node (see the module docs)."""
    spec_default = default_specs()[STAGE]

    def prepare(state: Any, ctx: StageContext) -> Prepared:
        validate_text(state.text, settings)
        domain = ctx.domain
        names = domain.names
        spec = spec_default.with_template(domain.prompts.get(STAGE))
        prompt = spec.render({"labels": names, "text": state.text})
        mentions = (
            text_ngrams(state.text, settings.max_mention_tokens)
            if settings.constrain_mentions
            else None
        )
        schema = SUPERVISED_NER_FORMAT.schema(
            names, mentions=mentions, max_items=settings.max_mentions_per_type * len(names)
        )
        request = StageRequest(
            stage=STAGE,
            messages=[HumanMessage(content=prompt)],
            schema=schema,
            max_tokens=settings.max_completion_tokens or spec.max_tokens,
            adapter=domain.adapters.get(STAGE),
        )
        return Prepared(request, lambda raw: SUPERVISED_NER_FORMAT.parse(raw, names))

    def finish(
        state: Any, ctx: StageContext, prepared: Prepared, result: StageResult[Any]
    ) -> Update:
        parsed: ParsedTypedMentions | None = result.value
        if parsed is None:
            return {"candidates": [], "entities": [], "failed_stages": [STAGE]}
        types, diagnostics = typed_mentions(parsed, raw=result.raw)
        pairs, grounding = ground_candidates(state.text, list(types), settings, stage=STAGE)
        domain = ctx.domain
        entities: list[Entity] = []
        for mention, span in pairs:
            label = domain.label_for_name(types[mention])
            if label is not None:  # the parser restricts types to the schema; defensive
                entities.append(Entity(span=span, label=label, sources=("supervised_ner",)))
        entities.sort(key=lambda e: (e.start, -e.end))
        candidates = [e.model_copy(update={"label": None}) for e in entities]
        return {
            "candidates": candidates,
            "entities": entities,
            "diagnostics": [*diagnostics, *grounding],
        }

    return stage_node(STAGE, prepare, finish, settings)


__all__ = ["supervised_ner_node", "typed_mentions"]
