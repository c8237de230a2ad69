"""Prompt profiles: how each SAM-NER stage's prompt is rendered, answered, parsed and read back.

Two profiles exist:

* ``default`` — samalign's prompts (SAM-NER's Figures 5–8, constant parts first so vLLM's
  prefix cache reuses them), JSON-schema-constrained answers, target types shown by their
  verbalised names, gold answers for training as compact JSON. The faster one; the default.
* ``reference`` — the SAM-NER authors' code (``DMIRLAB-Group/SAM-NER``; texts and data in
  ``samalign/prompts/samner/``): their instructions and templates, target types shown by
  label, lower-case archetype keys, the classifier's ``[{"mention": "archetype"}]`` answer,
  the calibrator's prompt with only the archetypes of the sentence's initial output and its
  answer between ``@@`` markers after ``final answer:``. The authors decoded without
  constraints (LLaMA-Factory), and the calibrator's answer is not JSON, so this profile sends
  **no** JSON schema for any stage (``constrain_mentions`` does not apply to it) and its
  parsers read answers with text around them. Gold answers keep ``json.dumps``' spacing, as
  the authors' training files did.

A run picks the profile from ``PipelineOptions.prompt_profile`` (per call) or else the
domain's ``profile`` field (per domain). The *definition set* the calibrator is given is
picked the same way from the domain's ``definitions`` field: ``domain`` (the domain file's
definitions, Table 5 for archetypes) or ``reference`` (the authors' CrossNER and archetype
definitions, and their extractor schema without ``misc``; only for the five CrossNER
domains). Unset, the ``reference`` profile uses the reference set where one exists.

A profile names only what differs between the two; a third profile (e.g. a supervised
extractor whose labels are final) is another :class:`PromptProfile` with its own specs.
Relation stages have one profile (the default specs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from samalign.errors import ConfigError, OutputParseError
from samalign.prompts.archetypes import archetype_table
from samalign.prompts.domain import (
    DEFINITION_SETS,
    PROFILE_NAMES,
    DefinitionSetName,
    Domain,
    ProfileName,
)
from samalign.prompts.formats import (
    CalibrationFormat,
    ClassifierFormat,
    MarkedAssignmentsFormat,
    MentionRecordsFormat,
)
from samalign.prompts.reference import reference_data
from samalign.prompts.specs import (
    CALIBRATION_FORMAT,
    EXTRACTION_FORMAT,
    StageSpec,
    default_specs,
    load_template,
)
from samalign.types import Archetype

CLASSIFIER_FORMAT = MentionRecordsFormat()
"""The reference profile's classifier answer format."""

MARKED_CALIBRATION_FORMAT = MarkedAssignmentsFormat()
"""The reference profile's calibrator answer format."""


@dataclass(frozen=True)
class Definitions:
    """The definitions and schema one run of a domain uses.

    Attributes:
        name: ``domain`` or ``reference``.
        archetypes: Each archetype's definition.
        targets: ``(label, definition)`` per target type, in the order the calibrator lists
            them as candidate types.
        extraction_labels: The labels the extractors are asked about, in order.
        source: Where the definitions come from.
    """

    name: DefinitionSetName
    archetypes: Mapping[Archetype, str]
    targets: tuple[tuple[str, str], ...]
    extraction_labels: tuple[str, ...]
    source: str


def definition_set(domain: Domain, profile: str) -> DefinitionSetName:
    """The definition set a domain uses under a profile (see the module docs)."""
    if domain.definitions is not None:
        return domain.definitions
    if profile == "reference" and reference_data().for_domain(domain.name) is not None:
        return "reference"
    return "domain"


def definitions_for(domain: Domain, profile: str) -> Definitions:
    """The definitions and extractor schema of ``domain`` under ``profile``.

    Raises:
        ConfigError: The reference set is asked for a domain the authors have none for, or
            the domain's labels are not the authors' labels.
    """
    if definition_set(domain, profile) == "domain":
        table = archetype_table()
        return Definitions(
            name="domain",
            archetypes={info.name: info.definition for info in table.archetypes},
            targets=tuple((t.label, t.definition) for t in domain.entity_types),
            extraction_labels=tuple(domain.labels),
            source=domain.source,
        )
    data = reference_data()
    ref = data.for_domain(domain.name)
    problem = data.domain_problem(domain.name, domain.labels)
    if ref is None or problem is not None:
        raise ConfigError(f"domain {domain.name!r}, reference definitions: {problem}")
    return Definitions(
        name="reference",
        archetypes={a: data.archetype_definitions[a.value.lower()] for a in Archetype},
        targets=ref.definitions,
        extraction_labels=ref.extraction_labels,
        source=data.citation("target_definitions"),
    )


@dataclass(frozen=True)
class StagePrompt:
    """One stage request as a profile renders it.

    Attributes:
        prompt: The user message.
        schema: The answer's JSON schema (sent as structured output), or ``None``.
        parse: Reads the model's answer.
        max_tokens: The stage's completion budget.
    """

    prompt: str
    schema: dict[str, Any] | None
    parse: Callable[[str], Any]
    max_tokens: int


class PromptProfile:
    """How the SAM-NER stages talk to their models (see the module docs).

    Args:
        name: The profile's name.
        specs: The stage specs (``anchor``, ``explorer``, ``archetype``, ``calibrate`` and any
            other stage the profile renders).
        constrained: Send each stage's JSON schema as structured output.
        compact_answers: Training answers as compact JSON (for constrained decoding).
        show_labels: Prompts name target types by label (else by verbalised name).
        archetype_names: How prompts name each archetype, in archetype order.
        classifier_format: The archetype classifier's answer format.
        calibration_format: The calibrator's answer format.
        present_archetypes_only: The calibrator is given the definitions of the archetypes of
            its initial output only (else all 14).
    """

    def __init__(
        self,
        name: ProfileName,
        specs: Mapping[str, StageSpec],
        *,
        constrained: bool,
        compact_answers: bool,
        show_labels: bool,
        archetype_names: Sequence[str],
        classifier_format: ClassifierFormat,
        calibration_format: CalibrationFormat,
        present_archetypes_only: bool,
    ) -> None:
        if len(archetype_names) != len(Archetype):
            raise ConfigError(f"profile {name!r} must name the {len(Archetype)} archetypes")
        self.name: ProfileName = name
        self.specs = dict(specs)
        self.constrained = constrained
        self.compact_answers = compact_answers
        self.show_labels = show_labels
        self.archetype_names = list(archetype_names)
        self._archetypes = dict(zip(Archetype, archetype_names, strict=True))
        self._by_name = {n.casefold(): a for a, n in self._archetypes.items()}
        self.classifier_format = classifier_format
        self.calibration_format = calibration_format
        self.present_archetypes_only = present_archetypes_only

    def __repr__(self) -> str:
        return f"PromptProfile({self.name!r})"

    # ------------------------------------------------------------------------------ naming

    def spec(self, stage: str, domain: Domain | None = None) -> StageSpec:
        """A stage's spec, with the domain's prompt override if it has one.

        Raises:
            ConfigError: The profile has no spec for the stage.
        """
        if stage not in self.specs:
            raise ConfigError(
                f"prompt profile {self.name!r} has no spec for stage {stage!r}; it has "
                f"{sorted(self.specs)}"
            )
        spec = self.specs[stage]
        return spec.with_template(domain.prompts.get(stage)) if domain is not None else spec

    def show(self, domain: Domain, label: str) -> str:
        """How prompts name a target label."""
        return label if self.show_labels else domain.entity_type(label).name

    def archetype_name(self, archetype: Archetype) -> str:
        """How prompts name an archetype."""
        return self._archetypes[archetype]

    def archetype_of(self, name: str) -> Archetype | None:
        """The archetype a prompt name stands for (case-insensitive), or ``None``."""
        return self._by_name.get(name.strip().casefold())

    def definitions(self, domain: Domain) -> Definitions:
        """The definitions and extractor schema of ``domain`` under this profile."""
        return definitions_for(domain, self.name)

    def extraction_types(self, domain: Domain) -> list[str]:
        """The types the extractors are asked about, as prompts name them."""
        return [self.show(domain, label) for label in self.definitions(domain).extraction_labels]

    def target_types(self, domain: Domain) -> list[str]:
        """The calibrator's candidate types (and the direct classifier's schema)."""
        return [self.show(domain, label) for label, _ in self.definitions(domain).targets]

    def all_types(self, domain: Domain) -> list[str]:
        """Every label of the domain as prompts name it, in domain order."""
        return [self.show(domain, label) for label in domain.labels]

    def classifier_types(self, domain: Domain, *, direct: bool = False) -> list[str]:
        """The classifier's schema: the archetypes, or the target types for direct typing."""
        return self.target_types(domain) if direct else list(self.archetype_names)

    # ------------------------------------------------------------------------------ stages

    def _typed_mentions(
        self,
        stage: str,
        domain: Domain,
        types: list[str],
        text: str,
        fmt: ClassifierFormat,
        mentions: Sequence[str] | None,
        max_items: int,
    ) -> StagePrompt:
        """A request asking for mentions of ``types`` (extractors and classifier)."""
        spec = self.spec(stage, domain)
        schema = (
            EXTRACTION_FORMAT.schema(types, mentions=mentions, max_items=max_items)
            if self.constrained
            else None
        )
        return StagePrompt(
            prompt=spec.render({"labels": types, "text": text}),
            schema=schema,
            parse=lambda raw: fmt.parse(raw, types),
            max_tokens=spec.max_tokens,
        )

    def extractor(
        self,
        stage: str,
        domain: Domain,
        types: Sequence[str],
        text: str,
        *,
        mentions: Sequence[str] | None = None,
        max_items: int = 32,
    ) -> StagePrompt:
        """An ``anchor``/``explorer`` request about ``types`` (from :meth:`extraction_types`)."""
        return self._typed_mentions(
            stage, domain, list(types), text, EXTRACTION_FORMAT, mentions, max_items
        )

    def classifier(
        self,
        domain: Domain,
        tagged: str,
        *,
        direct: bool = False,
        mentions: Sequence[str] | None = None,
        max_items: int = 32,
    ) -> StagePrompt:
        """The archetype classifier's request for a ``<ENT>``-tagged sentence."""
        types = self.classifier_types(domain, direct=direct)
        return self._typed_mentions(
            "archetype", domain, types, tagged, self.classifier_format, mentions, max_items
        )

    def calibrator_variables(
        self, domain: Domain, text: str, initial: Mapping[str, Archetype]
    ) -> dict[str, Any]:
        """The calibrator template's variables (also what its training data is rendered with).

        Args:
            domain: The target domain.
            text: The sentence (untagged).
            initial: Mention → archetype (the classifier's output), in order.
        """
        definitions = self.definitions(domain)
        if self.present_archetypes_only:
            present = list(dict.fromkeys(initial.values()))
            initial_output: Any = [{m: self.archetype_name(a)} for m, a in initial.items()]
        else:
            present = list(Archetype)
            initial_output = {m: self.archetype_name(a) for m, a in initial.items()}
        return {
            "text": text,
            "initial_output": initial_output,
            "candidate_types": self.target_types(domain),
            "archetype_definitions": [
                {"name": self.archetype_name(a), "definition": definitions.archetypes[a]}
                for a in present
            ],
            "target_definitions": [
                {"name": self.show(domain, label), "definition": definition}
                for label, definition in definitions.targets
            ],
        }

    def calibrator(
        self,
        domain: Domain,
        text: str,
        initial: Mapping[str, Archetype],
        *,
        mentions: Sequence[str] | None = None,
        max_items: int = 64,
    ) -> StagePrompt:
        """The calibrator's request: type each mention of ``initial`` with a target type."""
        spec = self.spec("calibrate", domain)
        variables = self.calibrator_variables(domain, text, initial)
        schema = (
            CALIBRATION_FORMAT.schema(
                variables["candidate_types"], mentions=mentions, max_items=max_items
            )
            if self.constrained
            else None
        )
        return StagePrompt(
            prompt=spec.render(variables),
            schema=schema,
            parse=self.calibration_format.parse,
            max_tokens=spec.max_tokens,
        )

    # ------------------------------------------------------------------------------ gold answers

    def extraction_answer(self, types: Sequence[str], answer: Mapping[str, Sequence[str]]) -> str:
        """An extractor's gold answer (every type of ``types``, in order)."""
        return EXTRACTION_FORMAT.render_gold(types, answer)

    def classifier_answer(self, types: Sequence[str], answer: Mapping[str, Sequence[str]]) -> str:
        """The classifier's gold answer (``answer``: type → mentions)."""
        return self.classifier_format.render_gold(types, answer)

    def calibration_answer(self, assignments: Mapping[str, str]) -> str:
        """The calibrator's gold answer (``assignments``: mention → type as prompts name it)."""
        return self.calibration_format.render_gold(assignments)

    # ------------------------------------------------------------------------------ reading back

    def read_sentence(self, stage: str, prompt: str) -> str | None:
        """The sentence a rendered prompt is about, when this profile can read it back."""
        return None

    def read_tagged(self, prompt: str) -> str | None:
        """The ``<ENT>``-tagged sentence of a classifier prompt, when readable."""
        return None

    def read_initial_output(self, prompt: str) -> list[tuple[str, str]] | None:
        """The (mention, archetype name) pairs of a calibrator prompt, when readable."""
        return None


_REF_CALIBRATOR = re.compile(
    r"^[ \t]*Text: (?P<text>.*?)\n[ \t]*Initial Output: (?P<initial>.*?)\n[ \t]*Candidate Types: ",
    re.DOTALL | re.MULTILINE,
)


class ReferenceProfile(PromptProfile):
    """The SAM-NER authors' prompts (see the module docs); reads its own prompts back."""

    def read_sentence(self, stage: str, prompt: str) -> str | None:
        """The sentence of an anchor, explorer, classifier or calibrator prompt."""
        if stage == "anchor":
            try:
                value = json.loads(prompt)
            except ValueError:
                return None
            text = value.get("input") if isinstance(value, dict) else None
            return text if isinstance(text, str) else None
        if stage == "explorer":
            _, sep, text = prompt.partition("]. Passage: ")
            return text if sep else None
        if stage in ("archetype", "direct_typing"):
            tagged = self.read_tagged(prompt)
            return re.sub(r"</?ENT>", "", tagged) if tagged is not None else None
        if stage == "calibrate":
            match = _REF_CALIBRATOR.search(prompt)
            return match.group("text") if match else None
        return None

    def read_tagged(self, prompt: str) -> str | None:
        """The tagged sentence between ``sentence:`` and the trailing `` schema:[...]``."""
        head = self.specs["archetype"].instruction + "sentence:"
        if not prompt.startswith(head):
            return None
        body = prompt[len(head) :]
        cut = body.rfind(" schema:[")
        return body[:cut] if cut >= 0 else None

    def read_initial_output(self, prompt: str) -> list[tuple[str, str]] | None:
        """The ``Initial Output: [{"mention": "archetype"}]`` line of a calibrator prompt."""
        match = _REF_CALIBRATOR.search(prompt)
        if match is None:
            return None
        try:
            parsed = CLASSIFIER_FORMAT.parse(match.group("initial"), self.archetype_names)
        except OutputParseError:
            return None
        return [(m, t) for t, m in (*parsed.pairs, *parsed.dropped)]


def reference_specs() -> dict[str, StageSpec]:
    """The reference profile's stage specs (texts from ``samalign/prompts/samner/``)."""
    data = reference_data()
    budgets = data.source.max_new_tokens
    return {
        "anchor": StageSpec(
            "anchor",
            load_template("anchor", "reference"),
            data.instruction("anchor"),
            budgets["anchor"],
            ("labels", "text"),
        ),
        "explorer": StageSpec(
            "explorer",
            load_template("explorer", "reference"),
            data.instruction("explorer"),
            budgets["explorer"],
            ("labels", "text"),
        ),
        "archetype": StageSpec(
            "archetype",
            load_template("archetype", "reference"),
            data.instruction("archetype"),
            budgets["archetype"],
            ("labels", "text"),
        ),
        "calibrate": StageSpec(
            "calibrate",
            load_template("calibrate", "reference"),
            data.instruction("calibrate"),
            budgets["calibrate"],
            (
                "text",
                "initial_output",
                "candidate_types",
                "archetype_definitions",
                "target_definitions",
            ),
        ),
    }


@cache
def prompt_profile(name: str) -> PromptProfile:
    """The prompt profile called ``name`` (``default`` or ``reference``).

    Raises:
        ConfigError: Unknown profile.
    """
    if name == "default":
        return PromptProfile(
            "default",
            default_specs(),
            constrained=True,
            compact_answers=True,
            show_labels=False,
            archetype_names=[a.value for a in Archetype],
            classifier_format=EXTRACTION_FORMAT,
            calibration_format=CALIBRATION_FORMAT,
            present_archetypes_only=False,
        )
    if name == "reference":
        schema = reference_data().source.archetype_schema
        if [s.casefold() for s in schema] != [a.value.casefold() for a in Archetype]:
            raise ConfigError("samner.yaml: archetype_schema must be the 14 archetypes in order")
        return ReferenceProfile(
            "reference",
            reference_specs(),
            constrained=False,
            compact_answers=False,
            show_labels=True,
            archetype_names=schema,
            classifier_format=CLASSIFIER_FORMAT,
            calibration_format=MARKED_CALIBRATION_FORMAT,
            present_archetypes_only=True,
        )
    raise ConfigError(f"unknown prompt profile {name!r}; use one of {list(PROFILE_NAMES)}")


def resolve_profile(domain: Domain, override: str | None = None) -> PromptProfile:
    """The profile a run uses: ``override`` (per call) if given, else the domain's ``profile``."""
    return prompt_profile(override or domain.profile)


__all__ = [
    "CLASSIFIER_FORMAT",
    "DEFINITION_SETS",
    "MARKED_CALIBRATION_FORMAT",
    "PROFILE_NAMES",
    "DefinitionSetName",
    "Definitions",
    "ProfileName",
    "PromptProfile",
    "ReferenceProfile",
    "StagePrompt",
    "definition_set",
    "definitions_for",
    "prompt_profile",
    "reference_specs",
    "resolve_profile",
]
