"""Noise simulation: gold answers perturbed by a documented, seeded noise model per stage.

The simulated backend answers like :mod:`samalign.evaluation.gold` and then makes the errors
the papers describe, so the published *mechanisms* can be checked on real data without a
model: CCR should raise the precision of the explorer's candidates, the anchor-guided filter
should raise relation precision, aggregating the two relation decoders should raise relation
recall. It verifies the mechanics, not model quality.

The noise model (:class:`NoiseModel`; every rate is a probability, drawn independently):

* ``anchor``: drops each gold mention with ``anchor_miss`` (precise, misses some entities).
* ``explorer``: drops each gold mention with ``explorer_miss``, and proposes each *generic
  word* of the sentence with ``explorer_generic`` (SAM-NER §3.1: the silver-trained explorer
  over-generates low-salience one-word mentions such as "data", "system"). A generic word is a
  lower-case alphabetic word of at least 4 letters, not a stop word, outside every gold entity.
* ``archetype``: classifies every tagged candidate (the prompt says "without omission"): a
  gold mention gets its gold archetype, or with ``archetype_error`` another one; any other
  candidate gets a random archetype among the domain's.
* ``calibrate``: types every mention of the initial output: a gold mention gets its gold label
  (a label of the given archetype when the classifier erred), or with ``calibrate_error``
  another label; any other mention gets a random label of its archetype (any label if none).
* ``direct_typing`` ("w/o cali."): a gold mention gets its label, or with ``direct_error``
  another; any other candidate gets a random label.
* ``supervised_ner`` (AnchorAlign's supervised NER): drops each gold mention with
  ``supervised_miss``; a kept one gets its gold label, or with ``supervised_error`` another
  label of the domain; it never invents a mention.
* ``relations_forward`` / ``relations_reverse``: each decoder drops each gold triplet with
  ``relation_miss`` (independently, so the union recovers some), and for each gold triplet adds
  with ``relation_hallucination`` a copy whose head or tail is replaced by a generic word of
  the sentence (an argument NER never recognises).

Randomness is seeded per (seed, stage, sentence text, item), so a decision does not depend on
the order requests arrive in nor on the other candidates: ablation runs see the same noise.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from samalign.evaluation.gold import GoldOracle, relation_schema_names
from samalign.evaluation.sentences import Sentence
from samalign.prompts.domain import Domain
from samalign.prompts.profiles import PromptProfile

STOP_WORDS = frozenset(
    """about above after again against also although among another because been before being
    below between both could does doing down during each either every from further have
    having here itself just many more most much must neither other over same should since
    some such than that their them then there these they this those through under until upon
    very were what when where which while whom whose will with within without would your""".split()  # noqa: SIM905
)
"""Words never proposed as generic mentions."""

_WORD = re.compile(r"[^\W\d_]+")


class NoiseModel(BaseModel):
    """Per-stage error rates of the simulated backend (see the module docs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    anchor_miss: float = Field(default=0.3, ge=0.0, le=1.0)
    explorer_miss: float = Field(default=0.1, ge=0.0, le=1.0)
    explorer_generic: float = Field(default=0.2, ge=0.0, le=1.0)
    archetype_error: float = Field(default=0.05, ge=0.0, le=1.0)
    calibrate_error: float = Field(default=0.05, ge=0.0, le=1.0)
    direct_error: float = Field(default=0.2, ge=0.0, le=1.0)
    supervised_miss: float = Field(default=0.1, ge=0.0, le=1.0)
    supervised_error: float = Field(default=0.05, ge=0.0, le=1.0)
    relation_miss: float = Field(default=0.3, ge=0.0, le=1.0)
    relation_hallucination: float = Field(default=0.2, ge=0.0, le=1.0)


def generic_words(sentence: Sentence) -> list[str]:
    """The sentence's generic words, in text order, de-duplicated.

    A generic word is lower-case, alphabetic, 4+ letters, not a stop word, a whole token, and
    outside every gold entity.
    """
    inside = [(e.span.start, e.span.end) for e in sentence.entities]
    words: list[str] = []
    for match in _WORD.finditer(sentence.text):
        word, start, end = match.group(), match.start(), match.end()
        if len(word) < 4 or not word.islower() or word in STOP_WORDS:
            continue
        if start > 0 and sentence.text[start - 1] not in " ":
            continue  # part of a larger token (e.g. "non-linear"): not a word of its own
        if end < len(sentence.text) and sentence.text[end] not in " ":
            continue
        if any(s < end and start < e for s, e in inside):
            continue
        words.append(word)
    return list(dict.fromkeys(words))


class SimulatedOracle(GoldOracle):
    """Gold answers with seeded, per-stage noise.

    Args:
        sentences: The gold sentences.
        domain: The domain the graph runs with.
        noise: The error rates.
        seed: The random seed.
        variant: See :class:`~samalign.evaluation.gold.GoldOracle`.
        profile: The graph's prompt profile (default: the domain's).
    """

    def __init__(
        self,
        sentences: Sequence[Sentence],
        domain: Domain,
        *,
        noise: NoiseModel | None = None,
        seed: int = 0,
        variant: int = 0,
        profile: PromptProfile | None = None,
    ) -> None:
        super().__init__(sentences, domain, variant=variant, profile=profile)
        self.noise = noise or NoiseModel()
        self.seed = seed
        archetypes = {self.archetype_of(label) for label in domain.labels}
        self._domain_archetypes = [a for a in self.archetype_names if a in archetypes]

    def rng(self, stage: str, sentence: Sentence, item: str) -> random.Random:
        """The random generator of one decision."""
        return random.Random(f"{self.seed}|{stage}|{sentence.text}|{item}")

    def chance(self, rate: float, stage: str, sentence: Sentence, item: str) -> bool:
        """Whether the event of probability ``rate`` happens for this decision."""
        return rate > 0 and self.rng(stage, sentence, item).random() < rate

    def _other(self, options: Sequence[str], current: str, rng: random.Random) -> str:
        others = [o for o in options if o != current]
        return rng.choice(others) if others else current

    # ----------------------------------------------------------------------------- stages

    def answer_extractor(self, stage: str, sentence: Sentence, types: Sequence[str]) -> str:
        """Gold mentions minus misses; the explorer adds generic words."""
        miss = self.noise.anchor_miss if stage == "anchor" else self.noise.explorer_miss
        pairs: list[tuple[str, str]] = []
        for mention, entities in self.gold_by_text(sentence).items():
            if not self.chance(miss, stage, sentence, mention):
                pairs.append((self.name_of(self.label_for(entities)), mention))
        if stage == "explorer" and types:
            for word in generic_words(sentence):
                rng = self.rng(stage, sentence, "generic:" + word)
                if rng.random() < self.noise.explorer_generic:
                    pairs.append((rng.choice(list(types)), word))
        return self.extraction(types, pairs)

    def answer_classifier(
        self, stage: str, sentence: Sentence, prompt: str, types: Sequence[str]
    ) -> str:
        """Every tagged candidate typed; gold ones correctly except for the error rate."""
        gold = self.gold_by_text(sentence)
        direct = stage == "direct_typing"
        pairs: list[tuple[str, str]] = []
        for mention in self._tagged(prompt, sentence):
            rng = self.rng(stage, sentence, mention)
            entities = gold.get(mention)
            if direct:
                names = self.type_names
                if entities:
                    name = self.name_of(self.label_for(entities))
                    if rng.random() < self.noise.direct_error:
                        name = self._other(names, name, rng)
                else:
                    name = rng.choice(names)
                pairs.append((name, mention))
                continue
            if entities:
                archetype = self.archetype_of(self.label_for(entities))
                if rng.random() < self.noise.archetype_error:
                    archetype = self._other(self.archetype_names, archetype, rng)
            else:
                archetype = rng.choice(self._domain_archetypes or self.archetype_names)
            pairs.append((archetype, mention))
        return self.classification(types, pairs)

    def answer_calibrator(self, sentence: Sentence, prompt: str, types: Sequence[str]) -> str:
        """Every initial-output mention typed (see the module docs)."""
        gold = self.gold_by_text(sentence)
        labels = self.domain.labels
        assignments: dict[str, str] = {}
        for mention, archetype in self._initial_output(prompt):
            rng = self.rng("calibrate", sentence, mention)
            fitting = [lab for lab in labels if self.archetype_of(lab) == archetype]
            entities = gold.get(mention)
            if entities:
                label = self.label_for(entities)
                if self.archetype_of(label) != archetype and fitting:
                    label = rng.choice(fitting)  # the classifier's error propagates
                if rng.random() < self.noise.calibrate_error:
                    label = self._other(labels, label, rng)
            else:
                label = rng.choice(fitting or labels)
            name = self.name_of(label)
            if name in types:
                assignments.setdefault(mention, name)
        return self.profile.calibration_answer(assignments)

    def answer_supervised(self, sentence: Sentence, types: Sequence[str]) -> str:
        """Gold mentions minus misses, each with its label or, at the error rate, another."""
        stage = "supervised_ner"
        names = self.domain.names
        entities: list[tuple[str, str]] = []
        for mention, gold in self.gold_by_text(sentence).items():
            if self.chance(self.noise.supervised_miss, stage, sentence, "miss:" + mention):
                continue
            name = self.name_of(self.label_for(gold))
            rng = self.rng(stage, sentence, "type:" + mention)
            if rng.random() < self.noise.supervised_error:
                name = self._other(names, name, rng)
            entities.append((mention, name))
        return self.supervised(types, entities)

    def answer_relations(
        self, stage: str, sentence: Sentence, prompt: str, schema: Mapping[str, Any] | None
    ) -> str:
        """Gold triplets minus misses, plus triplets with a hallucinated argument."""
        names = relation_schema_names(schema) or self.domain.relation_names
        words = generic_words(sentence)
        triples: list[tuple[str, str, str]] = []
        for head, relation, tail in dict.fromkeys(self.relation_triples(sentence)):
            key = f"{head}|{relation}|{tail}"
            if not self.chance(self.noise.relation_miss, stage, sentence, "miss:" + key):
                triples.append((head, relation, tail))
            rng = self.rng(stage, sentence, "hallucinate:" + key)
            if words and rng.random() < self.noise.relation_hallucination:
                word = rng.choice(words)
                triples.append(
                    (word, relation, tail) if rng.random() < 0.5 else (head, relation, word)
                )
        return self.render_relations(stage, triples, names)


__all__ = ["STOP_WORDS", "NoiseModel", "SimulatedOracle", "generic_words"]
