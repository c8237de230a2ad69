"""The demo's data and label-free language-model corpus (the training run is integration)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from samalign.demo import (
    DEMO_STAGES,
    SUPERVISED_DEMO_STAGES,
    demo_dataset,
    demo_domain,
    demo_examples,
    format_flow,
    language_model_corpus,
    score_entities,
)
from samalign.prompts import load_domain


def test_bundled_demo_set_is_24_conll04_sentences() -> None:
    dataset = demo_dataset()
    assert len(dataset.records) == 24
    assert {r.type for rec in dataset.records for r in rec.relations} == {
        "Kill",
        "Live_In",
        "Located_In",
        "OrgBased_In",
        "Work_For",
    }
    assert all(rec.relations for rec in dataset.records)
    assert len(demo_dataset(5).records) == 5


def test_demo_trains_on_a_given_file(shared_data: Path) -> None:
    train = shared_data / "conll04" / "train_triples.json"
    dataset = demo_dataset(path=train)
    assert len(dataset.records) == len(json.loads(train.read_text(encoding="utf-8")))
    assert [r.text for r in demo_dataset(3, path=train).records] == [
        r.text for r in dataset.records[:3]
    ]
    examples = demo_examples(demo_dataset(3, path=train), demo_domain())
    assert all(len(examples[stage]) == 3 for stage in ("anchor", "explorer", "calibrate"))
    from samalign.cli import build_parser

    args = build_parser().parse_args(
        ["demo", "--train-file", str(train), "--eval-sentences", "48", "--out", "x"]
    )
    assert args.train_file == train and args.eval_sentences == 48


def test_every_stage_has_one_example_per_sentence() -> None:
    dataset = demo_dataset()
    examples = demo_examples(dataset, load_domain("conll04"))
    assert set(examples) == set(DEMO_STAGES)
    assert {len(v) for v in examples.values()} == {24}
    # answers are compact JSON, the form constrained decoding produces
    for exs in examples.values():
        for ex in exs:
            assert ex.answer == json.dumps(json.loads(ex.answer), separators=(",", ":"))


def test_language_model_corpus_holds_no_gold_answer() -> None:
    dataset = demo_dataset()
    examples = demo_examples(dataset, demo_domain())
    corpus = language_model_corpus(dataset, demo_domain(), copy_exercises=4)
    assert len(corpus) == 24 * 6 + 24 * 4 + 3 * 4  # 6 prompts, 4 copy exercises, skeletons
    joined = "\n".join(corpus)
    assert not re.search(r"<ENT>[^<]", joined)  # only the instruction's "<ENT></ENT>"
    assert '"Initial Output": {}' in joined and '"Initial Output": {"' not in joined
    for exs in examples.values():
        for ex in exs:
            assert ex.answer not in joined
    prompts = [t for t in corpus if t.startswith('{"instruction"') or t.startswith("#")]
    assert len(prompts) == 24 * 6
    exercises = [json.loads(t) for t in corpus[:-12] if t not in prompts]
    assert len(exercises) == 24 * 4
    for item in exercises:  # random word spans; types and relations are the placeholder "span"
        if isinstance(item, dict):
            assert set(item) == {"Input", "spans"}
            assert all(span in item["Input"] for span in item["spans"])
        else:
            for record in item:
                assert record.get("type", "span") == "span"
                assert all(pair["relation"] == "span" for pair in record.get("pairs", []))
    names = set(demo_domain().names)
    skeletons = [json.loads(t) for t in corpus[-12:]]
    assert all(not any(v) for s in skeletons if isinstance(s, dict) for v in s.values())
    assert {frozenset(s) for s in skeletons if isinstance(s, dict)} >= {frozenset(names)}


def test_demo_scores_with_the_evaluation_metric_and_flow_lines() -> None:
    a, b, c, d = (0, 1, "x"), (2, 3, "x"), (4, 5, "x"), (6, 7, "x")
    scores = score_entities([{a, b}, {c}], [{a}, {c, d}])
    assert {k: v for k, v in scores.items() if k != "per_label_f1"} == {
        "precision": 0.6667, "recall": 0.6667, "f1": 0.6667, "tp": 2, "predicted": 3, "gold": 3
    }  # fmt: skip
    record = {
        "text": "Betsy Ross was born in Philadelphia .",
        "anchor": ["Betsy Ross"],
        "explorer": ["Betsy Ross", "born"],
        "ccr_dropped": ["born"],
        "archetypes": {"Betsy Ross": "Person"},
        "entities": [{"start": 0, "end": 10, "text": "Betsy Ross", "label": "Peop"}],
        "forward": [],
        "reverse": [],
        "kept": [],
        "filtered": [],
        "gold_entities": [(0, 10, "Peop"), (23, 35, "Loc")],
        "gold_triplets": [],
    }
    lines = format_flow(record, 0)
    assert lines[0].startswith("[0] Betsy Ross")
    assert any("CCR dropped ['born']" in line for line in lines)
    assert any("Betsy Ross=Peop (ok)" in line for line in lines)
    assert any("missed" in line and "Philadelphia=Loc" in line for line in lines)


def test_supervised_demo_trains_three_stages_on_label_free_pass_texts() -> None:
    dataset = demo_dataset()
    examples = demo_examples(dataset, demo_domain(), "supervised")
    assert (
        set(examples)
        == set(SUPERVISED_DEMO_STAGES)
        == {
            "supervised_ner",
            "relations_forward",
            "relations_reverse",
        }
    )
    assert {len(v) for v in examples.values()} == {24}
    records = json.loads(examples["supervised_ner"][0].answer)
    assert records and set(records[0]) == {"mention", "type"}
    corpus = language_model_corpus(dataset, demo_domain(), copy_exercises=4, ner_mode="supervised")
    assert len(corpus) == 24 * 3 + 24 * 4 + 3 * 4  # 3 prompts, 4 copy exercises, skeletons
    joined = "\n".join(corpus)
    for exs in examples.values():
        for ex in exs:
            assert ex.answer not in joined
    assert '"entity"' not in joined  # the records the stages write are {"mention", "type"}
    # the zero-shot corpus is unchanged by the option
    assert language_model_corpus(dataset, demo_domain(), copy_exercises=4) == (
        language_model_corpus(dataset, demo_domain(), copy_exercises=4, ner_mode="zero_shot")
    )
    record = {
        "text": "Betsy Ross was born in Philadelphia .",
        "supervised": True,
        "anchor": [],
        "explorer": [],
        "ccr_dropped": [],
        "archetypes": {},
        "entities": [{"start": 0, "end": 10, "text": "Betsy Ross", "label": "Peop"}],
        "forward": [],
        "reverse": [],
        "kept": [],
        "filtered": [],
        "gold_entities": [(0, 10, "Peop")],
        "gold_triplets": [],
    }
    lines = format_flow(record, 0)
    assert any("supervised  ['Betsy Ross=Peop (ok)']" in line for line in lines)
    assert not any("anchor" in line or "CCR" in line for line in lines)
