"""Calibrator training data (SAM-NER §3.3, Figure 8): archetype-typed mentions → target types.

In the paper the calibrator is a *frozen* LLM (served through an identity adapter). This
builder exists for models that cannot calibrate zero-shot — a small base model, or the tiny
demonstration model — and for users who want to tune it on their own domain. The prompt is
rendered by the prompt profile with the same variables the calibrator node uses: the text, the
initial output (mention → archetype, from the gold label's archetype), the domain's types as
candidate types, the archetype definitions and the domain's type definitions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from samalign.agents.grounding import GroundingMode
from samalign.errors import ConfigError
from samalign.finetune.builders.archetype import ArchetypeProjection
from samalign.finetune.builders.common import (
    DEFAULT_MAX_TEXT_CHARS,
    builder_profile,
    ground_gold,
    stage_spec,
    too_long,
    training_answer,
)
from samalign.finetune.builders.io import BuildReport, ChatExample
from samalign.finetune.builders.sources import SourceDataset
from samalign.prompts.domain import Domain
from samalign.types import Archetype


def build_calibrate_examples(
    datasets: Sequence[SourceDataset],
    *,
    domain: Domain,
    archetype_map: Mapping[str, str] | None = None,
    grounding: GroundingMode = "flat",
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
    profile: str | None = None,
) -> tuple[list[ChatExample], BuildReport]:
    """Build calibrator examples for a domain.

    Args:
        datasets: Source datasets whose labels are the domain's labels (or names).
        domain: The target domain (types, definitions, prompt override).
        archetype_map: Label → archetype, checked before the domain's table and M; a label
            with no archetype gets ``Misc`` in the initial output.
        grounding: How gold mentions become candidates (the pipeline's grounding mode).
        max_text_chars: Skip passages longer than the sentence graph accepts.
        profile: The prompt profile to render with (default: the domain's).

    Returns:
        The examples and a report of counts.

    Raises:
        ConfigError: A gold label is not in the domain.
    """
    chosen = builder_profile(domain, profile)
    spec = stage_spec("calibrate", domain, chosen)
    project = ArchetypeProjection(archetype_map, domain)
    report = BuildReport(stage="calibrate")
    examples: list[ChatExample] = []
    for dataset in datasets:
        for rec in dataset.records:
            report.records += 1
            if too_long(rec, max_text_chars):
                report.skip("text_too_long")
                continue
            gold: list[tuple[str, str]] = []
            for m in rec.mentions:
                label = domain.label_for_name(m.type)
                if label is None:
                    raise ConfigError(
                        f"{rec.origin}: label {m.type!r} is not in domain {domain.name!r} "
                        f"(labels {domain.labels})"
                    )
                gold.append((m.text, label))
            grounded = ground_gold(rec.text, gold, grounding=grounding, report=report)
            if not grounded:
                report.skip("no_entities")  # nothing archetyped: the calibrator is not called
                continue
            initial: dict[str, Archetype] = {}
            answer: dict[str, str] = {}
            for span, label in grounded:
                if span.text in initial:
                    continue
                initial[span.text] = project(label) or Archetype.MISC
                answer[span.text] = chosen.show(domain, label)
                report.count("mentions")
            prompt = spec.render(chosen.calibrator_variables(domain, rec.text, initial))
            examples.append(
                ChatExample(
                    id=rec.id,
                    stage="calibrate",
                    task="ner",
                    prompt=prompt,
                    answer=training_answer(chosen.calibration_answer(answer), chosen),
                    source=rec.origin,
                )
            )
    report.examples = len(examples)
    return examples, report


__all__ = ["build_calibrate_examples"]
