"""Training-data builders: public datasets → chat examples rendered by the stage specs."""

from samalign.finetune.builders.archetype import ArchetypeProjection, build_archetype_examples
from samalign.finetune.builders.calibrate import build_calibrate_examples
from samalign.finetune.builders.extraction import build_extraction_examples
from samalign.finetune.builders.io import (
    BuildReport,
    ChatExample,
    iter_examples,
    read_examples,
    write_examples,
)
from samalign.finetune.builders.joint import build_joint_examples, mix_examples
from samalign.finetune.builders.relations import RELATION_STAGES, build_relation_examples
from samalign.finetune.builders.sources import (
    SOURCE_FORMATS,
    SourceDataset,
    SourceMention,
    SourceRecord,
    SourceRelation,
    detect_format,
    read_source,
)
from samalign.finetune.builders.supervised import build_supervised_examples

__all__ = [
    "RELATION_STAGES",
    "SOURCE_FORMATS",
    "ArchetypeProjection",
    "BuildReport",
    "ChatExample",
    "SourceDataset",
    "SourceMention",
    "SourceRecord",
    "SourceRelation",
    "build_archetype_examples",
    "build_calibrate_examples",
    "build_extraction_examples",
    "build_joint_examples",
    "build_relation_examples",
    "build_supervised_examples",
    "detect_format",
    "iter_examples",
    "mix_examples",
    "read_examples",
    "read_source",
    "write_examples",
]
