"""The model-directory module: the one reader of the layout and the one servability check.

Every user reads a directory the same way — ``samalign serve`` (--dry-run), both in-process
backends and the trainer's ``check_servable`` / ``samalign finetune check`` — so each rule is
tested once here against all of them: the manifest (base path, adapter map), containment of
the paths it names, and every reason vLLM refuses an adapter.
"""

from __future__ import annotations

import json
import shlex
import struct
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from samalign import cli
from samalign.errors import ConfigError
from samalign.serving import transformers_backend, vllm_inprocess
from samalign.serving.model_dir import (
    MANIFEST_NAME,
    ModelDir,
    check_adapter_fits,
    check_servable,
    header_lookup,
    load_model_dir,
    lora_b_is_zero,
    model_from_base,
)
from samalign.testing import tiny

# -- model directories -------------------------------------------------------------------------


def _safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]], fill: int = 0) -> None:
    header: dict[str, Any] = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = 4
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes([fill]) * offset)


def _adapter(folder: Path, hidden_in: int, hidden_out: int, *, b_fill: int = 1) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"r": 4, "bias": "none", "base_model_name_or_path": "/models/other-base"}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    module = "base_model.model.model.layers.0.self_attn.q_proj"
    _safetensors(
        folder / "adapter_model.safetensors",
        {
            f"{module}.lora_A.weight": ("F32", [4, hidden_in]),
            f"{module}.lora_B.weight": ("F32", [hidden_out, 4]),
        },
        fill=b_fill,
    )


def _model_dir(root: Path, manifest: dict[str, Any] | None = None) -> Path:
    (root / "base").mkdir(parents=True)
    (root / "base" / "config.json").write_text("{}")
    _safetensors(
        root / "base" / "model.safetensors",
        {
            "model.layers.0.self_attn.q_proj.weight": ("F32", [8, 8]),
            "model.embed_tokens.weight": ("F32", [16, 8]),
        },
    )
    _adapter(root / "adapters" / "anchor", 8, 8)
    _adapter(root / "adapters" / "calibrate", 8, 8, b_fill=0)
    if manifest is not None:
        (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    return root


def test_manifest_names_match_the_tiny_builder() -> None:
    assert MANIFEST_NAME == tiny.MANIFEST_NAME


def test_model_dir_with_manifest_and_identity_adapter(tmp_path: Path) -> None:
    manifest = {
        "format": "samalign-model-dir",
        "version": 1,
        "adapters": {"anchor": "adapters/anchor", "calibrate": "adapters/calibrate"},
        "identity_adapters": ["calibrate"],
    }
    directory = load_model_dir(_model_dir(tmp_path / "m", manifest))
    assert sorted(directory.adapters) == ["anchor", "calibrate"]
    assert directory.identity_adapters == {"calibrate"}
    assert lora_b_is_zero(directory.adapters["calibrate"])
    assert not lora_b_is_zero(directory.adapters["anchor"])


def test_identity_is_only_trusted_when_the_weights_are_zero(tmp_path: Path) -> None:
    manifest = {"adapters": {"anchor": "adapters/anchor"}, "identity_adapters": ["anchor"]}
    directory = load_model_dir(_model_dir(tmp_path / "m", manifest))
    assert directory.identity_adapters == frozenset()


def test_a_missing_adapter_is_named_at_load_time(tmp_path: Path) -> None:
    manifest = {"adapters": {"anchor": "adapters/anchor", "explorer": "adapters/explorer"}}
    root = _model_dir(tmp_path / "m", manifest)
    with pytest.raises(ConfigError, match=r"adapter 'explorer' is listed .* is missing"):
        load_model_dir(root)


def test_an_adapter_for_another_base_model_is_named_with_the_mismatch(tmp_path: Path) -> None:
    root = _model_dir(tmp_path / "m")
    _adapter(root / "adapters" / "explorer", 16, 8)
    with pytest.raises(ConfigError) as caught:
        load_model_dir(root)
    message = str(caught.value)
    assert "adapter 'explorer'" in message
    assert "lora_A expects 16 input features, the base layer has 8" in message
    assert "/models/other-base" in message


def test_fit_check_reports_layers_the_base_lacks(tmp_path: Path) -> None:
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    _safetensors(
        folder / "adapter_model.safetensors",
        {"base_model.model.model.layers.9.mlp.up_proj.lora_A.weight": ("F32", [4, 8])},
    )
    lookup = header_lookup({"model.layers.0.mlp.up_proj.weight": ("F32", (16, 8))})
    with pytest.raises(ConfigError, match=r"layers\.9\.mlp\.up_proj, which the base model"):
        check_adapter_fits("a", folder, tmp_path, lookup)
    check_adapter_fits("a", folder, tmp_path, None)  # nothing to compare against: no check


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"format": "other"}, "format is 'other'"),
        ({"version": 99}, "newer than this samalign"),
        ({"identity_adapters": ["nope"]}, r"identity adapters \['nope'\]"),
        ({"base": "elsewhere"}, "expected the base model"),
    ],
)
def test_bad_manifests(tmp_path: Path, manifest: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_model_dir(_model_dir(tmp_path / "m", manifest))


def test_not_a_model_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_model_dir(tmp_path / "nowhere")
    (tmp_path / "empty" / "base").mkdir(parents=True)
    (tmp_path / "empty" / "base" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="no adapters found"):
        load_model_dir(tmp_path / "empty")


# -- one reading of the manifest for every user ------------------------------------------------


def _custom_layout(root: Path) -> Path:
    """A directory whose manifest puts the base and two adapters in non-default places."""
    _model_dir(root)
    (root / "base").rename(root / "weights-llm")
    (root / "adapters" / "anchor").rename(root / "anchor-v2")
    manifest = {
        "format": "samalign-model-dir",
        "version": 1,
        "base": "weights-llm",
        "adapters": {"anchor": "anchor-v2", "iepile": "adapters/calibrate"},
        "identity_adapters": ["iepile"],
    }
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    return root


def _dry_run(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert cli.main(["serve", *args, "--dry-run"]) == 0, capsys.readouterr().err
    argv = shlex.split(capsys.readouterr().out.strip())
    while argv and "=" in argv[0] and not argv[0].startswith("/"):
        argv.pop(0)  # environment assignments (vllm-cpu), if any
    return argv


def _served(argv: list[str]) -> tuple[str, dict[str, str], str]:
    """(base, adapters, max-lora-rank) of a vLLM command line."""
    start = argv.index("--lora-modules") + 1
    count = int(argv[argv.index("--max-loras") + 1])
    modules = dict(m.split("=", 1) for m in argv[start : start + count])
    return argv[argv.index("--model") + 1], modules, argv[argv.index("--max-lora-rank") + 1]


class RecordingEngine:
    """Stands in for an engine: records what the backend factory handed it."""

    llm_type = "samalign-recording-engine"
    seen: ClassVar[list[Any]] = []

    def __init__(self, *args: Any, **options: Any) -> None:
        type(self).seen.append((args, options))
        model = args[0]
        names = model.adapters if isinstance(model, ModelDir) else args[1]
        self.adapters = frozenset(names)

    def close(self) -> None:
        pass


def test_serve_and_the_in_process_backends_read_the_manifest_identically(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _custom_layout(tmp_path / "m")
    directory = load_model_dir(root)
    assert directory.base == root / "weights-llm"
    assert directory.adapters == {
        "anchor": root / "anchor-v2",
        "iepile": root / "adapters" / "calibrate",
        "calibrate": root / "adapters" / "calibrate",
    }
    assert directory.identity_adapters == {"iepile"}

    base, modules, rank = _served(_dry_run(capsys, "--model-dir", str(root)))
    assert base == str(directory.base)  # not root/base, which does not exist
    assert modules == {name: str(path) for name, path in directory.adapters.items()}
    assert rank == str(directory.max_lora_rank) == "8"

    RecordingEngine.seen = []
    monkeypatch.setattr(transformers_backend, "TransformersEngine", RecordingEngine)
    monkeypatch.setattr(vllm_inprocess, "VllmInprocessEngine", RecordingEngine)
    transformers_backend.transformers_models(root, stages=["anchor"])
    vllm_inprocess.vllm_inprocess_models(root, stages=["anchor"])
    (loaded,), _ = RecordingEngine.seen[0]
    assert (loaded.base, loaded.adapters) == (directory.base, directory.adapters)
    assert loaded.identity_adapters == {"iepile"}
    (vllm_base, vllm_adapters), options = RecordingEngine.seen[1]
    assert (vllm_base, vllm_adapters) == (directory.base, directory.adapters)
    assert str(options["max_lora_rank"]) == rank


def test_serve_adds_given_adapters_to_the_manifest_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _custom_layout(tmp_path / "m")
    _adapter(tmp_path / "elsewhere" / "extra", 8, 8)
    argv = _dry_run(
        capsys, "--model-dir", str(root), "--adapter", f"explorer={tmp_path / 'elsewhere/extra'}"
    )
    _, modules, _ = _served(argv)
    assert modules["explorer"] == str(tmp_path / "elsewhere" / "extra")  # the caller's choice
    assert modules["anchor"] == str(root / "anchor-v2")


# -- paths outside the directory: refused unless allowed ---------------------------------------


def _outside_base(tmp_path: Path, how: str) -> Path:
    root = _model_dir(tmp_path / "m")
    shared = tmp_path / "shared-base"
    (root / "base").rename(shared)
    if how == "symlink":
        (root / "base").symlink_to(shared, target_is_directory=True)
        return root
    rel = "../shared-base" if how == "relative" else str(shared)
    (root / MANIFEST_NAME).write_text(json.dumps({"base": rel}))
    return root


@pytest.mark.parametrize("how", ["relative", "absolute", "symlink"])
def test_a_base_outside_the_directory_is_refused_by_every_user_unless_allowed(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    root = _outside_base(tmp_path, how)
    shared = tmp_path / "shared-base"
    with pytest.raises(ConfigError, match="points outside the model directory") as caught:
        load_model_dir(root)
    assert "allow_outside=True" in str(caught.value)
    assert "--allow-outside-paths" in str(caught.value)
    assert cli.main(["serve", "--model-dir", str(root), "--dry-run"]) == 2
    assert "points outside the model directory" in capsys.readouterr().err
    RecordingEngine.seen = []
    monkeypatch.setattr(transformers_backend, "TransformersEngine", RecordingEngine)
    with pytest.raises(ConfigError, match="points outside"):
        transformers_backend.transformers_models(root, stages=["anchor"])
    with pytest.raises(ConfigError, match="points outside"):
        vllm_inprocess.vllm_inprocess_models(root, stages=["anchor"])
    assert not RecordingEngine.seen  # refused before any engine

    assert load_model_dir(root, allow_outside=True).base == shared
    base, _, _ = _served(_dry_run(capsys, "--model-dir", str(root), "--allow-outside-paths"))
    assert base == str(shared)
    transformers_backend.transformers_models(root, stages=["anchor"], allow_outside=True)
    (loaded,), _ = RecordingEngine.seen[0]
    assert loaded.base == shared


@pytest.mark.parametrize("rel", ["../other/anchor", "/tmp/../{tmp}/other/anchor"])
def test_an_adapter_outside_the_directory_is_refused(tmp_path: Path, rel: str) -> None:
    root = _model_dir(tmp_path / "m")
    _adapter(tmp_path / "other" / "anchor", 8, 8)
    rel = rel.format(tmp=str(tmp_path).lstrip("/"))
    (root / MANIFEST_NAME).write_text(json.dumps({"adapters": {"stolen": rel}}))
    with pytest.raises(ConfigError, match=r"adapter 'stolen' .* points outside"):
        load_model_dir(root)
    assert load_model_dir(root, allow_outside=True).adapters["stolen"] == (
        tmp_path / "other" / "anchor"
    )


def test_a_linked_adapter_folder_leading_outside_is_refused(tmp_path: Path) -> None:
    root = _model_dir(tmp_path / "m")
    _adapter(tmp_path / "other" / "explorer", 8, 8)
    (root / "adapters" / "explorer").symlink_to(tmp_path / "other" / "explorer")
    with pytest.raises(ConfigError, match="adapter folder 'adapters/explorer' points outside"):
        load_model_dir(root)
    assert "explorer" in load_model_dir(root, allow_outside=True).adapters


def test_dot_dot_that_stays_inside_is_fine(tmp_path: Path) -> None:
    root = _model_dir(tmp_path / "m")
    manifest = {"base": "adapters/../base", "adapters": {"a": "adapters/x/../anchor"}}
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    directory = load_model_dir(root)
    assert directory.base == root / "base"
    assert directory.adapters["a"] == root / "adapters" / "anchor"


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"base": ["base"]}, "'base' must be a folder path"),
        ({"adapters": {"a": 3}}, "'adapters' must map names to folders"),
        ({"identity_adapters": "calibrate"}, "'identity_adapters' must be a list"),
    ],
)
def test_manifest_field_types(tmp_path: Path, manifest: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_model_dir(_model_dir(tmp_path / "m", manifest))


def test_deeply_nested_manifest_is_a_config_error(tmp_path: Path) -> None:
    root = _model_dir(tmp_path / "m")
    (root / MANIFEST_NAME).write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ConfigError, match="cannot read the manifest"):
        load_model_dir(root)


# -- servability: one check, one message, for every user ---------------------------------------

GOOD_CONFIG = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "bias": "none",
               "target_modules": ["q_proj"]}  # fmt: skip
LORA = {
    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": ("F32", [8, 8]),
    "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": ("F32", [8, 8]),
}
UNSERVABLE = [
    ("added-tokens-file", {}, {}, {"added_tokens.json": '{"<new>": 16}'}, "added tokens"),
    ("added-tokens-tensor", {}, {"base_model.model.model.embed_tokens.weight": ("F32", [16, 8])},
     {}, "non-LoRA tensors"),
    ("new-embeddings", {}, {}, {"new_embeddings.safetensors": ""}, "added tokens"),
    ("trained-tokens", {"trainable_token_indices": [3]}, {}, {}, "trainable_token_indices"),
    ("modules-to-save", {"modules_to_save": ["lm_head"]}, {}, {}, "modules_to_save"),
    ("bias", {"bias": "all"}, {}, {}, "bias='all'"),
    ("lora-bias", {"lora_bias": True}, {}, {}, "lora_bias"),
    ("dora", {"use_dora": True}, {}, {}, "DoRA"),
    ("rank", {"r": 1024}, {}, {}, "rank 1024 exceeds vLLM's largest --max-lora-rank 512"),
    ("rank-pattern", {"rank_pattern": {"q_proj": 600}}, {}, {}, "rank 600 exceeds"),
    ("embedding-lora", {"target_modules": ["embed_tokens"]}, {}, {}, "embedding/head LoRA"),
    ("pissa", {"init_lora_weights": "pissa"}, {}, {}, "changes the base weights"),
    ("not-lora", {"peft_type": "IA3"}, {}, {}, "peft_type 'IA3'"),
]  # fmt: skip


def _unservable(root: Path, config: dict[str, Any], tensors: dict[str, Any], files: Any) -> Path:
    folder = root / "adapters" / "anchor"
    (folder / "adapter_config.json").write_text(json.dumps({**GOOD_CONFIG, **config}))
    _safetensors(folder / "adapter_model.safetensors", {**LORA, **tensors}, fill=1)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize(
    ("config", "tensors", "files", "fragment"),
    [case[1:] for case in UNSERVABLE],
    ids=[case[0] for case in UNSERVABLE],
)
def test_every_unservable_adapter_fails_the_one_check_with_the_same_message(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    config: dict[str, Any],
    tensors: dict[str, Any],
    files: dict[str, str],
    fragment: str,
) -> None:
    root = _model_dir(tmp_path / "m")
    folder = _unservable(root, config, tensors, files)
    with pytest.raises(ConfigError, match="cannot be served by vLLM") as direct:
        check_servable(folder, name="anchor")
    message = str(direct.value)
    assert fragment in message and "adapter 'anchor'" in message
    with pytest.raises(ConfigError) as loaded:
        load_model_dir(root)
    assert str(loaded.value) == message
    with pytest.raises(ConfigError) as given:
        model_from_base(root / "base", {"anchor": folder})
    assert str(given.value) == message
    assert cli.main(["serve", "--model-dir", str(root), "--dry-run"]) == 2
    assert message in capsys.readouterr().err
    assert cli.main(["finetune", "check", str(folder)]) == 2
    assert fragment in capsys.readouterr().err


def test_a_servable_adapter_passes_every_user(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _model_dir(tmp_path / "m")
    folder = _unservable(root, {}, {}, {"added_tokens.json": "{}"})
    check_servable(folder)
    assert sorted(load_model_dir(root).adapters) == ["anchor", "calibrate"]
    assert cli.main(["finetune", "check", str(folder)]) == 0
    assert "servable" in capsys.readouterr().out


def test_every_problem_of_an_adapter_is_listed_at_once(tmp_path: Path) -> None:
    root = _model_dir(tmp_path / "m")
    folder = _unservable(root, {"bias": "all", "use_dora": True, "r": 1024}, {}, {})
    with pytest.raises(ConfigError) as caught:
        check_servable(folder)
    assert all(f in str(caught.value) for f in ("bias='all'", "DoRA", "rank 1024"))


def test_adapter_without_weights_or_config(tmp_path: Path) -> None:
    folder = tmp_path / "a"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"has no adapter_config\.json"):
        check_servable(folder)
    (folder / "adapter_config.json").write_text(json.dumps(GOOD_CONFIG))
    with pytest.raises(ConfigError, match=r"no adapter_model\.safetensors"):
        check_servable(folder)
    (folder / "adapter_model.bin").write_bytes(b"never unpickled")
    check_servable(folder)  # vLLM loads .bin adapters; the file is not opened here


def test_truncated_safetensors_header_is_a_config_error(tmp_path: Path) -> None:
    root = _model_dir(tmp_path / "m")
    weights = root / "adapters" / "anchor" / "adapter_model.safetensors"
    weights.write_bytes(struct.pack("<Q", 10_000) + b"{}")
    with pytest.raises(ConfigError, match="truncated"):
        load_model_dir(root)
    weights.write_bytes(struct.pack("<Q", 2**60))
    with pytest.raises(ConfigError, match="not a safetensors file"):
        load_model_dir(root)


def test_the_trainer_and_finetune_check_use_the_same_function() -> None:
    from samalign.finetune import trainer

    assert trainer.check_servable is check_servable
    assert sys.modules["samalign.serving.model_dir"].check_servable is check_servable


def test_extract_and_backend_specs_follow_the_same_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from samalign.serving.spec import BackendSpec

    root = _outside_base(tmp_path, "relative")
    source = tmp_path / "in.txt"
    source.write_text("LSTM was proposed in 1997.\n")
    argv = ["extract", str(source), "--domain", "crossner_ai", "--quiet", "--model", str(root)]
    assert cli.main(argv) == 2
    assert "points outside the model directory" in capsys.readouterr().err
    assert cli.main([*argv[:-2], "--server", "http://127.0.0.1:9", "--allow-outside-paths"]) == 2
    assert "--allow-outside-paths applies only to --model" in capsys.readouterr().err

    RecordingEngine.seen = []
    monkeypatch.setattr(transformers_backend, "TransformersEngine", RecordingEngine)
    spec = BackendSpec(kind="transformers", model_dir=root)
    with pytest.raises(ConfigError, match="points outside"):
        spec.models(["anchor"], {"anchor": "anchor"})
    allowed = spec.model_copy(update={"allow_outside_paths": True})
    allowed.models(["anchor"], {"anchor": "anchor"})
    (loaded,), _ = RecordingEngine.seen[0]
    assert loaded.base == tmp_path / "shared-base"
    with pytest.raises(ConfigError, match="only to the in-process backends"):
        BackendSpec(kind="server", servers=("http://h:1",), allow_outside_paths=True)
