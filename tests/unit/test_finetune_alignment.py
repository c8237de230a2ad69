"""Training objectives: sentence groups in one step, AnchorAlign's terms, early stopping.

The loss tests run a tiny random Llama built in memory (one layer, 128-token vocabulary of
character ids), so they check the real tensor code in seconds.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from support import random_llama

from samalign.errors import ConfigError
from samalign.finetune.alignment import (
    AlignmentWeights,
    Member,
    alignment_terms,
    answer_items,
    group_plan,
    json_strings,
    keyed_strings,
    weighted_sum,
)
from samalign.finetune.builders import ChatExample
from samalign.finetune.config import TrainConfig, config_from_mapping
from samalign.finetune.trainer import (
    TokenizedExample,
    _split_eval,
    collate,
    early_stopping_state,
    epoch_batches,
    micro_batch_loss,
    sentence_groups,
    token_losses,
)

REQUIRED = {"base_model": "/m", "train_file": "/t.jsonl", "output_dir": "/o"}
EOS = 3

NER = json.dumps(
    [{"mention": "John Smith", "type": "person"}, {"mention": "IBM", "type": "organization"}],
    separators=(",", ":"),
)
FORWARD = json.dumps(
    [{"subject": "John Smith", "pairs": [{"object": "IBM", "relation": "work for"}]}],
    separators=(",", ":"),
)
REVERSE = json.dumps(
    [{"object": "IBM", "pairs": [{"subject": "John Smith", "relation": "work for"}]}],
    separators=(",", ":"),
)


def member(stage: str, task: str, prompt: str, answer: str) -> Member:
    """A character-level example: one token per character (id = code point), then eos."""
    ids = [ord(c) for c in prompt] + [ord(c) for c in answer] + [EOS]
    labels = [-100] * len(prompt) + ids[len(prompt) :]
    offsets = [(i, i + 1) for i in range(len(answer))] + [(0, 0)]
    return Member(stage, task, ids, labels, answer, offsets)


def sentence_members() -> list[Member]:
    return [
        member("supervised_ner", "ner", "NER: John Smith works for IBM.", NER),
        member("relations_forward", "re", "FWD: John Smith works for IBM.", FORWARD),
        member("relations_reverse", "re", "REV: John Smith works for IBM.", REVERSE),
    ]


# ------------------------------------------------------------------------------ answers


def test_answer_items_find_mentions_and_triplets_in_every_format() -> None:
    ner = answer_items("supervised_ner", NER)
    assert ner is not None
    assert [(m, NER[s:e]) for m, (s, e) in ner.mentions] == [
        ("John Smith", "John Smith"),
        ("IBM", "IBM"),
    ]  # the types are labels, not mentions
    extractor = answer_items("explorer", '{"person":["John Smith"],"location":[]}')
    assert extractor is not None and [m for m, _ in extractor.mentions] == ["John Smith"]
    for stage, answer in (("relations_forward", FORWARD), ("relations_reverse", REVERSE)):
        items = answer_items(stage, answer)
        assert items is not None
        ((triple, spans),) = items.triplets
        assert triple == ("John Smith", "work for", "IBM")  # head, relation, tail either way
        assert [answer[s:e] for s, e in spans] == ["John Smith", "work for", "IBM"]
        assert sorted(m for m, _ in items.mentions) == ["IBM", "John Smith"]
    escaped = '[{"mention":"a \\"b\\"","type":"x"}]'
    assert [s.value for s in json_strings(escaped)] == ["mention", 'a "b"', "type", "x"]
    assert answer_items("supervised_ner", "not json") is None
    assert keyed_strings('{"a":"x","a":"y"}') is None  # a repeated key cannot be matched


def test_group_plan_pairs_the_same_tokens_across_targets() -> None:
    members = sentence_members()
    plan = group_plan(members)
    forward = plan.ner_re["relations_forward"]
    assert len(forward) == 2 and len(plan.ner_re["relations_reverse"]) == 2
    for a, pa, b, pb in forward:
        assert a == 0 and b == 1
        text = "".join(chr(members[a].input_ids[p]) for p in pa)
        assert text == "".join(chr(members[b].input_ids[p]) for p in pb)
        assert text in ("John Smith", "IBM")
        assert all(members[b].labels[p] != -100 for p in pb)  # target tokens only
    ((f, pf, r, pr),) = plan.fwd_rev
    assert (f, r) == (1, 2)
    assert "".join(chr(members[1].input_ids[p]) for p in pf) == "John Smithwork forIBM"
    assert [members[1].input_ids[p] for p in pf] == [members[2].input_ids[p] for p in pr]
    assert set(plan.suppress) == {"relations_forward", "relations_reverse"}
    targets = {t for m in members for t in m.labels if t != -100}
    assert plan.negatives and not set(plan.negatives) & targets
    assert {chr(t) for t in plan.negatives} >= {"N", "R", "V", "D", "."}  # prompt only
    assert plan.skipped == {"ner_re": 0, "fwd_rev": 0}
    # an entity the NER target lacks, a triplet the reverse target lacks: left out, counted
    partial = group_plan(
        [
            member("supervised_ner", "ner", "NER: x", NER.replace("IBM", "Acme")),
            members[1],
            member("relations_reverse", "re", "REV: x", "[]"),
        ]
    )
    assert partial.skipped == {"ner_re": 1, "fwd_rev": 1}
    assert len(partial.ner_re["relations_forward"]) == 1 and not partial.fwd_rev
    assert group_plan([members[0]]).empty


# ------------------------------------------------------------------------------ losses


torch = pytest.importorskip("torch")


def tiny_model() -> Any:
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    return random_llama(
        vocab_size=128, hidden_size=32, layers=1, head_dim=16, max_position_embeddings=256
    )


def tokenized(members: list[Member]) -> list[TokenizedExample]:
    return [
        TokenizedExample(list(m.input_ids), list(m.labels), m.task, str(i), m.stage)
        for i, m in enumerate(members)
    ]


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def test_terms_are_kl_divergences_of_the_paired_rows() -> None:
    members = sentence_members()
    plan = group_plan(members)
    width = max(len(m.input_ids) for m in members)
    logits = torch.randn(3, width, 128, generator=torch.Generator().manual_seed(0))
    all_on = AlignmentWeights(alpha=1.0, beta=1.0, gamma=1.0)
    terms = alignment_terms(logits, [0, 1, 2], plan, all_on)
    assert set(terms) == {"ner_re", "fwd_rev", "suppress"}
    assert all(float(v) > 0 and torch.isfinite(v) for v in terms.values())
    # Eq. 4 by hand: KL(p_NER || p_fwd) per token, mean over tokens, entities, decoders
    log = torch.log_softmax(logits, dim=-1)

    def kl(a: int, pa: tuple[int, ...], b: int, pb: tuple[int, ...]) -> Any:
        p, q = log[a, [x - 1 for x in pa]], log[b, [x - 1 for x in pb]]
        return (p.exp() * (p - q)).sum(-1).mean()

    by_decoder = [
        torch.stack([kl(*pair) for pair in pairs]).mean() for pairs in plan.ner_re.values()
    ]
    assert float(terms["ner_re"]) == pytest.approx(float(torch.stack(by_decoder).mean()), rel=1e-5)
    ((f, pf, r, pr),) = plan.fwd_rev
    sym = 0.5 * (kl(f, pf, r, pr) + kl(r, pr, f, pf))
    assert float(terms["fwd_rev"]) == pytest.approx(float(sym), rel=1e-5)
    # identical distributions align perfectly
    same = logits.clone()
    for a, pa, b, pb in [*plan.ner_re["relations_forward"], *plan.fwd_rev]:
        same[b, [x - 1 for x in pb]] = same[a, [x - 1 for x in pa]]
    zero = alignment_terms(same, [0, 1, 2], plan, AlignmentWeights(alpha=1.0, beta=1.0))
    assert float(zero["fwd_rev"]) == pytest.approx(0.0, abs=1e-6)
    # a zero weight's term is not computed
    assert set(alignment_terms(logits, [0, 1, 2], plan, AlignmentWeights(gamma=2.0))) == {
        "suppress"
    }
    assert weighted_sum(terms, AlignmentWeights(0.5, 0.0, 2.0)) == pytest.approx(
        float(0.5 * terms["ner_re"] + 2.0 * terms["suppress"])
    )


def test_zero_weights_give_exactly_the_cross_entropy_and_others_add_the_terms() -> None:
    model = tiny_model()
    members = sentence_members()
    plan = group_plan(members)
    tokens = tokenized(members)
    batch = collate(tokens, 0, 0.5)
    target = sum(t.target_tokens for t in tokens)
    device = torch.device("cpu")
    # today's loss: λ-weighted token cross-entropy over the step's target tokens
    losses, mask = token_losses(model, batch, device, _Nothing)
    today = (losses * mask * batch["weights"].unsqueeze(1)).sum() / target
    off = micro_batch_loss(
        model,
        batch,
        device,
        _Nothing,
        target=target,
        alignment=AlignmentWeights(),
        plans=[(plan, [0, 1, 2])],
        sentences=1,
    )
    assert torch.equal(off.total, today) and off.terms == {}
    weights = AlignmentWeights(alpha=0.3, beta=0.2, gamma=0.1)
    on = micro_batch_loss(
        model,
        batch,
        device,
        _Nothing,
        target=target,
        alignment=weights,
        plans=[(plan, [0, 1, 2])],
        sentences=2,  # another sentence in the step: the terms are averaged over both
    )
    assert torch.equal(on.weighted, today)
    expected = today + (0.3 * on.terms["ner_re"][0] + 0.2 * on.terms["fwd_rev"][0]) / 2
    expected = expected + 0.1 * on.terms["suppress"][0] / 2
    assert float(on.total.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    on.total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


# ------------------------------------------------------------------------------ batching


def test_sentence_groups_keep_a_sentence_in_one_micro_batch() -> None:
    assert sentence_groups(["a", "", "a", "b", "b", ""]) == [[0, 2], [1], [3, 4], [5]]
    assert sentence_groups(["a", "a"], enabled=False) == [[0], [1]]
    rng = random.Random(0)
    groups = [f"s{rng.randrange(40)}" if rng.random() < 0.8 else "" for _ in range(120)]
    units = sentence_groups(groups)
    lengths = [rng.randint(5, 500) for _ in groups]
    for by_length in (True, False):
        for epoch in (0, 1):
            batches = epoch_batches(
                lengths, 2, seed=3, epoch=epoch, group_by_length=by_length, units=units
            )
            assert sorted(i for b in batches for i in b) == list(range(120))
            where = {i: k for k, b in enumerate(batches) for i in b}
            for unit in units:  # every sentence's examples share one micro-batch
                assert len({where[i] for i in unit}) == 1
            assert all(len(sentence_groups([groups[i] for i in b])) <= 2 for b in batches)
            # units of one example are exactly today's batches
            singles = [[i] for i in range(120)]
            assert epoch_batches(
                lengths, 2, seed=3, epoch=epoch, group_by_length=by_length, units=singles
            ) == epoch_batches(lengths, 2, seed=3, epoch=epoch, group_by_length=by_length)


def test_eval_split_holds_out_whole_sentences() -> None:
    def example(i: int, group: str) -> ChatExample:
        return ChatExample(id=str(i), stage="s", task="ner", prompt="p", answer="a", group=group)

    plain = [example(i, "") for i in range(20)]
    config = TrainConfig(**REQUIRED, eval_fraction=0.25, seed=5)
    train, held = _split_eval(config, plain)
    order = list(range(20))
    random.Random(5).shuffle(order)  # today's split: the first 5 of a seeded permutation
    assert [ex.id for ex in held] == [str(i) for i in sorted(order[:5])]
    assert len(train) == 15
    grouped = [example(i, f"g{i // 3}") for i in range(21)]
    train, held = _split_eval(config, grouped)
    held_groups = {ex.group for ex in held}
    assert not held_groups & {ex.group for ex in train}
    assert len(held) == 3 * len(held_groups) and len(held_groups) == 2  # round(0.25 * 7)


# ------------------------------------------------------------------------------ config


def test_early_stopping_reads_its_state_from_the_loss_log() -> None:
    history = [
        {"step": 1, "loss": 2.0},
        {"step": 1, "eval_loss": 1.0, "eval_loss_re": 3.0},
        {"step": 2, "eval_loss": 0.8, "eval_loss_re": 3.5},
        {"step": 3, "eval_loss": 0.79, "eval_loss_re": 3.4},
        {"step": 4, "eval_loss": 0.9, "eval_loss_re": 2.0},
    ]
    assert early_stopping_state(history, "eval_loss") == (0.79, 3, 1)
    assert early_stopping_state(history, "eval_loss", min_delta=0.05) == (0.8, 2, 2)
    assert early_stopping_state(history, "eval_loss_re") == (2.0, 4, 0)
    assert early_stopping_state([], "eval_loss") == (None, None, 0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"anchor_align_alpha": 1.0, "sentence_groups": False}, "set sentence_groups: true"),
        ({"anchor_align_gamma": -1.0}, "'anchor_align_gamma' must be a finite number >= 0"),
        ({"anchor_align_beta": float("nan")}, "'anchor_align_beta' must be a finite"),
        ({"early_stopping_patience": 2}, "needs dev data"),
        ({"early_stopping_patience": 0, "eval_fraction": 0.1}, "must be >= 1 or null"),
        ({"early_stopping_metric": "f1"}, "'early_stopping_metric' must be one of"),
        ({"early_stopping_min_delta": -0.1}, "'early_stopping_min_delta' must be"),
    ],
)
def test_objective_settings_are_checked(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**REQUIRED, **changes)


def test_objective_defaults_are_todays_training(tmp_path: Path) -> None:
    config = TrainConfig(**REQUIRED)
    assert config.sentence_groups and not config.uses_alignment
    assert config.early_stopping_patience is None
    assert TrainConfig(**REQUIRED, anchor_align_beta=0.1).uses_alignment
    ok = TrainConfig(**REQUIRED, early_stopping_patience=2, eval_file=str(tmp_path / "dev.jsonl"))
    assert ok.early_stopping_metric == "eval_loss"
    phase = config_from_mapping({**REQUIRED, "init_adapter": "runs/warm"}, base_dir=tmp_path)
    assert phase.init_adapter == str(tmp_path / "runs" / "warm")  # relative to the config
