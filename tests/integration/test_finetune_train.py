"""Real peft LoRA training on the tiny model: masking, loss, determinism, resume, serving.

Runs take a few optimizer steps on a handful of short examples (seconds on a laptop CPU).
The served-adapter test starts a real vLLM (CPU build) server with the trained adapter and
checks that vLLM computes the same next-token distribution as peft does with that adapter.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import skip_without

from samalign.cli import main
from samalign.errors import ConfigError
from samalign.finetune.builders import (
    ChatExample,
    build_joint_examples,
    read_source,
    write_examples,
)
from samalign.finetune.builders.sources import SourceDataset
from samalign.finetune.config import CONFIG_FILE_NAME, TrainConfig
from samalign.finetune.trainer import (
    IGNORE_INDEX,
    LOSS_LOG_NAME,
    SUMMARY_NAME,
    TrainResult,
    check_servable,
    latest_checkpoint,
    tokenize_example,
    train,
)
from samalign.prompts import load_domain
from samalign.serving.server_process import ServerProcess

pytestmark = pytest.mark.integration

torch, _, safetensors_torch = skip_without("torch", "peft", "safetensors.torch")

EXAMPLES = [
    ChatExample(
        id=f"e{i}",
        stage="explorer",
        task="ner",
        prompt=json.dumps({"Schema": ["person", "city"], "Input": text}),
        answer=json.dumps(answer),
    )
    for i, (text, answer) in enumerate(
        [
            ("Marie Curie was born in Warsaw .", {"person": ["Marie Curie"], "city": ["Warsaw"]}),
            ("Pierre lived in Paris .", {"person": ["Pierre"], "city": ["Paris"]}),
            ("The museum in Vienna reopened .", {"person": [], "city": ["Vienna"]}),
            ("Sepp Hochreiter wrote about LSTM .", {"person": ["Sepp Hochreiter"], "city": []}),
        ]
    )
]
RELATION = ChatExample(
    id="r0",
    stage="relations_forward",
    task="re",
    prompt="Relations in: Pierre lived in Paris .",
    answer='[{"head": "Pierre", "relation": "Live_In", "tail": "Paris"}]',
)


@pytest.fixture(scope="module")
def base(tiny_model_dir: Path) -> Path:
    return tiny_model_dir / "base"


@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    write_examples(path, EXAMPLES)
    return path


def config(base: Path, train_file: Path, out: Path, **changes: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "base_model": str(base),
        "train_file": str(train_file),
        "output_dir": str(out),
        "stage": "explorer",
        "learning_rate": 1e-2,
        "max_steps": 4,
        "batch_size": 2,
        "gradient_accumulation": 1,
        "logging_steps": 1,
        "progress_bar": False,
        **changes,
    }
    return TrainConfig(**settings)


def adapter_weights(folder: Path) -> dict[str, Any]:
    weights: dict[str, Any] = safetensors_torch.load_file(str(folder / "adapter_model.safetensors"))
    return weights


def loss_log(out: Path) -> list[dict[str, Any]]:
    """The run's loss log: one record per logged training step or evaluation."""
    return [json.loads(line) for line in (out / LOSS_LOG_NAME).read_text().splitlines()]


def test_prompt_tokens_are_exactly_the_served_prompt_and_masked(base: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    tok = tokenize_example(tokenizer, EXAMPLES[0])
    served = tokenizer.apply_chat_template(
        [{"role": "user", "content": EXAMPLES[0].prompt}],
        tokenize=False,
        add_generation_prompt=True,
    )
    prompt_ids = tokenizer(served, add_special_tokens=False)["input_ids"]
    assert tok.input_ids[: len(prompt_ids)] == prompt_ids
    assert tok.labels[: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    target = tok.input_ids[len(prompt_ids) :]
    assert tok.labels[len(prompt_ids) :] == target
    assert tokenizer.eos_token_id in target
    assert tokenizer.decode(target).startswith(EXAMPLES[0].answer + "<|end|>")
    # the full conversation tokenises to the same ids: nothing merges across the boundary
    full = tokenizer.apply_chat_template(EXAMPLES[0].messages, tokenize=False)
    assert tokenizer(full, add_special_tokens=False)["input_ids"] == tok.input_ids


def test_training_lowers_the_loss_and_writes_a_servable_adapter(
    base: Path, train_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "explorer"
    result = train(config(base, train_file, out, max_steps=6, eval_fraction=0.25))
    assert result.steps == 6 and result.examples == 3
    assert result.first_loss is not None and result.final_loss is not None
    assert result.final_loss < result.first_loss - 0.2
    assert result.eval_loss is not None and math.isfinite(result.eval_loss)
    check_servable(out)
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["r"] == 8 and adapter_config["lora_alpha"] == 16
    assert adapter_config["bias"] == "none" and not adapter_config.get("modules_to_save")
    assert sorted(adapter_config["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    assert adapter_config["base_model_name_or_path"] == str(base.resolve())
    assert (out / CONFIG_FILE_NAME).is_file()
    log = loss_log(out)
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert any("eval_loss" in r for r in log)
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert summary["steps"] == 6 and summary["precision"] == "fp32"
    # the adapter changes the model: lora_B moved away from its zero initialisation
    assert any(float(t.abs().max()) > 0 for k, t in adapter_weights(out).items() if "lora_B" in k)
    with pytest.raises(ConfigError, match="already holds an adapter"):
        train(config(base, train_file, out))


def test_same_seed_same_adapter(base: Path, train_file: Path, tmp_path: Path) -> None:
    a = train(config(base, train_file, tmp_path / "a", max_steps=3))
    b = train(config(base, train_file, tmp_path / "b", max_steps=3))
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    wa, wb = adapter_weights(tmp_path / "a"), adapter_weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = train(config(base, train_file, tmp_path / "c", max_steps=3, seed=7))
    assert [h["loss"] for h in c.history] != [h["loss"] for h in a.history]


def test_resume_from_a_checkpoint_gives_the_uninterrupted_result(
    base: Path, train_file: Path, tmp_path: Path
) -> None:
    settings = {"max_steps": 4, "save_steps": 2, "save_total_limit": 5}
    full = tmp_path / "full"
    train(config(base, train_file, full, **settings))
    # an interrupted run: only the step-2 checkpoint exists
    cut = tmp_path / "cut"
    (cut / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "step-000002", cut / "checkpoints" / "step-000002")
    assert latest_checkpoint(cut) == cut / "checkpoints" / "step-000002"
    resumed = train(config(base, train_file, cut, **settings), resume=True)
    assert resumed.steps == 4
    wa, wb = adapter_weights(full), adapter_weights(cut)
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-6), key
    with pytest.raises(ConfigError, match="settings changed since it was written: lora_r"):
        train(config(base, train_file, cut, lora_r=16, **settings), resume=True)


def test_checkpoints_hold_no_pickle_and_resume_never_unpickles_one(
    base: Path, train_file: Path, tmp_path: Path
) -> None:
    import pickle

    run = config(base, train_file, tmp_path / "run", max_steps=2, save_steps=1)
    train(run)
    uninterrupted = adapter_weights(tmp_path / "run")
    step1 = tmp_path / "run" / "checkpoints" / "step-000001"
    assert {"trainer_state.json", "trainer_state.safetensors"} <= {p.name for p in step1.iterdir()}
    assert not [p for p in (tmp_path / "run").rglob("*") if p.suffix in (".pt", ".bin", ".pkl")]
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(marker), "w"))

    (step1 / "trainer_state.pt").write_bytes(pickle.dumps(Payload()))
    pickle.loads((step1 / "trainer_state.pt").read_bytes())  # control: the payload is live
    assert marker.exists()
    marker.unlink()
    assert train(run, resume=step1).steps == 2  # from step 1, beside the planted pickle
    assert not marker.exists()
    again = adapter_weights(tmp_path / "run")
    assert all(torch.allclose(uninterrupted[k], again[k], atol=1e-6) for k in uninterrupted)


def test_joint_lambda_weights_relation_examples(base: Path, tmp_path: Path) -> None:
    path = tmp_path / "re.jsonl"
    write_examples(path, [RELATION, RELATION])
    train(config(base, path, tmp_path / "zero", joint_lambda=0.0, max_steps=2))
    # with λ = 0 the relation loss contributes no gradient: lora_B stays at its zero init
    assert all(
        float(t.abs().max()) == 0
        for k, t in adapter_weights(tmp_path / "zero").items()
        if "lora_B" in k
    )
    result = train(config(base, path, tmp_path / "half", joint_lambda=0.5, max_steps=2))
    assert "weighted_loss" in result.history[0]
    assert result.history[0]["weighted_loss"] == pytest.approx(result.history[0]["loss"] * 0.5)


def test_cli_train_with_overrides(
    base: Path, train_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"base_model: {base}\ntrain_file: {train_file}\noutput_dir: out\nstage: explorer\n"
        "learning_rate: 1e-3\nbatch_size: 2\ngradient_accumulation: 1\nprogress_bar: false\n"
    )
    assert main(["finetune", "train", str(path), "--set", "max_steps=2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and summary["output_dir"] == str(tmp_path / "out")
    assert main(["finetune", "check", str(tmp_path / "out")]) == 0
    assert main(["finetune", "train", str(path), "--set", "lora_r=2048"]) == 2
    assert "vLLM serves LoRA ranks" in capsys.readouterr().err


def test_trained_adapter_loads_in_peft(base: Path, train_file: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "explorer"
    train(config(base, train_file, out, max_steps=3))
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base), str(out), adapter_name="explorer"
    ).eval()
    ids = torch.tensor([tokenize_example(tokenizer, EXAMPLES[0]).input_ids])
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        with model.disable_adapter():
            plain = model(input_ids=ids).logits
    assert not torch.allclose(adapted, plain, atol=1e-4)


# ------------------------------------------------------------------------------------------
# served by a real vLLM server
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_adapter(base: Path, train_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("served") / "explorer"
    train(config(base, train_file, out, max_steps=6))
    return out


@pytest.fixture(scope="module")
def trained_server(
    base: Path,
    trained_adapter: Path,
    start_vllm: Callable[..., AbstractContextManager[ServerProcess]],
) -> Iterator[str]:
    """``samalign serve --base BASE --adapter trained=DIR`` on loopback (real vLLM)."""
    adapters = {"trained": trained_adapter}
    with start_vllm(base=base, adapters=adapters, max_model_len=2048) as server:
        yield server.url


def _vllm_top_logprobs(url: str, model: str, prompt: str) -> dict[str, float]:
    reply = httpx.post(
        url + "/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": 5,
        },
        timeout=120,
    )
    reply.raise_for_status()
    content = reply.json()["choices"][0]["logprobs"]["content"][0]
    return {item["token"]: item["logprob"] for item in content["top_logprobs"]}


def test_vllm_serves_the_trained_adapter_as_peft_computes_it(
    trained_server: str, trained_adapter: Path, base: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    models = {m["id"] for m in httpx.get(trained_server + "/v1/models", timeout=10).json()["data"]}
    assert {"trained", "calibrate"} <= models
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base), str(trained_adapter)
    ).eval()
    for example in EXAMPLES[:2]:
        served = _vllm_top_logprobs(trained_server, "trained", example.prompt)
        identity = _vllm_top_logprobs(trained_server, "calibrate", example.prompt)
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": example.prompt}],
            tokenize=False,
            add_generation_prompt=True,
        )
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1)
            with model.disable_adapter():
                plain = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1)
        for served_top, dist in ((served, logprobs), (identity, plain)):
            top = torch.topk(dist, 5)
            expected = {
                tokenizer.decode([int(i)]): float(v)
                for v, i in zip(top.values, top.indices, strict=True)
            }
            assert max(served_top, key=served_top.__getitem__) == next(iter(expected))
            common = set(served_top) & set(expected)
            assert len(common) >= 3  # near-ties at rank 5 may swap between implementations
            for token in common:
                assert served_top[token] == pytest.approx(expected[token], abs=2e-3)
        # the trained adapter really changes the distribution the identity adapter serves
        assert any(abs(served[t] - identity.get(t, -1e9)) > 1e-2 for t in served)


def test_gradient_checkpointing_trains_the_same_adapter(
    base: Path, train_file: Path, tmp_path: Path
) -> None:
    plain = train(config(base, train_file, tmp_path / "plain", max_steps=2))
    checkpointed = train(
        config(base, train_file, tmp_path / "ckpt", max_steps=2, gradient_checkpointing=True)
    )
    assert [h["loss"] for h in checkpointed.history] == pytest.approx(
        [h["loss"] for h in plain.history], abs=1e-5
    )


def test_transformers_backend_serves_the_trained_adapter(
    trained_adapter: Path, base: Path, tmp_path: Path
) -> None:
    """The in-process transformers + peft backend loads the adapter folder unchanged."""
    from langchain_core.messages import HumanMessage
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from samalign.serving import transformers_models

    model_dir = tmp_path / "model"
    shutil.copytree(base, model_dir / "base")
    shutil.copytree(trained_adapter, model_dir / "adapters" / "trained")
    tokenizer = AutoTokenizer.from_pretrained(base)
    peft_model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base), str(trained_adapter)
    ).eval()
    with transformers_models(
        model_dir, stages=["explorer"], adapters={"explorer": "trained"}
    ) as models:
        for example in EXAMPLES[:2]:
            served = models["explorer"].chat_model.invoke(
                [HumanMessage(content=example.prompt)], max_tokens=8
            )
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": example.prompt}],
                tokenize=False,
                add_generation_prompt=True,
            )
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
            with torch.no_grad():
                out = peft_model.generate(
                    **ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.eos_token_id
                )
            expected = tokenizer.decode(
                out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True
            )
            assert served.content == expected


def test_cli_builds_from_shared_data_and_trains(
    shared_data: Path, base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "archetype.jsonl"
    assert main(["finetune", "build", "archetype", str(shared_data / "crossner/ai/train.txt"),
                 "--domain", "crossner_ai", "--limit", "6", "--out", str(data)]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["examples"] == 6
    path = tmp_path / "archetype.yaml"
    path.write_text(
        f"base_model: {base}\ntrain_file: {data}\noutput_dir: out\nstage: archetype\n"
        "max_steps: 2\nbatch_size: 2\ngradient_accumulation: 1\nprogress_bar: false\n"
    )
    assert main(["finetune", "train", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and summary["examples"] == 6
    saved = (tmp_path / "out" / "samalign-finetune.yaml").read_text()
    assert "learning_rate: null" in saved  # Table 7's 3e-5 for the classifier applies
    assert (
        json.loads((tmp_path / "out" / "training_summary.json").read_text())["learning_rate"]
        == 3e-5
    )


# ------------------------------------------------------------------------------------------
# training objectives: a sentence per step, AnchorAlign's alignment terms, early stopping.
# The data is `finetune build joint --ner-stage supervised_ner` on CoNLL04 train sentences:
# each sentence's supervised NER, forward and reverse examples share a group.
# ------------------------------------------------------------------------------------------


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


JOINT: dict[str, Any] = {
    "stage": "joint",
    "batch_size": 1,
    "lr_scheduler": "constant",
    "warmup_ratio": 0.0,
    "max_steps": None,
}
"""One sentence (3 sequences) per micro-batch, a constant learning rate."""


def joint_config(base: Path, train_file: Path, out: Path, **changes: Any) -> TrainConfig:
    return config(base, train_file, out, **{**JOINT, **changes})


def train_aligned(base: Path, joint_file: Path, out: Path, gamma: float) -> TrainResult:
    """12 steps with AnchorAlign's α = β = 1 and suppression weight γ = ``gamma``, eval at 12."""
    weights = {"anchor_align_alpha": 1.0, "anchor_align_beta": 1.0, "anchor_align_gamma": gamma}
    return train(
        joint_config(
            base, joint_file, out, max_steps=12, eval_fraction=0.2, eval_steps=12, **weights
        )
    )


def test_a_step_is_whole_sentences(tiny_model_dir: Path, joint_file: Path, tmp_path: Path) -> None:
    """18 examples of 6 sentences, batch 2, accumulation 1: 3 steps per epoch, not 9."""
    result = train(
        joint_config(
            tiny_model_dir / "base", joint_file, tmp_path / "run", batch_size=2, num_epochs=1
        )
    )
    assert result.examples == 18 and result.steps == 3
    ungrouped = train(
        joint_config(
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
    result = train_aligned(tiny_model_dir / "base", joint_file, out, gamma=1.0)
    log = loss_log(out)
    steps = [r for r in log if "loss" in r]
    assert len(steps) == 12
    for name in ("align_ner_re", "align_fwd_rev", "align_suppress"):
        values = [r[name] for r in steps]
        assert all(math.isfinite(v) and v >= 0 for v in values), name
    for name in ("align_ner_re", "align_fwd_rev"):
        values = [r[name] for r in steps]
        assert sum(values[-3:]) < sum(values[:3]), (name, values)
    losses = [r["loss"] for r in steps]
    assert sum(losses[-3:]) < sum(losses[:3])
    evals = [r for r in log if "eval_loss" in r]
    assert evals and {"eval_align_ner_re", "eval_align_fwd_rev"} <= set(evals[-1])
    assert result.eval_loss is not None and math.isfinite(result.eval_loss)
    check_servable(out)  # a plain LoRA: the terms are training losses only
    config_json = json.loads((out / "adapter_config.json").read_text())
    assert not config_json.get("modules_to_save")

    # Negative suppression is ~1/|V| per negative on a near-uniform random model, so at γ = 1
    # its gradient is negligible next to the cross-entropy and it need not fall. Its gradient
    # acts: the same run (same seed, so the same sentence at each step) with a large γ has a
    # lower suppression term at every step after the first, and on the held-out sentence.
    strong = tmp_path / "suppressed"
    train_aligned(tiny_model_dir / "base", joint_file, strong, gamma=1e4)
    strong_log = loss_log(strong)
    strong_steps = [r for r in strong_log if "loss" in r]
    weak = [r["align_suppress"] for r in steps]
    suppressed = [r["align_suppress"] for r in strong_steps]
    assert suppressed[0] == weak[0]  # the same first sentence and initial weights
    assert all(s < w for s, w in zip(suppressed[1:], weak[1:], strict=True)), (suppressed, weak)
    strong_eval = [r for r in strong_log if "eval_loss" in r][-1]
    assert strong_eval["eval_align_suppress"] < evals[-1]["eval_align_suppress"]


def test_early_stopping_stops_and_writes_the_best_adapter(
    tiny_model_dir: Path, joint_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "early"
    result = train(
        joint_config(
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
    log = loss_log(out)
    assert [r["step"] for r in log if "eval_loss" in r] == [1, 2, 3]
    final, best = adapter_weights(out), adapter_weights(out / "checkpoints" / "step-000001")
    assert all(torch.equal(final[k], best[k]) for k in final)
    last = adapter_weights(out / "checkpoints" / "step-000003")
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
    train(joint_config(base, joint_file, warm, max_steps=2))
    # a step at a vanishing learning rate leaves the loaded weights where they were
    again = tmp_path / "again"
    train(
        joint_config(
            base, joint_file, again, max_steps=1, learning_rate=1e-12, init_adapter=str(warm)
        )
    )
    before, after = adapter_weights(warm), adapter_weights(again)
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    assert any(float(t.abs().max()) > 0 for k, t in after.items() if "lora_B" in k)
    with pytest.raises(ConfigError, match="does not fit this run's rank"):
        train(joint_config(base, joint_file, tmp_path / "bad", lora_r=16, init_adapter=str(warm)))
