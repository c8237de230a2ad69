"""Trainer checkpoints are safetensors + JSON: resuming never unpickles anything.

A planted ``trainer_state.pt`` — a pickle that creates a marker file when it is unpickled —
proves the point: the control step shows the payload is live, then ``train --resume`` (Python
and command line) refuses the checkpoint with a ConfigError and the marker never appears.
"""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path
from typing import Any

import pytest

from samalign import cli
from samalign.errors import ConfigError
from samalign.finetune.checkpoints import (
    LEGACY_STATE,
    STATE_JSON,
    STATE_TENSORS,
    TrainerState,
    latest_checkpoint,
    like_groups,
    read_trainer_state,
    save_checkpoint,
    write_trainer_state,
)
from samalign.finetune.config import TrainConfig

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("peft")


class Payload:
    """Unpickling this opens (creates) ``marker``: code chosen by whoever wrote the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _plant(folder: Path, marker: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LEGACY_STATE
    path.write_bytes(pickle.dumps({"step": 2, "optimizer": Payload(marker)}))
    # control: the payload is live — unpickling it really runs code
    pickle.loads(path.read_bytes())
    assert marker.exists()
    marker.unlink()
    return path


def _config(tmp_path: Path) -> TrainConfig:
    return TrainConfig(
        base_model=str(tmp_path / "no-base-needed"),
        train_file=str(tmp_path / "train.jsonl"),
        output_dir=str(tmp_path / "out"),
        progress_bar=False,
    )


def test_resume_refuses_a_planted_pickle_and_never_runs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from samalign.finetune.trainer import train

    marker = tmp_path / "PWNED"
    checkpoint = tmp_path / "out" / "checkpoints" / "step-000002"
    _plant(checkpoint, marker)
    config = _config(tmp_path)
    with pytest.raises(ConfigError, match="never unpickles checkpoints") as caught:
        train(config, resume=True)
    assert str(checkpoint) in str(caught.value) and "new output_dir" in str(caught.value)
    with pytest.raises(ConfigError, match="never unpickles checkpoints"):
        train(config, resume=checkpoint)
    assert not marker.exists()

    config_file = tmp_path / "train.yaml"
    config_file.write_text(
        f"base_model: {config.base_model}\ntrain_file: {config.train_file}\n"
        f"output_dir: {config.output_dir}\nprogress_bar: false\n"
    )
    assert cli.main(["finetune", "train", str(config_file), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "never unpickles checkpoints" in err and "Traceback" not in err
    assert not marker.exists()


def test_without_resume_an_old_checkpoint_still_blocks_a_fresh_start(tmp_path: Path) -> None:
    from samalign.finetune.trainer import train

    _plant(tmp_path / "out" / "checkpoints" / "step-000001", tmp_path / "PWNED")
    with pytest.raises(ConfigError, match="already holds an adapter or checkpoints"):
        train(_config(tmp_path))
    assert not (tmp_path / "PWNED").exists()


def _optimizer_and_scheduler(steps: int = 3) -> tuple[Any, Any, Any]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (s + 1))
    for _ in range(steps):
        optimizer.zero_grad()
        (params[0].sum() ** 2 + params[1].prod()).backward()
        optimizer.step()
        scheduler.step()
    return params, optimizer, scheduler


def _state(optimizer: Any, scheduler: Any) -> TrainerState:
    return TrainerState(
        step=3,
        history=[{"step": 3, "loss": 1.25, "lr": 2.5e-4}],
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        python_rng=random.getstate(),
        torch_rng=torch.get_rng_state(),
    )


def test_trainer_state_round_trips_exactly_without_pickle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, optimizer, scheduler = _optimizer_and_scheduler()
    state = _state(optimizer, scheduler)
    write_trainer_state(tmp_path, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_JSON, STATE_TENSORS]
    _plant(tmp_path, tmp_path / "PWNED")  # a pickle beside a valid state is ignored

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the checkpoint was unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    loaded = read_trainer_state(tmp_path)
    assert not (tmp_path / "PWNED").exists()
    assert (loaded.step, loaded.history) == (state.step, state.history)
    assert loaded.python_rng == state.python_rng
    assert torch.equal(loaded.torch_rng, state.torch_rng) and loaded.cuda_rng is None
    assert loaded.scheduler == state.scheduler

    # a fresh optimizer given the loaded state holds exactly the original's state
    _, fresh, fresh_scheduler = _optimizer_and_scheduler(steps=0)
    assert not fresh.state_dict()["state"]
    loaded.optimizer["param_groups"] = like_groups(
        loaded.optimizer["param_groups"], fresh.state_dict()["param_groups"]
    )
    fresh.load_state_dict(loaded.optimizer)
    fresh_scheduler.load_state_dict(loaded.scheduler)
    restored = fresh.state_dict()
    original = optimizer.state_dict()
    assert restored["param_groups"] == original["param_groups"]
    assert isinstance(restored["param_groups"][0]["betas"], tuple)
    for index, entry in original["state"].items():
        for key, value in entry.items():
            assert torch.equal(restored["state"][index][key], value), (index, key)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / STATE_JSON).write_text("{not json"), "cannot read trainer_state.json"),
        (lambda d: (d / STATE_JSON).write_text("[" * 100_000), "cannot read trainer_state.json"),
        (lambda d: (d / STATE_JSON).write_text('{"format": "x"}'), "no format"),
        (lambda d: (d / STATE_TENSORS).write_bytes(b"\x00" * 3), "cannot read trainer_state"),
        (lambda d: (d / STATE_TENSORS).unlink(), "not a samalign training checkpoint"),
        (lambda d: _edit(d, step=-1), "field 'step'"),
        (lambda d: _edit(d, python_rng=[3, ["x"], None]), "field 'python_rng'"),
        (lambda d: _edit(d, optimizer={"param_groups": [], "state": {"0": {}}}), "parameter"),
    ],
)
def test_damaged_trainer_state_is_a_config_error(tmp_path: Path, damage: Any, message: str) -> None:
    _, optimizer, scheduler = _optimizer_and_scheduler()
    write_trainer_state(tmp_path, _state(optimizer, scheduler))
    damage(tmp_path)
    with pytest.raises(ConfigError, match=message):
        read_trainer_state(tmp_path)


def _edit(folder: Path, **changes: Any) -> None:
    meta = json.loads((folder / STATE_JSON).read_text())
    (folder / STATE_JSON).write_text(json.dumps({**meta, **changes}))


def test_checkpoints_are_written_atomically_and_pruned(tmp_path: Path) -> None:
    def write(folder: Path) -> None:
        (folder / STATE_JSON).write_text("{}")

    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, 2, write)
    (tmp_path / "checkpoints" / "step-000009.partial").mkdir()  # an interrupted write
    (tmp_path / "checkpoints" / "step-000009.partial" / STATE_JSON).write_text("{}")
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-000002", "step-000003", "step-000009.partial"]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-000003"
