"""Noise simulation: the noise model, determinism, and the direction of the published effects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from samalign.evaluation.backends import gold_backend, simulated_backend
from samalign.evaluation.datasets import Dataset, load_dataset
from samalign.evaluation.runner import aevaluate
from samalign.evaluation.sentences import Sentence, make_entity, token_offsets
from samalign.evaluation.simulate import NoiseModel, SimulatedOracle, generic_words
from samalign.graphs import PipelineOptions
from samalign.prompts import load_domain
from samalign.prompts.specs import EXTRACTION_FORMAT, default_specs

TEXT = (
    "The system uses data from Google and the user interface of TensorFlow , a non-linear "
    "library built by Google researchers ."
)
TOKENS = TEXT.split(" ")
SENTENCE = Sentence(
    id="s-0",
    tokens=tuple(TOKENS),
    text=" ".join(TOKENS),
    entities=(
        make_entity(" ".join(TOKENS), token_offsets(TOKENS), 5, 6, "organisation"),
        make_entity(" ".join(TOKENS), token_offsets(TOKENS), 11, 12, "product"),
    ),
)


def test_noise_model_validates_rates() -> None:
    assert NoiseModel().anchor_miss == 0.3
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        NoiseModel(anchor_miss=1.5)
    with pytest.raises(ValidationError, match="Extra inputs"):
        NoiseModel(typo=0.1)  # type: ignore[call-arg]


def test_generic_words_are_lower_case_whole_words_outside_entities() -> None:
    assert generic_words(SENTENCE) == [
        "system",
        "uses",
        "data",
        "user",
        "interface",
        "library",
        "built",
        "researchers",
    ]


def _explorer_answer(oracle: SimulatedOracle) -> dict[str, list[str]]:
    names = oracle.domain.names
    prompt = default_specs()["explorer"].render({"labels": names, "text": SENTENCE.text})
    answer: dict[str, list[str]] = json.loads(
        oracle.answer("explorer", prompt, EXTRACTION_FORMAT.schema(names))
    )
    return answer


def test_simulation_is_seeded_and_deterministic() -> None:
    domain = load_domain("crossner_ai")
    noise = NoiseModel(explorer_generic=0.5, explorer_miss=0.0)
    first = _explorer_answer(SimulatedOracle([SENTENCE], domain, noise=noise, seed=1))
    again = _explorer_answer(SimulatedOracle([SENTENCE], domain, noise=noise, seed=1))
    assert first == again
    others = [
        _explorer_answer(SimulatedOracle([SENTENCE], domain, noise=noise, seed=s))
        for s in range(2, 8)
    ]
    assert any(o != first for o in others)
    mentions = {m for ms in first.values() for m in ms}
    assert {"Google", "TensorFlow"} <= mentions  # explorer_miss 0: every gold mention
    assert mentions - {"Google", "TensorFlow"} <= set(generic_words(SENTENCE))


def test_all_noise_off_equals_gold_replay(shared_data: Path) -> None:
    import asyncio

    dataset = load_dataset("crossner_ai", "dev", data_dir_path=shared_data)
    sample = Dataset("crossner_ai", "dev", dataset.path, dataset.sentences[:60], False, None)
    domain = load_domain("crossner_ai")
    silent = NoiseModel(**{k: 0.0 for k in NoiseModel.model_fields})

    async def both() -> tuple[float, float]:
        sim = await aevaluate(
            sample, domain, simulated_backend(sample.sentences, domain, noise=silent, seed=0)
        )
        gold = await aevaluate(sample, domain, gold_backend(sample.sentences, domain))
        return sim.entity.span.f1, gold.entity.span.f1

    sim_f1, gold_f1 = asyncio.run(both())
    assert sim_f1 == gold_f1


def _slice(shared_data: Path, name: str, n: int) -> Dataset:
    dataset = load_dataset(name, "test" if name == "conll04" else "dev", data_dir_path=shared_data)
    return Dataset(
        name, dataset.split, dataset.path, dataset.sentences[:n], dataset.relations, name
    )


async def test_ccr_raises_candidate_precision(shared_data: Path) -> None:
    dataset = _slice(shared_data, "crossner_ai", 120)
    domain = load_domain("crossner_ai")
    backend = simulated_backend(dataset.sentences, domain, noise=NoiseModel(), seed=0)
    with_ccr = await aevaluate(dataset, domain, backend)
    without = await aevaluate(
        dataset, domain, backend, options=PipelineOptions(use_consensus=False)
    )
    assert with_ccr.entity.candidates.precision > without.entity.candidates.precision
    assert with_ccr.entity.span.precision > without.entity.span.precision
    assert sum(len(d.missed) for d in without.mismatches.items) <= sum(
        len(d.missed) for d in with_ccr.mismatches.items
    )  # CCR trades a little recall (single-word mentions only the explorer found)
    assert with_ccr.mismatches.reasons.get("dropped_by_ccr", 0) > 0


async def test_relation_mechanisms(shared_data: Path) -> None:
    dataset = _slice(shared_data, "conll04", 120)
    domain = load_domain("conll04")
    backend = simulated_backend(dataset.sentences, domain, noise=NoiseModel(), seed=0)
    runs = {}
    for name, options in {
        "full": PipelineOptions(relation_arguments="all"),
        "no_constraint": PipelineOptions(relation_arguments="all", anchor_constraint=False),
        "no_aggregation": PipelineOptions(relation_arguments="all", aggregate_relations=False),
    }.items():
        report = await aevaluate(dataset, domain, backend, graph="joint", options=options)
        assert report.relation is not None
        runs[name] = report.relation.strict
    assert runs["full"].precision > runs["no_constraint"].precision  # the anchor filter
    assert runs["full"].recall > runs["no_aggregation"].recall  # aggregation
