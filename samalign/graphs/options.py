"""Build-time pipeline options: the published ablations as switches, plus agent settings."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from samalign.agents.base import AgentSettings
from samalign.errors import ConfigError, validation_problems
from samalign.types import DIRECT_TYPING_STAGE


class PipelineOptions(BaseModel):
    """How the graph is built. A disabled stage is absent from the graph, not a no-op.

    Ablation switches (SAM-NER Tables 2–3):

    Attributes:
        use_anchor: Run the anchor extractor ("w/o anc." when False).
        use_explorer: Run the explorer extractor ("w/o exp." when False).
        use_consensus: Denoise with CCR when both extractors run ("w/o CCR" when False: plain
            union). CCR needs both extractors; with one of them disabled, candidates are that
            extractor's mentions.
        use_calibration: Archetype mediation then definition-guided calibration. False is
            "w/o cali." (§6): the ``archetype`` node types candidates directly with the target
            types, using the ``direct_typing`` stage model (in the paper, a classifier
            retrained on the unmapped fine-grained types).
        grounding: ``flat`` (longest mention first, non-overlapping occurrences) or
            ``nested`` (every occurrence).
        parse_retries: Retries after an unparseable answer, with the error fed back.
        max_text_chars: Longest text the sentence graph accepts.
        constrain_mentions: Restrict mentions in every answer to strings of the text
            (extractors: an ``enum`` of text n-grams; classifier and calibrator: the
            candidates), so no mention can be hallucinated. Off by default: each request then
            has its own schema, which the server compiles per request (slower); with it off,
            schemas depend only on the domain and are compiled once, and grounding turns
            invented mentions into Diagnostics.
        max_mention_tokens: Longest mention, in word/punctuation tokens, when constrained.
        max_mentions_per_type: Upper bound on mentions per type in one answer.
        fuzzy_threshold: Word-level LCS score needed for fuzzy grounding.
        max_completion_tokens: Completion budget of every stage (default: each stage's own,
            512).
        aggregate_relations: Pool the forward and reverse relation decoders (AnchorAlign
            Eq. 13); False is "w/o decoder aggregation": no reverse node.
        anchor_constraint: Keep a relation candidate only when NER recognised both of its
            mentions; False is "w/o generation constraint": keep every candidate.
        recover_dropped: Beyond the paper (off by default): instead of discarding a candidate
            whose argument NER missed, ask the anchor (the NER verifier) whether the missed
            mention is an entity of a type the relation allows, and keep the triplet if so.
        max_relation_blocks: Upper bound on blocks, and on pairs per block, in a relation
            answer.
        relation_arguments: Which occurrences of a repeated mention a relation triple links:
            ``closest`` (the pair of occurrences nearest each other) or ``all`` (every pair;
            CoNLL04's SpERT release annotates a relation for every occurrence of a repeated
            mention, ADE and SciERC for one).
        anchor_schema_chunk: Ask the anchor about at most this many types per request
            (sorted, then split; the requests run concurrently and their mentions are united).
            IEPile trained and evaluated its LoRA with at most 6 types per instruction, so set
            6 when the anchor is the public IEPile adapter. ``None``: one request.
        relation_schedule: When the joint graph asks the relation decoders. ``needed``
            (default): after NER, and only for a sentence where NER found two entities (of
            different spans) whose types some relation admits — with ``anchor_constraint`` on
            and ``recover_dropped`` off no other sentence can keep a triplet, so the skipped
            requests cannot change the entities or the triplets (the skipped sentence's
            ``forward_triplets``/``reverse_triplets``/``dropped_triplets`` are empty and its
            usage records 0 calls); otherwise the same as ``always``. ``always``: after NER,
            for every sentence (to inspect every candidate the decoders write). ``parallel``:
            together with the NER extractors (the relation prompt does not depend on NER),
            their answers checked once NER is done — the same result as ``always`` with lower
            latency per sentence, at the price of two requests for every sentence.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    use_anchor: bool = True
    use_explorer: bool = True
    use_consensus: bool = True
    use_calibration: bool = True
    grounding: Literal["flat", "nested"] = "flat"
    parse_retries: int = Field(default=1, ge=0, le=5)
    max_text_chars: int = Field(default=4000, ge=1)
    constrain_mentions: bool = False
    max_mention_tokens: int = Field(default=12, ge=1, le=64)
    max_mentions_per_type: int = Field(default=32, ge=1, le=512)
    fuzzy_threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    anchor_schema_chunk: int | None = Field(default=None, ge=1)
    aggregate_relations: bool = True
    anchor_constraint: bool = True
    recover_dropped: bool = False
    max_relation_blocks: int = Field(default=16, ge=1, le=256)
    relation_arguments: Literal["closest", "all"] = "closest"
    relation_schedule: Literal["needed", "always", "parallel"] = "needed"

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            problems = validation_problems(err, "options")
            raise ConfigError(f"invalid PipelineOptions: {problems}") from None

    @model_validator(mode="after")
    def _one_extractor(self) -> Self:
        if not (self.use_anchor or self.use_explorer):
            raise ValueError("enable at least one extractor (use_anchor or use_explorer)")
        return self

    @model_validator(mode="after")
    def _recovery_needs_filter(self) -> Self:
        if self.recover_dropped and not self.anchor_constraint:
            raise ValueError(
                "recover_dropped needs anchor_constraint=True (without the constraint nothing "
                "is dropped, so there is nothing to recover)"
            )
        return self

    @property
    def runs_consensus(self) -> bool:
        """Whether the graph has the CCR ``consensus`` node (else a plain ``merge`` node)."""
        return self.use_consensus and self.use_anchor and self.use_explorer

    @property
    def model_stages(self) -> list[str]:
        """The stages that call a model, in pipeline order."""
        stages = []
        if self.use_anchor:
            stages.append("anchor")
        if self.use_explorer:
            stages.append("explorer")
        if self.use_calibration:
            stages += ["archetype", "calibrate"]
        else:
            stages.append(DIRECT_TYPING_STAGE)
        return stages

    @property
    def relation_stages(self) -> list[str]:
        """The relation stages of the joint graph that call a model."""
        stages = ["relations_forward"]
        if self.aggregate_relations:
            stages.append("relations_reverse")
        return stages

    @property
    def joint_model_stages(self) -> list[str]:
        """The stages of the joint graph that call a model, in pipeline order."""
        stages = [*self.model_stages, *self.relation_stages]
        if self.recover_dropped and "anchor" not in stages:
            stages.append("anchor")
        return stages

    @property
    def effective_relation_schedule(self) -> Literal["needed", "always", "parallel"]:
        """The schedule the relation nodes follow (``needed`` only where it is lossless)."""
        if self.relation_schedule == "needed" and (
            not self.anchor_constraint or self.recover_dropped
        ):
            return "always"
        return self.relation_schedule

    def agent_settings(self) -> AgentSettings:
        """The settings the stage nodes use."""
        return AgentSettings(
            grounding=self.grounding,
            parse_retries=self.parse_retries,
            max_text_chars=self.max_text_chars,
            constrain_mentions=self.constrain_mentions,
            max_mention_tokens=self.max_mention_tokens,
            max_mentions_per_type=self.max_mentions_per_type,
            fuzzy_threshold=self.fuzzy_threshold,
            max_completion_tokens=self.max_completion_tokens,
            anchor_schema_chunk=self.anchor_schema_chunk,
            max_relation_blocks=self.max_relation_blocks,
            relation_arguments=self.relation_arguments,
            relation_schedule=self.effective_relation_schedule,
        )


__all__ = ["PipelineOptions"]
