"""Training config: Table 7 defaults, YAML loading with clear errors, vLLM-servable settings."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import yaml

from samalign.cli import main
from samalign.errors import ConfigError
from samalign.finetune.config import (
    CONFIG_FILE_NAME,
    TrainConfig,
    config_from_mapping,
    config_help,
    config_yaml,
    load_config,
    parse_override,
)
from samalign.finetune.trainer import _schedule, check_servable, epoch_batches

RaisesMentioning = Callable[..., AbstractContextManager[None]]
REQUIRED = {"base_model": "/m", "train_file": "/t.jsonl", "output_dir": "/o"}


def test_defaults_are_table_7() -> None:
    c = TrainConfig(**REQUIRED)
    assert (c.lora_r, c.lora_alpha, c.warmup_ratio, c.num_epochs) == (8, 16, 0.05, 3.0)
    assert (c.batch_size, c.gradient_accumulation, c.cutoff_len) == (2, 8, 1024)
    assert c.lr_scheduler == "cosine" and c.precision == "auto"
    assert TrainConfig(**REQUIRED, stage="explorer").effective_learning_rate == 2e-5
    assert TrainConfig(**REQUIRED, stage="archetype").effective_learning_rate == 3e-5
    assert TrainConfig(
        **REQUIRED, stage="archetype", learning_rate=1e-4
    ).effective_learning_rate == (1e-4)


def test_every_field_has_help() -> None:
    assert config_help()
    for name, help_text, _ in config_help():
        assert len(help_text) > 10, name


def test_template_round_trips(tmp_path: Path) -> None:
    text = config_yaml()
    assert "# LoRA rank r (Table 7: 8)." in text
    data = yaml.safe_load(text)
    data.update(base_model="base", train_file="train.jsonl", output_dir="out")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    assert config.base_model == str(tmp_path / "base")  # relative to the config file
    assert config.output_dir == str(tmp_path / "out")
    saved = config.save(tmp_path / "adapter")
    assert saved.name == CONFIG_FILE_NAME
    assert load_config(saved) == config


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"lora_rank": 8}, "unknown field(s) ['lora_rank']"),
        ({"lora_r": "eight"}, "field 'lora_r' must be int"),
        ({"lora_r": 1024}, "vLLM serves LoRA ranks 1..512"),
        ({"lora_r": 0}, "cannot be served"),
        ({"target_modules": ["q_proj", "lm_head"]}, "['lm_head'] cannot be served"),
        ({"target_modules": "q_proj"}, "a single string must be 'all-linear'"),
        ({"lr_scheduler": "polynomial"}, "field 'lr_scheduler' must be one of"),
        ({"precision": "fp16"}, "field 'precision' must be one of"),
        ({"batch_size": 0}, "field 'batch_size' must be > 0"),
        ({"warmup_ratio": 1.5}, "field 'warmup_ratio' must be in [0, 1)"),
        ({"max_steps": 0}, "field 'max_steps' must be >= 1"),
        ({"joint_lambda": -1}, "field 'joint_lambda' must be >= 0"),
        ({"seed": None}, "field 'seed' must not be null"),
    ],
)
def test_bad_settings_name_the_field(
    tmp_path: Path, raises_mentioning: RaisesMentioning, changes: dict[str, object], fragment: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**REQUIRED, **changes}))
    with raises_mentioning(ConfigError, fragment, str(path)):
        load_config(path)


def test_missing_required_and_yaml_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("base_model: x\n")
    with pytest.raises(ConfigError, match=r"required field\(s\) \['train_file', 'output_dir'\]"):
        load_config(path)
    path.write_text("base_model: [x\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_scientific_notation_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(REQUIRED) + "learning_rate: 2e-5\n")
    assert load_config(path).learning_rate == 2e-5  # YAML 1.1 reads 2e-5 as a string
    config = load_config(path, dict([parse_override("max_steps=7"), parse_override("stage=x")]))
    assert (config.max_steps, config.stage) == (7, "x")
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("max_steps")
    assert config_from_mapping({**REQUIRED, "lora_alpha": 32}).lora_alpha == 32


def test_cli_config_prints_the_template(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["finetune", "config"]) == 0
    assert "gradient_accumulation: 8" in capsys.readouterr().out


def test_cosine_schedule_with_warmup() -> None:
    config = TrainConfig(**REQUIRED)
    factor = _schedule(config, 100)
    values = [factor(s) for s in range(100)]
    assert values[0] < values[4] < 1.0  # 5 warmup steps
    assert values[5] == pytest.approx(1.0)
    assert values[-1] < 0.01
    assert all(a >= b for a, b in itertools.pairwise(values[5:]))


def test_length_grouped_batches_are_deterministic_permutations() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(10, 1000) for _ in range(1000)]
    a = epoch_batches(lengths, 4, seed=1, epoch=0, group_by_length=True)
    assert a == epoch_batches(lengths, 4, seed=1, epoch=0, group_by_length=True)
    assert a != epoch_batches(lengths, 4, seed=1, epoch=1, group_by_length=True)
    assert sorted(i for b in a for i in b) == list(range(1000))

    def padding(batches: list[list[int]]) -> int:
        return sum(
            max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches
        )

    plain = epoch_batches(lengths, 4, seed=1, epoch=0, group_by_length=False)
    assert sorted(i for b in plain for i in b) == list(range(1000))
    assert padding(a) < padding(plain) / 5


def test_check_servable_rejects_what_vllm_rejects(tmp_path: Path) -> None:
    import json
    import struct

    def adapter(config: dict[str, object], tensors: list[str]) -> Path:
        folder = tmp_path / f"a{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps(config))
        header = json.dumps(
            {
                n: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
                for i, n in enumerate(tensors)
            }
        ).encode()
        (folder / "adapter_model.safetensors").write_bytes(
            struct.pack("<Q", len(header)) + header + bytes(4 * len(tensors))
        )
        return folder

    good = {
        "peft_type": "LORA",
        "r": 8,
        "lora_alpha": 16,
        "bias": "none",
        "target_modules": ["q_proj"],
    }
    lora = [
        "base_model.model.layers.0.q_proj.lora_A.weight",
        "base_model.model.layers.0.q_proj.lora_B.weight",
    ]
    check_servable(adapter(good, lora))
    cases = [
        ({**good, "bias": "all"}, lora, "bias='all'"),
        ({**good, "use_dora": True}, lora, "DoRA"),
        ({**good, "modules_to_save": ["lm_head"]}, lora, "modules_to_save"),
        ({**good, "r": 1024}, lora, "rank 1024"),
        ({**good, "target_modules": ["embed_tokens"]}, lora, "embedding/head LoRA"),
        ({**good, "init_lora_weights": "pissa"}, lora, "changes the base weights"),
        (good, [*lora, "base_model.model.lm_head.weight"], "non-LoRA tensors"),
    ]
    for config, tensors, fragment in cases:
        with pytest.raises(ConfigError, match="cannot be served") as err:
            check_servable(adapter(config, tensors))
        assert fragment in str(err.value)
