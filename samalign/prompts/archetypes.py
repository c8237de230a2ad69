"""The 14 SAM-NER archetypes: definitions (Table 5), the mapping M (Table 4), dropped types."""

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
    """All archetypes, in the paper's order, the data source, and the types M leaves out.

    Attributes:
        source: Where the table comes from.
        dropped_types: Value types (``cardinal``, ``date``, ``Price`` …) the authors drop from
            the classifier's training data before projecting (they have no archetype).
        archetypes: The 14 archetypes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    dropped_types: tuple[str, ...] = ()
    archetypes: tuple[ArchetypeInfo, ...]

    def is_dropped(self, fine_grained_type: str) -> bool:
        """Whether a type is one of the dropped value types (exact spelling, as the authors)."""
        return fine_grained_type in self.dropped_types

    def definition(self, archetype: Archetype) -> str:
        """The Table 5 definition of an archetype."""
        for info in self.archetypes:
            if info.name == archetype:
                return info.definition
        raise ConfigError(f"archetype {archetype!r} missing from the archetype table")

    def project(self, fine_grained_type: str, *, exact: bool = False) -> Archetype | None:
        """The mapping M: fine-grained IEPile type → archetype.

        Args:
            fine_grained_type: The IEPile type string.
            exact: Match the spelling exactly (the authors' lookup); by default a type that
                matches no spelling exactly is matched case-insensitively.
        """
        for info in self.archetypes:
            if fine_grained_type in info.fine_grained_types:
                return info.name
        if exact:
            return None
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
