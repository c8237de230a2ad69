"""Supervised NER training data (AnchorAlign's supervised setting): typed entity records.

AnchorAlign trains its NER decoder on the dataset, so its types are final. The prompt is what
the ``supervised_ner`` node sends at inference — the domain's type names as the schema, then
the sentence — and the answer the sentence's gold entities as ``[{"mention", "type"}]`` in
text order (Eq. 2's linearised entity sequence), rendered by the stage's answer format. Every
example asks about every type of the domain (the data is fully annotated: an absent type is a
true negative), as inference does. Sentences without entities are kept (answer ``[]``).
"""

from __future__ import annotations

from collections.abc import Sequence

from samalign.errors import ConfigError
from samalign.finetune.builders.common import (
    DEFAULT_MAX_TEXT_CHARS,
    ExampleSet,
    grounded,
    stage_spec,
    type_names,
)
from samalign.finetune.builders.io import BuildResult
from samalign.finetune.builders.sources import SourceDataset
from samalign.prompts.domain import Domain
from samalign.prompts.supervised import SUPERVISED_NER_FORMAT
from samalign.types import SUPERVISED_NER_STAGE


def build_supervised_examples(
    datasets: Sequence[SourceDataset],
    *,
    domain: Domain,
    keep_empty: bool = True,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> BuildResult:
    """Build ``supervised_ner`` examples from fully annotated data (SpERT, BIO).

    Args:
        datasets: Datasets with a closed label set and gold mentions (CoNLL04, SciERC and
            ADE in SpERT JSON; CrossNER BIO works too).
        domain: The domain whose types the stage writes (labels shown by their names).
        keep_empty: Keep sentences without entities (answer ``[]``).
        max_text_chars: Skip sentences longer than the sentence graph accepts.

    Returns:
        The examples and a report of counts: ``mentions`` (distinct (mention, type) records),
        ``examples_without_entities``, ``strings_with_several_types`` (a string annotated with
        two types in one sentence: both records are written; at inference the node keeps the
        first type of a string).

    Raises:
        ConfigError: A dataset without a closed label set, or labels the domain lacks.
    """
    spec = stage_spec(SUPERVISED_NER_STAGE, domain)
    schema = domain.names
    built = ExampleSet(SUPERVISED_NER_STAGE)
    report = built.report
    for dataset in datasets:
        if dataset.label_set is None:
            raise ConfigError(
                f"{dataset.path}: supervised NER examples need fully annotated data with a "
                f"closed label set (SpERT JSON, BIO), got {dataset.format!r}"
            )
        used = {m.type for r in dataset.records for m in r.mentions}
        labels = sorted({*dataset.label_set, *used})
        names = type_names(labels, domain=domain, origin=str(dataset.path))
        for rec in built.fitting(dataset.records, max_text_chars):
            ordered = sorted(
                enumerate(rec.mentions),
                key=lambda item: (item[1].start if item[1].start is not None else -1, item[0]),
            )
            entities: list[tuple[str, str]] = []
            for _, mention in ordered:
                if not grounded(rec.text, mention.text):
                    report.skip("mention_not_in_text")
                    continue
                entities.append((mention.text, names[mention.type]))
            entities = list(dict.fromkeys(entities))
            if not entities:
                if not keep_empty:
                    report.skip("no_entities")
                    continue
                report.count("examples_without_entities")
            strings = [m for m, _ in entities]
            report.count("strings_with_several_types", len(strings) - len(set(strings)))
            report.count("mentions", len(entities))
            prompt = spec.render({"labels": schema, "text": rec.text})
            answer = SUPERVISED_NER_FORMAT.render_gold(schema, entities)
            built.add(rec, task="ner", prompt=prompt, answer=answer)
    return built.result()


__all__ = ["build_supervised_examples"]
