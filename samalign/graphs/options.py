"""Build-time pipeline options: the published ablations as switches, plus agent settings."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from samalign.agents.base import AgentSettings


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
            "w/o cali.": the classifier types candidates directly with the target types.
        grounding: ``flat`` (longest mention first, non-overlapping occurrences) or
            ``nested`` (every occurrence).
        parse_retries: Retries after an unparseable answer, with the error fed back.
        max_text_chars: Longest text the sentence graph accepts.
        constrain_mentions: Restrict extractor answers to strings occurring in the text
            (JSON-schema ``enum`` of text n-grams) so every mention can be grounded.
        max_mention_tokens: Longest mention, in word/punctuation tokens, when constrained.
        max_mentions_per_type: Upper bound on mentions per type in one answer.
        fuzzy_threshold: Word-level LCS score needed for fuzzy grounding.
        max_completion_tokens: Completion budget of every stage (default: each stage's own,
            512).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    use_anchor: bool = True
    use_explorer: bool = True
    use_consensus: bool = True
    use_calibration: bool = True
    grounding: Literal["flat", "nested"] = "flat"
    parse_retries: int = Field(default=1, ge=0, le=5)
    max_text_chars: int = Field(default=4000, ge=1)
    constrain_mentions: bool = True
    max_mention_tokens: int = Field(default=12, ge=1, le=64)
    max_mentions_per_type: int = Field(default=32, ge=1, le=512)
    fuzzy_threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_extractor(self) -> Self:
        if not (self.use_anchor or self.use_explorer):
            raise ValueError("enable at least one extractor (use_anchor or use_explorer)")
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
        stages.append("archetype")
        if self.use_calibration:
            stages.append("calibrate")
        return stages

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
        )


__all__ = ["PipelineOptions"]
