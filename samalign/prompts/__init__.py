"""Prompt specs, answer formats, archetypes and target domains (data files live here)."""

from samalign.prompts.archetypes import ArchetypeInfo, ArchetypeTable, archetype_table
from samalign.prompts.domain import (
    KNOWN_STAGES,
    Domain,
    EntityType,
    RelationType,
    builtin_domains,
    domain_from_mapping,
    load_domain,
)
from samalign.prompts.formats import (
    AssignmentsFormat,
    MarkedAssignmentsFormat,
    MentionRecordsFormat,
    TypedMentionsFormat,
)
from samalign.prompts.profiles import PromptProfile, prompt_profile, resolve_profile
from samalign.prompts.reference import reference_data
from samalign.prompts.specs import (
    CALIBRATION_FORMAT,
    EXTRACTION_FORMAT,
    StageSpec,
    default_specs,
)

__all__ = [
    "CALIBRATION_FORMAT",
    "EXTRACTION_FORMAT",
    "KNOWN_STAGES",
    "ArchetypeInfo",
    "ArchetypeTable",
    "AssignmentsFormat",
    "Domain",
    "EntityType",
    "MarkedAssignmentsFormat",
    "MentionRecordsFormat",
    "PromptProfile",
    "RelationType",
    "StageSpec",
    "TypedMentionsFormat",
    "archetype_table",
    "builtin_domains",
    "default_specs",
    "domain_from_mapping",
    "load_domain",
    "prompt_profile",
    "reference_data",
    "resolve_profile",
]
