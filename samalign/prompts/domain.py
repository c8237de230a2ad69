"""Target domains: entity types (and relation types) with definitions, prompt and adapter overrides.

A domain is a YAML file. Built-in domains live in ``samalign/prompts/domains/``; users pass
a path to their own file. Loading validates the file and reports a broken one with an error
naming the file, the field and the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from samalign.errors import ConfigError, quoted, shorten
from samalign.prompts.yamlfile import load_yaml, load_yaml_file
from samalign.types import ALL_STAGES, Archetype

KNOWN_STAGES: tuple[str, ...] = ALL_STAGES
"""Every stage name a domain may override a prompt or adapter for."""

ProfileName = Literal["default", "reference"]
"""The prompt profiles (:mod:`samalign.prompts.profiles`)."""

PROFILE_NAMES: tuple[str, ...] = ("default", "reference")

DefinitionSetName = Literal["domain", "reference"]
"""The definition sets: the domain file's own, or the SAM-NER authors' (CrossNER only)."""

DEFINITION_SETS: tuple[str, ...] = ("domain", "reference")


class _TargetType(BaseModel):
    """What entity and relation types share: a label, a verbalised name, a definition."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str = Field(min_length=1, max_length=100)
    name: str = Field(default="", max_length=100)
    definition: str = Field(min_length=1)

    @model_validator(mode="after")
    def _default_name(self) -> Self:
        if not self.name:
            object.__setattr__(self, "name", self.label)
        return self

    def _is_called(self, name: str) -> bool:
        """Whether ``name`` is this type's verbalised name or label (case-insensitive)."""
        return name.strip().casefold() in (self.name.casefold(), self.label.casefold())


class EntityType(_TargetType):
    """One target entity type.

    Attributes:
        label: The tag written in outputs (e.g. ``programlang``).
        name: The verbalised name shown to models (e.g. ``programming language``).
        definition: A natural-language definition given to the calibrator.
        archetype: The archetype entities of this type usually fall under (used for training
            data and gold answers; the calibrator still sees every label).
    """

    archetype: Archetype | None = None


class RelationType(_TargetType):
    """One target relation type with optional argument-type constraints."""

    head_types: tuple[str, ...] = ()
    tail_types: tuple[str, ...] = ()


class Domain(BaseModel):
    """A target domain: what to extract, how it is defined, and per-stage overrides.

    Attributes:
        name: Domain identifier.
        description: One line for humans.
        source: Where the label set and definitions come from.
        entity_types: The target entity types (at least one).
        relation_types: The target relation types (may be empty).
        prompts: Per-stage Jinja template overrides (stage name → template source).
        adapters: Per-stage adapter names (stage name → adapter served by the backend).
        profile: The prompt profile the stages render with: ``default`` (samalign's) or
            ``reference`` (the SAM-NER authors' code); ``PipelineOptions.prompt_profile``
            overrides it per call.
        definitions: The definition set the calibrator is given: ``domain`` (this file's
            definitions, Table 5 for archetypes) or ``reference`` (the SAM-NER authors', for
            the five CrossNER domains); unset, the ``reference`` profile uses the authors' set
            where there is one and the ``default`` profile this file's.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    source: str = ""
    entity_types: tuple[EntityType, ...] = Field(min_length=1)
    relation_types: tuple[RelationType, ...] = ()
    prompts: Mapping[str, str] = Field(default_factory=dict)
    adapters: Mapping[str, str] = Field(default_factory=dict)
    profile: ProfileName = "default"
    definitions: DefinitionSetName | None = None

    @field_validator("entity_types", "relation_types")
    @classmethod
    def _unique_types(cls, value: tuple[_TargetType, ...]) -> tuple[_TargetType, ...]:
        _check_unique([t.label for t in value], "label")
        _check_unique([t.name.casefold() for t in value], "name")
        return value

    @field_validator("prompts", "adapters")
    @classmethod
    def _known_stages(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        unknown = sorted(set(value) - set(KNOWN_STAGES))
        if unknown:
            raise ValueError(
                f"unknown stage(s) {_few(unknown)}; use stage names from {list(KNOWN_STAGES)}"
            )
        return dict(value)

    @model_validator(mode="after")
    def _relation_arguments(self) -> Self:
        labels = {t.label for t in self.entity_types}
        for rel in self.relation_types:
            bad = sorted(set(rel.head_types + rel.tail_types) - labels)
            if bad:
                raise ValueError(
                    f"relation {rel.label!r} constrains arguments to unknown entity types "
                    f"{_few(bad)}; use labels from entity_types {_few(sorted(labels))}"
                )
        return self

    @model_validator(mode="after")
    def _reference_definitions(self) -> Self:
        if self.definitions != "reference":
            return self
        from samalign.prompts.reference import reference_data  # local: data loaded on demand

        problem = reference_data().domain_problem(self.name, self.labels)
        if problem is not None:
            raise ValueError(f"'definitions: reference': {problem}")
        return self

    @property
    def labels(self) -> list[str]:
        """Entity labels (tags) in domain order."""
        return [t.label for t in self.entity_types]

    @property
    def names(self) -> list[str]:
        """Verbalised entity type names in domain order."""
        return [t.name for t in self.entity_types]

    def label_for_name(self, name: str) -> str | None:
        """Map a verbalised name or a label (case-insensitive) back to its label."""
        found = next((t for t in self.entity_types if t._is_called(name)), None)
        return found.label if found is not None else None

    def entity_type(self, label: str) -> EntityType:
        """The entity type with this label.

        Raises:
            ConfigError: If the domain has no such label.
        """
        for t in self.entity_types:
            if t.label == label:
                return t
        raise ConfigError(
            f"domain {self.name!r} has no entity type {label!r}; labels: {self.labels}"
        )

    @property
    def relation_names(self) -> list[str]:
        """Verbalised relation names in domain order (what the relation prompts show)."""
        return [r.name for r in self.relation_types]

    def relation_for_name(self, name: str) -> RelationType | None:
        """The relation type with this verbalised name or label (case-insensitive)."""
        return next((r for r in self.relation_types if r._is_called(name)), None)

    def relation_schema(self) -> list[dict[str, object]]:
        """The relation types as the relation prompts show them.

        One record per relation: its name, definition and, when constrained, the names of
        the entity types allowed as subject and object.
        """
        names = {t.label: t.name for t in self.entity_types}
        items: list[dict[str, object]] = []
        for r in self.relation_types:
            item: dict[str, object] = {"relation": r.name, "definition": r.definition}
            if r.head_types:
                item["subject types"] = [names[t] for t in r.head_types]
            if r.tail_types:
                item["object types"] = [names[t] for t in r.tail_types]
            items.append(item)
        return items

    def adapter_for(self, stage: str) -> str:
        """The adapter name a stage uses in this domain (default: the stage's own name)."""
        return self.adapters.get(stage, stage)


def _check_unique(values: list[str], what: str) -> None:
    seen: set[str] = set()
    dupes = sorted({v for v in values if v in seen or seen.add(v)})  # type: ignore[func-returns-value]
    if dupes:
        raise ValueError(f"duplicate {what}(s) {_few(dupes)}; each must appear once")


def _few(values: list[str], limit: int = 10) -> str:
    """Up to ``limit`` values, each cut short, for an error message (never unbounded)."""
    shown = [shorten(v, 60) for v in values[:limit]]
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return f"{shown}{more}"


def builtin_domains() -> list[str]:
    """Names of the domains shipped with samalign."""
    folder = resources.files("samalign.prompts") / "domains"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


MAX_REPORTED_ERRORS = 20
"""Most problems a domain error lists."""

_NESTED_MODELS: Mapping[str, type[BaseModel]] = {
    "entity_types": EntityType,
    "relation_types": RelationType,
}
"""The model of each list item of a domain file (``entity_types[i]``, ``relation_types[i]``)."""


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model whose field ``loc`` names: the domain itself or one of its list items."""
    if len(loc) == 1:
        return Domain
    if len(loc) == 3 and isinstance(loc[1], int):
        return _NESTED_MODELS.get(str(loc[0]))
    return None


def _unknown_field_message(loc: tuple[Any, ...]) -> str:
    """Name an unknown field, the valid ones at its level and the closest valid spelling."""
    model = _model_at(loc)
    if model is None:
        return "unknown field; remove it or check its spelling"
    valid = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1])[:100], valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"unknown field {quoted(loc[-1])}{hint}; remove it or check its spelling. "
        f"Valid fields here: {', '.join(valid)}"
    )


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    errors = err.errors()
    located = {tuple(e["loc"]) for e in errors if e["type"] != "too_short"}
    for item in errors[:MAX_REPORTED_ERRORS]:
        loc_key = tuple(item["loc"])
        if item["type"] == "too_short" and any(k[: len(loc_key)] == loc_key for k in located):
            continue  # an invalid item was removed from the list; report the item, not the length
        loc = ".".join(str(p) for p in item["loc"])[:200] or "(top level)"
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = _unknown_field_message(loc_key)
        elif item["type"] == "missing":
            msg = "required field is missing; add it"
        elif item["type"] == "enum":
            msg = f"{msg} (got {quoted(item.get('input'))})"
        lines.append(f"  field {loc!r}: {msg}")
    if len(errors) > MAX_REPORTED_ERRORS:
        lines.append(f"  … and {len(errors) - MAX_REPORTED_ERRORS} more problem(s)")
    return "\n".join(lines)


def domain_from_mapping(data: Any, *, origin: str) -> Domain:
    """Validate a parsed domain mapping.

    Args:
        data: The parsed YAML/JSON content.
        origin: Where it came from, for error messages.

    Raises:
        ConfigError: If the content is not a valid domain.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{origin}: a domain file must be a mapping with 'name' and 'entity_types', "
            f"got {type(data).__name__}"
        )
    try:
        domain = Domain.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{origin}: invalid domain\n{_format_validation_error(err)}") from None
    from samalign.prompts.profiles import prompt_profile  # local: avoids an import cycle
    from samalign.prompts.specs import validate_overrides

    validate_overrides(domain, origin=origin, specs=prompt_profile(domain.profile).specs)
    return domain


def load_domain(name_or_path: str | Path) -> Domain:
    """Load a built-in domain by name or a user domain from a YAML file.

    Args:
        name_or_path: A built-in domain name (see :func:`builtin_domains`) or a path to a
            YAML file.

    Returns:
        The validated domain.

    Raises:
        ConfigError: If the domain is unknown or the file is broken (the message names the
            file, the field and the fix).
    """
    text = str(name_or_path)
    path = Path(text)
    try:
        is_path = path.suffix in (".yaml", ".yml", ".json") or path.exists()
    except (OSError, ValueError):  # a name too long for a path, or holding a NUL byte
        is_path = False
    if is_path:
        return domain_from_mapping(load_yaml_file(path, what="domain file"), origin=str(path))
    if text not in builtin_domains():
        raise ConfigError(
            f"unknown domain {quoted(text)}; built-in domains: {builtin_domains()} "
            "(or pass a path to a domain YAML file)"
        )
    resource = resources.files("samalign.prompts") / "domains" / f"{text}.yaml"
    origin = f"built-in domain {text!r}"
    data = load_yaml(resource.read_text(encoding="utf-8"), origin=origin)
    return domain_from_mapping(data, origin=origin)


__all__ = [
    "DEFINITION_SETS",
    "KNOWN_STAGES",
    "PROFILE_NAMES",
    "DefinitionSetName",
    "Domain",
    "EntityType",
    "ProfileName",
    "RelationType",
    "builtin_domains",
    "domain_from_mapping",
    "load_domain",
]
