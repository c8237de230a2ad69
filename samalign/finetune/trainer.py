"""The peft LoRA trainer: completion-only loss, Table 7 defaults, checkpoints and resume.

Why a plain training loop and not ``transformers.Trainer``: the loop is short, and owning it
keeps four things exact across transformers versions (the ``local`` extra allows 4.56 to
5.x, whose ``Trainer`` arguments and loss normalisation changed between releases): the
completion-only loss normalised over the target tokens of the whole *effective* batch
(accumulation included), the joint loss ``L = L_NER + λ·L_RE`` per example, deterministic
resume (optimizer, scheduler, RNG and data position restored), and length-grouped batching.

Tokenisation follows how vLLM serves a chat request: the prompt is
``apply_chat_template(messages[:-1], add_generation_prompt=True)`` tokenised without extra
special tokens; the target is the rest of the rendered conversation (the answer and the
template's end-of-turn, which must contain the eos token) tokenised the same way. The prompt
tokens are therefore exactly the tokens the served model conditions on, and their labels are
``-100`` (masked).

The saved adapter loads unchanged in vLLM and peft: no added tokens (the vocabulary is never
resized), no ``modules_to_save``, bias ``none``, a rank vLLM serves; the written folder is
verified with :func:`samalign.serving.model_dir.check_servable` (the one servability check).
Checkpoints are safetensors + JSON (:mod:`samalign.finetune.checkpoints`), never a pickle.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samalign.errors import ConfigError, InputError
from samalign.finetune.builders.io import ChatExample, read_examples
from samalign.finetune.checkpoints import (
    CHECKPOINTS_DIR,
    TrainerState,
    check_checkpoint,
    latest_checkpoint,
    like_groups,
    read_trainer_state,
    save_checkpoint,
    write_trainer_state,
)
from samalign.finetune.config import CONFIG_FILE_NAME, TrainConfig, config_from_mapping
from samalign.serving.extras import quiet_transformers, require_extra
from samalign.serving.model_dir import ADAPTER_WEIGHTS, check_servable

log = logging.getLogger("samalign.finetune")

IGNORE_INDEX = -100
LOSS_LOG_NAME = "loss_log.jsonl"
SUMMARY_NAME = "training_summary.json"
_COSMETIC_FIELDS = frozenset(
    {
        "progress_bar",
        "logging_steps",
        "eval_steps",
        "save_steps",
        "save_total_limit",
        "max_steps",
        "output_dir",
    }
)
"""Fields that may change between a checkpoint and its resumed run."""


@dataclass(frozen=True)
class TokenizedExample:
    """An example as token ids: ``labels`` is ``-100`` on the prompt tokens."""

    input_ids: list[int]
    labels: list[int]
    task: str
    id: str

    @property
    def target_tokens(self) -> int:
        """How many tokens carry loss."""
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        output_dir: The adapter folder.
        steps: Optimizer steps taken in total (including steps before a resume).
        examples: Training examples used (after the cutoff).
        dropped: Examples dropped for exceeding ``cutoff_len``.
        first_loss: Mean loss of the first logged interval.
        final_loss: Mean loss of the last logged interval.
        eval_loss: Final eval loss, if there is an eval split.
        seconds: Wall-clock time of this run's training loop.
        tokens_per_second: Non-padding tokens processed per second in this run.
        peak_memory_mb: Peak GPU memory (CUDA) or peak resident memory of the process (CPU).
        history: Logged records (the content of ``loss_log.jsonl``).
    """

    output_dir: Path
    steps: int
    examples: int
    dropped: int
    first_loss: float | None
    final_loss: float | None
    eval_loss: float | None
    seconds: float
    tokens_per_second: float
    peak_memory_mb: float
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the history)."""
        return {
            "output_dir": str(self.output_dir),
            "steps": self.steps,
            "examples": self.examples,
            "dropped_over_cutoff": self.dropped,
            "first_loss": self.first_loss,
            "final_loss": self.final_loss,
            "eval_loss": self.eval_loss,
            "seconds": round(self.seconds, 3),
            "tokens_per_second": round(self.tokens_per_second, 1),
            "peak_memory_mb": round(self.peak_memory_mb, 1),
        }


# ------------------------------------------------------------------------------------------
# Tokenisation
# ------------------------------------------------------------------------------------------


def _ids(tokenizer: Any, text: str) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [int(i) for i in ids]


def tokenize_example(tokenizer: Any, example: ChatExample) -> TokenizedExample:
    """Tokenise one example with the chat template; mask the prompt (see module docs).

    Raises:
        ConfigError: The tokenizer has no chat template, the template does not render the
            generation prompt as a prefix of the conversation, or the answer's end has no
            eos token.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "the base model's tokenizer has no chat template; samalign trains and serves chat "
            "prompts, so use an instruction/chat model (or add a chat_template)"
        )
    messages = example.messages
    prompt_text = tokenizer.apply_chat_template(
        messages[:-1], tokenize=False, add_generation_prompt=True
    )
    full_text = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ConfigError(
            "the chat template does not render the generation prompt as a prefix of the "
            "conversation with the answer, so the prompt the server sends cannot be masked "
            f"exactly (example {example.id!r})"
        )
    prompt_ids = _ids(tokenizer, prompt_text)
    completion_ids = _ids(tokenizer, full_text[len(prompt_text) :])
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigError("the tokenizer has no eos token; the model could not learn to stop")
    if eos not in completion_ids:
        completion_ids.append(int(eos))
    return TokenizedExample(
        input_ids=prompt_ids + completion_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + completion_ids,
        task=example.task,
        id=example.id,
    )


def tokenize_examples(
    tokenizer: Any, examples: Sequence[ChatExample], cutoff_len: int
) -> tuple[list[TokenizedExample], int]:
    """Tokenise examples; drop those longer than ``cutoff_len`` (returns the dropped count)."""
    kept: list[TokenizedExample] = []
    dropped = 0
    for ex in examples:
        tok = tokenize_example(tokenizer, ex)
        if len(tok.input_ids) > cutoff_len:
            dropped += 1
            continue
        kept.append(tok)
    return kept, dropped


# ------------------------------------------------------------------------------------------
# Batching
# ------------------------------------------------------------------------------------------


def epoch_batches(
    lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int, group_by_length: bool
) -> list[list[int]]:
    """The micro-batches of one epoch as lists of example indices (deterministic).

    Without grouping: a seeded permutation cut into batches. With grouping: the permutation
    is cut into mega-batches of 64 batches, each sorted by length (longest first) and cut
    into batches, and the batch order is shuffled, so a batch holds examples of similar
    length (less padding) while the epoch stays random.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    mega = batch_size * 64
    batches: list[list[int]] = []
    for i in range(0, len(order), mega):
        chunk = sorted(order[i : i + mega], key=lambda j: -lengths[j])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(batch: Sequence[TokenizedExample], pad_id: int, joint_lambda: float) -> dict[str, Any]:
    """Pad a micro-batch on the right; labels padded with ``-100``; per-row loss weights."""
    import torch

    width = max(len(ex.input_ids) for ex in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ex in enumerate(batch):
        n = len(ex.input_ids)
        input_ids[row, :n] = torch.tensor(ex.input_ids)
        labels[row, :n] = torch.tensor(ex.labels)
        attention[row, :n] = 1
    weights = torch.tensor([joint_lambda if ex.task == "re" else 1.0 for ex in batch])
    return {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": attention,
        "weights": weights,
    }


def token_losses(model: Any, batch: dict[str, Any], device: Any, autocast: Any) -> tuple[Any, Any]:
    """Per-token cross-entropy (rows × positions) and the target mask, shifted for causal LM."""
    import torch
    import torch.nn.functional as F

    input_ids = batch["input_ids"].to(device)
    labels = batch["labels"].to(device)
    attention = batch["attention_mask"].to(device)
    with autocast():
        logits = model(input_ids=input_ids, attention_mask=attention).logits
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    losses = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(shift_labels.shape)
    mask = (shift_labels != IGNORE_INDEX).to(torch.float32)
    return losses, mask


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------


def _resolve_device(config: TrainConfig) -> tuple[Any, bool]:
    import torch

    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available")
    use_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    if config.precision == "bf16":
        if use_cuda and not torch.cuda.is_bf16_supported():
            raise ConfigError("precision 'bf16' requested but this GPU does not support bf16")
        bf16 = True
    elif config.precision == "fp32":
        bf16 = False
    else:
        bf16 = bool(use_cuda and torch.cuda.is_bf16_supported())
    return device, bf16


def _schedule(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    warmup = math.ceil(config.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if config.lr_scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if config.lr_scheduler == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _peak_memory_mb(device: Any) -> float:
    import torch

    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device)) / 2**20
    import resource

    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024  # KiB on Linux


def _split_eval(
    config: TrainConfig, examples: list[ChatExample]
) -> tuple[list[ChatExample], list[ChatExample]]:
    if config.eval_file:
        return examples, read_examples(config.eval_file)
    if config.eval_fraction <= 0:
        return examples, []
    order = list(range(len(examples)))
    random.Random(config.seed).shuffle(order)
    n_eval = max(1, round(config.eval_fraction * len(examples)))
    if n_eval >= len(examples):
        raise ConfigError(
            f"eval_fraction {config.eval_fraction} leaves no training examples "
            f"({len(examples)} in total)"
        )
    held = set(order[:n_eval])
    train = [ex for i, ex in enumerate(examples) if i not in held]
    return train, [examples[i] for i in sorted(held)]


def _check_resume_config(config: TrainConfig, checkpoint: Path) -> None:
    saved_path = checkpoint / CONFIG_FILE_NAME
    if not saved_path.is_file():
        return
    from samalign.prompts.yamlfile import load_yaml_file

    saved = config_from_mapping(
        load_yaml_file(saved_path, what="checkpoint config"), origin=str(saved_path)
    )
    now, then = config.to_dict(), saved.to_dict()
    changed = sorted(k for k in now if k not in _COSMETIC_FIELDS and now[k] != then[k])
    if changed:
        raise ConfigError(
            f"cannot resume from {checkpoint}: settings changed since it was written: "
            + ", ".join(f"{k} {then[k]!r} -> {now[k]!r}" for k in changed)
            + "; restore them, or start over in a new output_dir"
        )


class _NoOpContext:
    """Stands in for ``torch.autocast`` when training in fp32."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def _resume_checkpoint(config: TrainConfig, out: Path, resume: bool | str | Path) -> Path | None:
    """The checkpoint to resume from (None: start fresh), refusing what cannot be resumed."""
    if not resume:
        if (out / ADAPTER_WEIGHTS).exists() or latest_checkpoint(out) is not None:
            raise ConfigError(
                f"{out} already holds an adapter or checkpoints; pass --resume to continue, or "
                "choose another output_dir"
            )
        return None
    checkpoint = latest_checkpoint(out) if resume is True else Path(resume)
    if checkpoint is None and (out / ADAPTER_WEIGHTS).exists():
        raise ConfigError(
            f"{out} holds a finished adapter and no checkpoint to resume from; choose "
            "another output_dir to train again"
        )
    if checkpoint is not None:
        check_checkpoint(checkpoint)
        _check_resume_config(config, checkpoint)
    return checkpoint


def _read_data(
    config: TrainConfig, examples: Sequence[ChatExample] | None
) -> tuple[list[ChatExample], list[ChatExample]]:
    """The training and eval examples (given, or read from the config's files)."""
    all_examples = list(examples) if examples is not None else read_examples(config.train_file)
    if not all_examples:
        raise InputError(f"{config.train_file}: no training examples")
    train_examples, eval_examples = _split_eval(config, all_examples)
    stages = sorted({ex.stage for ex in train_examples if ex.stage})
    if config.stage and stages and stages != [config.stage]:
        log.warning("training adapter %r on examples of stages %s", config.stage, stages)
    return train_examples, eval_examples


@dataclass
class _Data:
    """Tokenised examples of a run."""

    train: list[TokenizedExample]
    eval: list[TokenizedExample]
    dropped: int
    eval_dropped: int
    pad_id: int


def _tokenize_data(
    config: TrainConfig,
    tokenizer: Any,
    train_examples: list[ChatExample],
    eval_examples: list[ChatExample],
) -> _Data:
    train_tok, dropped = tokenize_examples(tokenizer, train_examples, config.cutoff_len)
    eval_tok, eval_dropped = tokenize_examples(tokenizer, eval_examples, config.cutoff_len)
    if dropped:
        log.warning(
            "%d of %d training examples exceed cutoff_len %d tokens and were dropped",
            dropped,
            len(train_examples),
            config.cutoff_len,
        )
    if not train_tok:
        raise ConfigError(
            f"every training example is longer than cutoff_len {config.cutoff_len}; raise it"
        )
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    return _Data(train_tok, eval_tok, dropped, eval_dropped, pad_id)


def _load_model(config: TrainConfig, base: Path, tokenizer: Any, device: Any, bf16: bool) -> Any:
    """The base model with a fresh LoRA (seeded), on ``device``, in training mode."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    dtype = torch.bfloat16 if bf16 else torch.float32
    with quiet_transformers():
        model: Any = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    vocab_before = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab_before:
        raise ConfigError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's embedding has "
            f"{vocab_before}; added tokens cannot be served with a LoRA adapter in vLLM"
        )
    model.config.use_cache = False
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=_target_modules(model, config.target_modules),
        bias="none",
        use_rslora=config.use_rslora,
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # transformers 5 deprecation noise from inside peft
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        model = get_peft_model(model, lora)
    if config.gradient_checkpointing:
        enable_activation_checkpointing(model)
        model.enable_input_require_grads()
    model.to(device)
    model.train()
    return model


@dataclass
class _Session:
    """One run's model, optimizer, schedule and progress, with its checkpoint store."""

    config: TrainConfig
    out: Path
    model: Any
    data: _Data
    device: Any
    bf16: bool
    params: list[Any] = field(default_factory=list)
    optimizer: Any = None
    scheduler: Any = None
    batches_per_epoch: int = 0
    steps_per_epoch: int = 0
    total_steps: int = 0
    step: int = 0
    tokens_seen: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        import torch

        config = self.config
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=config.effective_learning_rate, weight_decay=config.weight_decay
        )
        self.batches_per_epoch = math.ceil(len(self.data.train) / config.batch_size)
        self.steps_per_epoch = max(
            1, math.ceil(self.batches_per_epoch / config.gradient_accumulation)
        )
        self.total_steps = config.max_steps or max(
            1, math.ceil(self.steps_per_epoch * config.num_epochs)
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _schedule(config, self.total_steps)
        )

    @property
    def log_path(self) -> Path:
        """The loss log (``loss_log.jsonl``)."""
        return self.out / LOSS_LOG_NAME

    def autocast(self) -> Any:
        """bf16 autocast when training in bf16, else nothing."""
        import torch

        if self.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return _NoOpContext()

    def restore(self, checkpoint: Path) -> None:
        """Continue from a checkpoint: adapter weights, optimizer, schedule, RNG, position."""
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(self.model, load_file(str(checkpoint / ADAPTER_WEIGHTS)))
        state = read_trainer_state(checkpoint)
        saved = state.optimizer
        saved["param_groups"] = like_groups(
            saved["param_groups"], self.optimizer.state_dict()["param_groups"]
        )
        try:
            self.optimizer.load_state_dict(saved)
            self.scheduler.load_state_dict(state.scheduler)
            torch.set_rng_state(state.torch_rng)
            random.setstate(state.python_rng)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise ConfigError(
                f"cannot resume from {checkpoint}: its trainer state does not fit this run "
                f"({type(err).__name__}: {err}); start over in a new output_dir"
            ) from None
        if self.device.type == "cuda" and state.cuda_rng is not None:
            torch.cuda.set_rng_state(state.cuda_rng, self.device)
        self.step = state.step
        self.history = list(state.history)
        log.info("resuming from %s at step %d", checkpoint, self.step)

    def record(self, entry: dict[str, Any]) -> None:
        """Append to the history and the loss log."""
        self.history.append(entry)
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")

    def evaluate(self) -> dict[str, float] | None:
        """Mean eval loss per token, overall (``all``) and per task (None without eval data)."""
        import torch

        eval_tok = self.data.eval
        if not eval_tok:
            return None
        self.model.eval()
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        size = self.config.batch_size
        with torch.no_grad():
            for i in range(0, len(eval_tok), size):
                chunk = eval_tok[i : i + size]
                batch = collate(chunk, self.data.pad_id, 1.0)
                losses, mask = token_losses(self.model, batch, self.device, self.autocast)
                for row, ex in enumerate(chunk):
                    for key in ("all", ex.task):
                        sums[key] = sums.get(key, 0.0) + float((losses[row] * mask[row]).sum())
                        counts[key] = counts.get(key, 0.0) + float(mask[row].sum())
        self.model.train()
        return {k: sums[k] / max(counts[k], 1.0) for k in sums}

    def save_checkpoint(self) -> None:
        """Write ``checkpoints/step-N`` (adapter, config, trainer state: no pickle)."""
        import torch

        def write(folder: Path) -> None:
            self.model.save_pretrained(str(folder))
            (folder / "README.md").unlink(missing_ok=True)
            self.config.save(folder)
            cuda = self.device.type == "cuda"
            state = TrainerState(
                step=self.step,
                history=self.history,
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                python_rng=random.getstate(),
                torch_rng=torch.get_rng_state(),
                cuda_rng=torch.cuda.get_rng_state(self.device) if cuda else None,
            )
            write_trainer_state(folder, state)

        save_checkpoint(self.out, self.step, self.config.save_total_limit, write)

    def micro_batches(self) -> Iterator[list[int]]:
        """Micro-batches (example indices) from the current step on, epoch after epoch."""
        config = self.config
        lengths = [len(ex.input_ids) for ex in self.data.train]
        epoch = self.step // self.steps_per_epoch
        skip = (self.step % self.steps_per_epoch) * config.gradient_accumulation
        while True:
            batches = epoch_batches(
                lengths,
                config.batch_size,
                seed=config.seed,
                epoch=epoch,
                group_by_length=config.group_by_length,
            )
            yield from batches[skip:]
            skip = 0
            epoch += 1

    def optimizer_step(self, stream: Iterator[list[int]], interval: dict[str, float]) -> None:
        """One optimizer step; the last step of an epoch takes the epoch's remaining batches."""
        import torch

        config, train_tok = self.config, self.data.train
        first = (self.step % self.steps_per_epoch) * config.gradient_accumulation
        n_micro = min(config.gradient_accumulation, self.batches_per_epoch - first)
        group = [next(stream) for _ in range(n_micro)]
        target = max(1, sum(train_tok[i].target_tokens for b in group for i in b))
        self.optimizer.zero_grad(set_to_none=True)
        for indices in group:
            batch = collate([train_tok[i] for i in indices], self.data.pad_id, config.joint_lambda)
            losses, mask = token_losses(self.model, batch, self.device, self.autocast)
            weights = batch["weights"].to(self.device).unsqueeze(1)
            weighted = (losses * mask * weights).sum() / target
            weighted.backward()
            interval["loss"] += float((losses * mask).sum().detach())
            interval["weighted"] += float(weighted.detach()) * target
            interval["tokens"] += float(mask.sum())
            self.tokens_seen += int(batch["attention_mask"].sum())
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1

    def log_interval(self, interval: dict[str, float], bar: Any) -> None:
        """Record the mean loss since the last log entry."""
        mean = interval["loss"] / max(interval["tokens"], 1.0)
        entry: dict[str, Any] = {
            "step": self.step,
            "epoch": round(self.step / self.steps_per_epoch, 4),
            "loss": round(mean, 6),
            "lr": self.scheduler.get_last_lr()[0],
        }
        if self.config.joint_lambda != 1.0:
            entry["weighted_loss"] = round(interval["weighted"] / max(interval["tokens"], 1.0), 6)
        self.record(entry)
        bar.set_postfix(loss=f"{mean:.4f}")
        log.info("step %d/%d loss %.4f", self.step, self.total_steps, mean)

    def record_eval(self) -> dict[str, float]:
        """Evaluate and record the eval losses (call only with eval data)."""
        result = self.evaluate()
        assert result is not None
        self.record(
            {
                "step": self.step,
                "epoch": round(self.step / self.steps_per_epoch, 4),
                "eval_loss": round(result["all"], 6),
                **{f"eval_loss_{k}": round(v, 6) for k, v in result.items() if k != "all"},
            }
        )
        return result


def _fresh_interval() -> dict[str, float]:
    return {"loss": 0.0, "weighted": 0.0, "tokens": 0.0}


def _run_loop(session: _Session) -> tuple[float, dict[str, float] | None]:
    """Train to ``total_steps``; returns the loop's seconds and the last eval losses."""
    import torch
    from tqdm import tqdm

    config, device = session.config, session.device
    bar = tqdm(
        total=session.total_steps,
        initial=session.step,
        desc=f"train {config.stage or 'adapter'}",
        unit="step",
        disable=not config.progress_bar,
    )
    interval = _fresh_interval()
    last_eval: dict[str, float] | None = None
    start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stream = session.micro_batches()
    try:
        while session.step < session.total_steps:
            session.optimizer_step(stream, interval)
            step = session.step
            bar.update(1)
            last = step == session.total_steps
            end_of_epoch = step % session.steps_per_epoch == 0 or last
            if step % config.logging_steps == 0 or last:
                session.log_interval(interval, bar)
                interval = _fresh_interval()
            due_eval = (step % config.eval_steps == 0) if config.eval_steps else end_of_epoch
            if session.data.eval and (due_eval or last):
                last_eval = session.record_eval()
            due_save = (step % config.save_steps == 0) if config.save_steps else end_of_epoch
            if due_save or last:
                session.save_checkpoint()
    except KeyboardInterrupt:
        session.save_checkpoint()
        log.warning("interrupted at step %d; checkpoint written, rerun with --resume", session.step)
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    if session.data.eval and last_eval is None:  # resumed at the end: report the eval loss anyway
        last_eval = session.evaluate()
    return seconds, last_eval


def _finish(
    session: _Session, base: Path, seconds: float, last_eval: dict[str, float] | None
) -> TrainResult:
    """Write the adapter (checked servable) and the summary; the run's result."""
    out, data = session.out, session.data
    session.model.save_pretrained(str(out))
    (out / "README.md").unlink(missing_ok=True)
    _fix_adapter_config(out, base)
    check_servable(out)
    losses_logged = [h["loss"] for h in session.history if "loss" in h]
    result = TrainResult(
        output_dir=out,
        steps=session.step,
        examples=len(data.train),
        dropped=data.dropped,
        first_loss=losses_logged[0] if losses_logged else None,
        final_loss=losses_logged[-1] if losses_logged else None,
        eval_loss=last_eval["all"] if last_eval else None,
        seconds=seconds,
        tokens_per_second=session.tokens_seen / seconds if seconds > 0 else 0.0,
        peak_memory_mb=_peak_memory_mb(session.device),
        history=session.history,
    )
    summary = {
        **result.to_dict(),
        "eval_examples": len(data.eval),
        "eval_dropped": data.eval_dropped,
    }
    summary["learning_rate"] = session.config.effective_learning_rate
    summary["precision"] = "bf16" if session.bf16 else "fp32"
    summary["device"] = session.device.type
    (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return result


def train(
    config: TrainConfig,
    *,
    resume: bool | str | Path = False,
    examples: Sequence[ChatExample] | None = None,
) -> TrainResult:
    """Train a LoRA adapter (see module docs) and write it to ``config.output_dir``.

    Args:
        config: The run's settings.
        resume: ``True`` resumes from the newest checkpoint in ``output_dir`` (starting fresh
            if there is none), a path resumes from that checkpoint, ``False`` starts fresh
            (and refuses to overwrite an existing adapter).
        examples: Training examples to use instead of reading ``config.train_file``.

    Returns:
        Counts, losses, time, throughput and peak memory of the run.

    Raises:
        ConfigError: Bad settings, a base model without chat template, a resume whose
            settings differ from the checkpoint's, or a checkpoint that is not one samalign
            wrote (an old pickle ``trainer_state.pt`` is refused, never unpickled).
        InputError: Unreadable or invalid training data (the line is named).
    """
    require_extra("training")
    from transformers import AutoTokenizer

    out = Path(config.output_dir).expanduser().resolve()
    checkpoint = _resume_checkpoint(config, out, resume)
    train_examples, eval_examples = _read_data(config, examples)
    base = Path(config.base_model).expanduser()
    if not (base / "config.json").is_file():
        raise ConfigError(f"base_model {base}: no config.json (a Hugging Face model folder)")
    device, bf16 = _resolve_device(config)
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(base)
    data = _tokenize_data(config, tokenizer, train_examples, eval_examples)
    model = _load_model(config, base, tokenizer, device, bf16)
    session = _Session(config=config, out=out, model=model, data=data, device=device, bf16=bf16)
    if checkpoint is not None:
        session.restore(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out)
    session.log_path.write_text(
        "".join(json.dumps(r) + "\n" for r in session.history), encoding="utf-8"
    )
    seconds, last_eval = _run_loop(session)
    return _finish(session, base, seconds, last_eval)


def enable_activation_checkpointing(model: Any) -> None:
    """Recompute activations in the backward pass (transformers 5 renamed the method)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # transformers 4.x
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _target_modules(model: Any, targets: str | list[str]) -> list[str]:
    """Module names to adapt; ``all-linear`` becomes the linear layers' short names.

    Resolving ``all-linear`` here (every ``nn.Linear`` except the output head) writes short
    names such as ``q_proj`` into ``adapter_config.json`` — the form vLLM and peft both
    expect — instead of peft's per-layer module paths.
    """
    import torch

    if targets != "all-linear":
        return list(targets)
    output = model.get_output_embeddings()
    names: dict[str, None] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not output:
            names.setdefault(name.rsplit(".", 1)[-1], None)
    if not names:
        raise ConfigError("the base model has no linear layers to adapt")
    return sorted(names)


def _fix_adapter_config(out: Path, base: Path) -> None:
    """Record the base model's absolute path in ``adapter_config.json``."""
    path = out / "adapter_config.json"
    data = json.loads(path.read_text("utf-8"))
    data["base_model_name_or_path"] = str(base.resolve())
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


__all__ = [
    "CHECKPOINTS_DIR",
    "IGNORE_INDEX",
    "LOSS_LOG_NAME",
    "SUMMARY_NAME",
    "TokenizedExample",
    "TrainResult",
    "check_servable",
    "collate",
    "enable_activation_checkpointing",
    "epoch_batches",
    "latest_checkpoint",
    "token_losses",
    "tokenize_example",
    "tokenize_examples",
    "train",
]
