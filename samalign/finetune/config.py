"""The training configuration: one dataclass, every field with help text, loaded from YAML.

Defaults are SAM-NER's Table 7 (LLaMA-Factory settings for both trained stages): LoRA r 8,
α 16, learning rate 2e-5 for the explorer and 3e-5 for the archetype classifier, cosine
schedule with 5 % warmup, 3 epochs, cutoff 1024 tokens, batch 2 × gradient accumulation 8,
bf16 where the hardware supports it. ``lora_dropout`` (not in Table 7) is LLaMA-Factory's
default 0, and the LoRA targets every linear projection (LLaMA-Factory's ``all``).

The batch is Table 7's *per device*: SAM-NER trained on 3 GPUs, so its effective batch was
2 × 8 × 3 = 48, and these defaults give 16 on one device. The default stays the per-device
setting (``gradient_accumulation: 24`` matches the paper's 48 on one device; see
``docs/finetune.md``).

The config is saved next to the adapter (``samalign-finetune.yaml``), so an adapter always
carries the settings it was trained with.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import yaml

from samalign.errors import ConfigError
from samalign.prompts.yamlfile import load_yaml, load_yaml_file
from samalign.serving.model_dir import VLLM_LORA_RANKS, VLLM_UNSERVABLE_TARGETS

CONFIG_FILE_NAME = "samalign-finetune.yaml"
"""The file the trainer writes next to the adapter."""

STAGE_LEARNING_RATES: dict[str, float] = {
    "explorer": 2e-5,
    "archetype": 3e-5,
    "direct_typing": 3e-5,
}
"""Table 7: the explorer extractor's and the archetype classifier's learning rates."""

DEFAULT_LEARNING_RATE = 2e-5
"""Learning rate for stages Table 7 does not list (the explorer's)."""

T = TypeVar("T")

EARLY_STOPPING_METRICS: tuple[str, ...] = ("eval_loss", "eval_loss_ner", "eval_loss_re")
"""Dev metrics early stopping can watch (the eval-loss keys of the loss log)."""


def option(default: T, help: str) -> T:
    """A :class:`TrainConfig` field with a default and its help text (``--help`` shows it)."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Settings of one LoRA training run (``samalign finetune train CONFIG.yaml``)."""

    base_model: str = field(
        metadata={
            "help": "Base model folder (Hugging Face format with tokenizer and chat "
            "template); the adapter is trained for, and served on, this model."
        }
    )
    train_file: str = field(
        metadata={"help": "JSONL training examples written by `samalign finetune build`."}
    )
    output_dir: str = field(
        metadata={
            "help": "Adapter folder to write (adapter_config.json, "
            "adapter_model.safetensors, this config, loss log, checkpoints/)."
        }
    )
    stage: str = option(
        "",
        "Stage the adapter serves (explorer, anchor, archetype, calibrate, "
        "relations_forward, ...); picks Table 7's learning rate when "
        "learning_rate is not set.",
    )
    eval_file: str | None = option(None, "Optional JSONL of held-out examples for eval loss.")
    init_adapter: str | None = option(
        None,
        "Start from this adapter folder's LoRA weights instead of a fresh LoRA "
        "(a curriculum's previous phase, e.g. AnchorAlign's warm-up on simple sentences); "
        "its rank and target modules must be this run's.",
    )
    eval_fraction: float = option(
        0.0,
        "Hold out this fraction of the training examples (seeded) for eval "
        "loss when eval_file is not given; 0 = no eval split.",
    )
    lora_r: int = option(8, "LoRA rank r (Table 7: 8).")
    lora_alpha: int = option(16, "LoRA scaling alpha (Table 7: 16).")
    lora_dropout: float = option(0.0, "Dropout on the LoRA input.")
    target_modules: str | list[str] = option(  # noqa: RUF009 (the default is a str)
        "all-linear",
        "Modules to adapt: 'all-linear' (every linear projection except "
        "the output head) or a list of module names (e.g. [q_proj, v_proj]).",
    )
    use_rslora: bool = option(False, "Rank-stabilised LoRA scaling alpha/sqrt(r).")
    learning_rate: float | None = option(
        None,
        "Peak learning rate; default by stage (Table 7: explorer 2e-5, "
        "archetype classifier 3e-5; other stages 2e-5).",
    )
    lr_scheduler: str = option("cosine", "Schedule after warmup: cosine, linear or constant.")
    warmup_ratio: float = option(0.05, "Fraction of optimizer steps of linear warmup.")
    weight_decay: float = option(0.0, "AdamW weight decay.")
    max_grad_norm: float = option(1.0, "Gradient clipping norm (0 = no clipping).")
    num_epochs: float = option(3.0, "Training epochs (Table 7: 3).")
    max_steps: int | None = option(
        None, "Stop after this many optimizer steps (overrides num_epochs)."
    )
    batch_size: int = option(2, "Examples per micro-batch (Table 7: 2).")
    gradient_accumulation: int = option(
        8,
        "Micro-batches per optimizer step (Table 7: 8, per device). SAM-NER "
        "trained on 3 GPUs, an effective batch of 2 x 8 x 3 = 48; the defaults give 16 "
        "on one device. Set 24 (at batch_size 2) to match the paper's effective batch "
        "on one device (docs/finetune.md).",
    )
    cutoff_len: int = option(
        1024,
        "Longest example in tokens (prompt + answer); longer examples are "
        "dropped and counted (truncating would cut the gold answer).",
    )
    group_by_length: bool = option(
        True,
        "Batch examples of similar length (less padding; see "
        "docs/benchmarks.md for the measured effect).",
    )
    joint_lambda: float = option(
        1.0,
        "λ of the joint loss L = L_NER + λ·L_RE: the loss of relation "
        "('re') examples is weighted by λ.",
    )
    sentence_groups: bool = option(
        True,
        "Keep the examples of one sentence (the same 'group', written by "
        "`finetune build joint`: its NER, forward and reverse examples) in one "
        "micro-batch, so L = L_NER + λ·L_RE is one optimisation step per sentence; a "
        "micro-batch then holds batch_size sentences (up to 3 x batch_size sequences). "
        "Examples without a group are unaffected.",
    )
    anchor_align_alpha: float = option(
        0.0,
        "α of AnchorAlign Eq. 12: weight of the NER-RE alignment term (Eq. 4-5, "
        "KL from the NER target's distributions over each entity's tokens to each "
        "relation decoder's). 0 = off. Needs grouped examples (build joint).",
    )
    anchor_align_beta: float = option(
        0.0,
        "β of AnchorAlign Eq. 12: weight of the forward-reverse alignment term "
        "(Eq. 6-7, symmetric KL between the two relation decoders' distributions over "
        "each gold triplet's tokens). 0 = off. Needs grouped examples (build joint).",
    )
    anchor_align_gamma: float = option(
        0.0,
        "γ of AnchorAlign Eq. 12: weight of negative suppression (Eq. 8-10, "
        "-log(1-p) of the sentence's prompt tokens that are in no target, over each "
        "relation decoder's target steps). 0 = off. Needs grouped examples.",
    )
    early_stopping_patience: int | None = option(
        None,
        "Stop when the dev metric has not improved for this many evaluations "
        "(eval_steps, default once per epoch) and write the best evaluation's adapter; "
        "null = train to the end. Needs eval_file or eval_fraction.",
    )
    early_stopping_metric: str = option(
        "eval_loss",
        "Dev metric of early stopping (lower is better): eval_loss (all "
        "examples), eval_loss_ner or eval_loss_re (one task's examples). A dev F1 "
        "would need generation at every evaluation; the dev loss is what is measured.",
    )
    early_stopping_min_delta: float = option(
        0.0, "An evaluation improves only if the metric drops by more than this."
    )
    precision: str = option(
        "auto", "auto (bf16 where the GPU supports it, else fp32), bf16 or fp32."
    )
    gradient_checkpointing: bool = option(
        False, "Trade compute for memory (recompute activations)."
    )
    device: str = option("auto", "auto (cuda if available, else cpu), cpu or cuda.")
    seed: int = option(42, "Seed for LoRA init, shuffling and dropout.")
    logging_steps: int = option(10, "Log the loss every this many optimizer steps.")
    eval_steps: int | None = option(
        None, "Evaluate every this many optimizer steps (default: once per epoch and at the end)."
    )
    save_steps: int | None = option(
        None,
        "Write a resumable checkpoint every this many optimizer steps "
        "(default: at the end of every epoch).",
    )
    save_total_limit: int = option(2, "Keep at most this many checkpoints (oldest removed).")
    progress_bar: bool = option(True, "Show a progress bar.")

    def __post_init__(self) -> None:
        self.validate()

    @property
    def uses_alignment(self) -> bool:
        """Whether any AnchorAlign training term is on (α, β or γ above 0)."""
        return (self.anchor_align_alpha, self.anchor_align_beta, self.anchor_align_gamma) != (
            0.0,
            0.0,
            0.0,
        )

    @property
    def effective_learning_rate(self) -> float:
        """The learning rate in use: the configured one, else Table 7's for the stage."""
        if self.learning_rate is not None:
            return self.learning_rate
        return STAGE_LEARNING_RATES.get(self.stage, DEFAULT_LEARNING_RATE)

    def validate(self) -> None:
        """Check values, including everything vLLM would refuse to serve.

        Raises:
            ConfigError: Naming the field and why.
        """
        for name in ("base_model", "train_file", "output_dir"):
            if not getattr(self, name):
                raise ConfigError(f"field {name!r} is required")
        max_rank = VLLM_LORA_RANKS[-1]
        if not 1 <= self.lora_r <= max_rank:
            raise ConfigError(
                f"field 'lora_r': {self.lora_r} cannot be served: vLLM serves LoRA ranks 1.."
                f"{max_rank} (--max-lora-rank takes {list(VLLM_LORA_RANKS)})"
            )
        targets = (
            [self.target_modules]
            if isinstance(self.target_modules, str)
            else list(self.target_modules)
        )
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise ConfigError("field 'target_modules': give 'all-linear' or module names")
        if isinstance(self.target_modules, str) and self.target_modules not in ("all-linear",):
            raise ConfigError(
                "field 'target_modules': a single string must be 'all-linear'; list module "
                "names otherwise (e.g. [q_proj, v_proj])"
            )
        bad = sorted(VLLM_UNSERVABLE_TARGETS & {t.rsplit(".", 1)[-1] for t in targets})
        if bad:
            raise ConfigError(
                f"field 'target_modules': {bad} cannot be served: vLLM does not load LoRA on "
                "embeddings or the output head (and training them would need "
                "modules_to_save, which vLLM rejects)"
            )
        positive = {
            "lora_alpha": self.lora_alpha,
            "num_epochs": self.num_epochs,
            "batch_size": self.batch_size,
            "gradient_accumulation": self.gradient_accumulation,
            "cutoff_len": self.cutoff_len,
            "logging_steps": self.logging_steps,
            "save_total_limit": self.save_total_limit,
        }
        for name, value in positive.items():
            if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
                raise ConfigError(f"field {name!r} must be > 0, got {value!r}")
        for name in ("max_steps", "eval_steps", "save_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"field {name!r} must be >= 1 or null, got {value}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ConfigError(f"field 'learning_rate' must be > 0, got {self.learning_rate}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"field 'lora_dropout' must be in [0, 1), got {self.lora_dropout}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"field 'warmup_ratio' must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"field 'eval_fraction' must be in [0, 1), got {self.eval_fraction}")
        if self.joint_lambda < 0:
            raise ConfigError(f"field 'joint_lambda' must be >= 0, got {self.joint_lambda}")
        for name in ("anchor_align_alpha", "anchor_align_beta", "anchor_align_gamma"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"field {name!r} must be a finite number >= 0, got {value}")
        if self.uses_alignment and not self.sentence_groups:
            raise ConfigError(
                "the AnchorAlign terms (anchor_align_alpha/beta/gamma) compare one sentence's "
                "examples, which sentence_groups keeps together: set sentence_groups: true"
            )
        if self.early_stopping_patience is not None:
            if self.early_stopping_patience < 1:
                raise ConfigError(
                    "field 'early_stopping_patience' must be >= 1 or null, got "
                    f"{self.early_stopping_patience}"
                )
            if not self.eval_file and self.eval_fraction <= 0:
                raise ConfigError(
                    "field 'early_stopping_patience' needs dev data: set eval_file (e.g. "
                    "`finetune build` on the dev split) or eval_fraction"
                )
        if not (
            self.early_stopping_min_delta >= 0 and math.isfinite(self.early_stopping_min_delta)
        ):
            raise ConfigError(
                "field 'early_stopping_min_delta' must be a finite number >= 0, got "
                f"{self.early_stopping_min_delta}"
            )
        choices = {
            "early_stopping_metric": EARLY_STOPPING_METRICS,
            "lr_scheduler": ("cosine", "linear", "constant"),
            "precision": ("auto", "bf16", "fp32"),
            "device": ("auto", "cpu", "cuda"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"field {name!r} must be one of {list(allowed)}, got {getattr(self, name)!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (for YAML)."""
        return dataclasses.asdict(self)

    def save(self, folder: str | Path) -> Path:
        """Write the config as commented YAML into ``folder``; returns the file path."""
        path = Path(folder) / CONFIG_FILE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config_yaml(self), encoding="utf-8")
        return path


def _field_types() -> dict[str, Any]:
    return get_type_hints(TrainConfig)


def _check_type(name: str, value: Any, annotation: Any, origin: str) -> Any:
    """Coerce YAML scalars to the field type (ints for floats, '2e-5' strings), or raise."""
    args = get_args(annotation)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{origin}: field {name!r} must not be null")
    kinds = [a for a in args if a is not type(None)] if args else [annotation]
    for kind in kinds:
        base = get_origin(kind) or kind
        if base is bool and isinstance(value, bool):
            return value
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if base is float and isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads 2e-5 as a string
            except ValueError:
                pass
        if base is str and isinstance(value, str):
            return value
        if base is list and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    wanted = " or ".join(getattr(k, "__name__", str(k)) for k in kinds)
    raise ConfigError(
        f"{origin}: field {name!r} must be {wanted}, got {type(value).__name__} {value!r}"
    )


def config_from_mapping(
    data: Any, *, origin: str = "config", base_dir: Path | None = None
) -> TrainConfig:
    """Validate a mapping (parsed YAML) into a :class:`TrainConfig`.

    Relative paths are resolved against ``base_dir`` (the config file's folder).

    Raises:
        ConfigError: Unknown or missing fields, wrong types or invalid values, naming the
            file and the field.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping of settings, got {type(data).__name__}")
    types = _field_types()
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{origin}: unknown field(s) {unknown}; known fields: {sorted(known)} "
            "(`samalign finetune config` prints them with help)"
        )
    values = {k: _check_type(k, v, types[k], origin) for k, v in data.items()}
    missing = [
        f.name
        for f in fields(TrainConfig)
        if f.default is dataclasses.MISSING and f.name not in values
    ]
    if missing:
        raise ConfigError(f"{origin}: required field(s) {missing} missing")
    if base_dir is not None:
        for name in ("base_model", "train_file", "output_dir", "eval_file", "init_adapter"):
            value = values.get(name)
            if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                values[name] = str((base_dir / value).resolve())
    try:
        return TrainConfig(**values)
    except ConfigError as err:
        raise ConfigError(f"{origin}: {err.message}") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Load a YAML training config (plus ``overrides``, e.g. from ``--set key=value``).

    Raises:
        ConfigError: The file is missing or not YAML, or a setting is invalid.
    """
    file = Path(path)
    data = load_yaml_file(file, what="config file")
    if data is None:
        data = {}
    if isinstance(data, dict) and overrides:
        data = {**data, **overrides}
    return config_from_mapping(data, origin=str(file), base_dir=file.parent.resolve())


def parse_override(item: str) -> tuple[str, Any]:
    """Parse ``key=value`` (the value read as YAML) for ``--set``.

    Raises:
        ConfigError: If it is not ``key=value``.
    """
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {item!r}")
    try:
        value = load_yaml(raw, origin=f"--set {key.strip()}") if raw.strip() else None
    except ConfigError:
        value = raw
    return key.strip(), value


def config_help() -> list[tuple[str, str, Any]]:
    """(field, help, default) for every setting, in order (MISSING default = required)."""
    out = []
    for f in fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING
        out.append((f.name, str(f.metadata.get("help", "")), default))
    return out


def config_yaml(config: TrainConfig | None = None) -> str:
    """A YAML document of the settings, each preceded by its help as a comment.

    With no config, a template: required fields as placeholders, others at their defaults.
    """
    lines = [
        "# samalign finetune training config (samalign finetune train CONFIG.yaml)",
        "# Defaults: SAM-NER Table 7. Relative paths are relative to this file.",
    ]
    values = config.to_dict() if config is not None else {}
    for name, help_text, default in config_help():
        lines.append("")
        lines.append(f"# {help_text}")
        if config is not None:
            value = values[name]
        elif default is dataclasses.MISSING:
            value = f"<{name}>"
        else:
            value = default
        dumped = yaml.safe_dump({name: value}, default_flow_style=True, width=1000).strip()
        if dumped.startswith("{") and dumped.endswith("}"):
            dumped = dumped[1:-1]
        lines.append(dumped)
    return "\n".join(lines) + "\n"


__all__ = [
    "CONFIG_FILE_NAME",
    "DEFAULT_LEARNING_RATE",
    "EARLY_STOPPING_METRICS",
    "STAGE_LEARNING_RATES",
    "VLLM_UNSERVABLE_TARGETS",
    "TrainConfig",
    "config_from_mapping",
    "config_help",
    "config_yaml",
    "load_config",
    "parse_override",
]
