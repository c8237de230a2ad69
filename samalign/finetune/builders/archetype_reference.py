"""The archetype classifier's training data as the SAM-NER authors built it.

Follows ``src/EntityClassification/getTrainingData.py`` of ``DMIRLAB-Group/SAM-NER``
(commit d9e41bc; read, not copied) step by step, on any source records (IEPile NER
instructions in the paper):

1. **Filter.** The passage's non-empty types, in its schema order (IEPile writes a record's
   ``output`` in schema order; the authors read the output's key order): a passage with none
   is dropped, and so is one whose *first* non-empty type is a dropped value type
   (``dropped_types`` of ``archetypes.yaml``: ``cardinal``, ``ordinal``, ``percent``,
   ``money``, ``Price``, ``quantity``, ``average ratings``, ``Rating``, ``rating``, ``date``,
   ``time``, ``year``, ``Hours``).
2. **Project.** Every other type goes through the mapping M with its exact spelling (the
   authors invert ``schema_mapping.json``); dropped value types are removed from the schema
   and the answer. The answer maps each archetype to a mention list; when two types of a
   passage map to one archetype, the later type's list *replaces* the earlier one (the
   authors assign ``output_new[archetype] = mentions``), and the earlier mentions are neither
   tagged nor answered (counted as ``mentions_replaced_by_a_later_type``). The schema is the
   projected set of the passage's types (the instance-specific schema ``A^i``) in archetype
   order (the authors' is Python set order, which varies between runs); ``schema="full"``
   gives all 14.
3. **Tag.** The answer's mentions are wrapped in ``<ENT></ENT>`` the authors' way: longest
   mention first, each at its *first* occurrence (a mention starting or ending with a word
   character must not continue a word there), an occurrence overlapping an earlier-starting
   one is left untagged. A mention that is not found stays in the answer (as theirs).
4. **Render** with the reference profile's classifier prompt
   (``…based on the sentence semantics.sentence:{tagged} schema:{schema}``) and answer
   ``[{"mention": "archetype"}, …]`` grouped by archetype, keys lower-case, as
   ``json.dumps`` writes it.

A label the mapping does not know raised ``KeyError`` in the authors' script; here
``unmapped`` decides (skip the type, type it ``misc``, or stop with an error). Passages with
Chinese text are skipped: the authors gave them a Chinese instruction and mapped their types
onto Chinese archetype keys, which samalign's classifier does not predict.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Literal

from samalign.errors import ConfigError
from samalign.finetune.builders.archetype import (
    ArchetypeProjection,
    Unmapped,
    check_options,
    record_schema,
)
from samalign.finetune.builders.common import DEFAULT_MAX_TEXT_CHARS, ExampleSet, stage_spec
from samalign.finetune.builders.io import BuildResult
from samalign.finetune.builders.sources import SourceDataset, SourceRecord
from samalign.prompts.domain import Domain
from samalign.prompts.profiles import prompt_profile
from samalign.types import Archetype

ENT_OPEN = "<ENT>"
ENT_CLOSE = "</ENT>"
_WORD = re.compile(r"\w")
_CJK = re.compile(r"[\u4e00-\u9fff]")


def has_chinese(text: str) -> bool:
    """Whether a text holds a CJK unified ideograph (the authors' ``is_chinese``)."""
    return _CJK.search(text) is not None


def tag_first_occurrences(sentence: str, mentions: Sequence[str]) -> str:
    """Wrap mentions in ``<ENT></ENT>`` as the authors' training script does (see step 3).

    Args:
        sentence: The passage.
        mentions: The answer's mentions (duplicates allowed).

    Returns:
        The tagged passage.
    """
    spans: list[tuple[int, int]] = []
    for mention in sorted(mentions, key=len, reverse=True):
        if not mention.strip():
            continue
        if has_chinese(mention):
            pattern = re.escape(mention)
        else:
            prefix = r"(?<!\w)" if _WORD.match(mention[0]) else ""
            suffix = r"(?!\w)" if _WORD.match(mention[-1]) else ""
            pattern = prefix + re.escape(mention) + suffix
        match = re.search(pattern, sentence)
        if match:
            spans.append(match.span())
    kept: list[tuple[int, int]] = []
    for start, end in sorted(spans, key=lambda span: span[0]):
        if kept and start < kept[-1][1]:
            continue
        kept.append((start, end))
    out = sentence
    for start, end in reversed(kept):
        out = out[:start] + ENT_OPEN + out[start:end] + ENT_CLOSE + out[end:]
    return out


def _grouped(record: SourceRecord, schema: Sequence[str]) -> dict[str, list[str]]:
    """The record's non-empty types with their mentions, in schema order."""
    order = {t: i for i, t in enumerate(schema)}
    types = sorted(record.types, key=lambda t: order.get(t, len(order)))
    grouped: dict[str, list[str]] = {t: [] for t in types}
    for m in record.mentions:
        grouped[m.type].append(m.text)
    return grouped


def build_reference_archetype_examples(
    datasets: Sequence[SourceDataset],
    *,
    domain: Domain | None = None,
    archetype_map: Mapping[str, str] | None = None,
    unmapped: Unmapped = "skip",
    schema: Literal["instance", "full"] = "instance",
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> BuildResult:
    """Build archetype classifier examples with the SAM-NER authors' recipe (module docs).

    Args:
        datasets: Source datasets (IEPile NER instructions in the paper).
        domain: Labels' archetypes come from its table first; its prompt override is used.
        archetype_map: Source label → archetype name, checked first.
        unmapped: A type M does not map is ``skip``-ped, typed ``misc``, or an ``error``.
        schema: ``instance`` (the projected types of the passage) or ``full`` (all 14).
        max_text_chars: Skip passages longer than the sentence graph accepts.

    Returns:
        The examples and a report of counts.

    Raises:
        ConfigError: A type cannot be projected with ``unmapped="error"``, or a bad option.
    """
    check_options(unmapped, schema)
    profile = prompt_profile("reference")
    spec = stage_spec("archetype", domain, profile)
    project = ArchetypeProjection(archetype_map, domain, exact=True)
    built = ExampleSet("archetype", compact=profile.compact_answers)
    report = built.report

    def archetype_of(label: str, rec: SourceRecord) -> Archetype | None:
        archetype = project(label)
        if archetype is not None:
            return archetype
        if unmapped == "error":
            raise ConfigError(
                f"{rec.origin}: type {label!r} is not in the mapping M (archetypes.yaml; the "
                "authors' schema_mapping.json) nor a dropped value type; add it to an archetype "
                "map, or pass unmapped='skip' or 'misc'"
            )
        return Archetype.MISC if unmapped == "misc" else None

    for dataset in datasets:
        for rec in built.fitting(dataset.records, max_text_chars):
            if has_chinese(rec.text):
                report.skip("chinese_text")
                continue
            fine_schema = record_schema(rec, dataset)
            output = _grouped(rec, fine_schema)
            if not output:
                report.skip("no_entities")
                continue
            if project.dropped(next(iter(output))):
                report.skip("first_type_dropped")
                continue
            projected: set[Archetype] = set()
            for label in fine_schema:
                if not project.dropped(label):
                    archetype = archetype_of(label, rec)
                    if archetype is not None:
                        projected.add(archetype)
            answer: dict[Archetype, list[str]] = {}
            for label, mentions in output.items():
                if project.dropped(label):
                    report.count("dropped_type_mentions", len(mentions))
                    continue
                archetype = archetype_of(label, rec)
                if archetype is None:
                    report.count("unmapped_type_mentions", len(mentions))
                    continue
                if archetype in answer:
                    report.count("mentions_replaced_by_a_later_type", len(answer[archetype]))
                answer[archetype] = list(mentions)
                projected.add(archetype)
            mentions = [m for ms in answer.values() for m in ms]
            if not mentions:
                report.skip("no_entities")
                continue
            tagged = tag_first_occurrences(rec.text, mentions)
            untagged = [
                m for m in dict.fromkeys(mentions) if f"{ENT_OPEN}{m}{ENT_CLOSE}" not in tagged
            ]
            report.count("mentions", len(mentions))
            if untagged:
                report.count("answer_mentions_not_tagged", len(untagged))
            wanted = list(Archetype) if schema == "full" else projected
            types = [profile.archetype_name(a) for a in Archetype if a in wanted]
            rendered = {profile.archetype_name(a): ms for a, ms in answer.items()}
            prompt = spec.render({"labels": types, "text": tagged})
            built.add(
                rec, task="ner", prompt=prompt, answer=profile.classifier_answer(types, rendered)
            )
    return built.result()


__all__ = ["build_reference_archetype_examples", "has_chinese", "tag_first_occurrences"]
