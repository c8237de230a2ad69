"""The tiny random model directory: layout, vLLM-compatible adapters, peft loading, tokenizer.

Builds the model offline (a few seconds) and checks it with transformers + peft. Serving it
with vLLM is covered by the serving tests.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import skip_without

from samalign.errors import ConfigError
from samalign.testing import tiny
from samalign.testing.__main__ import main as cli_main
from samalign.testing.tiny import (
    BOS_TOKEN,
    DEFAULT_ADAPTERS,
    EOS_TOKEN,
    LORA_TARGET_MODULES,
    MANIFEST_NAME,
    build_tiny_model,
)

pytestmark = pytest.mark.integration

torch, *_, safetensors_torch = skip_without(
    "torch", "transformers", "peft", "tokenizers", "safetensors.torch"
)

MESSAGES = [
    {"role": "system", "content": "Extract the named entities."},
    {"role": "user", "content": "In 1997, Sepp Hochreiter published LSTM in Munich."},
]
RANDOM_ADAPTERS = [a for a in DEFAULT_ADAPTERS if a != "calibrate"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def manifest(model_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((model_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir / "base")


@pytest.fixture(scope="module")
def prompt_ids(tokenizer: Any) -> Any:
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])


@pytest.fixture(scope="module")
def base_logits(model_dir: Path, prompt_ids: Any) -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir / "base").eval()
    with torch.no_grad():
        return model(input_ids=prompt_ids).logits


@pytest.fixture(scope="module")
def peft_model(model_dir: Path, manifest: dict[str, Any]) -> Iterator[Any]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir / "base")
    names = list(manifest["adapters"])
    model = PeftModel.from_pretrained(
        base, model_dir / manifest["adapters"][names[0]], adapter_name=names[0]
    )
    for name in names[1:]:
        model.load_adapter(model_dir / manifest["adapters"][name], adapter_name=name)
    model.eval()
    yield model


def _logits(model: Any, adapter: str, ids: Any) -> Any:
    model.set_adapter(adapter)
    with torch.no_grad():
        return model(input_ids=ids).logits


# -- layout ----------------------------------------------------------------------------------


def test_manifest(model_dir: Path, manifest: dict[str, Any]) -> None:
    assert model_dir.is_absolute()
    assert manifest["format"] == "samalign-model-dir"
    assert manifest["version"] == 1
    assert manifest["base"] == "base"
    assert manifest["adapters"] == {name: f"adapters/{name}" for name in DEFAULT_ADAPTERS}
    assert manifest["identity_adapters"] == ["calibrate"]
    assert (model_dir / "base" / "config.json").is_file()
    assert (model_dir / "base" / "model.safetensors").is_file()
    assert not list(model_dir.parent.glob(".model.*")), "temporary build dir left behind"


def test_base_config(model_dir: Path, tokenizer: Any) -> None:
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(model_dir / "base")
    assert config.model_type == "llama"
    assert config.architectures == ["LlamaForCausalLM"]
    assert config.hidden_size // config.num_attention_heads == 64
    assert config.num_hidden_layers == 2
    assert config.max_position_embeddings == 8192
    assert config.tie_word_embeddings is False
    assert config.vocab_size == len(tokenizer)
    eos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    assert config.eos_token_id == eos
    generation = GenerationConfig.from_pretrained(model_dir / "base")
    assert generation.eos_token_id == eos
    assert generation.pad_token_id == eos


@pytest.mark.parametrize("name", DEFAULT_ADAPTERS)
def test_adapter_is_vllm_compatible(model_dir: Path, name: str) -> None:
    adapter_dir = model_dir / "adapters" / name
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["peft_type"] == "LORA"
    assert config["task_type"] == "CAUSAL_LM"
    assert config["r"] == 8
    assert config["lora_alpha"] == 16
    assert config["bias"] == "none"
    assert not config["modules_to_save"]
    assert not config["use_dora"]
    assert set(config["target_modules"]) == set(LORA_TARGET_MODULES)
    assert Path(config["base_model_name_or_path"]) == model_dir / "base"
    assert not (adapter_dir / "added_tokens.json").exists()
    weights = safetensors_torch.load_file(adapter_dir / "adapter_model.safetensors")
    assert len(weights) == 2 * 7 * 2  # A and B, 7 projections, 2 layers
    for key in weights:
        assert key.endswith((".lora_A.weight", ".lora_B.weight")), key
        assert "embed_tokens" not in key and "lm_head" not in key


def test_identity_adapter_has_zero_b_and_others_do_not(model_dir: Path) -> None:
    for name in DEFAULT_ADAPTERS:
        weights = safetensors_torch.load_file(
            model_dir / "adapters" / name / "adapter_model.safetensors"
        )
        b_zero = all(torch.count_nonzero(w) == 0 for k, w in weights.items() if ".lora_B." in k)
        a_zero = any(torch.count_nonzero(w) == 0 for k, w in weights.items() if ".lora_A." in k)
        assert b_zero == (name == "calibrate"), name
        assert not a_zero, name


# -- peft ------------------------------------------------------------------------------------


def test_identity_adapter_equals_base(peft_model: Any, prompt_ids: Any, base_logits: Any) -> None:
    assert torch.equal(_logits(peft_model, "calibrate", prompt_ids), base_logits)
    with peft_model.disable_adapter(), torch.no_grad():
        assert torch.equal(peft_model(input_ids=prompt_ids).logits, base_logits)


def test_random_adapters_differ_from_base_and_each_other(
    peft_model: Any, prompt_ids: Any, base_logits: Any
) -> None:
    logits = {name: _logits(peft_model, name, prompt_ids) for name in RANDOM_ADAPTERS}
    for name, value in logits.items():
        assert (value - base_logits).abs().max() > 1e-2, name
    names = list(logits)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            assert not torch.allclose(logits[first], logits[second], atol=1e-3), (first, second)
    # Different adapters also change the greedy next token somewhere along the prompt.
    argmaxes = {tuple(v[0].argmax(-1).tolist()) for v in logits.values()}
    assert len(argmaxes) == len(logits)


def test_mixed_adapter_batch_matches_single_adapter_runs(
    peft_model: Any, prompt_ids: Any, base_logits: Any
) -> None:
    rows = ["anchor", "calibrate", "explorer", "__base__"]
    batch = prompt_ids.repeat(len(rows), 1)
    with torch.no_grad():
        mixed = peft_model(input_ids=batch, adapter_names=rows).logits
    for i, name in enumerate(rows):
        expected = base_logits if name == "__base__" else _logits(peft_model, name, prompt_ids)
        torch.testing.assert_close(mixed[i : i + 1], expected, rtol=1e-5, atol=1e-5)


def test_greedy_generation_runs_with_every_adapter(
    peft_model: Any, tokenizer: Any, prompt_ids: Any
) -> None:
    outputs = set()
    for name in RANDOM_ADAPTERS:
        peft_model.set_adapter(name)
        with torch.no_grad():
            out = peft_model.generate(
                input_ids=prompt_ids,
                attention_mask=torch.ones_like(prompt_ids),
                max_new_tokens=12,
                do_sample=False,
            )
        outputs.add(tokenizer.decode(out[0, prompt_ids.shape[1] :], skip_special_tokens=True))
    assert len(outputs) == len(RANDOM_ADAPTERS)


# -- tokenizer -------------------------------------------------------------------------------


def test_tokenizer_vocabulary_and_special_tokens(tokenizer: Any) -> None:
    assert 2000 <= len(tokenizer) <= 4000
    assert tokenizer.bos_token == BOS_TOKEN
    assert tokenizer.eos_token == EOS_TOKEN
    assert tokenizer.pad_token == EOS_TOKEN
    for token in tiny.SPECIAL_TOKENS:
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert ids == [tokenizer.convert_tokens_to_ids(token)], token


def test_chat_template_renders(tokenizer: Any) -> None:
    messages = [*MESSAGES, {"role": "assistant", "content": '{"person": ["Sepp Hochreiter"]}'}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|begin|><|system|>\nExtract the named entities.<|end|>\n"
        "<|user|>\nIn 1997, Sepp Hochreiter published LSTM in Munich.<|end|>\n"
        '<|assistant|>\n{"person": ["Sepp Hochreiter"]}<|end|>\n'
    )
    prompt = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|end|>\n<|assistant|>\n")
    assert text.startswith(prompt)
    # Completion-only training relies on the prompt's ids being a prefix of the full ids.
    full_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids


@pytest.mark.parametrize(
    "text",
    [
        "Plain English prose, with punctuation; quotes \"like this\" and 'this'.",
        '{"person": ["Sepp Hochreiter", "LSTM"], "year": 1997}\n\t  indented\r\n',
        "Non-ASCII: Jürgen Schmidhuber, Zürich, naïve café, 東京, emoji 🙂.",
        "".join(chr(c) for c in range(32, 127)),
    ],
)
def test_tokenizer_round_trips(tokenizer: Any, text: str) -> None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    rendered_ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(rendered_ids) == rendered


def test_english_is_compressed(tokenizer: Any) -> None:
    text = "The scientists published their results in the journal after the election."
    assert len(tokenizer(text)["input_ids"]) < len(text) / 2.5


# -- builder options, determinism, errors, CLI -----------------------------------------------


def test_same_seed_same_weights_and_other_seed_differs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["build-tiny", str(tmp_path / "a"), "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == str((tmp_path / "a").resolve())
    build_tiny_model(tmp_path / "b", seed=3)
    build_tiny_model(tmp_path / "c", seed=4)
    for rel in ["base/model.safetensors", "adapters/anchor/adapter_model.safetensors"]:
        a = safetensors_torch.load_file(tmp_path / "a" / rel)
        b = safetensors_torch.load_file(tmp_path / "b" / rel)
        c = safetensors_torch.load_file(tmp_path / "c" / rel)
        assert all(torch.equal(a[k], b[k]) for k in a), rel
        assert not all(torch.equal(a[k], c[k]) for k in a), rel


def test_custom_adapters_and_rank(tmp_path: Path) -> None:
    out = build_tiny_model(
        tmp_path / "m", adapters=["one", "two", "same"], identity_adapters=["same"], rank=16
    )
    manifest = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert list(manifest["adapters"]) == ["one", "two", "same"]
    assert manifest["identity_adapters"] == ["same"]
    config = json.loads((out / "adapters/two/adapter_config.json").read_text(encoding="utf-8"))
    assert (config["r"], config["lora_alpha"]) == (16, 32)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"adapters": []}, "at least one"),
        ({"adapters": ["a", "a"]}, "duplicate"),
        ({"adapters": ["a/b"]}, "invalid adapter name"),
        ({"adapters": "anchor"}, "not a str"),
        ({"identity_adapters": ["nope"]}, "not among the adapters"),
        ({"rank": 7}, "rank must be one of"),
    ],
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_tiny_model(tmp_path / "m", **kwargs)
    assert not (tmp_path / "m").exists()


def test_refuses_non_empty_dir_and_cli_reports_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigError, match="not an empty directory"):
        build_tiny_model(tmp_path / "m")
    assert cli_main(["build-tiny", str(tmp_path / "m")]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert (tmp_path / "m" / "keep.txt").read_text(encoding="utf-8") == "mine"


def test_missing_local_extra_gives_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "peft" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigError, match=r"missing: peft.*pip install 'samalign\[local\]'"):
        build_tiny_model(tmp_path / "m")


# -- identity adapters for real base models ---------------------------------------------------


def test_written_identity_adapter_equals_base(
    model_dir: Path, tmp_path: Path, prompt_ids: Any, base_logits: Any
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from samalign.serving.identity import cached_identity_adapter, write_identity_adapter

    out = write_identity_adapter(model_dir / "adapters" / "anchor", tmp_path / "identity")
    base = AutoModelForCausalLM.from_pretrained(model_dir / "base")
    model = PeftModel.from_pretrained(base, out, adapter_name="identity").eval()
    assert torch.equal(_logits(model, "identity", prompt_ids), base_logits)
    model.load_adapter(model_dir / "adapters" / "anchor", adapter_name="anchor")
    assert not torch.allclose(_logits(model, "anchor", prompt_ids), base_logits)
    with pytest.raises(ConfigError, match="not empty"):
        write_identity_adapter(model_dir / "adapters" / "anchor", tmp_path / "identity")
    with pytest.raises(ConfigError, match="not a peft adapter"):
        write_identity_adapter(model_dir / "base", tmp_path / "other")
    cached = cached_identity_adapter(model_dir / "adapters" / "anchor", cache_dir=tmp_path / "c")
    assert cached == cached_identity_adapter(
        model_dir / "adapters" / "anchor", cache_dir=tmp_path / "c"
    )
    assert (cached / "adapter_model.safetensors").read_bytes() == (
        out / "adapter_model.safetensors"
    ).read_bytes()


def test_serve_adds_identity_calibrate_adapter(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    from samalign.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    argv = ["serve", "--base", str(model_dir / "base"), "--dry-run"]
    argv += ["--adapter", f"anchor={model_dir / 'adapters' / 'anchor'}"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "identity adapter" in captured.err
    assert "calibrate=" in captured.out and "--max-loras 2" in captured.out
    assert main([*argv, "--no-identity"]) == 0
    assert "calibrate=" not in capsys.readouterr().out
