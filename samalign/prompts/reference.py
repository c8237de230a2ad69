"""The SAM-NER authors' prompt texts, definitions, schemas and mapping, as data.

Loaded from ``samalign/prompts/samner/`` (``samner.yaml`` names the repository, the commit and
the path of every text; the JSON files are byte-identical copies of the authors' schema
files). The ``reference`` prompt profile (:mod:`samalign.prompts.profiles`) renders the stage
prompts from these; nothing here is samalign's own wording.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from samalign.errors import ConfigError

FOLDER = "samner"
"""The data folder inside ``samalign/prompts``."""


class ReferenceText(BaseModel):
    """A text taken from the authors' repository, with the files it appears in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    paths: tuple[str, ...]
    text: str


class ReferenceFile(BaseModel):
    """A data file copied from the authors' repository (``file`` here, ``path`` there)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    path: str


class ReferenceSource(BaseModel):
    """``samner.yaml``: where everything comes from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repository: str
    url: str
    commit: str
    instructions: dict[str, ReferenceText]
    archetype_schema: tuple[str, ...]
    max_new_tokens: dict[str, int]
    files: dict[str, ReferenceFile]
    domains: dict[str, str]


class ReferenceDomain(BaseModel):
    """The authors' schema and definitions of one CrossNER domain.

    Attributes:
        key: The domain's key in the authors' files (``ai``, ``literature`` …).
        extraction_labels: What the extractors are asked about (``schema_crossner.json``:
            the domain's labels without ``misc``), in the authors' order.
        definitions: ``(label, definition)`` of every label, ``misc`` included
            (``schema_define_crossNER.json``), in the authors' order: the calibrator's
            candidate types and target definitions.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    extraction_labels: tuple[str, ...]
    definitions: tuple[tuple[str, str], ...]

    @property
    def labels(self) -> list[str]:
        """The labels of ``definitions``, in order."""
        return [label for label, _ in self.definitions]


class ReferenceData(BaseModel):
    """Everything the ``reference`` profile and the reference recipes read.

    Attributes:
        source: Repository, commit and paths (``samner.yaml``).
        archetype_definitions: Lower-case archetype key → definition, 15 entries in file order
            (``schema_define_IEPile.json``; ``time`` included, which no classifier predicts).
        mapping: The authors' archetype key → IEPile types (``schema_mapping.json``; its
            Chinese keys included).
        domains: samalign domain name → that domain's reference schema and definitions.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: ReferenceSource
    archetype_definitions: dict[str, str]
    mapping: dict[str, tuple[str, ...]]
    domains: dict[str, ReferenceDomain]

    def instruction(self, stage: str) -> str:
        """The authors' instruction text of a stage.

        Raises:
            ConfigError: The authors have no such stage.
        """
        text = self.source.instructions.get(stage)
        if text is None:
            raise ConfigError(
                f"the SAM-NER reference has no {stage!r} stage; it has "
                f"{sorted(self.source.instructions)}"
            )
        return text.text

    def for_domain(self, name: str) -> ReferenceDomain | None:
        """The reference schema of a samalign domain (``None`` if the authors have none)."""
        return self.domains.get(name)

    def domain_problem(self, name: str, labels: Collection[str]) -> str | None:
        """Why the reference definitions cannot serve domain ``name`` with ``labels``.

        Returns:
            ``None`` when the authors define that domain with exactly these labels, else
            what is wrong and what to do instead.
        """
        ref = self.for_domain(name)
        if ref is None:
            return (
                f"the SAM-NER authors define only the domains {sorted(self.domains)}, not "
                f"{name!r}; use 'definitions: domain' (the domain's own)"
            )
        if set(ref.labels) != set(labels):
            return (
                f"the labels {sorted(labels)} of {name!r} are not the authors' labels of "
                f"{ref.key!r} {sorted(ref.labels)}; use the built-in domain or "
                "'definitions: domain'"
            )
        return None

    def citation(self, file: str) -> str:
        """``repository@commit:path`` of one of the copied data files (by its ``files`` key)."""
        entry = self.source.files[file]
        return f"{self.source.repository}@{self.source.commit}:{entry.path}"


def _read(name: str) -> str:
    return (resources.files("samalign.prompts") / FOLDER / name).read_text(encoding="utf-8")


def _json(source: ReferenceSource, key: str) -> Any:
    return json.loads(_read(source.files[key].file))


def _domains(
    source: ReferenceSource,
    schema: Mapping[str, list[str]],
    definitions: Mapping[str, Mapping[str, str]],
) -> dict[str, ReferenceDomain]:
    out: dict[str, ReferenceDomain] = {}
    for name, key in source.domains.items():
        if key not in schema or key not in definitions:
            raise ConfigError(
                f"{FOLDER}/samner.yaml: domain key {key!r} is not in the schema files"
            )
        out[name] = ReferenceDomain(
            key=key,
            extraction_labels=tuple(schema[key]),
            definitions=tuple(definitions[key].items()),
        )
    return out


@cache
def reference_data() -> ReferenceData:
    """Load the SAM-NER reference data shipped in ``samalign/prompts/samner/``."""
    source = ReferenceSource.model_validate(yaml.safe_load(_read("samner.yaml")))
    mapping = {k: tuple(v) for k, v in _json(source, "mapping").items()}
    return ReferenceData(
        source=source,
        archetype_definitions=_json(source, "archetype_definitions"),
        mapping=mapping,
        domains=_domains(
            source, _json(source, "extraction_schema"), _json(source, "target_definitions")
        ),
    )


__all__ = [
    "ReferenceData",
    "ReferenceDomain",
    "ReferenceFile",
    "ReferenceSource",
    "ReferenceText",
    "reference_data",
]
