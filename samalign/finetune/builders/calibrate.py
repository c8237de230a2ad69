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
from samalign.finetune.builders.archetype import ArchetypeProjection
from samalign.finetune.builders.common import (
    DEFAULT_MAX_TEXT_CHARS,
    ExampleSet,
    domain_label,
    ground_gold,
    profile_and_spec,
)
from samalign.finetune.builders.io import BuildResult
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
) -> BuildResult:
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
    chosen, spec = profile_and_spec("calibrate", domain, profile)
    project = ArchetypeProjection(archetype_map, domain)
    built = ExampleSet("calibrate", compact=chosen.compact_answers)
    report = built.report
    for dataset in datasets:
        for rec in built.fitting(dataset.records, max_text_chars):
            gold = [(m.text, domain_label(domain, m.type, rec.origin)) for m in rec.mentions]
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
            built.add(rec, task="ner", prompt=prompt, answer=chosen.calibration_answer(answer))
    return built.result()


__all__ = ["build_calibrate_examples"]
