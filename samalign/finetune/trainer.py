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
resized), no ``modules_to_save``, bias ``none``, a rank vLLM serves; :func:`check_servable`
verifies the written folder.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import struct
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samalign.errors import ConfigError, InputError
from samalign.finetune.builders.io import ChatExample, read_examples
from samalign.finetune.config import (
    CONFIG_FILE_NAME,
    VLLM_UNSERVABLE_TARGETS,
    TrainConfig,
    config_from_mapping,
)
from samalign.serving.launcher import VLLM_LORA_RANKS

log = logging.getLogger("samalign.finetune")

IGNORE_INDEX = -100
LOSS_LOG_NAME = "loss_log.jsonl"
SUMMARY_NAME = "training_summary.json"
CHECKPOINTS_DIR = "checkpoints"
_STATE_FILE = "trainer_state.pt"
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


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' own progress bars (weight loading, shard writing) for a while."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _require_local() -> None:
    import importlib.util

    missing = [m for m in ("torch", "transformers", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"training needs the optional 'local' dependencies (missing: {', '.join(missing)}); "
            "install them with: pip install 'samalign[local]'"
        )


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
# Servability
# ------------------------------------------------------------------------------------------


def _safetensors_names(path: Path) -> list[str]:
    with open(path, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))
    return [k for k in header if k != "__metadata__"]


def check_servable(adapter_dir: str | Path) -> None:
    """Check that an adapter folder is one vLLM and peft load unchanged.

    Checks ``adapter_config.json`` (LoRA, bias ``none``, no DoRA, no ``modules_to_save``,
    rank within vLLM's largest ``--max-lora-rank``, plain initialisation) and the weights
    (only ``lora_A``/``lora_B`` tensors: no embedding or output-head weights, which would
    mean added tokens or trained heads).

    Raises:
        ConfigError: Listing every problem.
    """
    folder = Path(adapter_dir)
    config_path = folder / "adapter_config.json"
    weights = folder / "adapter_model.safetensors"
    if not config_path.is_file() or not weights.is_file():
        raise ConfigError(
            f"{folder}: not a peft adapter folder (adapter_config.json + safetensors)"
        )
    config = json.loads(config_path.read_text("utf-8"))
    problems: list[str] = []
    if config.get("peft_type") not in (None, "LORA"):
        problems.append(f"peft_type {config.get('peft_type')!r} (vLLM serves LoRA)")
    if config.get("bias", "none") != "none":
        problems.append(f"bias={config.get('bias')!r} (vLLM needs 'none')")
    if config.get("use_dora"):
        problems.append("use_dora (vLLM does not serve DoRA)")
    if config.get("lora_bias"):
        problems.append("lora_bias (not served by vLLM)")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save={config['modules_to_save']} (vLLM rejects them)")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in ("gaussian", "eva", "orthogonal"):
        problems.append(f"init_lora_weights={init!r} changes the base weights (not servable)")
    ranks = [
        int(config.get("r", 8)),
        *(int(v) for v in (config.get("rank_pattern") or {}).values()),
    ]
    if max(ranks) > VLLM_LORA_RANKS[-1]:
        problems.append(f"rank {max(ranks)} > vLLM's largest --max-lora-rank {VLLM_LORA_RANKS[-1]}")
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    bad_targets = sorted(VLLM_UNSERVABLE_TARGETS & set(targets))
    if bad_targets:
        problems.append(f"LoRA on {bad_targets} (vLLM does not serve embedding/head LoRA)")
    names = _safetensors_names(weights)
    foreign = [n for n in names if ".lora_A." not in n and ".lora_B." not in n]
    if foreign:
        problems.append(f"non-LoRA tensors {foreign[:5]} (added tokens or trained modules)")
    if problems:
        raise ConfigError(f"adapter {folder} cannot be served by vLLM: " + "; ".join(problems))


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


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest resumable checkpoint under ``output_dir/checkpoints``, if any."""
    folder = Path(output_dir) / CHECKPOINTS_DIR
    found = sorted(
        (p for p in folder.glob("step-*") if (p / _STATE_FILE).is_file()),
        key=lambda p: int(p.name.split("-", 1)[1]),
    )
    return found[-1] if found else None


def _check_resume_config(config: TrainConfig, checkpoint: Path) -> None:
    saved_path = checkpoint / CONFIG_FILE_NAME
    if not saved_path.is_file():
        return
    import yaml

    saved = config_from_mapping(
        yaml.safe_load(saved_path.read_text("utf-8")), origin=str(saved_path)
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
        ConfigError: Bad settings, a base model without chat template, or a resume whose
            settings differ from the checkpoint's.
        InputError: Unreadable or invalid training data (the line is named).
    """
    _require_local()
    import torch
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(config.output_dir).expanduser().resolve()
    checkpoint: Path | None = None
    if resume:
        checkpoint = latest_checkpoint(out) if resume is True else Path(resume)
        if checkpoint is None and (out / "adapter_model.safetensors").exists():
            raise ConfigError(
                f"{out} holds a finished adapter and no checkpoint to resume from; choose "
                "another output_dir to train again"
            )
        if checkpoint is not None:
            if not (checkpoint / _STATE_FILE).is_file():
                raise ConfigError(f"{checkpoint} is not a samalign training checkpoint")
            _check_resume_config(config, checkpoint)
    elif (out / "adapter_model.safetensors").exists() or latest_checkpoint(out) is not None:
        raise ConfigError(
            f"{out} already holds an adapter or checkpoints; pass --resume to continue, or "
            "choose another output_dir"
        )

    all_examples = list(examples) if examples is not None else read_examples(config.train_file)
    if not all_examples:
        raise InputError(f"{config.train_file}: no training examples")
    train_examples, eval_examples = _split_eval(config, all_examples)
    stages = sorted({ex.stage for ex in train_examples if ex.stage})
    if config.stage and stages and stages != [config.stage]:
        log.warning("training adapter %r on examples of stages %s", config.stage, stages)

    base = Path(config.base_model).expanduser()
    if not (base / "config.json").is_file():
        raise ConfigError(f"base_model {base}: no config.json (a Hugging Face model folder)")
    device, bf16 = _resolve_device(config)
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(base)
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
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=config.effective_learning_rate, weight_decay=config.weight_decay
    )
    lengths = [len(ex.input_ids) for ex in train_tok]
    batches_per_epoch = math.ceil(len(train_tok) / config.batch_size)
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / config.gradient_accumulation))
    total_steps = config.max_steps or max(1, math.ceil(steps_per_epoch * config.num_epochs))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, total_steps))
    autocast: Callable[[], Any] = (
        (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16))
        if bf16
        else _NoOpContext
    )

    step = 0
    history: list[dict[str, Any]] = []
    if checkpoint is not None:
        set_peft_model_state_dict(model, load_file(str(checkpoint / "adapter_model.safetensors")))
        state = torch.load(checkpoint / _STATE_FILE, weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        step = int(state["step"])
        history = list(state["history"])
        log.info("resuming from %s at step %d", checkpoint, step)

    out.mkdir(parents=True, exist_ok=True)
    config.save(out)
    log_path = out / LOSS_LOG_NAME
    log_path.write_text("".join(json.dumps(r) + "\n" for r in history), encoding="utf-8")

    def evaluate() -> dict[str, float] | None:
        if not eval_tok:
            return None
        model.eval()
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        with torch.no_grad():
            for i in range(0, len(eval_tok), config.batch_size):
                chunk = eval_tok[i : i + config.batch_size]
                losses, mask = token_losses(model, collate(chunk, pad_id, 1.0), device, autocast)
                for row, ex in enumerate(chunk):
                    for key in ("all", ex.task):
                        sums[key] = sums.get(key, 0.0) + float((losses[row] * mask[row]).sum())
                        counts[key] = counts.get(key, 0.0) + float(mask[row].sum())
        model.train()
        return {k: sums[k] / max(counts[k], 1.0) for k in sums}

    def record(entry: dict[str, Any]) -> None:
        history.append(entry)
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")

    def save_checkpoint() -> None:
        folder = out / CHECKPOINTS_DIR / f"step-{step:06d}"
        tmp = folder.with_name(folder.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(str(tmp))
        (tmp / "README.md").unlink(missing_ok=True)
        config.save(tmp)
        torch.save(
            {
                "step": step,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "history": history,
            },
            tmp / _STATE_FILE,
        )
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        kept = sorted(
            (p for p in (out / CHECKPOINTS_DIR).glob("step-*") if p.is_dir()),
            key=lambda p: int(p.name.split("-", 1)[1].split(".")[0]),
        )
        for old in kept[: max(0, len(kept) - config.save_total_limit)]:
            shutil.rmtree(old, ignore_errors=True)

    from tqdm import tqdm

    bar = tqdm(
        total=total_steps,
        initial=step,
        desc=f"train {config.stage or 'adapter'}",
        unit="step",
        disable=not config.progress_bar,
    )
    interval: dict[str, float] = {"loss": 0.0, "weighted": 0.0, "tokens": 0.0}
    tokens_seen = 0
    last_eval: dict[str, float] | None = None
    start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def micro_batches(from_step: int) -> Iterator[list[int]]:
        epoch = from_step // steps_per_epoch
        skip = (from_step % steps_per_epoch) * config.gradient_accumulation
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

    stream = micro_batches(step)
    try:
        while step < total_steps:
            # one optimizer step; the last step of an epoch takes the epoch's remaining batches
            first = (step % steps_per_epoch) * config.gradient_accumulation
            n_micro = min(config.gradient_accumulation, batches_per_epoch - first)
            group = [next(stream) for _ in range(n_micro)]
            target = max(1, sum(train_tok[i].target_tokens for b in group for i in b))
            optimizer.zero_grad(set_to_none=True)
            for indices in group:
                batch = collate([train_tok[i] for i in indices], pad_id, config.joint_lambda)
                losses, mask = token_losses(model, batch, device, autocast)
                weights = batch["weights"].to(device).unsqueeze(1)
                weighted = (losses * mask * weights).sum() / target
                weighted.backward()
                interval["loss"] += float((losses * mask).sum().detach())
                interval["weighted"] += float(weighted.detach()) * target
                interval["tokens"] += float(mask.sum())
                tokens_seen += int(batch["attention_mask"].sum())
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            bar.update(1)
            last = step == total_steps
            end_of_epoch = step % steps_per_epoch == 0 or last
            epoch_now = round(step / steps_per_epoch, 4)
            if step % config.logging_steps == 0 or last:
                mean = interval["loss"] / max(interval["tokens"], 1.0)
                entry: dict[str, Any] = {
                    "step": step,
                    "epoch": epoch_now,
                    "loss": round(mean, 6),
                    "lr": scheduler.get_last_lr()[0],
                }
                if config.joint_lambda != 1.0:
                    entry["weighted_loss"] = round(
                        interval["weighted"] / max(interval["tokens"], 1.0), 6
                    )
                record(entry)
                bar.set_postfix(loss=f"{mean:.4f}")
                log.info("step %d/%d loss %.4f", step, total_steps, mean)
                interval = {"loss": 0.0, "weighted": 0.0, "tokens": 0.0}
            due_eval = (step % config.eval_steps == 0) if config.eval_steps else end_of_epoch
            if eval_tok and (due_eval or last):
                last_eval = evaluate()
                assert last_eval is not None
                record(
                    {
                        "step": step,
                        "epoch": epoch_now,
                        "eval_loss": round(last_eval["all"], 6),
                        **{
                            f"eval_loss_{k}": round(v, 6)
                            for k, v in last_eval.items()
                            if k != "all"
                        },
                    }
                )
            due_save = (step % config.save_steps == 0) if config.save_steps else end_of_epoch
            if due_save or last:
                save_checkpoint()
    except KeyboardInterrupt:
        save_checkpoint()
        log.warning("interrupted at step %d; checkpoint written, rerun with --resume", step)
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    if eval_tok and last_eval is None:  # resumed at the end: report the eval loss anyway
        last_eval = evaluate()

    model.save_pretrained(str(out))
    (out / "README.md").unlink(missing_ok=True)
    _fix_adapter_config(out, base)
    check_servable(out)
    losses_logged = [h["loss"] for h in history if "loss" in h]
    result = TrainResult(
        output_dir=out,
        steps=step,
        examples=len(train_tok),
        dropped=dropped,
        first_loss=losses_logged[0] if losses_logged else None,
        final_loss=losses_logged[-1] if losses_logged else None,
        eval_loss=last_eval["all"] if last_eval else None,
        seconds=seconds,
        tokens_per_second=tokens_seen / seconds if seconds > 0 else 0.0,
        peak_memory_mb=_peak_memory_mb(device),
        history=history,
    )
    summary = {**result.to_dict(), "eval_examples": len(eval_tok), "eval_dropped": eval_dropped}
    summary["learning_rate"] = config.effective_learning_rate
    summary["precision"] = "bf16" if bf16 else "fp32"
    summary["device"] = device.type
    (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return result


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
    "quiet_transformers",
    "token_losses",
    "tokenize_example",
    "tokenize_examples",
    "train",
]
