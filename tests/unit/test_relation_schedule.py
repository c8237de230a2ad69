"""When the joint graph asks its relation decoders: ``needed`` (default), ``always``, ``parallel``.

``needed`` skips the decoders of a sentence where no triplet could survive the anchor filter;
``parallel`` asks them together with the NER extractors. Both must give exactly the entities
and triplets of ``always``: checked here over the gold and simulated backends on CoNLL04,
SciERC and ADE (and on scripted fakes in ``test_joint_graph.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from samalign.agents.relations import relations_possible
from samalign.evaluation import NoiseModel, gold_backend, load_dataset, simulated_backend
from samalign.evaluation.datasets import BUILTIN_DATASETS
from samalign.evaluation.runner import run_graph
from samalign.graphs import PipelineOptions, build_joint_graph
from samalign.prompts import load_domain
from samalign.types import Entity, Span

SCHEDULES = ("needed", "always", "parallel")


def _entity(text: str, source: str, word: str, label: str | None) -> Entity:
    start = source.index(word)
    return Entity(span=Span(start=start, end=start + len(word), text=word), label=label)


def test_relations_possible_needs_two_spans_whose_types_a_relation_admits() -> None:
    domain = load_domain("conll04")
    text = "Smith saw Jones in Paris in 1990 ."
    smith = _entity(text, text, "Smith", "Peop")
    jones = _entity(text, text, "Jones", "Peop")
    paris = _entity(text, text, "Paris", "Loc")
    year = _entity(text, text, "1990", "Other")
    assert not relations_possible([], domain)
    assert not relations_possible([smith], domain)
    assert not relations_possible([smith, year], domain)  # "Other" is no relation's argument
    assert relations_possible([smith, jones], domain)  # Kill: Peop -> Peop
    assert relations_possible([smith, paris], domain)  # Live_In
    assert not relations_possible([paris, year], domain)
    assert not relations_possible([paris, paris.model_copy()], domain)  # one span twice
    untyped = _entity(text, text, "Paris", None)  # no label: every relation admits it
    assert relations_possible([untyped, year], domain) is False  # Other admitted by none
    assert relations_possible([untyped, smith], domain)


def _outputs(results: Sequence[Any]) -> list[tuple[Any, ...]]:
    return [
        (
            r.id,
            r.error,
            [e.model_dump_json() for e in r.entities],
            [t.model_dump_json() for t in r.triplets],
        )
        for r in results
    ]


@pytest.mark.parametrize(
    ("name", "split"), [("conll04", "dev"), ("scierc", "dev"), ("ade", "test")]
)
async def test_schedules_are_lossless_over_gold_and_simulated(
    shared_data: Path, name: str, split: str
) -> None:
    dataset = load_dataset(name, split, data_dir_path=shared_data)
    sentences = dataset.sentences[:80]
    domain = load_domain(str(dataset.domain))
    backends = {
        "gold": gold_backend(dataset.sentences, domain),
        "simulated": simulated_backend(dataset.sentences, domain, noise=NoiseModel(), seed=0),
    }
    arguments = BUILTIN_DATASETS[name].relation_arguments
    skipped: dict[str, int] = {}
    for backend_name, backend in backends.items():
        outputs: dict[str, list[tuple[Any, ...]]] = {}
        calls: dict[str, int] = {}
        for schedule in SCHEDULES:
            options = PipelineOptions(relation_schedule=schedule, relation_arguments=arguments)
            results = await run_graph(
                build_joint_graph(options), sentences, backend.context_for, concurrency=8
            )
            outputs[schedule] = _outputs(results)
            calls[schedule] = sum(
                u.calls for r in results for s, u in r.usage.items() if s.startswith("relations_")
            )
        where = f"{name}/{backend_name}"
        assert outputs["needed"] == outputs["always"], where
        assert outputs["parallel"] == outputs["always"], where
        assert sum(len(o[3]) for o in outputs["always"]) > 0, where  # triplets were found
        assert calls["parallel"] == calls["always"] == 2 * len(sentences), where
        assert calls["needed"] <= calls["always"], where
        skipped[backend_name] = calls["always"] - calls["needed"]
    assert skipped["simulated"] > 0  # the simulated NER misses entities: requests were skipped
