"""Build-time pipeline options: the published ablations as switches, plus the agent settings."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import model_validator

from samalign.agents.base import AgentSettings
from samalign.types import DIRECT_TYPING_STAGE, SUPERVISED_NER_STAGE

NerMode = Literal["zero_shot", "supervised"]
"""How the graph finds entities: SAM-NER (``zero_shot``) or AnchorAlign's ``supervised`` NER."""

ZERO_SHOT_SWITCHES: tuple[str, ...] = (
    "use_anchor",
    "use_explorer",
    "use_consensus",
    "use_calibration",
)
"""The SAM-NER switches, which only the zero-shot NER mode has."""


class PipelineOptions(AgentSettings):
    """How the graph is built. A disabled stage is absent from the graph, not a no-op.

    Every :class:`~samalign.agents.base.AgentSettings` field (grounding, parse retries,
    mention and token limits, ...) is an option too, documented there; the stage nodes read
    them from these options. The rest are the published ablations (SAM-NER Tables 2–3,
    AnchorAlign Table 2) as switches, plus the recovery beyond the paper.

    Attributes:
        ner_mode: ``zero_shot`` (default): SAM-NER — anchor and explorer extractors, CCR,
            archetype mediation and calibration type entities of any domain. ``supervised``:
            AnchorAlign's setting — one dataset-trained ``supervised_ner`` stage writes typed
            entities whose labels are final; the SAM-NER stages are absent from the graph
            (their switches below must stay at their defaults). The joint graph is then
            "supervised NER → forward/reverse decoders → anchor filter", as AnchorAlign ran
            it on SciERC, ADE and CoNLL04.
        use_anchor: Run the anchor extractor ("w/o anc." when False).
        use_explorer: Run the explorer extractor ("w/o exp." when False).
        use_consensus: Denoise with CCR when both extractors run ("w/o CCR" when False: plain
            union). CCR needs both extractors; with one of them disabled, candidates are that
            extractor's mentions.
        use_calibration: Archetype mediation then definition-guided calibration. False is
            "w/o cali." (§6): the ``archetype`` node types candidates directly with the target
            types, using the ``direct_typing`` stage model (in the paper, a classifier
            retrained on the unmapped fine-grained types).
        aggregate_relations: Pool the forward and reverse relation decoders (AnchorAlign
            Eq. 13); False is "w/o decoder aggregation": no reverse node.
        anchor_constraint: Keep a relation candidate only when NER recognised both of its
            mentions; False is "w/o generation constraint": keep every candidate.
        recover_dropped: Beyond the paper (off by default): instead of discarding a candidate
            whose argument NER missed, ask the anchor (the NER verifier) whether the missed
            mention is an entity of a type the relation allows, and keep the triplet if so.
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

    Raises:
        ConfigError: If an option is invalid (naming it and the problem).
    """

    ner_mode: NerMode = "zero_shot"
    use_anchor: bool = True
    use_explorer: bool = True
    use_consensus: bool = True
    use_calibration: bool = True
    aggregate_relations: bool = True
    anchor_constraint: bool = True
    recover_dropped: bool = False
    relation_schedule: Literal["needed", "always", "parallel"] = "needed"

    @model_validator(mode="after")
    def _one_extractor(self) -> Self:
        if not (self.use_anchor or self.use_explorer):
            raise ValueError("enable at least one extractor (use_anchor or use_explorer)")
        return self

    @model_validator(mode="after")
    def _supervised_has_no_samner_stages(self) -> Self:
        if self.ner_mode == "supervised":
            off = [name for name in ZERO_SHOT_SWITCHES if not getattr(self, name)]
            if off:
                raise ValueError(
                    f"ner_mode='supervised' has no anchor, explorer, CCR or calibration stage, so "
                    f"{', '.join(f'{n}=False' for n in off)} cannot apply; drop it (the "
                    "SAM-NER ablations are options of ner_mode='zero_shot')"
                )
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
    def supervised(self) -> bool:
        """Whether NER is AnchorAlign's supervised stage (``ner_mode='supervised'``)."""
        return self.ner_mode == "supervised"

    @property
    def runs_consensus(self) -> bool:
        """Whether the graph has the CCR ``consensus`` node (else a plain ``merge`` node)."""
        return not self.supervised and self.use_consensus and self.use_anchor and self.use_explorer

    @property
    def model_stages(self) -> list[str]:
        """The stages that call a model, in pipeline order."""
        if self.supervised:
            return [SUPERVISED_NER_STAGE]
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
    def effective_relation_schedule(self) -> Literal["needed", "always", "parallel"]:
        """The schedule the relation nodes follow (``needed`` only where it is lossless)."""
        if self.relation_schedule == "needed" and (
            not self.anchor_constraint or self.recover_dropped
        ):
            return "always"
        return self.relation_schedule

    @property
    def joint_model_stages(self) -> list[str]:
        """The stages of the joint graph that call a model, in pipeline order."""
        stages = [*self.model_stages, *self.relation_stages]
        if self.recover_dropped and "anchor" not in stages:
            stages.append("anchor")
        return stages


__all__ = ["ZERO_SHOT_SWITCHES", "NerMode", "PipelineOptions"]
