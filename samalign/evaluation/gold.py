"""Gold replay: a backend that answers every stage with the gold answer (the harness's self-test).

:func:`gold_stage_models` builds one chat model per stage. Each is an ordinary LangChain chat
model plugged into :class:`~samalign.serving.StageModels`, so the graph runs exactly as in
production and does not know it is being replayed. A model sees only what a served model sees
(the rendered prompt and the ``response_format`` JSON schema) and answers like this:

1. **Which sentence?** The sentence text is in every stage prompt. The model reads it back
   as the prompt profile wrote it (the reference profile's ``Passage:``, ``sentence:`` and
   ``Text:`` parts), else reads the candidate texts out of the prompt (string values of a
   JSON prompt; the ``Text:`` line of the calibrator's prompt; ``<ENT>`` tags removed), and
   looks them up in the dataset; if the prompt is in another shape (a custom template), it
   scans the dataset for the longest sentence that occurs in the prompt (verbatim or
   JSON-escaped).
2. **Which types?** The answer schema's types (the extractor and classifier schema's
   properties, the calibrator schema's ``type`` enum), so an anchor asked about a chunk of
   the types answers for that chunk only; without a schema (the reference profile), every
   label of the domain (archetypes for the classifier), as the profile names them.
3. **The gold answer**, rendered by the stage's own answer format in the graph's prompt
   profile (``render_gold``, the renderer training data is built with):

   * ``anchor``/``explorer``: every gold mention string, under its label's verbalised name;
   * ``archetype``: each ``<ENT>``-tagged mention that is a gold mention string, under the
     archetype the domain gives its gold label; other candidates are left out (the node then
     gives them the catch-all archetype and the calibrator drops them);
   * ``direct_typing`` (the "w/o cali." classifier): the same under the label's name;
   * ``calibrate``: each mention of the initial output that is a gold mention string, typed
     with its gold label's name (the label whose archetype matches when the string has
     several gold labels); other mentions are left out, so they are dropped;
   * ``supervised_ner`` (AnchorAlign's supervised NER): every gold mention string with its
     label's name, in text order (the schema's ``type`` enum says which types are asked);
   * ``relations_forward``/``relations_reverse``: the gold triplets, rendered by the relation
     answer format.

Answers are mention strings, so a string annotated in one place and not in another is
predicted in both (the grounding rule decides which occurrences become entities); that is the
only loss gold replay should show. Anything else points at a bug in prompts, parsing,
grounding or merging, which is what this backend is for.

Token counts reported by these models are word counts (there is no tokenizer).
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult

from samalign.errors import BackendError
from samalign.evaluation.sentences import GoldEntity, Sentence
from samalign.prompts.domain import Domain
from samalign.prompts.profiles import PromptProfile, resolve_profile
from samalign.prompts.relations import relation_format
from samalign.prompts.specs import CALIBRATION_FORMAT
from samalign.prompts.supervised import SUPERVISED_NER_FORMAT
from samalign.serving.chat_base import InlineChatModel, chat_result, word_count
from samalign.serving.models import StageModel, StageModels
from samalign.types import ALL_STAGES, SUPERVISED_NER_STAGE, Archetype

_TAG = re.compile(r"</?ENT>")
_TEXT_LINE = re.compile(r"^Text: (.*)$", re.MULTILINE)
_INITIAL = re.compile(r"Initial Output:\s*(\{.*\})\s*$", re.DOTALL)


def strip_tags(text: str) -> str:
    """``text`` without ``<ENT>``/``</ENT>`` tags."""
    return _TAG.sub("", text)


def tagged_mentions(tagged: str) -> list[str]:
    """The mentions wrapped in ``<ENT></ENT>`` in a tagged text (nesting allowed), in order."""
    mentions: list[str] = []
    stack: list[int] = []
    out: list[str] = []
    pos = 0
    for match in _TAG.finditer(tagged):
        out.append(tagged[pos : match.start()])
        pos = match.end()
        plain = "".join(out)
        if match.group() == "<ENT>":
            stack.append(len(plain))
        elif stack:
            start = stack.pop()
            mentions.append(plain[start:])
    return list(dict.fromkeys(m for m in mentions if m))


def schema_types(schema: Mapping[str, Any] | None) -> list[str] | None:
    """The types an answer schema allows: an object's properties, or a record's ``type`` enum."""
    if not schema:
        return None
    if isinstance(schema.get("properties"), dict):
        return list(schema["properties"])
    items = schema.get("items")
    if isinstance(items, dict):
        type_field = items.get("properties", {}).get("type", {})
        if isinstance(type_field.get("enum"), list):
            return [str(t) for t in type_field["enum"]]
    return None


def relation_schema_names(schema: Mapping[str, Any] | None) -> list[str] | None:
    """The relation names a relation answer schema allows (``None`` if not one)."""
    try:
        pair = schema["items"]["properties"]["pairs"]["items"]  # type: ignore[index]
        names = pair["properties"]["relation"]["enum"]
    except (KeyError, TypeError):
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


def request_schema(kwargs: Mapping[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """``(schema name, schema)`` of a chat call's ``response_format`` (or ``extra_body``)."""
    response_format = kwargs.get("response_format")
    if response_format is None:
        response_format = (kwargs.get("extra_body") or {}).get("response_format")
    if not isinstance(response_format, dict):
        return None, None
    spec = response_format.get("json_schema") or {}
    return spec.get("name"), spec.get("schema")


def prompt_texts(prompt: str) -> Iterator[str]:
    """Strings of a prompt that may be the sentence (tags removed), most likely first."""
    try:
        value = json.loads(prompt)
    except ValueError:
        value = None
    if isinstance(value, dict):
        for item in reversed(list(value.values())):
            if isinstance(item, str):
                yield strip_tags(item)
    for match in _TEXT_LINE.finditer(prompt):
        yield strip_tags(match.group(1)).strip()


class GoldOracle:
    """Knows the gold sentences of a dataset and renders each stage's gold answer.

    A text can occur several times in a dataset with different annotations (CrossNER has such
    pairs); a prompt cannot tell the copies apart, so each copy is replayed by its own
    *variant* of the oracle: variant ``k`` answers for the ``k``-th copy of every text (the
    last copy when a text has fewer). :meth:`variant_of` says which variant a sentence needs.

    The answers are rendered, and the prompts read, as the graph's prompt profile does
    (:mod:`samalign.prompts.profiles`): pass the profile the graph runs with. Under a profile
    that sends no JSON schema (``reference``), the types come from the profile: an extractor
    then answers every gold mention under its label, also a label the prompt does not ask
    about (the reference extractor schema leaves out ``misc``; an unconstrained model may
    answer any type, and the extractors keep such mentions as type-agnostic candidates).

    Args:
        sentences: The gold sentences (looked up by their text).
        domain: The domain the graph runs with (label names and archetypes).
        variant: Which copy of a repeated text this oracle answers for.
        profile: The graph's prompt profile (default: the domain's).
    """

    def __init__(
        self,
        sentences: Sequence[Sentence],
        domain: Domain,
        *,
        variant: int = 0,
        profile: PromptProfile | None = None,
    ) -> None:
        self.domain = domain
        self.variant = variant
        self.profile = profile or resolve_profile(domain)
        self._copies: dict[str, list[Sentence]] = {}
        self._rank: dict[str, int] = {}
        for sentence in sentences:
            copies = self._copies.setdefault(sentence.text, [])
            self._rank[sentence.id] = len(copies)
            copies.append(sentence)
        self._names = {t.label: self.profile.show(domain, t.label) for t in domain.entity_types}
        self._archetypes = {
            t.label: self.profile.archetype_name(t.archetype or Archetype.MISC)
            for t in domain.entity_types
        }
        self.archetype_names = list(self.profile.archetype_names)
        self.type_names = self.profile.all_types(domain)
        self._relation_names = {r.label: r.name for r in domain.relation_types}

    def with_variant(self, variant: int) -> GoldOracle:
        """The same oracle answering for the ``variant``-th copy of each text."""
        other = copy.copy(self)
        other.variant = variant
        return other

    def variant_of(self, sentence: Sentence) -> int:
        """The variant that replays ``sentence`` (its rank among the copies of its text)."""
        return self._rank.get(sentence.id, 0)

    @property
    def variants(self) -> int:
        """How many variants the dataset needs (the most copies of one text)."""
        return max((len(c) for c in self._copies.values()), default=1)

    # ----------------------------------------------------------------------------- lookup

    def _lookup(self, text: str) -> Sentence | None:
        copies = self._copies.get(text)
        if not copies:
            return None
        return copies[min(self.variant, len(copies) - 1)]

    def sentence_for(self, prompt: str, stage: str) -> Sentence:
        """The sentence a prompt is about.

        Raises:
            BackendError: If no sentence of the dataset occurs in the prompt.
        """
        read = self.profile.read_sentence(stage, prompt)
        if read is not None:
            found = self._lookup(strip_tags(read))
            if found is not None:
                return found
        for candidate in prompt_texts(prompt):
            found = self._lookup(candidate)
            if found is not None:
                return found
        untagged = strip_tags(prompt)
        best: str | None = None
        for text in self._copies:
            if best is not None and len(text) <= len(best):
                continue
            escaped = json.dumps(text, ensure_ascii=False)[1:-1]
            if text in untagged or escaped in untagged:
                best = text
        found = None if best is None else self._lookup(best)
        if found is None:
            raise BackendError(
                f"gold replay: the {stage} prompt is about no sentence of the dataset "
                f"(prompt ends {prompt[-160:]!r})"
            )
        return found

    # ----------------------------------------------------------------------------- helpers

    def name_of(self, label: str) -> str:
        """The name the prompts use for an entity label (the profile's)."""
        return self._names.get(label, label)

    def archetype_of(self, label: str) -> str:
        """The archetype the domain gives a label (``Misc`` if none), as prompts name it."""
        return self._archetypes.get(label, self.profile.archetype_name(Archetype.MISC))

    def gold_by_text(self, sentence: Sentence) -> dict[str, list[GoldEntity]]:
        """Gold entities of a sentence grouped by mention string, in text order."""
        out: dict[str, list[GoldEntity]] = {}
        for entity in sentence.entities:
            out.setdefault(entity.text, []).append(entity)
        return out

    def label_for(self, entities: Sequence[GoldEntity], archetype: str | None = None) -> str:
        """The one label a string answer gives a mention annotated ``entities``.

        The most frequent gold label of the string in the sentence (ties: the first in text
        order), among the labels of ``archetype`` when that is given and some label has it.
        Every grounded occurrence of a mention gets this label, so this choice loses the least.
        """
        counts = Counter(e.label for e in entities)
        labels = list(counts)
        if archetype is not None:
            labels = [lab for lab in labels if self.archetype_of(lab) == archetype] or labels
        return max(labels, key=counts.__getitem__)

    @staticmethod
    def grouped(types: Sequence[str], mentions: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
        """``(type name, mention)`` pairs as type → mentions, restricted to ``types``."""
        allowed = set(types)
        answer: dict[str, list[str]] = {}
        for name, mention in mentions:
            if name in allowed and mention not in answer.setdefault(name, []):
                answer[name].append(mention)
        return {k: v for k, v in answer.items() if v}

    def extraction(self, types: Sequence[str], mentions: Sequence[tuple[str, str]]) -> str:
        """Render ``(type name, mention)`` pairs as an extractor answer restricted to ``types``."""
        return self.profile.extraction_answer(types, self.grouped(types, mentions))

    def classification(self, types: Sequence[str], mentions: Sequence[tuple[str, str]]) -> str:
        """Render ``(type name, mention)`` pairs as a classifier answer restricted to ``types``."""
        return self.profile.classifier_answer(types, self.grouped(types, mentions))

    # ----------------------------------------------------------------------------- stages

    def answer(self, stage: str, prompt: str, schema: Mapping[str, Any] | None) -> str:
        """The gold answer text of one stage request.

        Raises:
            BackendError: Unknown stage, or a prompt about no known sentence.
        """
        sentence = self.sentence_for(prompt, stage)
        if stage in ("anchor", "explorer"):
            return self.answer_extractor(stage, sentence, self._types(schema, self.type_names))
        if stage in ("archetype", "direct_typing"):
            archetypes = self.archetype_names
            types = self._types(schema, archetypes if stage == "archetype" else self.type_names)
            return self.answer_classifier(stage, sentence, prompt, types)
        if stage == "calibrate":
            return self.answer_calibrator(sentence, prompt, self._types(schema, self.type_names))
        if stage in ("relations_forward", "relations_reverse"):
            return self.answer_relations(stage, sentence, prompt, schema)
        if stage == SUPERVISED_NER_STAGE:
            return self.answer_supervised(sentence, self._types(schema, self.domain.names))
        raise BackendError(f"gold replay: no gold answer for stage {stage!r}")

    @staticmethod
    def _types(schema: Mapping[str, Any] | None, default: Sequence[str]) -> list[str]:
        return schema_types(schema) or list(default)

    def answer_extractor(self, stage: str, sentence: Sentence, types: Sequence[str]) -> str:
        """Every gold mention under its label's name."""
        pairs = [(self.name_of(e.label), e.text) for e in sentence.entities]
        return self.extraction(types, pairs)

    def supervised(self, types: Sequence[str], entities: Sequence[tuple[str, str]]) -> str:
        """Render ``(mention, type name)`` pairs as a supervised NER answer (only ``types``)."""
        allowed = set(types)
        kept = [(m, t) for m, t in entities if t in allowed]
        return SUPERVISED_NER_FORMAT.render_gold(types, kept)

    def answer_supervised(self, sentence: Sentence, types: Sequence[str]) -> str:
        """Every gold mention string with its label's name, in text order."""
        return self.supervised(
            types,
            [(m, self.name_of(self.label_for(e))) for m, e in self.gold_by_text(sentence).items()],
        )

    def answer_classifier(
        self, stage: str, sentence: Sentence, prompt: str, types: Sequence[str]
    ) -> str:
        """Each tagged gold mention under its archetype (or label name for direct typing)."""
        gold = self.gold_by_text(sentence)
        pairs: list[tuple[str, str]] = []
        for mention in self._tagged(prompt, sentence):
            entities = gold.get(mention)
            if entities:
                label = self.label_for(entities)
                pairs.append(
                    (
                        self.archetype_of(label) if stage == "archetype" else self.name_of(label),
                        mention,
                    )
                )
        return self.classification(types, pairs)

    def answer_calibrator(self, sentence: Sentence, prompt: str, types: Sequence[str]) -> str:
        """Each initial-output mention that is a gold mention, typed with its gold label."""
        allowed = set(types)
        gold = self.gold_by_text(sentence)
        assignments: dict[str, str] = {}
        for mention, archetype in self._initial_output(prompt):
            entities = gold.get(mention)
            if not entities:
                continue
            name = self.name_of(self.label_for(entities, archetype))
            if name in allowed:
                assignments.setdefault(mention, name)
        return self.profile.calibration_answer(assignments)

    def relation_triples(self, sentence: Sentence) -> list[tuple[str, str, str]]:
        """The gold triplets as ``(head mention, relation name, tail mention)``."""
        return [
            (t.head.text, self._relation_names.get(t.relation, t.relation), t.tail.text)
            for t in sentence.triplets
        ]

    def answer_relations(
        self, stage: str, sentence: Sentence, prompt: str, schema: Mapping[str, Any] | None
    ) -> str:
        """The gold triplets in the stage's relation answer format."""
        names = relation_schema_names(schema) or self.domain.relation_names
        return self.render_relations(stage, self.relation_triples(sentence), names)

    @staticmethod
    def render_relations(
        stage: str, triples: Sequence[tuple[str, str, str]], names: Sequence[str]
    ) -> str:
        """Render triples (relations outside ``names`` left out) with the stage's format."""
        allowed = set(names)
        return relation_format(stage).render_gold([t for t in triples if t[1] in allowed], names)

    # ----------------------------------------------------------------------------- parsing

    def _tagged(self, prompt: str, sentence: Sentence) -> list[str]:
        read = self.profile.read_tagged(prompt)
        if read is not None:
            return tagged_mentions(read)
        for candidate in self._raw_prompt_strings(prompt):
            if "<ENT>" in candidate and strip_tags(candidate) == sentence.text:
                return tagged_mentions(candidate)
        return tagged_mentions(prompt)

    @staticmethod
    def _raw_prompt_strings(prompt: str) -> list[str]:
        try:
            value = json.loads(prompt)
        except ValueError:
            return [prompt]
        if isinstance(value, dict):
            return [v for v in value.values() if isinstance(v, str)]
        return [prompt]

    def _initial_output(self, prompt: str) -> list[tuple[str, str]]:
        read = self.profile.read_initial_output(prompt)
        if read is not None:
            return read
        match = _INITIAL.search(prompt)
        if match is None:
            raise BackendError(
                "gold replay: the calibrate prompt has no 'Initial Output: {...}' section"
            )
        return list(CALIBRATION_FORMAT.parse(match.group(1)).assignments)


class ReplayChatModel(InlineChatModel):
    """A chat model serving one stage from an oracle (gold or simulated answers).

    It never touches the network and makes no model request, so the test kill-switch lets
    it run.

    Attributes:
        stage: The stage it serves.
        oracle: The :class:`GoldOracle` (or a subclass) answering.
    """

    stage: str
    oracle: Any

    @property
    def _llm_type(self) -> str:
        return "samalign-replay-fake"

    def _reply(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> ChatResult:
        prompt = next((m.content for m in messages if m.type == "human"), "")
        prompt_text = prompt if isinstance(prompt, str) else str(prompt)
        name, schema = request_schema(kwargs)
        expected = "archetype_answer" if self.stage == "direct_typing" else f"{self.stage}_answer"
        if name is not None and name != expected:
            raise BackendError(
                f"replay model of stage {self.stage!r} got a {name!r} request; each stage "
                "needs its own model"
            )
        text = self.oracle.answer(self.stage, prompt_text, schema)
        return chat_result(text, input_tokens=word_count(messages), output_tokens=len(text.split()))


def oracle_stage_models(oracle: GoldOracle, stages: Sequence[str] = ALL_STAGES) -> StageModels:
    """Stage models answering from ``oracle``, one chat model per stage."""
    return StageModels(
        {
            stage: StageModel(
                ReplayChatModel(stage=stage, oracle=oracle),
                adapter=f"{stage}-replay",
                structured_output=True,
            )
            for stage in stages
        }
    )


class ReplayModels:
    """Replay stage models for each oracle variant (see :class:`GoldOracle`).

    Args:
        oracle: The oracle (gold or simulated).
        stages: The stages to serve.
    """

    def __init__(self, oracle: GoldOracle, stages: Sequence[str] = ALL_STAGES) -> None:
        self.oracle = oracle
        self._models = [
            oracle_stage_models(oracle.with_variant(k), stages) for k in range(oracle.variants)
        ]

    def for_sentence(self, sentence: Sentence) -> StageModels:
        """The stage models that replay ``sentence``."""
        return self.for_sentence_variant(self.oracle.variant_of(sentence))

    def for_sentence_variant(self, variant: int) -> StageModels:
        """The stage models of one oracle variant."""
        return self._models[min(variant, len(self._models) - 1)]


def gold_stage_models(
    sentences: Sequence[Sentence],
    domain: Domain,
    stages: Sequence[str] = ALL_STAGES,
    *,
    profile: PromptProfile | None = None,
) -> ReplayModels:
    """Stage models that replay the gold answers of ``sentences`` (see the module docs).

    Args:
        sentences: The gold sentences the graph will be run on.
        domain: The domain the graph runs with.
        stages: The stages to serve (default: all).
        profile: The graph's prompt profile (default: the domain's).

    Returns:
        Replay models; ``for_sentence(s)`` gives the :class:`~samalign.serving.StageModels`
        to put in the run context of sentence ``s``.
    """
    return ReplayModels(GoldOracle(sentences, domain, profile=profile), stages)


__all__ = [
    "GoldOracle",
    "ReplayChatModel",
    "ReplayModels",
    "gold_stage_models",
    "oracle_stage_models",
    "prompt_texts",
    "relation_schema_names",
    "request_schema",
    "schema_types",
    "strip_tags",
    "tagged_mentions",
]
