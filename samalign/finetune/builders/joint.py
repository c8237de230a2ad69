"""Joint NER + relation training data (joint-loss paper, ``seeds/001``: L = L_NER + λ·L_RE).

One adapter learns entity extraction and both relation decoders from the same sentences:
the mixture holds, per sentence, an NER example (``task: ner``; an extractor's, or the
supervised NER stage's with ``ner_stage="supervised_ner"``) and a forward and a reverse
relation example (``task: re``), shuffled together. A sentence's examples share a ``group``
(the record's file and item): the trainer keeps them in one micro-batch
(``sentence_groups``), so L = L_NER + λ·L_RE is one optimisation step per sentence (Eq. 3),
and AnchorAlign's alignment terms (Eq. 4–10) can compare its three target sequences. The
weight λ is a *training* setting (``joint_lambda`` in the trainer config): the trainer
multiplies the loss of every ``re`` example by λ, so one built file serves any λ.

The joint adapter answers every prompt it was trained on, so it can serve the NER stage and
both relation stages: serve it under each stage name (``--adapter explorer=DIR --adapter
relations_forward=DIR --adapter relations_reverse=DIR``, or ``supervised_ner=DIR`` …) or
point the domain's ``adapters`` at one name.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from samalign.finetune.builders.extraction import build_extraction_examples
from samalign.finetune.builders.io import BuildReport, BuildResult, ChatExample
from samalign.finetune.builders.relations import build_relation_examples
from samalign.finetune.builders.sources import SourceDataset
from samalign.finetune.builders.supervised import build_supervised_examples
from samalign.prompts.domain import Domain


def mix_examples(
    ner: Sequence[ChatExample], relations: Sequence[ChatExample], *, seed: int = 0
) -> list[ChatExample]:
    """Shuffle NER and relation examples into one training mixture (seeded)."""
    mixed = [*ner, *relations]
    random.Random(seed).shuffle(mixed)
    return mixed


def build_joint_examples(
    datasets: Sequence[SourceDataset],
    *,
    domain: Domain,
    ner_stage: Literal["anchor", "explorer", "supervised_ner"] = "explorer",
    directions: Sequence[str] = ("relations_forward", "relations_reverse"),
    shuffle_types: bool = False,
    seed: int = 0,
) -> BuildResult:
    """Build the joint NER + relation mixture from SpERT-style data.

    Args:
        datasets: SpERT-style datasets (entities and relations).
        domain: The domain (entity and relation types).
        ner_stage: Which NER prompt the NER examples use: an extractor's (``explorer``,
            ``anchor``; untyped mentions, SAM-NER types them) or ``supervised_ner``
            (AnchorAlign's supervised NER: typed entities, final).
        directions: The relation stages to include.
        shuffle_types: Shuffle the NER schema order per example.
        seed: Seed for the mixture order (and NER schema shuffling).

    Returns:
        The shuffled examples and a report: per-task example counts and the part reports.
    """
    if ner_stage == "supervised_ner":
        ner, ner_report = build_supervised_examples(datasets, domain=domain)
    else:
        ner, ner_report = build_extraction_examples(
            ner_stage, datasets, domain=domain, shuffle_types=shuffle_types, seed=seed
        )
    relations: list[ChatExample] = []
    report = BuildReport(stage="joint")
    for stage in directions:
        part, part_report = build_relation_examples(stage, datasets, domain=domain)
        relations += part
        report.count(f"{stage}_triples", part_report.counts["triples"])
        for reason, n in part_report.skipped.items():
            report.skip(f"{stage}:{reason}", n)
    # one group per sentence: the record's origin (file and item) names it in every part
    grouped = [replace(ex, group=ex.source or ex.id) for ex in (*ner, *relations)]
    mixed = mix_examples(grouped[: len(ner)], grouped[len(ner) :], seed=seed)
    report.records = ner_report.records
    report.examples = len(mixed)
    report.count("ner_examples", len(ner))
    report.count("re_examples", len(relations))
    report.count("mentions", ner_report.counts["mentions"])
    for reason, n in ner_report.skipped.items():
        report.skip(f"{ner_stage}:{reason}", n)
    return mixed, report


__all__ = ["build_joint_examples", "mix_examples"]
