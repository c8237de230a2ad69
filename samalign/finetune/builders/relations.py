"""Relation decoder training data (AnchorAlign §3.2): forward and reverse blocks.

Built from data with relations between offset entities (SpERT JSON, CrossRE).

The prompt is what the relation nodes send at inference — the domain's relation schema
(names, definitions, argument types) and the sentence — and the answer is the gold triples in
the decoder's block order, rendered by the stage's answer format: subject-centric blocks for
``relations_forward``, object-centric blocks for ``relations_reverse``. Triples are ordered by
position (the block's own entity first, then the other), a canonical order the decoder can
learn. Sentences without relations are kept (the answer ``[]`` teaches the decoder to say
nothing). A gold triple whose argument types break the domain's constraint is skipped and
counted, because the relation node would drop it at inference.
"""

from __future__ import annotations

from collections.abc import Sequence

from samalign.errors import ConfigError
from samalign.finetune.builders.common import (
    DEFAULT_MAX_TEXT_CHARS,
    ExampleSet,
    stage_spec,
)
from samalign.finetune.builders.io import BuildResult
from samalign.finetune.builders.sources import SourceDataset
from samalign.prompts.domain import Domain
from samalign.prompts.specs import RELATION_FORMATS

RELATION_STAGES: tuple[str, ...] = ("relations_forward", "relations_reverse")


def build_relation_examples(
    stage: str,
    datasets: Sequence[SourceDataset],
    *,
    domain: Domain,
    keep_empty: bool = True,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> BuildResult:
    """Build ``relations_forward`` or ``relations_reverse`` examples.

    Args:
        stage: ``relations_forward`` or ``relations_reverse``.
        datasets: SpERT-style datasets (entities with offsets, relations between them).
        domain: The domain: relation types (names, definitions, argument types), entity
            labels, and the prompt override for the stage.
        keep_empty: Keep sentences without relations (answer ``[]``).
        max_text_chars: Skip sentences longer than the sentence graph accepts.

    Returns:
        The examples and a report of counts.

    Raises:
        ConfigError: Unknown stage, a domain without relation types, or a relation or entity
            label the domain does not define.
    """
    if stage not in RELATION_STAGES:
        raise ConfigError(f"relation stage must be one of {list(RELATION_STAGES)}, got {stage!r}")
    if not domain.relation_types:
        raise ConfigError(f"domain {domain.name!r} has no relation_types to train on")
    spec = stage_spec(stage, domain)
    fmt = RELATION_FORMATS[stage]
    names = domain.relation_names
    schema = domain.relation_schema()
    forward = stage == "relations_forward"
    built = ExampleSet(stage)
    report = built.report
    for dataset in datasets:
        if not dataset.has_relations:
            raise ConfigError(
                f"{dataset.path}: relation examples need SpERT-style data with relations "
                f"(spert or crossre), got {dataset.format!r}"
            )
        for rec in built.fitting(dataset.records, max_text_chars):
            ordered: list[tuple[tuple[int, int], tuple[str, str, str]]] = []
            for rel in rec.relations:
                relation = domain.relation_for_name(rel.type)
                if relation is None:
                    raise ConfigError(
                        f"{rec.origin}: relation {rel.type!r} is not in domain {domain.name!r} "
                        f"(relations {[r.label for r in domain.relation_types]})"
                    )
                head, tail = rec.mentions[rel.head], rec.mentions[rel.tail]
                head_label = domain.label_for_name(head.type)
                tail_label = domain.label_for_name(tail.type)
                if head_label is None or tail_label is None:
                    unknown = head.type if head_label is None else tail.type
                    raise ConfigError(
                        f"{rec.origin}: entity type {unknown!r} is not in domain {domain.name!r}"
                    )
                if (relation.head_types and head_label not in relation.head_types) or (
                    relation.tail_types and tail_label not in relation.tail_types
                ):
                    report.skip("argument_types_outside_the_domain_constraint")
                    continue
                own, other = (head, tail) if forward else (tail, head)
                position = (own.start or 0, other.start or 0)
                ordered.append((position, (head.text, relation.name, tail.text)))
            ordered.sort(key=lambda item: item[0])
            triples = [t for _, t in dict.fromkeys(ordered)]
            if not triples:
                if not keep_empty:
                    report.skip("no_relations")
                    continue
                report.count("examples_without_relations")
            report.count("triples", len(set(triples)))
            prompt = spec.render({"relations": schema, "text": rec.text})
            built.add(rec, task="re", prompt=prompt, answer=fmt.render_gold(triples, names))
    return built.result()


__all__ = ["RELATION_STAGES", "build_relation_examples"]
