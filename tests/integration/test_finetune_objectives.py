"""Training objectives on the tiny model with real peft: the joint loss per sentence,
AnchorAlign's alignment terms, early stopping.

The data is `finetune build joint --ner-stage supervised_ner` on CoNLL04 train sentences:
each sentence's supervised NER, forward and reverse examples share a group.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from samalign.finetune.builders import build_joint_examples, read_source, write_examples
from samalign.finetune.builders.sources import SourceDataset
from samalign.finetune.config import TrainConfig
from samalign.finetune.trainer import LOSS_LOG_NAME, check_servable, train
from samalign.prompts import load_domain

pytestmark = pytest.mark.integration

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
safetensors_torch = pytest.importorskip("safetensors.torch")


@pytest.fixture(scope="module")
def joint_file(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six short CoNLL04 train sentences with relations, grouped NER + forward + reverse."""
    full = read_source(shared_data / "conll04" / "train_triples.json")
    short = sorted((r for r in full.records if r.relations), key=lambda r: len(r.text))[:6]
    dataset = SourceDataset(path=full.path, format="spert", records=short, label_set=full.label_set)
    examples, _ = build_joint_examples(
        [dataset], domain=load_domain("conll04"), ner_stage="supervised_ner"
    )
    path = tmp_path_factory.mktemp("joint") / "joint.jsonl"
    write_examples(path, examples)
    return path


def config(base: Path, train_file: Path, out: Path, **changes: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "base_model": str(base),
        "train_file": str(train_file),
        "output_dir": str(out),
        "stage": "joint",
        "learning_rate": 1e-2,
        "batch_size": 1,
        "gradient_accumulation": 1,
        "logging_steps": 1,
        "lr_scheduler": "constant",
        "warmup_ratio": 0.0,
        "progress_bar": False,
        "precision": "fp32",
        **changes,
    }
    return TrainConfig(**settings)


def weights(folder: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = safetensors_torch.load_file(str(folder / "adapter_model.safetensors"))
    return loaded


def test_a_step_is_whole_sentences(tiny_model_dir: Path, joint_file: Path, tmp_path: Path) -> None:
    """18 examples of 6 sentences, batch 2, accumulation 1: 3 steps per epoch, not 9."""
    result = train(
        config(tiny_model_dir / "base", joint_file, tmp_path / "run", batch_size=2, num_epochs=1)
    )
    assert result.examples == 18 and result.steps == 3
    ungrouped = train(
        config(
            tiny_model_dir / "base",
            joint_file,
            tmp_path / "plain",
            batch_size=2,
            num_epochs=1,
            sentence_groups=False,
        )
    )
    assert ungrouped.steps == 9


def test_alignment_terms_are_finite_fall_and_leave_a_plain_lora(
    tiny_model_dir: Path, joint_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "aligned"
    result = train(
        config(
            tiny_model_dir / "base",
            joint_file,
            out,
            max_steps=12,
            anchor_align_alpha=1.0,
            anchor_align_beta=1.0,
            anchor_align_gamma=1.0,
            eval_fraction=0.2,
            eval_steps=12,
        )
    )
    log = [json.loads(line) for line in (out / LOSS_LOG_NAME).read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert len(steps) == 12
    for name in ("align_ner_re", "align_fwd_rev", "align_suppress"):
        values = [r[name] for r in steps]
        assert all(math.isfinite(v) and v >= 0 for v in values), name
        assert sum(values[-3:]) < sum(values[:3]), (name, values)
    losses = [r["loss"] for r in steps]
    assert sum(losses[-3:]) < sum(losses[:3])
    evals = [r for r in log if "eval_loss" in r]
    assert evals and {"eval_align_ner_re", "eval_align_fwd_rev"} <= set(evals[-1])
    assert result.eval_loss is not None and math.isfinite(result.eval_loss)
    check_servable(out)  # a plain LoRA: the terms are training losses only
    config_json = json.loads((out / "adapter_config.json").read_text())
    assert not config_json.get("modules_to_save")


def test_early_stopping_stops_and_writes_the_best_adapter(
    tiny_model_dir: Path, joint_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "early"
    result = train(
        config(
            tiny_model_dir / "base",
            joint_file,
            out,
            max_steps=20,
            eval_fraction=0.34,
            eval_steps=1,
            save_steps=1,
            save_total_limit=10,
            early_stopping_patience=2,
            early_stopping_min_delta=100.0,  # nothing after the first evaluation improves
        )
    )
    assert result.stopped_early and result.steps == 3
    assert result.best_step == 1 and result.best_metric is not None
    log = [json.loads(line) for line in (out / LOSS_LOG_NAME).read_text().splitlines()]
    assert [r["step"] for r in log if "eval_loss" in r] == [1, 2, 3]
    final, best = weights(out), weights(out / "checkpoints" / "step-000001")
    assert all(torch.equal(final[k], best[k]) for k in final)
    last = weights(out / "checkpoints" / "step-000003")
    assert any(not torch.equal(final[k], last[k]) for k in final)  # the best, not the last
    assert not (out / "best").exists()
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["stopped_early"] is True and summary["best_step"] == 1


def test_init_adapter_continues_an_earlier_phase(
    tiny_model_dir: Path, joint_file: Path, tmp_path: Path
) -> None:
    """A curriculum's next phase starts from the previous adapter (AnchorAlign §3.5.3)."""
    base = tiny_model_dir / "base"
    warm = tmp_path / "warm"
    train(config(base, joint_file, warm, max_steps=2))
    # a step at a vanishing learning rate leaves the loaded weights where they were
    again = tmp_path / "again"
    train(config(base, joint_file, again, max_steps=1, learning_rate=1e-12, init_adapter=str(warm)))
    before, after = weights(warm), weights(again)
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    assert any(float(t.abs().max()) > 0 for k, t in after.items() if "lora_B" in k)
    with pytest.raises(Exception, match="does not fit this run's rank"):
        train(config(base, joint_file, tmp_path / "bad", lora_r=16, init_adapter=str(warm)))
