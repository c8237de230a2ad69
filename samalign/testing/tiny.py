"""Build a tiny random model directory for smoke and integration tests, fully offline.

The directory holds a 2-layer random Llama with a byte-level BPE tokenizer trained on an
embedded English corpus, plus one peft LoRA adapter per pipeline stage::

    OUT_DIR/
      base/                   LlamaForCausalLM + PreTrainedTokenizerFast (with a chat template)
      adapters/<name>/        adapter_config.json + adapter_model.safetensors
      samalign-model.json     manifest: base dir, adapter dirs, identity adapters

Every adapter loads unchanged in vLLM (no added tokens, no ``modules_to_save``, bias
``none``, no DoRA) and in peft. Identity adapters have all-zero ``lora_B`` matrices, so they
compute exactly the base model; the others have random non-zero ``lora_A`` and ``lora_B``, so
each gives different outputs. The model is random: its text is gibberish, but it is fast
(a build takes a few seconds on a laptop CPU) and exercises the real serving stack.

Needs the ``local`` extra (torch, transformers, peft, tokenizers, safetensors), imported
lazily so that ``import samalign.testing.tiny`` works without them.
"""

from __future__ import annotations

import json
import shutil
import string
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from samalign.errors import ConfigError
from samalign.serving.extras import quiet_transformers, require_extra
from samalign.serving.model_dir import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    VLLM_LORA_RANKS,
)

__all__ = [
    "BOS_TOKEN",
    "DEFAULT_ADAPTERS",
    "EOS_TOKEN",
    "LORA_TARGET_MODULES",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "SPECIAL_TOKENS",
    "TINY_CHAT_TEMPLATE",
    "build_tiny_model",
]

DEFAULT_ADAPTERS: Final[tuple[str, ...]] = (
    "anchor",
    "explorer",
    "archetype",
    "calibrate",
    "direct_typing",
    "supervised_ner",
    "relations_forward",
    "relations_reverse",
)
"""Adapter names built by default: one per pipeline stage."""

BOS_TOKEN: Final = "<|begin|>"
EOS_TOKEN: Final = "<|end|>"
SPECIAL_TOKENS: Final[tuple[str, ...]] = (
    BOS_TOKEN,
    EOS_TOKEN,
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
)
"""Special tokens, in vocabulary order (ids 0..4). ``<|end|>`` is both eos and pad."""

TINY_CHAT_TEMPLATE: Final = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
"""Chat template: ``<|begin|>`` then ``<|role|>\\ncontent<|end|>\\n`` per message."""

_VOCAB_SIZE: Final = 4096
_HIDDEN: Final = 128
_INTERMEDIATE: Final = 256
_LAYERS: Final = 2
_HEADS: Final = 2
_MAX_POSITIONS: Final = 8192
LORA_TARGET_MODULES: Final[tuple[str, ...]] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
"""The Llama projections every tiny adapter adapts (all attention and MLP projections)."""
_LORA_INIT_STD: Final = 0.1

_CORPUS: Final = """\
The river town woke slowly on Monday morning. Fishermen pulled their boats onto the gravel
bank, the baker opened his shutters, and children ran past the church toward the old stone
school. Nobody in the town could remember a spring as warm as this one, and the farmers
argued at the market about whether the early heat would help or ruin the harvest.

In 1997, Sepp Hochreiter and Jürgen Schmidhuber published a paper on long short-term memory,
better known as LSTM. The network learned to keep information over long time spans, which
earlier recurrent networks had found very difficult. Years later, researchers at Google,
Microsoft and the University of Toronto used such models for speech recognition, machine
translation and handwriting recognition, and the method became a standard tool of deep
learning.

The orchestra played Beethoven's Fifth Symphony at the concert hall in Vienna on Saturday
evening. The conductor, a young woman from Lisbon, had studied the violin in Paris before
she turned to conducting. Critics wrote that the second movement was slow and tender, while
the final movement was loud, bright and full of energy. The audience stood and applauded
for several minutes.

The election campaign was long and bitter. The Labour Party promised new hospitals and
cheaper trains, while the Conservative Party spoke about taxes, trade and the national
budget. On the evening of the vote, crowds gathered outside Parliament in London, and the
results from Scotland, Wales and Northern Ireland arrived late into the night. The prime
minister gave a short speech and thanked the voters.

Marie Curie was born in Warsaw and later worked in Paris, where she studied radioactivity
with her husband Pierre. She was the first person to win the Nobel Prize twice, once in
physics and once in chemistry. Her notebooks are still kept in a lead box, because the paper
itself remains slightly radioactive after more than a hundred years.

The novel tells the story of a sailor who returns home after twenty years at sea. His
village has changed, his father has died, and the girl he loved has married a merchant from
the city. He spends the summer repairing a small house near the harbour, writing letters he
never sends, and talking with an old priest about faith, memory and forgiveness.

A good recipe for bread needs only flour, water, salt and yeast. Mix the dough, let it rest
for an hour, fold it gently, and let it rise again. Bake it in a hot oven until the crust is
brown and the loaf sounds hollow when you tap it. Fresh bread with butter and honey is one
of the simplest pleasures in the world.

Scientists at the laboratory measured the temperature of the lake every day for ten years.
They found that the water warmed faster in winter than in summer, and that the ice melted
almost two weeks earlier than it had in the past. The team published its data so that other
groups could check the results, compare them with their own models, and improve the
forecasts for the next decade.

The company announced a new phone, a faster laptop and a small speaker that answers
questions. Its chief executive said that the products would be sold in Europe, Asia and
North America before the end of the year. Analysts asked about prices, batteries and
privacy, and several journalists wondered whether customers really needed another device.

On the mountain trail, the hikers met a shepherd with two dogs and a large flock of sheep.
He told them that a storm was coming from the west and that they should reach the hut before
dark. They thanked him, drank some water, checked the map, and walked quickly up the last
steep part of the path while the clouds grew darker above the valley.

The museum reopened after a long renovation with a new wing for medieval manuscripts,
Japanese prints and photographs from the nineteenth century. Visitors queued along the
avenue for hours, and the director explained that the collection had been donated by a
family of shipbuilders who had travelled widely and bought whatever they found beautiful.

Football fans filled the stadium in Madrid for the championship final. The visiting team
scored early with a header from a corner kick, but the home side equalised just before half
time. In the second half, a goalkeeper's brilliant saves kept the match level, and the game
was finally decided by penalties after extra time. Thousands celebrated in the streets.

Our grandmother kept bees behind the orchard. Every August she lifted the wooden frames out
of the hives, cut away the wax caps with a warm knife, and spun the honey out in a machine
that rattled like an old washing machine. The jars lined the pantry shelves, golden and
heavy, and each one carried a label written in her careful, slanted handwriting.

The government introduced a bill to reform pensions, healthcare and unemployment insurance.
Opposition leaders criticised the proposal as expensive and vague, and trade unions
organised strikes in several industrial regions. After months of negotiation, a compromise
was reached: the retirement age would rise gradually, while benefits for workers with
physically demanding jobs would be protected.

Astronomers observed a distant galaxy whose light had travelled for billions of years. Using
a telescope in the Chilean desert, they measured its spectrum and estimated its mass,
distance and chemical composition. The observations suggested that stars had formed much
earlier than expected, which surprised theorists and prompted new computer simulations.

Software engineers often disagree about programming languages, frameworks and editors. Some
prefer Python for its readability, others choose Rust for safety and speed, and many still
write Java, JavaScript or C++ every day. What matters most, experienced developers say, is
clear documentation, careful testing, honest code review and a team that communicates well.

The hospital opened a new clinic for children with rare diseases. Doctors, nurses and
geneticists work together there, and families no longer have to travel between three
different cities for appointments. A charity founded by former patients paid for the
playground, the library and a small garden where parents can rest between treatments.

During the winter festival, the square was decorated with lanterns, ribbons and candles.
Musicians played folk songs on fiddles and accordions, vendors sold roasted chestnuts and
spiced wine, and dancers in embroidered costumes performed traditional steps that their
great-grandparents had taught them. Snow began to fall shortly before midnight.

Economists expect inflation to slow next year as energy prices stabilise and supply chains
recover. However, interest rates remain high, mortgages are expensive, and many households
struggle to pay rent. The central bank warned that unemployment could increase if consumer
spending weakens, and it promised to watch wages, exports and productivity closely.

The philosopher argued that knowledge begins with doubt. Her lectures at the university
attracted students from literature, mathematics, biology and law, who debated questions of
truth, justice, freedom and responsibility late into the evening. Her most famous book,
translated into twenty-seven languages, is still read in seminars across the world.

Questions and answers: Who wrote the letter? What is the name of the city? When did the war
begin and end? Which person, organisation, location or event is mentioned in the sentence?
Return the answer as a JSON object with a list of entities, their types and their relations.
Input text, output format, instruction, schema, definition, example, label, type, span.
"""


def _validate(adapters: Sequence[str], identity_adapters: Sequence[str], rank: int) -> None:
    if isinstance(adapters, str) or isinstance(identity_adapters, str):
        raise ConfigError("adapters and identity_adapters must be sequences of names, not a str")
    if not adapters:
        raise ConfigError("at least one adapter name is needed")
    if len(set(adapters)) != len(adapters):
        raise ConfigError(f"duplicate adapter names: {list(adapters)}")
    for name in adapters:
        if not name or not all(c.isalnum() or c in "_-." for c in name) or name.startswith("."):
            raise ConfigError(
                f"invalid adapter name {name!r}: use letters, digits, '_', '-' or '.'"
            )
    unknown = sorted(set(identity_adapters) - set(adapters))
    if unknown:
        raise ConfigError(
            f"identity adapters {unknown} are not among the adapters {list(adapters)}"
        )
    if rank not in VLLM_LORA_RANKS:
        raise ConfigError(f"rank must be one of {VLLM_LORA_RANKS} (vLLM's --max-lora-rank choices)")


def _train_tokenizer(corpus: Sequence[str] = ()) -> Any:
    """Train the byte-level BPE tokenizer and wrap it as a PreTrainedTokenizerFast.

    ``corpus`` adds texts to the embedded one (e.g. the prompts a demo model will see, so
    that they tokenise into fewer tokens).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    printable = "".join(c for c in string.printable if c not in "\x0b\x0c")
    tok.train_from_iterator(
        [_CORPUS, *corpus, printable, " " + " ".join(printable)], trainer=trainer
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=_MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
        chat_template=TINY_CHAT_TEMPLATE,
    )


def _build(
    out: Path,
    adapters: Sequence[str],
    identity_adapters: Sequence[str],
    seed: int,
    rank: int,
    corpus: Sequence[str] = (),
) -> None:
    """Write base/, adapters/ and the manifest into the (empty, temporary) directory out."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = _train_tokenizer(corpus)
    bos_id = tokenizer.convert_tokens_to_ids(BOS_TOKEN)
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=_HIDDEN,
        intermediate_size=_INTERMEDIATE,
        num_hidden_layers=_LAYERS,
        num_attention_heads=_HEADS,
        num_key_value_heads=_HEADS,
        max_position_embeddings=_MAX_POSITIONS,
        tie_word_embeddings=False,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        dtype="float32",
    )
    base_dir = out / "base"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id
    )
    model.save_pretrained(base_dir, safe_serialization=True)
    tokenizer.save_pretrained(base_dir)
    # transformers 5 writes "TokenizersBackend"; the classic name loads in 4.x and 5.x alike.
    tok_config_path = base_dir / "tokenizer_config.json"
    tok_config = json.loads(tok_config_path.read_text(encoding="utf-8"))
    tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_config_path.write_text(json.dumps(tok_config, indent=2) + "\n", encoding="utf-8")

    lora_config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGET_MODULES),
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=str(base_dir.resolve()),
    )
    peft_model = get_peft_model(model, lora_config)
    lora_params = sorted(
        (name, param)
        for name, param in peft_model.named_parameters()
        if ".lora_A." in name or ".lora_B." in name
    )
    adapter_paths: dict[str, str] = {}
    for index, name in enumerate(adapters):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index + 1)
        identity = name in identity_adapters
        with torch.no_grad():
            for param_name, param in lora_params:
                if identity and ".lora_B." in param_name:
                    param.zero_()
                else:
                    param.copy_(torch.randn(param.shape, generator=generator) * _LORA_INIT_STD)
        rel = f"adapters/{name}"
        peft_model.save_pretrained(str(out / rel), safe_serialization=True)
        (out / rel / "README.md").unlink(missing_ok=True)  # peft's empty model card
        adapter_paths[name] = rel

    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "base": "base",
        "adapters": adapter_paths,
        "identity_adapters": [a for a in adapters if a in identity_adapters],
        "note": "tiny random model for smoke tests",
        "seed": seed,
        "rank": rank,
        "dtype": "float32",
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def build_tiny_model(
    out_dir: str | Path,
    *,
    adapters: Sequence[str] = DEFAULT_ADAPTERS,
    identity_adapters: Sequence[str] = ("calibrate",),
    seed: int = 0,
    rank: int = 8,
    corpus: Sequence[str] = (),
) -> Path:
    """Build a tiny random model directory (base model, tokenizer, LoRA adapters), offline.

    The base is a 2-layer random ``LlamaForCausalLM`` (hidden 128, head_dim 64, 8192
    positions, float32) with a byte-level BPE tokenizer and a chat template; ``<|end|>`` is
    eos and pad. Each adapter is a peft LoRA (``r=rank``, ``lora_alpha=2*rank``, all attention
    and MLP projections, bias ``none``) that loads in vLLM and peft. The same seed gives the
    same weights.

    Args:
        out_dir: Directory to create. It must not exist or be empty; missing parents are
            created. The manifest written into it uses paths relative to it, but the adapters'
            ``base_model_name_or_path`` is the absolute path of ``out_dir/base``.
        adapters: Adapter names; each becomes ``adapters/<name>/``.
        identity_adapters: Names (among ``adapters``) whose LoRA ``B`` matrices are all zero,
            so that the adapter computes exactly the base model.
        seed: Seed for the base weights and the adapter weights.
        rank: LoRA rank; one of vLLM's ``--max-lora-rank`` choices (1, 8, 16, 32, ...).
        corpus: Extra texts the tokenizer is trained on besides the embedded corpus (the
            demo passes its prompts, so they tokenise into fewer tokens).

    Returns:
        The absolute path of the model directory.

    Raises:
        ConfigError: The ``local`` extra is not installed, an argument is invalid, or
            ``out_dir`` exists and is not an empty directory.
    """
    _validate(adapters, identity_adapters, rank)
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not an empty directory")
    require_extra(
        "building a tiny model", ("torch", "transformers", "peft", "tokenizers", "safetensors")
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the target, then rename: an interrupted build leaves no half directory.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private
        with warnings.catch_warnings():
            # peft warns about base_model_name_or_path (fixed below); transformers about
            # deprecations that do not concern a freshly built model.
            warnings.simplefilter("ignore")
            with quiet_transformers():
                _build(tmp, list(adapters), list(identity_adapters), seed, rank, list(corpus))
        _fix_base_paths(tmp, out)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _fix_base_paths(tmp: Path, out: Path) -> None:
    """Point each adapter's ``base_model_name_or_path`` at the final base dir, not the temp one."""
    final_base = str(out / "base")
    for config_path in (tmp / "adapters").glob("*/adapter_config.json"):
        data = json.loads(config_path.read_text(encoding="utf-8"))
        data["base_model_name_or_path"] = final_base
        config_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
