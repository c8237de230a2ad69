"""``samalign extract`` backend selection: server, transformers (default without --server),
vllm-inprocess; the model directory from --model or $SAMALIGN_MODEL_DIR; clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from samalign import cli
from samalign.serving import StageModels

TEXT = "Sepp Hochreiter invented LSTM ."


class ClosingModels(StageModels):
    closed = 0

    def close(self) -> None:
        type(self).closed += 1


@pytest.fixture
def local_backends(monkeypatch: pytest.MonkeyPatch, fake_ner: Any) -> dict[str, Any]:
    fakes = fake_ner(anchor={TEXT: ["LSTM"]}, explorer={}, gold={"LSTM": ("Misc", "algorithm")})
    seen: dict[str, Any] = {}
    ClosingModels.closed = 0

    def factory(name: str) -> Any:
        def build(model_dir: Any, **kwargs: Any) -> StageModels:
            seen[name] = (str(model_dir), kwargs)
            return ClosingModels(dict(fakes.models().items()))

        return build

    monkeypatch.setattr(
        "samalign.serving.transformers_backend.transformers_models", factory("transformers")
    )
    monkeypatch.setattr(
        "samalign.serving.vllm_inprocess.vllm_inprocess_models", factory("vllm-inprocess")
    )
    monkeypatch.delenv(cli.MODEL_DIR_ENV, raising=False)
    return seen


def _input(tmp_path: Path) -> str:
    source = tmp_path / "in.txt"
    source.write_text(TEXT + "\n", encoding="utf-8")
    return str(source)


def test_without_a_server_the_transformers_backend_runs_the_model_dir(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    local_backends: dict[str, Any],
) -> None:
    monkeypatch.setenv(cli.MODEL_DIR_ENV, "/models/from-env")
    argv = ["extract", _input(tmp_path), "--domain", "crossner_ai", "--quiet"]
    assert cli.main([*argv, "--adapter", "anchor=iepile"]) == 0
    model_dir, kwargs = local_backends["transformers"]
    assert model_dir == "/models/from-env"
    assert kwargs["stages"] == ["anchor", "explorer", "archetype", "calibrate"]
    assert kwargs["adapters"]["anchor"] == "iepile"
    row = json.loads(capfd.readouterr().out)
    assert [(e["text"], e["label"]) for e in row["entities"]] == [("LSTM", "algorithm")]
    assert ClosingModels.closed == 1  # the engine is released at the end

    assert cli.main([*argv, "--model", str(tmp_path / "explicit")]) == 0
    assert local_backends["transformers"][0] == str(tmp_path / "explicit")


def test_vllm_inprocess_backend_with_another_environment(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], local_backends: dict[str, Any]
) -> None:
    argv = ["extract", _input(tmp_path), "--domain", "crossner_ai", "--quiet"]
    argv += ["--backend", "vllm-inprocess", "--model", "/m", "--vllm-python", "/venv/bin/python"]
    assert cli.main(argv) == 0
    model_dir, kwargs = local_backends["vllm-inprocess"]
    assert (model_dir, kwargs["python"]) == ("/m", "/venv/bin/python")
    assert "transformers" not in local_backends


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "no model: pass --server URL (a vLLM server), or --model DIR (or set "),
        (["--backend", "server"], "--backend server needs --server URL"),
        (["--backend", "transformers", "--server", "http://h:1"], "--server does not apply"),
        (["--model", "/m", "--vllm-python", "/py"], "--vllm-python applies only to"),
        (["--backend", "gpu"], "invalid choice: 'gpu'"),
    ],
)
def test_backend_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    local_backends: dict[str, Any],
    flags: list[str],
    message: str,
) -> None:
    argv = ["extract", _input(tmp_path), "--domain", "crossner_ai", *flags]
    try:
        status = cli.main(argv)
    except SystemExit as exit_:  # argparse rejects unknown choices itself
        status = int(exit_.code or 0)
    assert status == 2
    assert message in capsys.readouterr().err
    assert not local_backends
