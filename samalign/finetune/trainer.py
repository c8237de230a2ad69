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
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samalign.errors import ConfigError, InputError
from samalign.finetune.alignment import (
    TERMS,
    AlignmentWeights,
    GroupPlan,
    Member,
    alignment_terms,
    group_plan,
    weighted_sum,
)
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
BEST_DIR = "best"
"""With early stopping: the best evaluation's adapter, kept while training runs."""
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
    """An example as token ids: ``labels`` is ``-100`` on the prompt tokens.

    ``stage``, ``group`` and ``answer_offsets`` serve the sentence groups and the AnchorAlign
    terms: ``answer_offsets`` gives, per completion token, its characters relative to the
    answer's start (``None`` unless asked for).
    """

    input_ids: list[int]
    labels: list[int]
    task: str
    id: str
    stage: str = ""
    group: str = ""
    answer_offsets: tuple[tuple[int, int], ...] | None = None

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
        stopped_early: Whether early stopping ended the run before ``total_steps``.
        best_step: With early stopping: the step of the best evaluation (its adapter is the
            one written).
        best_metric: With early stopping: the best value of ``early_stopping_metric``.
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
    stopped_early: bool = False
    best_step: int | None = None
    best_metric: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the history; early stopping's fields when it ran)."""
        early = (
            {
                "stopped_early": self.stopped_early,
                "best_step": self.best_step,
                "best_metric": self.best_metric,
            }
            if self.best_step is not None
            else {}
        )
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
            **early,
        }


# ------------------------------------------------------------------------------------------
# Tokenisation
# ------------------------------------------------------------------------------------------


def _ids(tokenizer: Any, text: str) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [int(i) for i in ids]


def tokenize_example(
    tokenizer: Any, example: ChatExample, *, offsets: bool = False
) -> TokenizedExample:
    """Tokenise one example with the chat template; mask the prompt (see module docs).

    Args:
        tokenizer: The base model's tokenizer.
        example: The example.
        offsets: Also record where each completion token is in the answer (needed by the
            AnchorAlign terms; a fast tokenizer is required).

    Raises:
        ConfigError: The tokenizer has no chat template, the template does not render the
            generation prompt as a prefix of the conversation, or the answer's end has no
            eos token; with ``offsets``, a tokenizer that cannot give offsets.
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
    completion = full_text[len(prompt_text) :]
    answer_offsets: tuple[tuple[int, int], ...] | None = None
    if offsets:
        completion_ids, answer_offsets = _ids_with_offsets(tokenizer, completion, example)
    else:
        completion_ids = _ids(tokenizer, completion)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigError("the tokenizer has no eos token; the model could not learn to stop")
    if eos not in completion_ids:
        completion_ids.append(int(eos))
        if answer_offsets is not None:
            answer_offsets = (*answer_offsets, (0, 0))
    return TokenizedExample(
        input_ids=prompt_ids + completion_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + completion_ids,
        task=example.task,
        id=example.id,
        stage=example.stage,
        group=example.group,
        answer_offsets=answer_offsets,
    )


def _ids_with_offsets(
    tokenizer: Any, completion: str, example: ChatExample
) -> tuple[list[int], tuple[tuple[int, int], ...] | None]:
    """Completion ids and, per token, its characters relative to the answer's start."""
    try:
        encoded = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:
        raise ConfigError(
            "the AnchorAlign terms need token offsets, which this (slow) tokenizer cannot "
            "give; use the model's fast tokenizer (tokenizer.json)"
        ) from None
    ids = [int(i) for i in encoded["input_ids"]]
    start = completion.find(example.answer)
    if start < 0:  # the template changed the answer text: no alignment for this example
        return ids, None
    return ids, tuple((a - start, b - start) for a, b in encoded["offset_mapping"])


def tokenize_examples(
    tokenizer: Any, examples: Sequence[ChatExample], cutoff_len: int, *, offsets: bool = False
) -> tuple[list[TokenizedExample], int]:
    """Tokenise examples; drop those longer than ``cutoff_len`` (returns the dropped count)."""
    kept: list[TokenizedExample] = []
    dropped = 0
    for ex in examples:
        tok = tokenize_example(tokenizer, ex, offsets=offsets)
        if len(tok.input_ids) > cutoff_len:
            dropped += 1
            continue
        kept.append(tok)
    return kept, dropped


# ------------------------------------------------------------------------------------------
# Batching
# ------------------------------------------------------------------------------------------


def sentence_groups(groups: Sequence[str], enabled: bool = True) -> list[list[int]]:
    """Example indices grouped by sentence: one unit per ``group``, in first-appearance order.

    An example without a group (``""``), or every example when ``enabled`` is False, is a unit
    of its own.
    """
    units: list[list[int]] = []
    index: dict[str, int] = {}
    for i, group in enumerate(groups):
        if enabled and group:
            if group in index:
                units[index[group]].append(i)
                continue
            index[group] = len(units)
        units.append([i])
    return units


def epoch_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    group_by_length: bool,
    units: Sequence[Sequence[int]] | None = None,
) -> list[list[int]]:
    """The micro-batches of one epoch as lists of example indices (deterministic).

    Without grouping: a seeded permutation cut into batches. With grouping: the permutation
    is cut into mega-batches of 64 batches, each sorted by length (longest first) and cut
    into batches, and the batch order is shuffled, so a batch holds examples of similar
    length (less padding) while the epoch stays random.

    With ``units`` (:func:`sentence_groups`) the same is done with units instead of examples
    (a unit's length is its longest example's): a batch holds ``batch_size`` whole units, so a
    sentence's examples always share a micro-batch. Units of one example give exactly the
    batches without ``units``.
    """
    if units is not None:
        unit_lengths = [max(lengths[i] for i in unit) for unit in units]
        unit_batches = epoch_batches(
            unit_lengths, batch_size, seed=seed, epoch=epoch, group_by_length=group_by_length
        )
        return [[i for u in batch for i in units[u]] for batch in unit_batches]
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


def forward_logits(model: Any, batch: dict[str, Any], device: Any, autocast: Any) -> Any:
    """The micro-batch's logits (rows × positions × vocabulary), unshifted."""
    input_ids = batch["input_ids"].to(device)
    attention = batch["attention_mask"].to(device)
    with autocast():
        return model(input_ids=input_ids, attention_mask=attention).logits


def token_losses(model: Any, batch: dict[str, Any], device: Any, autocast: Any) -> tuple[Any, Any]:
    """Per-token cross-entropy (rows × positions) and the target mask, shifted for causal LM."""
    return logit_losses(forward_logits(model, batch, device, autocast), batch, device)


def logit_losses(logits: Any, batch: dict[str, Any], device: Any) -> tuple[Any, Any]:
    """:func:`token_losses` from logits already computed."""
    import torch
    import torch.nn.functional as F

    labels = batch["labels"].to(device)
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


@dataclass
class MicroBatchLoss:
    """One micro-batch's loss and its parts.

    Attributes:
        total: What is backpropagated: ``weighted`` plus the AnchorAlign terms.
        weighted: The completion-only cross-entropy, ``re`` rows weighted by λ, summed over
            the micro-batch's target tokens and divided by the optimizer step's.
        losses: Per-token cross-entropy (rows × positions).
        mask: The target mask of ``losses``.
        terms: Per AnchorAlign term, its value in each sentence of the micro-batch that has
            it (floats, for the log).
    """

    total: Any
    weighted: Any
    losses: Any
    mask: Any
    terms: dict[str, list[float]] = field(default_factory=dict)


def micro_batch_loss(
    model: Any,
    batch: dict[str, Any],
    device: Any,
    autocast: Any,
    *,
    target: int,
    alignment: AlignmentWeights | None = None,
    plans: Sequence[tuple[GroupPlan, Sequence[int]]] = (),
    sentences: int = 1,
) -> MicroBatchLoss:
    """The loss of one micro-batch of an optimizer step.

    ``L = L_NER + λ·L_RE`` as token-level cross-entropy normalised over the step's ``target``
    tokens (the joint-loss paper's Eq. 3, AnchorAlign's L_Gen of Eq. 11), plus, when
    ``alignment`` has a weight on, AnchorAlign's Eq. 12 terms: each sentence's
    ``α·L_NER-RE + β·L_RE-Align + γ·L_suppress`` divided by the step's number of
    ``sentences``, so the step adds the terms' mean over its sentences (a sentence without
    a term counts as 0 for it, as in AnchorAlign's Appendix C). With every weight 0 the
    result is exactly the cross-entropy (no term is computed).

    Args:
        model: The model (peft).
        batch: A :func:`collate` micro-batch.
        device: The device.
        autocast: The autocast context factory.
        target: Target tokens of the whole optimizer step.
        alignment: α, β, γ (``None``: off).
        plans: The alignment plan and micro-batch rows of each sentence in the micro-batch.
        sentences: Sentences in the whole optimizer step.
    """
    logits = forward_logits(model, batch, device, autocast)
    losses, mask = logit_losses(logits, batch, device)
    weights = batch["weights"].to(device).unsqueeze(1)
    weighted = (losses * mask * weights).sum() / target
    total = weighted
    terms: dict[str, list[float]] = {}
    if alignment is not None and alignment.active:
        for plan, rows in plans:
            found = alignment_terms(logits, rows, plan, alignment)
            if found:
                total = total + weighted_sum(found, alignment) / max(1, sentences)
            for name, value in found.items():
                terms.setdefault(name, []).append(float(value.detach()))
    return MicroBatchLoss(total=total, weighted=weighted, losses=losses, mask=mask, terms=terms)


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
    # whole sentences are held out (units of one example: the plain seeded split)
    units = sentence_groups([ex.group for ex in examples], config.sentence_groups)
    order = list(range(len(units)))
    random.Random(config.seed).shuffle(order)
    n_eval = max(1, round(config.eval_fraction * len(units)))
    if n_eval >= len(units):
        raise ConfigError(
            f"eval_fraction {config.eval_fraction} leaves no training examples "
            f"({len(examples)} in total)"
        )
    held = {i for u in order[:n_eval] for i in units[u]}
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
    """Tokenised examples of a run, their sentence units and the units' alignment plans."""

    train: list[TokenizedExample]
    eval: list[TokenizedExample]
    dropped: int
    eval_dropped: int
    pad_id: int
    units: list[list[int]] = field(default_factory=list)
    eval_units: list[list[int]] = field(default_factory=list)
    plans: list[GroupPlan | None] = field(default_factory=list)
    eval_plans: list[GroupPlan | None] = field(default_factory=list)
    unit_of: list[int] = field(default_factory=list)


def _plans(
    config: TrainConfig,
    units: Sequence[Sequence[int]],
    tokens: Sequence[TokenizedExample],
    examples: Sequence[ChatExample],
) -> list[GroupPlan | None]:
    """Each unit's alignment plan (``None`` for all when the AnchorAlign terms are off).

    ``tokens[i]`` is the tokenised ``examples[i]``.
    """
    if not config.uses_alignment:
        return [None] * len(units)
    plans: list[GroupPlan | None] = []
    for unit in units:
        members = [
            Member(
                stage=tokens[i].stage,
                task=tokens[i].task,
                input_ids=tokens[i].input_ids,
                labels=tokens[i].labels,
                answer=examples[i].answer,
                offsets=tokens[i].answer_offsets,
            )
            for i in unit
        ]
        plan = group_plan(members) if len(members) > 1 else None
        plans.append(plan if plan is not None and not plan.empty else None)
    return plans


def _kept(
    tokenizer: Any, examples: Sequence[ChatExample], config: TrainConfig
) -> tuple[list[TokenizedExample], list[ChatExample], int]:
    """Tokenised examples within the cutoff, the examples they came from, the dropped count."""
    tokens: list[TokenizedExample] = []
    kept: list[ChatExample] = []
    for ex in examples:
        tok = tokenize_example(tokenizer, ex, offsets=config.uses_alignment)
        if len(tok.input_ids) <= config.cutoff_len:
            tokens.append(tok)
            kept.append(ex)
    return tokens, kept, len(examples) - len(kept)


def _tokenize_data(
    config: TrainConfig,
    tokenizer: Any,
    train_examples: list[ChatExample],
    eval_examples: list[ChatExample],
) -> _Data:
    train_tok, train_kept, dropped = _kept(tokenizer, train_examples, config)
    eval_tok, eval_kept, eval_dropped = _kept(tokenizer, eval_examples, config)
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
    units = sentence_groups([t.group for t in train_tok], config.sentence_groups)
    eval_units = sentence_groups([t.group for t in eval_tok], config.sentence_groups)
    plans = _plans(config, units, train_tok, train_kept)
    if config.uses_alignment and not any(plans):
        raise ConfigError(
            "anchor_align_alpha/beta/gamma are set but no training sentence has an NER and a "
            "relation example to align: build the data with `samalign finetune build joint` "
            "(it groups each sentence's NER, forward and reverse examples)"
        )
    unit_of = [0] * len(train_tok)
    for u, unit in enumerate(units):
        for i in unit:
            unit_of[i] = u
    return _Data(
        train_tok,
        eval_tok,
        dropped,
        eval_dropped,
        pad_id,
        units=units,
        eval_units=eval_units,
        plans=plans,
        eval_plans=_plans(config, eval_units, eval_tok, eval_kept),
        unit_of=unit_of,
    )


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
    if config.init_adapter:
        _load_init_adapter(model, Path(config.init_adapter).expanduser(), config)
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
    stopped_early: bool = False

    def __post_init__(self) -> None:
        import torch

        config = self.config
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=config.effective_learning_rate, weight_decay=config.weight_decay
        )
        self.batches_per_epoch = math.ceil(len(self.data.units) / config.batch_size)
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

    @property
    def alignment(self) -> AlignmentWeights:
        """α, β, γ of the AnchorAlign terms."""
        c = self.config
        return AlignmentWeights(c.anchor_align_alpha, c.anchor_align_beta, c.anchor_align_gamma)

    def evaluate(self) -> dict[str, float] | None:
        """Mean eval loss per token, overall (``all``) and per task (None without eval data).

        With the AnchorAlign terms on, also each term's mean over the dev sentences that have
        it (keys ``align_<term>``; AnchorAlign's Appendix C plots them on dev).
        """
        import torch

        eval_tok, data = self.data.eval, self.data
        if not eval_tok:
            return None
        self.model.eval()
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        size = self.config.batch_size
        weights = self.alignment
        with torch.no_grad():
            for u in range(0, len(data.eval_units), size):
                units = range(u, min(u + size, len(data.eval_units)))
                indices = [i for k in units for i in data.eval_units[k]]
                chunk = [eval_tok[i] for i in indices]
                batch = collate(chunk, data.pad_id, 1.0)
                logits = forward_logits(self.model, batch, self.device, self.autocast)
                losses, mask = logit_losses(logits, batch, self.device)
                for row, ex in enumerate(chunk):
                    for key in ("all", ex.task):
                        sums[key] = sums.get(key, 0.0) + float((losses[row] * mask[row]).sum())
                        counts[key] = counts.get(key, 0.0) + float(mask[row].sum())
                for k in units:
                    plan = data.eval_plans[k]
                    if plan is None:
                        continue
                    rows = [indices.index(i) for i in data.eval_units[k]]
                    for name, value in alignment_terms(logits, rows, plan, weights).items():
                        key = f"align_{name}"
                        sums[key] = sums.get(key, 0.0) + float(value)
                        counts[key] = counts.get(key, 0.0) + 1.0
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
        """Micro-batches (example indices) from the current step on, epoch after epoch.

        A micro-batch holds ``batch_size`` sentence units (:func:`sentence_groups`).
        """
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
                units=self.data.units,
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
        weights = self.alignment
        sentences = len({self.data.unit_of[i] for b in group for i in b})
        self.optimizer.zero_grad(set_to_none=True)
        for indices in group:
            batch = collate([train_tok[i] for i in indices], self.data.pad_id, config.joint_lambda)
            plans = self.batch_plans(indices) if weights.active else []
            loss = micro_batch_loss(
                self.model,
                batch,
                self.device,
                self.autocast,
                target=target,
                alignment=weights,
                plans=plans,
                sentences=sentences,
            )
            loss.total.backward()
            interval["loss"] += float((loss.losses * loss.mask).sum().detach())
            interval["weighted"] += float(loss.weighted.detach()) * target
            interval["tokens"] += float(loss.mask.sum())
            for name, values in loss.terms.items():
                interval[f"align_{name}"] = interval.get(f"align_{name}", 0.0) + sum(values)
                interval[f"align_{name}_n"] = interval.get(f"align_{name}_n", 0.0) + len(values)
            self.tokens_seen += int(batch["attention_mask"].sum())
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1

    def early_stopping_check(self) -> bool:
        """After an evaluation: keep the best adapter; whether patience has run out."""
        config = self.config
        if config.early_stopping_patience is None:
            return False
        _, best_step, since = early_stopping_state(
            self.history, config.early_stopping_metric, config.early_stopping_min_delta
        )
        if best_step == self.step:
            self.model.save_pretrained(str(self.out / BEST_DIR))
            (self.out / BEST_DIR / "README.md").unlink(missing_ok=True)
        if since >= config.early_stopping_patience:
            self.stopped_early = True
            log.info(
                "early stopping at step %d: %s has not improved for %d evaluations (best at "
                "step %s)",
                self.step,
                config.early_stopping_metric,
                since,
                best_step,
            )
            return True
        return False

    def batch_plans(self, indices: Sequence[int]) -> list[tuple[GroupPlan, list[int]]]:
        """The alignment plans of the sentences in a micro-batch, with their members' rows."""
        data = self.data
        out: list[tuple[GroupPlan, list[int]]] = []
        for u in dict.fromkeys(data.unit_of[i] for i in indices):
            plan = data.plans[u]
            if plan is not None:
                out.append((plan, [indices.index(i) for i in data.units[u]]))
        return out

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
        for name in TERMS:
            n = interval.get(f"align_{name}_n", 0.0)
            if n:
                entry[f"align_{name}"] = round(interval[f"align_{name}"] / n, 6)
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
                **{
                    (f"eval_{k}" if k.startswith("align_") else f"eval_loss_{k}"): round(v, 6)
                    for k, v in result.items()
                    if k != "all"
                },
            }
        )
        return result


def _fresh_interval() -> dict[str, float]:
    return {"loss": 0.0, "weighted": 0.0, "tokens": 0.0}


def early_stopping_state(
    history: Sequence[dict[str, Any]], metric: str, min_delta: float = 0.0
) -> tuple[float | None, int | None, int]:
    """Early stopping's state from the loss log: ``(best value, its step, evaluations since)``.

    An evaluation improves when ``metric`` drops below the best so far by more than
    ``min_delta``. Read from the log (not kept apart), so a resumed run continues exactly.
    """
    best: float | None = None
    best_step: int | None = None
    since = 0
    for entry in history:
        value = entry.get(metric) if "eval_loss" in entry else None
        if value is None:
            continue
        if best is None or value < best - min_delta:
            best, best_step, since = float(value), int(entry["step"]), 0
        else:
            since += 1
    return best, best_step, since


def _run_loop(session: _Session) -> tuple[float, dict[str, float] | None]:
    """Train to ``total_steps`` (or until early stopping); the loop's seconds, last eval."""
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
            stop = False
            if session.data.eval and (due_eval or last):
                last_eval = session.record_eval()
                stop = session.early_stopping_check()
            due_save = (step % config.save_steps == 0) if config.save_steps else end_of_epoch
            if due_save or last or stop:
                session.save_checkpoint()
            if stop:
                break
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
    """Write the adapter (checked servable) and the summary; the run's result.

    With early stopping the adapter written is the best evaluation's (``best/``, then
    removed).
    """
    out, data, config = session.out, session.data, session.config
    best_value, best_step = None, None
    if config.early_stopping_patience is not None:
        best_value, best_step, _ = early_stopping_state(
            session.history, config.early_stopping_metric, config.early_stopping_min_delta
        )
        best = out / BEST_DIR / ADAPTER_WEIGHTS
        if best.is_file():
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(session.model, load_file(str(best)))
            shutil.rmtree(out / BEST_DIR)
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
        stopped_early=session.stopped_early,
        best_step=best_step,
        best_metric=best_value,
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
    _check_early_stopping(config, data)
    model = _load_model(config, base, tokenizer, device, bf16)
    session = _Session(config=config, out=out, model=model, data=data, device=device, bf16=bf16)
    if checkpoint is not None:
        session.restore(checkpoint)
    else:
        shutil.rmtree(out / BEST_DIR, ignore_errors=True)  # a fresh run's best is its own
    out.mkdir(parents=True, exist_ok=True)
    config.save(out)
    session.log_path.write_text(
        "".join(json.dumps(r) + "\n" for r in session.history), encoding="utf-8"
    )
    seconds, last_eval = _run_loop(session)
    return _finish(session, base, seconds, last_eval)


def _load_init_adapter(model: Any, folder: Path, config: TrainConfig) -> None:
    """Load an earlier adapter's LoRA weights into the fresh LoRA (``init_adapter``).

    Raises:
        ConfigError: Not an adapter folder, or its rank or target modules differ.
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    weights, settings = folder / ADAPTER_WEIGHTS, folder / "adapter_config.json"
    if not weights.is_file() or not settings.is_file():
        raise ConfigError(
            f"init_adapter {folder}: not an adapter folder (it needs {ADAPTER_WEIGHTS} and "
            "adapter_config.json)"
        )
    saved = json.loads(settings.read_text("utf-8"))
    ours = model.peft_config["default"]
    if saved.get("r") != ours.r or sorted(saved.get("target_modules") or []) != sorted(
        ours.target_modules
    ):
        raise ConfigError(
            f"init_adapter {folder}: rank {saved.get('r')} on {saved.get('target_modules')} "
            f"does not fit this run's rank {ours.r} on {sorted(ours.target_modules)}; set "
            "lora_r and target_modules as the earlier phase had them"
        )
    state = load_file(str(weights))
    expected = set(get_peft_model_state_dict(model))
    if set(state) != expected:
        raise ConfigError(
            f"init_adapter {folder}: its weights are not this model's LoRA "
            f"({len(set(state) ^ expected)} keys differ); was it trained on {config.base_model}?"
        )
    set_peft_model_state_dict(model, state)


def _check_early_stopping(config: TrainConfig, data: _Data) -> None:
    """Refuse an early-stopping metric the dev data cannot give."""
    if config.early_stopping_patience is None:
        return
    if not data.eval:
        raise ConfigError(
            "early_stopping_patience needs dev examples, and none is left within cutoff_len"
        )
    task = config.early_stopping_metric.removeprefix("eval_loss").removeprefix("_")
    if task and not any(ex.task == task for ex in data.eval):
        raise ConfigError(
            f"early_stopping_metric {config.early_stopping_metric!r}: the dev data has no "
            f"{task!r} examples; use eval_loss"
        )


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
