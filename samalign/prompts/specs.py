"""Stage prompt specs: a Jinja template (sandboxed) plus an answer format per stage.

Defaults follow SAM-NER's Figures 5–8. The anchor prompt uses the IEPile instruction format
(a JSON string with ``instruction``, ``schema`` and ``input``) so a public IEPile LoRA can
serve as the anchor adapter. Templates put the constant parts (instruction, schema,
definitions) first and the sentence last, so vLLM's prefix cache reuses them.

Deviations from Figure 8 (the calibrator), all deliberate: its 'Text' and 'Initial Output'
come last (prefix caching); its output format is ``[{"entity": ..., "type": ...}]`` instead of
``[{"entity name": "corrected type"}]``, so one JSON schema per domain restricts the type; its
'Rules' text is this project's (the paper shows only a placeholder).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

from jinja2 import TemplateError

from samalign.errors import ConfigError
from samalign.prompts.formats import AssignmentsFormat, TypedMentionsFormat
from samalign.prompts.relations import FORWARD_FORMAT, REVERSE_FORMAT, RelationsFormat
from samalign.prompts.sandbox import PromptEnvironment, PromptTemplate, compile_template
from samalign.prompts.supervised import SUPERVISED_NER_INSTRUCTION

IEPILE_NER_INSTRUCTION = (
    "You are an expert in named entity recognition. Please extract entities that match the "
    "schema definition from the input. Return an empty list if the entity type does not exist. "
    "Please respond in the format of a JSON string."
)
"""The English IEPile NER instruction (IEPile/DeepKE READMEs); the anchor's default."""

EXPLORER_INSTRUCTION = (
    "Please extract entities that match the schema definition from the input. Return an empty "
    "list if the entity type does not exist. Please respond in the format of a JSON string. "
)
"""SAM-NER Figure 6."""

ARCHETYPE_INSTRUCTION = (
    "Your task is to classify each entity marked with <ENT></ENT> without omission and strictly "
    "select the most appropriate and unique entity type from the given schema based on the "
    "sentence semantics."
)
"""SAM-NER Figure 7."""

CALIBRATE_INSTRUCTION = (
    "Based on the given information, you need to strictly select the appropriate target domain "
    "type from the 'Candidate Types' for each named entity of the 'Initial Output'."
)
"""SAM-NER Figure 8."""

RELATIONS_FORWARD_INSTRUCTION = (
    "You are an expert in relation extraction. Please extract the relation triples that match "
    "the schema definition from the input. Group the triples by subject: write each subject "
    "entity once, followed by all of its (object, relation) pairs, as "
    '[{"subject": "...", "pairs": [{"object": "...", "relation": "..."}]}]. '
    "Copy entity mentions exactly from the input, use only relations of the schema and respect "
    "their subject and object types. Return an empty list if there is no such relation. "
    "Please respond in the format of a JSON string."
)
"""The forward (subject-centric) relation decoder's instruction (AnchorAlign paradigm 3)."""

RELATIONS_REVERSE_INSTRUCTION = (
    "You are an expert in relation extraction. Please extract the relation triples that match "
    "the schema definition from the input. Group the triples by object: write each object "
    "entity once, followed by all of its (subject, relation) pairs, as "
    '[{"object": "...", "pairs": [{"subject": "...", "relation": "..."}]}]. '
    "Copy entity mentions exactly from the input, use only relations of the schema and respect "
    "their subject and object types. Return an empty list if there is no such relation. "
    "Please respond in the format of a JSON string."
)
"""The reverse (object-centric) relation decoder's instruction, the mirror of the forward one."""

CALIBRATE_RULES: tuple[str, ...] = (
    "Give every entity of the 'Initial Output' exactly one type, chosen from 'Candidate Types'.",
    "Treat the entity's abstract type and its definition as a prior: prefer the target type "
    "whose definition is compatible with it.",
    "Decide by what the entity means in the Text, following the target type definitions.",
    "Do not add, drop or rename entities.",
)
"""Guidance for the calibrator (Figure 8's 'Rules' section)."""


def _json_filter(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _pyrepr_filter(value: Any) -> str:
    """A list of strings as Python prints it (``['a', 'b']``).

    The SAM-NER authors' f-strings show schema lists so (``f"schema:{schema}"``).
    """
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise TemplateError(f"pyrepr expects a list of strings, got {type(value).__name__}")
    return "[" + ", ".join(repr(str(item)) for item in value) + "]"


def _environment() -> PromptEnvironment:
    """The sandbox every stage template renders in (no loader; bounded work and size)."""
    return PromptEnvironment({"json": _json_filter, "pyrepr": _pyrepr_filter})


@dataclass(frozen=True)
class StageSpec:
    """How one stage talks to its model.

    Attributes:
        name: Stage name (also the default adapter name).
        template: Jinja source of the user message.
        instruction: The instruction text passed to the template.
        max_tokens: Completion budget for the stage.
        required_variables: Variables every template of this stage must be able to use.
    """

    name: str
    template: str
    instruction: str
    max_tokens: int
    required_variables: tuple[str, ...]
    rules: tuple[str, ...] = ()
    _compiled: PromptTemplate = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            compiled = compile_template(_environment(), self.template)
        except ConfigError as err:
            raise ConfigError(f"prompt template of stage {self.name!r} is invalid: {err}") from None
        object.__setattr__(self, "_compiled", compiled)

    def render(self, variables: Mapping[str, Any]) -> str:
        """Render the user message.

        Raises:
            ConfigError: If the template fails (e.g. uses an unknown variable).
        """
        context = {"instruction": self.instruction, "rules": list(self.rules), **variables}
        try:
            return self._compiled.render(context).strip()
        except ConfigError as err:
            raise ConfigError(
                f"prompt template of stage {self.name!r} failed to render: {err}; "
                f"available variables: {sorted(context)}"
            ) from None

    def with_template(self, template: str | None) -> StageSpec:
        """This spec with another template (``None`` keeps the current one)."""
        return self if template is None else replace(self, template=template)


def load_template(name: str, folder: str = "") -> str:
    """The Jinja source of a shipped stage template (``templates/[folder/]name.j2``)."""
    base = resources.files("samalign.prompts") / "templates"
    if folder:
        base = base / folder
    return (base / f"{name}.j2").read_text("utf-8")


EXTRACTION_FORMAT = TypedMentionsFormat()
"""Answer format of both extractors and the archetype classifier."""

CALIBRATION_FORMAT = AssignmentsFormat()
"""Answer format of the calibrator."""

RELATION_FORMATS: Mapping[str, RelationsFormat] = {
    "relations_forward": FORWARD_FORMAT,
    "relations_reverse": REVERSE_FORMAT,
}
"""Answer format of each relation stage."""


def default_specs() -> dict[str, StageSpec]:
    """The default spec of every stage (NER and relations), keyed by stage name."""
    extract_vars = ("labels", "text")
    return {
        "anchor": StageSpec(
            "anchor", load_template("anchor"), IEPILE_NER_INSTRUCTION, 512, extract_vars
        ),
        "explorer": StageSpec(
            "explorer", load_template("explorer"), EXPLORER_INSTRUCTION, 512, extract_vars
        ),
        "archetype": StageSpec(
            "archetype", load_template("archetype"), ARCHETYPE_INSTRUCTION, 512, extract_vars
        ),
        "calibrate": StageSpec(
            "calibrate",
            load_template("calibrate"),
            CALIBRATE_INSTRUCTION,
            512,
            (
                "text",
                "initial_output",
                "candidate_types",
                "archetype_definitions",
                "target_definitions",
            ),
            rules=CALIBRATE_RULES,
        ),
        "relations_forward": StageSpec(
            "relations_forward",
            load_template("relations_forward"),
            RELATIONS_FORWARD_INSTRUCTION,
            512,
            ("relations", "text"),
        ),
        "relations_reverse": StageSpec(
            "relations_reverse",
            load_template("relations_reverse"),
            RELATIONS_REVERSE_INSTRUCTION,
            512,
            ("relations", "text"),
        ),
        "supervised_ner": StageSpec(
            "supervised_ner",
            load_template("supervised_ner"),
            SUPERVISED_NER_INSTRUCTION,
            512,
            extract_vars,
        ),
    }


_SENTINEL = "\u2063SAMALIGN-TEXT\u2063"


def _sample_variables(stage: str) -> dict[str, Any]:
    defs = [{"name": "a", "definition": "d"}]
    if stage == "calibrate":
        return {
            "text": _SENTINEL,
            "initial_output": {"x": "Person"},
            "candidate_types": ["a"],
            "archetype_definitions": defs,
            "target_definitions": defs,
        }
    if stage in RELATION_FORMATS:
        return {"relations": [{"relation": "r", "definition": "d"}], "text": _SENTINEL}
    return {"labels": ["a"], "text": _SENTINEL}


def validate_overrides(
    domain: Any, *, origin: str, specs: Mapping[str, StageSpec] | None = None
) -> None:
    """Check a domain's prompt overrides compile, render, and include the input text.

    Args:
        domain: The domain.
        origin: Where it came from, for error messages.
        specs: The specs the overrides replace templates of (default: :func:`default_specs`;
            the domain loader passes its profile's).

    Raises:
        ConfigError: Naming the file, the stage and the fix.
    """
    specs = specs if specs is not None else default_specs()
    prompts: Mapping[str, str] = domain.prompts
    for stage, source in prompts.items():
        if stage not in specs:
            continue  # unknown stage names are reported by the domain loader
        try:
            rendered = specs[stage].with_template(source).render(_sample_variables(stage))
        except ConfigError as err:
            raise ConfigError(f"{origin}: field 'prompts.{stage}': {err}") from None
        if _SENTINEL not in rendered:
            raise ConfigError(
                f"{origin}: field 'prompts.{stage}': the template never uses {{{{ text }}}}; "
                "a stage prompt must include the input text"
            )


__all__ = [
    "ARCHETYPE_INSTRUCTION",
    "CALIBRATE_INSTRUCTION",
    "CALIBRATE_RULES",
    "CALIBRATION_FORMAT",
    "EXPLORER_INSTRUCTION",
    "EXTRACTION_FORMAT",
    "IEPILE_NER_INSTRUCTION",
    "RELATIONS_FORWARD_INSTRUCTION",
    "RELATIONS_REVERSE_INSTRUCTION",
    "RELATION_FORMATS",
    "StageSpec",
    "default_specs",
    "load_template",
    "validate_overrides",
]
