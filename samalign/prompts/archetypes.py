"""The 14 SAM-NER archetypes: definitions (Table 5) and the mapping M (Table 4)."""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml
from pydantic import BaseModel, ConfigDict

from samalign.errors import ConfigError
from samalign.types import Archetype


class ArchetypeInfo(BaseModel):
    """One archetype with its definition and the fine-grained types M maps onto it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Archetype
    definition: str
    fine_grained_types: tuple[str, ...]


class ArchetypeTable(BaseModel):
    """All archetypes, in the paper's order, and the data source."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    archetypes: tuple[ArchetypeInfo, ...]

    def definition(self, archetype: Archetype) -> str:
        """The Table 5 definition of an archetype."""
        for info in self.archetypes:
            if info.name == archetype:
                return info.definition
        raise ConfigError(f"archetype {archetype!r} missing from the archetype table")

    def project(self, fine_grained_type: str) -> Archetype | None:
        """The mapping M: fine-grained IEPile type → archetype (exact, then case-insensitive)."""
        for info in self.archetypes:
            if fine_grained_type in info.fine_grained_types:
                return info.name
        key = fine_grained_type.casefold()
        for info in self.archetypes:
            if key in (t.casefold() for t in info.fine_grained_types):
                return info.name
        return None


@cache
def archetype_table() -> ArchetypeTable:
    """Load the archetype table shipped in ``samalign/prompts/archetypes.yaml``."""
    raw = (resources.files("samalign.prompts") / "archetypes.yaml").read_text(encoding="utf-8")
    table = ArchetypeTable.model_validate(yaml.safe_load(raw))
    if [a.name for a in table.archetypes] != list(Archetype):
        raise ConfigError("archetypes.yaml must list the 14 archetypes of Table 5 in order")
    return table


__all__ = ["ArchetypeInfo", "ArchetypeTable", "archetype_table"]
