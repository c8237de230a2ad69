"""Archetype classifier training data (SAM-NER §3.2, Eq. 6–8, Figure 7).

Each passage's gold mentions are wrapped in ``<ENT></ENT>`` exactly as the classifier node
wraps candidates at inference (same grounding, same tagging function), and the answer maps
archetypes to the tagged mentions. Gold labels are projected to archetypes by, in order: an
explicit label → archetype map, the domain's ``archetype`` of the label, and the mapping M of
Table 4 (``archetypes.yaml``). The schema is the *instance-specific* abstract schema
``A^i = M(T^i)`` (the projection of the types the passage is annotated for, Eq. 7), in the
archetype order; ``schema="full"`` uses all 14 archetypes (what inference sends, Eq. 9).

``direct=True`` builds the ``direct_typing`` classifier of the "w/o cali." ablation instead:
the same tagged prompt with the domain's target type names as the schema.

The value types the SAM-NER authors drop (``dropped_types`` of ``archetypes.yaml``:
``cardinal``, ``date``, ``Price`` …) are never tagged and never in a schema. Under the
``reference`` prompt profile the archetype examples follow the authors' recipe instead
(:mod:`samalign.finetune.builders.archetype_reference`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from samalign.agents.archetype import tag_entities
from samalign.agents.grounding import GroundingMode
from samalign.errors import ConfigError
from samalign.finetune.builders.common import (
    DEFAULT_MAX_TEXT_CHARS,
    ExampleSet,
    domain_label,
    ground_gold,
    profile_and_spec,
)
from samalign.finetune.builders.io import BuildResult
from samalign.finetune.builders.sources import SourceDataset, SourceRecord
from samalign.prompts.archetypes import archetype_table
from samalign.prompts.domain import Domain
from samalign.prompts.profiles import PromptProfile
from samalign.types import DIRECT_TYPING_STAGE, Archetype

Unmapped = Literal["skip", "misc", "error"]
"""What to do with a mention whose label has no archetype."""


class ArchetypeProjection:
    """Label → archetype: an explicit map, then the domain's table, then the mapping M.

    Args:
        archetype_map: Source label → archetype name (overrides everything).
        domain: A domain whose entity types carry ``archetype``.
        exact: Look labels up in M with their exact spelling only (the authors' lookup);
            by default a label no spelling matches is matched case-insensitively.
    """

    def __init__(
        self,
        archetype_map: Mapping[str, str] | None = None,
        domain: Domain | None = None,
        *,
        exact: bool = False,
    ) -> None:
        self._map: dict[str, Archetype] = {}
        for label, name in (archetype_map or {}).items():
            try:
                self._map[label] = Archetype(name)
            except ValueError:
                raise ConfigError(
                    f"archetype map: {label!r} → {name!r} is not an archetype; use one of "
                    f"{[a.value for a in Archetype]}"
                ) from None
        self._domain = domain
        self._table = archetype_table()
        self._exact = exact

    def __call__(self, label: str) -> Archetype | None:
        """The archetype of a source label, or ``None`` if nothing maps it."""
        if label in self._map:
            return self._map[label]
        if self._domain is not None:
            resolved = self._domain.label_for_name(label)
            if resolved is not None:
                archetype = self._domain.entity_type(resolved).archetype
                if archetype is not None:
                    return archetype
        return self._table.project(label, exact=self._exact)

    def dropped(self, label: str) -> bool:
        """Whether a label is one of the value types dropped before projecting."""
        return label not in self._map and self._table.is_dropped(label)


def record_schema(record: SourceRecord, dataset: SourceDataset) -> list[str]:
    """The fine-grained schema ``T^i`` a record is annotated for.

    The types it asks about if it lists them, else the dataset's closed label set, else the
    types it mentions.
    """
    if record.asked:
        return list(dict.fromkeys([*record.asked, *record.types]))
    if dataset.label_set is not None:
        return list(dataset.label_set)
    return record.types


def check_options(unmapped: str, schema: str) -> None:
    """Refuse ``unmapped`` and ``schema`` values the builders do not know.

    Raises:
        ConfigError: Naming the option and its values.
    """
    if unmapped not in ("skip", "misc", "error"):
        raise ConfigError(f"unmapped must be 'skip', 'misc' or 'error', got {unmapped!r}")
    if schema not in ("instance", "full"):
        raise ConfigError(f"schema must be 'instance' or 'full', got {schema!r}")


def build_archetype_examples(
    datasets: Sequence[SourceDataset],
    *,
    domain: Domain | None = None,
    archetype_map: Mapping[str, str] | None = None,
    unmapped: Unmapped = "skip",
    schema: Literal["instance", "full"] = "instance",
    direct: bool = False,
    grounding: GroundingMode = "flat",
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
    profile: str | None = None,
) -> BuildResult:
    """Build archetype classifier examples (or ``direct_typing`` examples).

    Args:
        datasets: Source datasets with gold mentions.
        domain: Labels' archetypes come from the domain's table; the domain's prompt
            override for ``archetype`` is used. Required for ``direct``.
        archetype_map: Source label → archetype name, checked first.
        unmapped: A mention whose label has no archetype is ``skip``-ped (not tagged),
            typed ``misc`` (the catch-all), or an ``error``.
        schema: ``instance`` (``A^i``, the paper's training schema) or ``full`` (all 14).
        direct: Build the ``direct_typing`` ablation's classifier (target type names).
        grounding: How gold mentions become tagged spans (the pipeline's grounding mode).
        max_text_chars: Skip passages longer than the sentence graph accepts.
        profile: The prompt profile (default: the domain's, else ``default``). Under
            ``reference`` the archetype examples follow the SAM-NER authors' recipe
            (:func:`~samalign.finetune.builders.archetype_reference.build_reference_archetype_examples`);
            ``direct_typing`` examples are rendered in the profile's formats.

    Returns:
        The examples and a report of counts.

    Raises:
        ConfigError: A label cannot be projected with ``unmapped="error"``, a bad option, or
            ``direct`` without a domain / with labels outside the domain.
    """
    check_options(unmapped, schema)
    if direct and domain is None:
        raise ConfigError("direct typing examples need a domain (its type names are the schema)")
    # the direct_typing node renders the archetype spec too
    chosen, spec = profile_and_spec("archetype", domain, profile)
    if chosen.name == "reference" and not direct:
        from samalign.finetune.builders.archetype_reference import (  # local: one-way import
            build_reference_archetype_examples,
        )

        return build_reference_archetype_examples(
            datasets,
            domain=domain,
            archetype_map=archetype_map,
            unmapped=unmapped,
            schema=schema,
            max_text_chars=max_text_chars,
        )
    stage = DIRECT_TYPING_STAGE if direct else "archetype"
    project = ArchetypeProjection(archetype_map, domain)
    built = ExampleSet(stage, compact=chosen.compact_answers)
    report = built.report
    unmapped_labels: set[str] = set()
    for dataset in datasets:
        for rec in built.fitting(dataset.records, max_text_chars):
            gold: list[tuple[str, str]] = []
            for m in rec.mentions:
                if not direct and project.dropped(m.type):
                    report.skip("dropped_type_mention")  # a value type: never tagged
                    continue
                value = _target(m.type, domain, direct, project, unmapped, rec, chosen)
                if value is None:
                    unmapped_labels.add(m.type)
                    report.skip("mention_without_archetype")
                    continue
                gold.append((m.text, value))
            tagged_spans = ground_gold(rec.text, gold, grounding=grounding, report=report)
            if not tagged_spans:
                report.skip("no_entities")  # no candidates: the classifier is not called
                continue
            types = _schema(rec, dataset, domain, direct, schema, project, tagged_spans, chosen)
            answer: dict[str, list[str]] = {}
            seen: set[str] = set()
            for span, value in tagged_spans:  # one type per mention string, as at inference
                if span.text not in seen:
                    seen.add(span.text)
                    answer.setdefault(value, []).append(span.text)
                    report.count("mentions")
            prompt = spec.render(
                {"labels": types, "text": tag_entities(rec.text, [s for s, _ in tagged_spans])}
            )
            built.add(
                rec, task="ner", prompt=prompt, answer=chosen.classifier_answer(types, answer)
            )
    if unmapped_labels:
        report.count("unmapped_labels", len(unmapped_labels))
    return built.result()


def _target(
    label: str,
    domain: Domain | None,
    direct: bool,
    project: ArchetypeProjection,
    unmapped: Unmapped,
    rec: SourceRecord,
    profile: PromptProfile,
) -> str | None:
    if direct:
        assert domain is not None
        return profile.show(domain, domain_label(domain, label, rec.origin))
    archetype = project(label)
    if archetype is None:
        if unmapped == "error":
            raise ConfigError(
                f"{rec.origin}: label {label!r} has no archetype: it is not in the mapping M "
                "(archetypes.yaml), the domain's table or the archetype map; add it to an "
                "archetype map, or pass unmapped='skip' or 'misc'"
            )
        if unmapped == "misc":
            return profile.archetype_name(Archetype.MISC)
        return None
    return profile.archetype_name(archetype)


def _schema(
    rec: SourceRecord,
    dataset: SourceDataset,
    domain: Domain | None,
    direct: bool,
    schema: str,
    project: ArchetypeProjection,
    tagged: Sequence[tuple[object, str]],
    profile: PromptProfile,
) -> list[str]:
    present = {value for _, value in tagged}
    if direct:
        assert domain is not None
        return profile.target_types(domain)
    if schema == "full":
        return list(profile.archetype_names)
    fine = [t for t in record_schema(rec, dataset) if not project.dropped(t)]
    projected = {profile.archetype_name(a) for a in (project(t) for t in fine) if a}
    projected |= present  # misc-typed or map-typed mentions are always in the schema
    return [name for name in profile.archetype_names if name in projected]


__all__ = [
    "ArchetypeProjection",
    "Unmapped",
    "build_archetype_examples",
    "check_options",
    "record_schema",
]
