"""Shared test configuration."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from samalign.evaluation.analysis import GOLD_REPLAY_REASONS
from samalign.evaluation.backends import gold_backend
from samalign.evaluation.datasets import load_dataset
from samalign.evaluation.report import EvalReport
from samalign.evaluation.runner import aevaluate
from samalign.graphs import PipelineOptions
from samalign.prompts import load_domain

SHARED_DATA = Path(
    os.environ.get("SAMALIGN_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
"""``$SAMALIGN_DATA_DIR`` (e.g. for a git worktree elsewhere), else ``../shared/data``."""


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The benchmark data folder (``../shared/data`` beside the checkout)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


@dataclass(frozen=True)
class GoldReplay:
    """The harness's self-test: a benchmark split through a graph answered with its gold.

    Gold answers are mention strings, so only what a string cannot say may be lost (see
    ``samalign.evaluation.gold``); :meth:`check` asserts exactly that.
    """

    data: Path

    async def run(
        self,
        name: str,
        split: str,
        *,
        graph: Literal["ner", "joint"] = "ner",
        grounding: Literal["flat", "nested"] = "flat",
        relation_arguments: Literal["closest", "all"] = "closest",
        ner_mode: Literal["zero_shot", "supervised"] = "zero_shot",
        limit: int | None = None,
    ) -> EvalReport:
        """Replay the split (its first ``limit`` sentences) through the graph."""
        dataset = load_dataset(name, split, data_dir_path=self.data)
        domain = load_domain(name)
        options = PipelineOptions(
            grounding=grounding, relation_arguments=relation_arguments, ner_mode=ner_mode
        )
        return await aevaluate(
            dataset,
            domain,
            gold_backend(dataset.sentences, domain),
            graph=graph,
            options=options,
            limit=limit,
            concurrency=32,
        )

    @staticmethod
    def check(report: EvalReport) -> None:
        """Nothing went wrong but what string answers cannot express."""
        assert report.sentences > 0
        assert report.errors == 0
        assert set(report.mismatches.reasons) <= GOLD_REPLAY_REASONS, report.mismatches.reasons
        # flat grounding reports a gold string that lies inside longer ones everywhere as
        # subsumed
        assert set(report.diagnostics.by_kind) <= {"subsumed"}, report.diagnostics.by_kind


@pytest.fixture
def gold_replay(shared_data: Path) -> GoldReplay:
    """Run and check gold replays over ``../shared/data`` (see :class:`GoldReplay`)."""
    return GoldReplay(shared_data)
