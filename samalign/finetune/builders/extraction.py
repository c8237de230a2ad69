"""Extractor training data (anchor and explorer): ``{type: [mention, ...]}`` answers.

Both extractors see the same prompt variables at inference (``labels`` = the schema's type
names, ``text`` = the sentence) and answer in the IEPile object form; only the template
differs (SAM-NER Figures 5 and 6). An example's schema is the passage's positive types plus
negative types (types absent from the passage, answered with ``[]``):

* records that list the types they ask about (Pile-NER, UniNER, IEPile instructions) keep
  those, and get more negatives sampled by frequency (UniNER's negative type sampling) until
  there are ``negative_ratio`` negatives per positive type;
* fully annotated datasets with a closed label set (BIO, SpERT, CrossRE, raw IEPile) use the
  whole label set by default (``all_labels``), which is what the agents send at inference; with
  ``all_labels=False`` they sample negatives like open sets.

The explorer's schema order is shuffled per example by default (GNER's class-order
shuffling); the anchor keeps the order (IEPile's instructions fix it).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Literal

from samalign.errors import ConfigError
from samalign.finetune.builders.common import (
    DEFAULT_MAX_TEXT_CHARS,
    ExampleSet,
    NegativeSampler,
    grounded,
    profile_and_spec,
    type_frequencies,
    type_names,
)
from samalign.finetune.builders.io import BuildResult
from samalign.finetune.builders.sources import SourceDataset
from samalign.prompts.domain import Domain
from samalign.prompts.profiles import PromptProfile

ExtractorStage = Literal["anchor", "explorer"]


def build_extraction_examples(
    stage: ExtractorStage,
    datasets: Sequence[SourceDataset],
    *,
    domain: Domain | None = None,
    label_names: Mapping[str, str] | None = None,
    negative_ratio: float = 1.0,
    all_labels: bool = True,
    shuffle_types: bool | None = None,
    keep_ungrounded: bool = False,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
    seed: int = 0,
    profile: str | None = None,
) -> BuildResult:
    """Build anchor or explorer examples from source datasets.

    Args:
        stage: ``anchor`` or ``explorer`` (picks the prompt template).
        datasets: Source datasets (see :mod:`samalign.finetune.builders.sources`).
        domain: Target domain: labels are shown by their verbalised names, the domain's
            prompt override for the stage is used, and closed label sets follow the domain's
            type order.
        label_names: Source label → name shown in prompts (overrides the domain).
        negative_ratio: Negative types per positive type for records without a closed label
            set (at least one per example when > 0).
        all_labels: For closed label sets, ask about every label in every example.
        shuffle_types: Shuffle the schema order per example (GNER's class-order shuffling);
            default: on for the explorer, off for the anchor (IEPile keeps its order).
        keep_ungrounded: Keep gold mentions that cannot be found in the text (silver
            annotations sometimes paraphrase); by default they are dropped, because the
            agents drop such mentions as hallucinations.
        max_text_chars: Skip passages longer than the sentence graph accepts.
        seed: Seed for negative sampling and shuffling.
        profile: The prompt profile to render with (default: the domain's, else
            ``default``); ``reference`` renders the SAM-NER authors' instructions and keeps
            the answers' JSON spacing.

    Returns:
        The examples and a report of counts.

    Raises:
        ConfigError: Bad stage or options, or labels not in the domain.
    """
    if stage not in ("anchor", "explorer"):
        raise ConfigError(f"extractor stage must be 'anchor' or 'explorer', got {stage!r}")
    if negative_ratio < 0:
        raise ConfigError(f"negative_ratio must be >= 0, got {negative_ratio}")
    chosen, spec = profile_and_spec(stage, domain, profile)
    if shuffle_types is None:
        shuffle_types = stage == "explorer"
    rng = random.Random(seed)
    built = ExampleSet(stage, compact=chosen.compact_answers)
    report = built.report
    all_types: set[str] = set()
    for dataset in datasets:
        labels = {t for rec in dataset.records for t in (*rec.types, *rec.asked)}
        labels |= set(dataset.label_set or ())
        names = type_names(
            sorted(labels),
            domain=domain,
            label_names=label_names,
            origin=str(dataset.path),
            profile=chosen,
        )
        closed = dataset.label_set is not None and all_labels
        label_order = _label_order(dataset, names, domain, chosen)
        sampler = NegativeSampler({names[t]: w for t, w in type_frequencies(dataset).items()}, rng)
        for rec in built.fitting(dataset.records, max_text_chars):
            answer: dict[str, list[str]] = {}
            for m in rec.mentions:
                if not keep_ungrounded and not grounded(rec.text, m.text):
                    report.skip("mention_not_in_text")
                    continue
                mentions = answer.setdefault(names[m.type], [])
                if m.text not in mentions:
                    mentions.append(m.text)
                    report.count("mentions")
            positives = list(answer)
            if closed and not rec.asked:
                schema = list(dict.fromkeys([*label_order, *positives]))
            else:
                asked = [names[t] for t in rec.asked]
                schema = list(dict.fromkeys([*asked, *positives]))
                target = math.ceil(negative_ratio * len(positives)) if negative_ratio else 0
                if negative_ratio > 0:
                    target = max(target, 1)
                missing = target - (len(schema) - len(positives))
                schema += sampler.sample(missing, set(schema))
            if shuffle_types:
                rng.shuffle(schema)
            report.count("negative_types", len(schema) - len(positives))
            if not positives:
                report.count("examples_without_entities")
            all_types.update(schema)
            prompt = spec.render({"labels": schema, "text": rec.text})
            rendered = chosen.extraction_answer(schema, answer)
            built.add(rec, task="ner", prompt=prompt, answer=rendered)
    report.count("types", len(all_types))
    return built.result()


def _label_order(
    dataset: SourceDataset, names: Mapping[str, str], domain: Domain | None, profile: PromptProfile
) -> list[str]:
    """The schema of a closed label set.

    The domain's extractor types (what the agents send at inference) if a domain is given,
    else the dataset's labels as prompt names.
    """
    if domain is not None:
        return profile.extraction_types(domain)
    return list(dict.fromkeys(names[t] for t in dataset.label_set or ()))


__all__ = ["ExtractorStage", "build_extraction_examples"]
