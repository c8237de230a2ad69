"""Helpers shared by the builders: type naming, stage specs, grounding checks, sampling."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence

from samalign.agents.base import AgentSettings
from samalign.agents.grounding import GroundingMode, find_occurrences, ground_mentions
from samalign.errors import ConfigError
from samalign.finetune.builders.io import BuildReport, BuildResult, ChatExample, Task
from samalign.finetune.builders.sources import SourceDataset, SourceRecord
from samalign.prompts.domain import Domain
from samalign.prompts.profiles import PromptProfile, prompt_profile, resolve_profile
from samalign.prompts.specs import StageSpec, default_specs
from samalign.types import Span

DEFAULT_MAX_TEXT_CHARS = AgentSettings().max_text_chars
"""Longest text a sentence graph accepts at inference; longer records are skipped."""


def builder_profile(domain: Domain | None, profile: str | None = None) -> PromptProfile:
    """The prompt profile examples are rendered with.

    ``profile`` if given, else the domain's (what the stage nodes render with for that
    domain), else ``default``.
    """
    if profile is not None:
        return prompt_profile(profile)
    return resolve_profile(domain) if domain is not None else prompt_profile("default")


def stage_spec(
    stage: str, domain: Domain | None, profile: PromptProfile | None = None
) -> StageSpec:
    """The spec a stage node renders with, with the domain's prompt override.

    The profile's spec (default: the domain's profile); for stages the profile does not
    render (relations), the default spec.
    """
    chosen = profile or builder_profile(domain)
    specs = chosen.specs if stage in chosen.specs else default_specs()
    if stage not in specs:
        raise ConfigError(f"no prompt spec for stage {stage!r}; known: {sorted(specs)}")
    spec = specs[stage]
    return spec.with_template(domain.prompts.get(stage)) if domain is not None else spec


def profile_and_spec(
    stage: str, domain: Domain | None, profile: str | None = None
) -> tuple[PromptProfile, StageSpec]:
    """The prompt profile a builder renders with (:func:`builder_profile`) and its stage spec.

    Raises:
        ConfigError: Unknown profile, or no spec for the stage.
    """
    chosen = builder_profile(domain, profile)
    return chosen, stage_spec(stage, domain, chosen)


def type_names(
    labels: Sequence[str],
    *,
    domain: Domain | None = None,
    label_names: Mapping[str, str] | None = None,
    origin: str = "",
    profile: PromptProfile | None = None,
) -> dict[str, str]:
    """Map source type labels to the names shown in prompts.

    With a domain, a label maps to the name the agents put in the schema at inference for it
    (the profile's: the verbalised ``name`` by default, the label under the reference
    profile); ``label_names`` overrides single labels; other labels keep their own spelling.

    Raises:
        ConfigError: A domain is given and some labels are neither domain labels nor names.
    """
    names: dict[str, str] = {}
    unknown: list[str] = []
    for label in labels:
        if label_names and label in label_names:
            names[label] = label_names[label]
        elif domain is not None:
            resolved = domain.label_for_name(label)
            if resolved is None:
                unknown.append(label)
            else:
                names[label] = (profile or builder_profile(domain)).show(domain, resolved)
        else:
            names[label] = label
    if unknown:
        assert domain is not None
        raise ConfigError(
            f"{origin}: entity types {sorted(unknown)} are not in domain {domain.name!r} "
            f"(labels {domain.labels}); use the dataset's domain, or map them with a label map"
        )
    return names


def domain_label(domain: Domain, name: str, origin: str) -> str:
    """The domain label a gold label (a label or a type name of the domain) stands for.

    Raises:
        ConfigError: The domain has neither, naming ``origin`` (the record).
    """
    label = domain.label_for_name(name)
    if label is None:
        raise ConfigError(
            f"{origin}: label {name!r} is not in domain {domain.name!r} (labels {domain.labels})"
        )
    return label


def grounded(text: str, mention: str) -> bool:
    """Whether a gold mention can be found in the text by the inference-time grounding."""
    spans, _ = find_occurrences(text, mention)
    return bool(spans)


def type_frequencies(dataset: SourceDataset) -> Counter[str]:
    """Per type, the number of records that mention it (the negative-sampling weights)."""
    freq: Counter[str] = Counter()
    for rec in dataset.records:
        freq.update(set(rec.types))
    return freq


class NegativeSampler:
    """Draws entity types absent from a passage, with probability ∝ dataset frequency.

    This is UniversalNER's negative entity-type sampling (GNER calls it "external entity
    sampling"): the schema of a training passage also lists types the passage does not
    contain, answered with an empty list, drawn by how often they occur in the dataset.

    Args:
        frequencies: Type → weight (e.g. :func:`type_frequencies`).
        rng: The random generator (seeded by the builder, so output is reproducible).
    """

    def __init__(self, frequencies: Mapping[str, int], rng: random.Random) -> None:
        self._types = [t for t, w in frequencies.items() if w > 0]
        self._cum: list[float] = []
        total = 0.0
        for t in self._types:
            total += frequencies[t]
            self._cum.append(total)
        self._rng = rng

    def sample(self, k: int, exclude: set[str]) -> list[str]:
        """``k`` distinct types not in ``exclude`` (fewer if the pool runs out)."""
        chosen: list[str] = []
        if k <= 0 or not self._types:
            return chosen
        taken = set(exclude)
        attempts = 0
        while len(chosen) < k and attempts < 50 * k:
            attempts += 1
            (t,) = self._rng.choices(self._types, cum_weights=self._cum, k=1)
            if t not in taken:
                taken.add(t)
                chosen.append(t)
        if len(chosen) < k:  # a small pool mostly excluded: fall back to the remaining types
            rest = [t for t in self._types if t not in taken]
            self._rng.shuffle(rest)
            chosen.extend(rest[: k - len(chosen)])
        return chosen


def ground_gold(
    text: str,
    gold: Sequence[tuple[str, str]],
    *,
    grounding: GroundingMode = "flat",
    report: BuildReport | None = None,
) -> list[tuple[Span, str]]:
    """Ground gold (mention, value) pairs to spans the way candidates are built at inference.

    The consensus node grounds the candidate strings with :func:`ground_mentions` (flat by
    default: longest first, no overlaps) and sorts the spans by position; the classifier then
    wraps every span in ``<ENT></ENT>``. Doing the same here tags exactly what inference
    would tag if the extractors found the gold mentions. A mention string with two gold values
    keeps the first.

    Returns:
        (span, value) pairs sorted by position (start, then longest first).
    """
    values: dict[str, str] = {}
    for mention, value in gold:
        if mention in values and values[mention] != value and report is not None:
            report.skip("conflicting_types_for_one_mention")
        values.setdefault(mention, value)
    out: list[tuple[Span, str]] = []
    for g in ground_mentions(text, list(values), mode=grounding):
        if not g.spans:
            if report is not None:
                report.skip("subsumed_mention" if g.subsumed else "mention_not_in_text")
            continue
        out.extend((span, values[g.mention]) for span in g.spans)
    out.sort(key=lambda item: (item[0].start, -item[0].end))
    return out


def training_answer(answer: str, profile: PromptProfile) -> str:
    """A gold answer as training data.

    Compact JSON where the profile decodes constrained (:func:`compact_answer`), else as
    rendered (the reference profile keeps ``json.dumps``' spacing, as the authors' data).
    """
    return compact_answer(answer) if profile.compact_answers else answer


def compact_answer(answer: str) -> str:
    """A gold answer as compact JSON (no whitespace between tokens).

    The stages' answer formats render gold answers with ``json.dumps``' default separators
    (``", "`` and ``": "``), but the server constrains decoding to compact JSON by default
    (``disable_any_whitespace``): a model trained on spaced JSON is then forced off the token
    path it learned. Compact answers are valid under both server settings.
    """
    return json.dumps(json.loads(answer), ensure_ascii=False, separators=(",", ":"))


def too_long(record: SourceRecord, max_text_chars: int) -> bool:
    """Whether the record's text is longer than inference accepts."""
    return len(record.text) > max_text_chars


class ExampleSet:
    """A builder's output as it is made: its examples and the report that counts them.

    Args:
        stage: The stage the examples train (the report's stage and every example's).
        compact: Write the gold answers as compact JSON (:func:`compact_answer`); ``False``
            keeps them as rendered (a profile's ``compact_answers``, see
            :func:`training_answer`).
    """

    def __init__(self, stage: str, *, compact: bool = True) -> None:
        self.stage = stage
        self.compact = compact
        self.report = BuildReport(stage=stage)
        self.examples: list[ChatExample] = []

    def fitting(
        self, records: Iterable[SourceRecord], max_text_chars: int
    ) -> Iterator[SourceRecord]:
        """The records to build from: those short enough for inference.

        Every record is counted in the report's ``records``; a longer one is skipped as
        ``text_too_long`` (see :func:`too_long`).
        """
        for record in records:
            self.report.records += 1
            if too_long(record, max_text_chars):
                self.report.skip("text_too_long")
                continue
            yield record

    def add(self, record: SourceRecord, *, task: Task, prompt: str, answer: str) -> None:
        """Add the example of one source record (its id, and its origin as the source)."""
        self.examples.append(
            ChatExample(
                id=record.id,
                stage=self.stage,
                task=task,
                prompt=prompt,
                answer=compact_answer(answer) if self.compact else answer,
                source=record.origin,
            )
        )

    def result(self) -> BuildResult:
        """The examples, and the report with their count."""
        self.report.examples = len(self.examples)
        return self.examples, self.report


__all__ = [
    "DEFAULT_MAX_TEXT_CHARS",
    "ExampleSet",
    "NegativeSampler",
    "builder_profile",
    "compact_answer",
    "domain_label",
    "ground_gold",
    "grounded",
    "profile_and_spec",
    "stage_spec",
    "too_long",
    "training_answer",
    "type_frequencies",
    "type_names",
]
