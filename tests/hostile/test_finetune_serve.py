"""Hostile training data, configs, checkpoints and model directories.

``samalign finetune build/train`` and ``samalign serve --dry-run`` read files someone else may
have written: a download, a shared folder. None of them may crash, hang, or run code.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import Result, alias_bomb, cases, each, kind, kinds

PILENER = {
    "doc_question_pairID": "d1:0",
    "tagName": "person",
    "input": "Alice met Bob in Paris .",
    "output": '["Alice", "Bob"]',
}


def pilener_line(**changes: Any) -> str:
    return json.dumps({**PILENER, **changes})


BUILD: list[tuple[str, str | bytes, list[str], str]] = [
    (
        "training data nested 100,000 levels",
        "[" * 100_000 + "\n",
        ["--format", "pilener"],
        "nested",
    ),
    ("training JSON array nested 100,000 levels", "[" * 100_000, ["--format", "spert"], "nested"),
    ("training data with a lone surrogate", pilener_line(input="A\ud800"), [], "Unicode"),
    ("training data not UTF-8", b"\xff\xfe\x00 junk\n", [], "UTF-8"),
    ("training data of unknown format", "hello\n", [], "cannot tell the format"),
    ("training data empty", "", [], "cannot tell the format"),
    (
        "training line without a field",
        json.dumps({"tagName": "x"}) + "\n",
        ["--format", "pilener"],
        "missing",
    ),
    ("training mentions not a list", pilener_line(output="{oops") + "\n", [], "list of strings"),
]


@cases("finetune", "content, flags, message", BUILD)
def test_hostile_training_data(
    run: Callable[..., Result],
    tmp_path: Path,
    content: str | bytes,
    flags: list[str],
    message: str,
) -> None:
    source = tmp_path / "data.jsonl"
    source.write_bytes(
        content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass")
    )
    out = tmp_path / "examples.jsonl"
    result = run("finetune", "build", "explorer", source, "--out", out, *flags, status=2)
    assert message in result.err, result.err
    assert str(source) in result.err  # names the file
    assert not out.exists()


@kind("finetune", "training data with a BOM")
def test_training_data_with_bom(run: Callable[..., Result], tmp_path: Path) -> None:
    source = tmp_path / "data.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + pilener_line().encode() + b"\n")
    out = tmp_path / "examples.jsonl"
    run("finetune", "build", "explorer", source, "--out", out, status=0)
    assert len(out.read_text(encoding="utf-8").splitlines()) == 1


@kind("finetune", "build --out is its input")
def test_build_out_is_input(run: Callable[..., Result], tmp_path: Path) -> None:
    source = tmp_path / "data.jsonl"
    source.write_text(pilener_line() + "\n", encoding="utf-8")
    before = source.read_bytes()
    assert (
        "is the input"
        in run("finetune", "build", "explorer", source, "--out", source, status=2).err
    )
    assert source.read_bytes() == before


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--negative-ratio", "nan"], "--negative-ratio"),
        (["--negative-ratio", "-1"], "at least 0"),
        (["--limit", "0"], "--limit"),
        (["--max-chars", "-3"], "--max-chars"),
    ],
    ids=kinds(
        "finetune",
        "--negative-ratio NaN",
        "--negative-ratio negative",
        "--limit 0",
        "--max-chars negative",
    ),
)
def test_bad_build_flags(
    run: Callable[..., Result], tmp_path: Path, flags: list[str], message: str
) -> None:
    source = tmp_path / "data.jsonl"
    source.write_text(pilener_line() + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert (
        message in run("finetune", "build", "explorer", source, "--out", out, *flags, status=2).err
    )


@each("target", "finetune", "build from /dev/zero", "build from a FIFO", "build from a folder")
def test_build_from_a_non_regular_file(
    run: Callable[..., Result], tmp_path: Path, target: str
) -> None:
    if target.endswith("/dev/zero"):
        source = Path("/dev/zero")
    elif target.endswith("FIFO"):
        source = tmp_path / "pipe.jsonl"
        os.mkfifo(source)  # reading it would block forever: it is refused before
    else:
        source = tmp_path
    out = tmp_path / "examples.jsonl"
    for flags in ([], ["--format", "pilener"]):
        result = run("finetune", "build", "explorer", source, "--out", out, *flags, status=2)
        assert "not a regular file" in result.err and str(source) in result.err, result.err
    assert not out.exists()


@kind("finetune", "SpERT training token with a lone surrogate")
def test_build_surrogate_token(run: Callable[..., Result], tmp_path: Path) -> None:
    record = {"tokens": ["Al\ud800ice", "met", "Bob"], "entities": [], "relations": []}
    source = tmp_path / "data.json"
    source.write_text(json.dumps([record]), encoding="utf-8")  # the \ud800 escape: valid UTF-8
    out = tmp_path / "examples.jsonl"
    result = run("finetune", "build", "explorer", source, "--out", out, status=2)
    assert "not valid Unicode" in result.err and "data.json record 0" in result.err, result.err
    assert not out.exists()


@kind("finetune", "training data holding raw U+2028 inside a JSON string")
def test_build_line_separator_in_text(run: Callable[..., Result], tmp_path: Path) -> None:
    source = tmp_path / "data.jsonl"
    text = "Alice\u2028met Bob in Paris ."
    source.write_text(
        json.dumps({**PILENER, "input": text}, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    out = tmp_path / "examples.jsonl"
    run("finetune", "build", "explorer", source, "--out", out, status=0)
    (example,) = [json.loads(x) for x in out.read_text(encoding="utf-8").split("\n") if x]
    assert "Alice\u2028met Bob" in example["messages"][0]["content"]


@kind("finetune", "label map that is a YAML alias bomb")
def test_label_map_bomb(run: Callable[..., Result], tmp_path: Path) -> None:
    source = tmp_path / "data.jsonl"
    source.write_text(pilener_line() + "\n", encoding="utf-8")
    label_map = tmp_path / "labels.yaml"
    label_map.write_text(alias_bomb(), encoding="utf-8")
    result = run(
        "finetune",
        "build",
        "explorer",
        source,
        "--out",
        tmp_path / "o.jsonl",
        "--label-map",
        label_map,
        status=2,
    )
    assert "expands to more than" in result.err


# ---------------------------------------------------------------------------------------------
# finetune train: configs and checkpoints
# ---------------------------------------------------------------------------------------------


def config_file(tmp_path: Path, text: str | None = None) -> Path:
    path = tmp_path / "train.yaml"
    if text is None:
        train = tmp_path / "train.jsonl"
        train.write_text("", encoding="utf-8")
        text = (
            f"base_model: {tmp_path / 'base'}\ntrain_file: {train}\n"
            f"output_dir: {tmp_path / 'adapter'}\n"
        )
    path.write_text(text, encoding="utf-8")
    return path


TRAIN: list[tuple[str, str | None, list[str], str]] = [
    ("training config missing", "MISSING", [], "not found"),
    ("training config alias bomb", "BOMB", [], "expands to more than"),
    ("training config nested 100,000 levels", "a: " + "[" * 100_000, [], "nest"),
    ("training config that is a list", "- 1\n- 2\n", [], "mapping"),
    ("training config with an unknown key", None, ["--set", "colour=blue"], "colour"),
    ("learning rate NaN", None, ["--set", "learning_rate=.nan"], "learning_rate"),
    ("negative epochs", None, ["--set", "epochs=-1"], "epochs"),
    ("--set without =", None, ["--set", "epochs"], "key=value"),
]


@cases("finetune", "text, flags, message", TRAIN)
def test_hostile_training_config(
    run: Callable[..., Result],
    tmp_path: Path,
    text: str | None,
    flags: list[str],
    message: str,
) -> None:
    if text == "MISSING":
        path = tmp_path / "absent.yaml"
    elif text == "BOMB":
        path = config_file(tmp_path, alias_bomb())
    else:
        path = config_file(tmp_path, text)
    result = run("finetune", "train", path, *flags, status=2)
    assert message in result.err, result.err


class Payload:
    """Unpickling this object runs code: it creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@kind("finetune", "--resume of a planted pickle checkpoint (code execution)")
def test_planted_pickle_never_runs(run: Callable[..., Result], tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    config = config_file(tmp_path)
    step = tmp_path / "adapter" / "checkpoints" / "step-000001"
    step.mkdir(parents=True)
    (step / "trainer_state.pt").write_bytes(pickle.dumps(Payload(marker)))
    assert pickle.loads(pickle.dumps(Payload(tmp_path / "probe"))) is not None  # the payload works
    assert (tmp_path / "probe").exists()
    result = run("finetune", "train", config, "--resume", status=2)
    assert "pickle" in result.err and "never unpickles" in result.err
    assert not marker.exists(), "the planted payload ran"


@each(
    "state",
    "finetune",
    "--resume of a crafted trainer_state.json (nested)",
    "--resume of a crafted trainer_state.json (wrong shape)",
    "--resume of a checkpoint whose config is an alias bomb",
)
def test_crafted_checkpoint(run: Callable[..., Result], tmp_path: Path, state: str) -> None:
    config = config_file(tmp_path)
    step = tmp_path / "adapter" / "checkpoints" / "step-000001"
    step.mkdir(parents=True)
    (step / "trainer_state.safetensors").write_bytes(b"\x08" + b"\x00" * 7 + b"{}      ")
    body = {"format": "samalign-trainer-state", "version": 1, "step": "many"}
    (step / "trainer_state.json").write_text(
        "[" * 100_000 if "nested" in state else json.dumps(body), encoding="utf-8"
    )
    if "alias bomb" in state:
        (step / "samalign-finetune.yaml").write_text(alias_bomb(), encoding="utf-8")
    result = run("finetune", "train", config, "--resume", status=2)
    assert (
        "cannot resume" in result.err
        or "not one samalign wrote" in result.err
        or ("expands to more than" in result.err)
    ), result.err


# ---------------------------------------------------------------------------------------------
# serve --dry-run: model directories
# ---------------------------------------------------------------------------------------------


def model_dir(root: Path, adapters: tuple[str, ...] = ("anchor", "explorer")) -> Path:
    (root / "base").mkdir(parents=True)
    (root / "base" / "config.json").write_text("{}", encoding="utf-8")
    for name in adapters:
        folder = root / "adapters" / name
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(json.dumps({"r": 8}), encoding="utf-8")
        header = b'{"__metadata__":{}}'
        (folder / "adapter_model.safetensors").write_bytes(
            len(header).to_bytes(8, "little") + header
        )
    return root


def serve(run: Callable[..., Result], root: Path, *flags: str | Path, status: int) -> Result:
    return run(
        "serve", "--model-dir", root, "--dry-run", "--python", "python3", *flags, status=status
    )


@kind("serve", "a well-formed model directory is still served")
def test_good_model_dir(run: Callable[..., Result], tmp_path: Path) -> None:
    result = serve(run, model_dir(tmp_path / "m"), "--no-identity", status=0)
    assert "--lora-modules" in result.out


MANIFESTS: list[tuple[str, Any, str]] = [
    ("manifest base outside the directory", {"base": "../../etc"}, "outside the model directory"),
    ("manifest base absolute path", {"base": "/usr"}, "outside the model directory"),
    ("manifest adapter outside the directory", {"adapters": {"anchor": "../../tmp"}}, "outside"),
    ("manifest adapter absolute path", {"adapters": {"anchor": "/etc"}}, "outside"),
    ("manifest nested 100,000 levels", "[" * 100_000, "cannot read the manifest"),
    ("manifest that is a list", [1, 2], "JSON object"),
    ("manifest of another format", {"format": "evil"}, "format"),
    ("manifest from a newer samalign", {"version": 99}, "newer"),
    ("manifest base not a string", {"base": {"x": 1}}, "'base'"),
    ("manifest adapters not a mapping", {"adapters": ["a"]}, "'adapters'"),
]


@cases("serve", "manifest, message", MANIFESTS)
def test_hostile_manifest(
    run: Callable[..., Result], tmp_path: Path, manifest: Any, message: str
) -> None:
    root = model_dir(tmp_path / "m")
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    (root / "samalign-model.json").write_text(text, encoding="utf-8")
    result = serve(run, root, "--no-identity", status=2)
    assert message in result.err, result.err


@kind("serve", "adapter folder symlinked outside the directory")
def test_symlinked_adapter(run: Callable[..., Result], tmp_path: Path) -> None:
    outside = model_dir(tmp_path / "elsewhere", ("evil",)) / "adapters" / "evil"
    root = model_dir(tmp_path / "m")
    os.symlink(outside, root / "adapters" / "evil")
    assert "outside" in serve(run, root, "--no-identity", status=2).err
    # the explicit option allows it
    assert "evil=" in serve(run, root, "--no-identity", "--allow-outside-paths", status=0).out


ADAPTERS: list[tuple[str, bytes, str]] = [
    ("adapter config nested 100,000 levels", b"[" * 100_000, "cannot read"),
    ("adapter config not JSON", b"r: 8", "cannot read"),
    ("adapter config with a string rank", b'{"r": "eight"}', "'r'"),
    ("adapter config with a rank over vLLM's limit", b'{"r": 4096}', "rank"),
    (
        "adapter config with modules_to_save",
        b'{"r": 8, "modules_to_save": ["lm_head"]}',
        "modules_to_save",
    ),
]


@cases("serve", "config, message", ADAPTERS)
def test_hostile_adapter_config(
    run: Callable[..., Result], tmp_path: Path, config: bytes, message: str
) -> None:
    root = model_dir(tmp_path / "m")
    (root / "adapters" / "anchor" / "adapter_config.json").write_bytes(config)
    assert message in serve(run, root, "--no-identity", status=2).err


@each(
    "header",
    "serve",
    "safetensors header claiming 10**18 bytes",
    "safetensors header nested",
    "safetensors file of 3 bytes",
)
def test_hostile_weights(run: Callable[..., Result], tmp_path: Path, header: str) -> None:
    root = model_dir(tmp_path / "m")
    weights = root / "adapters" / "anchor" / "adapter_model.safetensors"
    if "10**18" in header:
        weights.write_bytes((10**18).to_bytes(8, "little") + b"{}")
    elif "nested" in header:
        body = b"[" * 100_000
        weights.write_bytes(len(body).to_bytes(8, "little") + body)
    else:
        weights.write_bytes(b"abc")
    assert "safetensors" in serve(run, root, "--no-identity", status=2).err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "70000"], "--port"),
        (["--port", "0"], "--port"),
        (["--max-model-len", "-1"], "--max-model-len"),
        (["--adapter", "x"], "NAME=VALUE"),
    ],
    ids=kinds(
        "serve", "--port 70000", "--port 0", "--max-model-len negative", "serve --adapter without ="
    ),
)
def test_bad_serve_flags(
    run: Callable[..., Result], tmp_path: Path, flags: list[str], message: str
) -> None:
    root = model_dir(tmp_path / "m")
    assert message in serve(run, root, *flags, status=2).err


@each("target", "serve", "model directory missing", "model directory is a file")
def test_model_dir_not_a_dir(run: Callable[..., Result], tmp_path: Path, target: str) -> None:
    path = tmp_path / "absent"
    if target.endswith("file"):
        path.write_text("x", encoding="utf-8")
    serve(run, path, status=2)
