"""``samalign demo``: the whole loop offline on a tiny model, on real components.

What it does, on a fresh machine with no model weights:

1. reads the bundled demonstration set (24 CoNLL04 sentences, ``finetune/data/SOURCES.md``)
   and builds training examples for every stage with the data builders (the same prompts the
   graph sends);
2. builds the tiny random Llama of :mod:`samalign.testing.tiny` (tokenizer trained on the
   demo's prompts and answers, so they tokenise compactly) and gives it a short
   full-parameter language-model pass — a stand-in for the pre-training a real base model
   has — over text without any gold label: the stage prompts that contain only the sentence
   (extractor and relation prompts, the calibrator's instructions and definitions) and
   generic copy exercises (random word spans of the sentences listed in JSON), so the model
   can read the prompt format and copy words into JSON strings, as any pretrained LLM can;
3. trains one peft LoRA adapter per stage with the trainer (anchor, explorer, archetype,
   calibrate, relations_forward, relations_reverse); the calibrator is trained too because a
   tiny model has no frozen knowledge to calibrate with (with a real base model the
   calibrator is frozen and served through an identity adapter);
4. serves the model directory in-process (transformers + peft backend, or a vLLM server)
   and runs the joint graph on the same sentences;

   with ``ner_mode="supervised"`` (``samalign demo --ner-mode supervised``), AnchorAlign's
   supervised setting: step 3 trains the ``supervised_ner`` adapter (typed entities, final)
   instead of anchor, explorer, archetype and calibrate, and step 4 runs the supervised joint
   graph (supervised NER → forward/reverse decoders → anchor filter);
5. scores the entities (strict span + type) and the relation triplets (strict) against the
   gold annotation and writes ``demo_report.json``.

The model is a *tiny demonstration model trained on these very sentences*: the scores show
that the loop works end to end, not that the model generalises.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from samalign.errors import ConfigError
from samalign.evaluation.metrics import PRF, RelationTuple, relation_prf, span_prf
from samalign.finetune.builders import (
    ChatExample,
    SourceDataset,
    build_archetype_examples,
    build_calibrate_examples,
    build_extraction_examples,
    build_relation_examples,
    build_supervised_examples,
    read_source,
    write_examples,
)
from samalign.finetune.config import TrainConfig
from samalign.finetune.trainer import TrainResult, train
from samalign.graphs.options import NerMode, PipelineOptions
from samalign.prompts.archetypes import archetype_table
from samalign.prompts.domain import Domain, load_domain
from samalign.serving.extras import quiet_transformers
from samalign.serving.models import StageModels
from samalign.types import Archetype

if TYPE_CHECKING:
    from samalign.graphs.results import JointResult

log = logging.getLogger("samalign.demo")

DEMO_DOMAIN = "conll04"
DEMO_DATA = "demo_conll04.json"
DEMO_STAGES: tuple[str, ...] = tuple(PipelineOptions().joint_model_stages)
"""The stages the zero-shot demo trains: the joint graph's (SAM-NER's NER, then the relation
decoders)."""

SUPERVISED_DEMO_STAGES: tuple[str, ...] = tuple(
    PipelineOptions(ner_mode="supervised").joint_model_stages
)
"""The stages ``--ner-mode supervised`` trains: its joint graph's (AnchorAlign's supervised
setting)."""


def demo_stages(ner_mode: NerMode = "zero_shot") -> tuple[str, ...]:
    """The stages a demo trains and serves in ``ner_mode``."""
    return SUPERVISED_DEMO_STAGES if ner_mode == "supervised" else DEMO_STAGES


DEMO_NOTE = (
    "This is a TINY DEMONSTRATION MODEL (a 2-layer random Llama given a short language-model "
    "pass and LoRA adapters) trained on these very sentences. The scores show that the loop "
    "data builder -> peft training -> serving -> graph -> scoring works on real components; "
    "they say nothing about accuracy on unseen text."
)
REPORT_NAME = "demo_report.json"

Backend = Literal["transformers", "vllm-server"]

DEMO_PROMPTS: dict[str, str] = {
    "calibrate": (
        '{{ {"instruction": instruction, "Candidate Types": candidate_types, "Text": text, '
        '"Initial Output": initial_output} | json }}'
    ),
    "relations_forward": (
        '{{ {"instruction": instruction, "schema": relations | map(attribute="relation") '
        '| list, "input": text} | json }}'
    ),
    "relations_reverse": (
        '{{ {"instruction": instruction, "schema": relations | map(attribute="relation") '
        '| list, "input": text} | json }}'
    ),
}
"""Compact prompt overrides of the demo domain (a domain's ``prompts``).

The default calibrator prompt lists the 14 archetype and the target type definitions, and the
relation prompts the relation definitions and argument types: 450–900 tokens with the tiny
tokenizer, which a tiny model cannot use and which would triple the demo's training time. The
demo's domain keeps every variable's content but drops the definitions — the domain
prompt-override feature at work; the builders render the same overrides (train/serve
parity)."""


def demo_domain() -> Domain:
    """The CoNLL04 domain with the demo's compact calibrator and relation prompts."""
    from samalign.prompts.domain import domain_from_mapping

    data = load_domain(DEMO_DOMAIN).model_dump(mode="json")
    data["name"] = "conll04_demo"
    data["prompts"] = dict(DEMO_PROMPTS)
    return domain_from_mapping(data, origin="the demo domain")


@dataclass(frozen=True)
class StageRecipe:
    """How long and how fast one stage adapter is trained in the demo."""

    steps: int
    learning_rate: float
    batch_size: int = 2


DEFAULT_RECIPES: dict[str, StageRecipe] = {
    "anchor": StageRecipe(steps=800, learning_rate=5e-3),
    "explorer": StageRecipe(steps=800, learning_rate=5e-3),
    "archetype": StageRecipe(steps=1200, learning_rate=5e-3),
    "calibrate": StageRecipe(steps=800, learning_rate=5e-3),
    "relations_forward": StageRecipe(steps=1000, learning_rate=5e-3),
    "relations_reverse": StageRecipe(steps=1000, learning_rate=5e-3),
    "supervised_ner": StageRecipe(steps=1000, learning_rate=5e-3),
}
"""Per-stage training length. A tiny random-init model needs far higher learning rates and
more epochs than Table 7's settings for an 8B model; the rank and alpha stay Table 7's."""


@dataclass
class DemoOptions:
    """Settings of a demo run (the defaults are the measured recipe).

    Attributes:
        out: Output folder (model directory, training data, report).
        backend: ``transformers`` (in-process, default) or ``vllm-server``.
        vllm_python: Interpreter of a vLLM environment (``vllm-server`` backend).
        lm_steps: Optimizer steps of the language-model pass.
        lm_learning_rate: Its learning rate.
        lm_batch_size: Its batch size.
        copy_exercises: Copy exercises per sentence in the language-model pass.
        lora_r: LoRA rank of every adapter (Table 7: 8); alpha is twice the rank.
        recipes: Per-stage training length and learning rate.
        constrain_mentions: Run the graph with mentions restricted to strings of the sentence
            (JSON-schema constrained decoding, ``PipelineOptions.constrain_mentions``): the
            setting meant for weak models, and the tiny model is one.
        sentences: Use the first N demo sentences (default: all).
        train_file: Train on this SpERT JSON file (CoNLL04 types, e.g. the whole CoNLL04 train
            split) instead of the bundled sentences; the same recipe. A model trained on the
            whole CoNLL04 train split writes candidates for nearly every CoNLL04 sentence, so
            every joint-graph stage fires: the fixture of the throughput benchmarks (it does
            not generalise: quality on unseen sentences stays near zero).
        eval_sentences: Run and score the graph on the first N training sentences only
            (default: all of them).
        seed: Seed of everything.
        progress: Show progress bars.
        ner_mode: ``zero_shot`` (SAM-NER's stages) or ``supervised`` (AnchorAlign's setting:
            the ``supervised_ner`` adapter instead of anchor, explorer, archetype and
            calibrate, and the supervised joint graph).
    """

    out: Path
    backend: Backend = "transformers"
    vllm_python: str | None = None
    lm_steps: int = 400
    lm_learning_rate: float = 2e-3
    lm_batch_size: int = 4
    copy_exercises: int = 8
    lora_r: int = 8
    recipes: Mapping[str, StageRecipe] = field(default_factory=lambda: dict(DEFAULT_RECIPES))
    constrain_mentions: bool = True
    sentences: int | None = None
    train_file: Path | None = None
    eval_sentences: int | None = None
    seed: int = 0
    progress: bool = True
    ner_mode: NerMode = "zero_shot"

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages this demo trains and serves."""
        return demo_stages(self.ner_mode)


@dataclass
class DemoReport:
    """What a demo run measured (written as ``demo_report.json``)."""

    entity: dict[str, Any]
    relation_strict: dict[str, Any]
    sentences: int
    seconds: float
    phases: dict[str, float]
    training: dict[str, dict[str, Any]]
    backend: str
    results: list[dict[str, Any]]
    constrain_mentions: bool = True
    note: str = DEMO_NOTE
    ner_mode: str = "zero_shot"

    def to_dict(self) -> dict[str, Any]:
        """The JSON report (scores first)."""
        return {
            "entity_f1": self.entity["f1"],
            "relation_strict_f1": self.relation_strict["f1"],
            "ner_mode": self.ner_mode,
            "sentences": self.sentences,
            "seconds": round(self.seconds, 1),
            "entity": self.entity,
            "relation_strict": self.relation_strict,
            "phases_seconds": {k: round(v, 1) for k, v in self.phases.items()},
            "training": self.training,
            "backend": self.backend,
            "constrain_mentions": self.constrain_mentions,
            "data": "samalign/finetune/data/demo_conll04.json (see SOURCES.md there)",
            "note": self.note,
            "results": self.results,
        }


EntityKey = tuple[int, int, str]
TripletKey = tuple[int, int, str, str, int, int, str]


def _summary(prf: PRF) -> dict[str, Any]:
    return {
        "precision": round(prf.precision, 4),
        "recall": round(prf.recall, 4),
        "f1": round(prf.f1, 4),
        "tp": prf.tp,
        "predicted": prf.pred,
        "gold": prf.gold,
        "per_label_f1": {k: round(v.f1, 4) for k, v in sorted(prf.per_label.items())},
    }


def score_entities(
    gold: Sequence[set[EntityKey]], pred: Sequence[set[EntityKey]]
) -> dict[str, Any]:
    """Strict micro P/R/F1 of ``(start, end, label)`` character spans (evaluation metric)."""
    return _summary(span_prf(gold, pred))


def score_relations(
    gold: Sequence[set[TripletKey]], pred: Sequence[set[TripletKey]]
) -> dict[str, Any]:
    """AnchorAlign's strict relation micro P/R/F1 (the evaluation metric).

    Items are ``(head start, head end, head label, relation, tail start, tail end, tail
    label)``.
    """

    def tuples(items: set[TripletKey]) -> set[RelationTuple]:
        return {((hs, he), hl, r, (ts, te), tl) for hs, he, hl, r, ts, te, tl in items}

    return _summary(
        relation_prf([tuples(g) for g in gold], [tuples(p) for p in pred], mode="strict")
    )


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------


def demo_dataset(sentences: int | None = None, path: Path | None = None) -> SourceDataset:
    """The bundled demonstration sentences (SpERT format), optionally the first N.

    Args:
        sentences: Keep the first N sentences.
        path: Read this SpERT JSON file (CoNLL04 types) instead of the bundled sentences.
    """
    if path is not None:
        dataset = read_source(path, "spert")
    else:
        resource = resources.files("samalign.finetune") / "data" / DEMO_DATA
        with resources.as_file(resource) as bundled:
            dataset = read_source(bundled, "spert")
    if sentences is not None:
        dataset = SourceDataset(
            path=dataset.path,
            format=dataset.format,
            records=dataset.records[:sentences],
            label_set=dataset.label_set,
            relation_set=dataset.relation_set,
        )
    return dataset


def demo_examples(
    dataset: SourceDataset, domain: Domain, ner_mode: NerMode = "zero_shot"
) -> dict[str, list[ChatExample]]:
    """Training examples of every demo stage, rendered exactly as the graph prompts.

    The extractors ask about the domain's types in domain order and the classifier about
    all 14 archetypes, as at inference (the demo trains on the prompts it will be asked).
    With ``ner_mode="supervised"``: the supervised NER stage and the relation decoders.
    """
    return {stage: _stage_examples(stage, dataset, domain) for stage in demo_stages(ner_mode)}


def _stage_examples(stage: str, dataset: SourceDataset, domain: Domain) -> list[ChatExample]:
    """One stage's examples; schemas in domain order (explorer unshuffled), all 14 archetypes."""
    if stage == "anchor":
        return build_extraction_examples("anchor", [dataset], domain=domain)[0]
    if stage == "explorer":
        return build_extraction_examples("explorer", [dataset], domain=domain, shuffle_types=False)[
            0
        ]
    if stage == "archetype":
        return build_archetype_examples([dataset], domain=domain, schema="full")[0]
    if stage == "calibrate":
        return build_calibrate_examples([dataset], domain=domain)[0]
    if stage == "supervised_ner":
        return build_supervised_examples([dataset], domain=domain)[0]
    return build_relation_examples(stage, [dataset], domain=domain)[0]


def _random_span(words: Sequence[str], rng: random.Random) -> str:
    n = rng.randint(1, 3)
    i = rng.randrange(0, max(1, len(words) - n + 1))
    return " ".join(words[i : i + n])


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def language_model_corpus(
    dataset: SourceDataset,
    domain: Domain,
    *,
    copy_exercises: int = 8,
    seed: int = 0,
    ner_mode: NerMode = "zero_shot",
) -> list[str]:
    """Label-free texts for the language-model pass (see module docs).

    * every stage prompt of every sentence *without its labels*: the extractor and relation
      prompts as they are, the classifier prompt with the untagged sentence, the calibrator
      prompt with an empty initial output (``ner_mode="supervised"``: the supervised NER and
      relation prompts);
    * the answer skeletons with every list empty (e.g. all 14 archetypes mapped to ``[]``);
    * per sentence ``copy_exercises`` JSON texts that copy 1–4 random word spans of it into
      the shapes the answers use (a list, ``entity`` records, subject/object blocks), with
      the placeholder ``"span"`` where an answer has a type or relation.

    No gold mention, type or relation of a demo sentence appears.
    """
    from samalign.finetune.builders.common import stage_spec

    archetypes = [a.value for a in Archetype]
    names = domain.names
    relations = domain.relation_schema()
    definitions = {
        "archetype_definitions": [
            {"name": a.name.value, "definition": a.definition} for a in archetype_table().archetypes
        ],
        "target_definitions": [
            {"name": t.name, "definition": t.definition} for t in domain.entity_types
        ],
    }
    supervised = ner_mode == "supervised"
    record_key = "mention" if supervised else "entity"  # the typed records the stages write
    texts: list[str] = []
    rng = random.Random(seed)
    for rec in dataset.records:
        text = rec.text
        if supervised:
            texts.append(
                stage_spec("supervised_ner", domain).render({"labels": names, "text": text})
            )
        else:
            texts.append(stage_spec("anchor", domain).render({"labels": names, "text": text}))
            texts.append(stage_spec("explorer", domain).render({"labels": names, "text": text}))
            texts.append(
                stage_spec("archetype", domain).render({"labels": archetypes, "text": text})
            )
        for stage in ("relations_forward", "relations_reverse"):
            texts.append(stage_spec(stage, domain).render({"relations": relations, "text": text}))
        if not supervised:
            texts.append(
                stage_spec("calibrate", domain).render(
                    {"text": text, "initial_output": {}, "candidate_types": names, **definitions}
                )
            )
        words = text.split(" ")
        for _ in range(copy_exercises):
            shape = rng.randrange(4)
            spans = [_random_span(words, rng) for _ in range(rng.randint(1, 4))]
            if shape == 0:
                value: Any = {"Input": text, "spans": spans}
            elif shape == 1:
                value = [{record_key: s, "type": "span"} for s in spans]
            else:
                own, other = ("subject", "object") if shape == 2 else ("object", "subject")
                pairs = [{other: s, "relation": "span"} for s in spans[1:] or spans]
                value = [{own: spans[0], "pairs": pairs}]
            texts.append(_compact(value))
    skeletons = [{n: [] for n in names}, {a: [] for a in archetypes}, []]
    texts += [_compact(value) for value in skeletons for _ in range(4)]
    return texts


# ------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------


def language_model_pass(
    base_dir: Path,
    texts: Sequence[str],
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Full-parameter causal-LM training of the base model on ``texts``; saved in place.

    Returns:
        Steps, first and last loss, seconds.
    """
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model.train()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    sequences = [
        tokenizer(
            ("" if t.startswith(bos) else bos) + t + ("" if t.rstrip().endswith(eos) else eos),
            add_special_tokens=False,
        )["input_ids"]
        for t in texts
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    warmup = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    # batches of similar length (little padding), drawn at random each step
    ordered = sorted(sequences, key=len)
    batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    losses: list[float] = []
    start = time.perf_counter()
    for _ in tqdm(range(steps), desc="language-model pass", unit="step", disable=not progress):
        batch = rng.choice(batches)
        width = max(len(s) for s in batch)
        ids = torch.full((len(batch), width), tokenizer.eos_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    with quiet_transformers():
        model.save_pretrained(base_dir)
    return {
        "steps": steps,
        "texts": len(texts),
        "first_loss": round(losses[0], 4) if losses else None,
        "final_loss": round(sum(losses[-20:]) / max(1, len(losses[-20:])), 4) if losses else None,
        "seconds": round(time.perf_counter() - start, 1),
    }


def train_demo_adapters(
    model_dir: Path,
    examples: Mapping[str, Sequence[ChatExample]],
    options: DemoOptions,
) -> dict[str, TrainResult]:
    """Train one LoRA adapter per stage into ``model_dir/adapters/<stage>``."""
    data_dir = options.out / "data"
    runs_dir = options.out / "runs"
    results: dict[str, TrainResult] = {}
    for stage in options.stages:
        recipe = options.recipes[stage]
        data = data_dir / f"{stage}.jsonl"
        write_examples(data, examples[stage])
        run_dir = runs_dir / stage
        shutil.rmtree(run_dir, ignore_errors=True)
        config = TrainConfig(
            base_model=str(model_dir / "base"),
            train_file=str(data),
            output_dir=str(run_dir),
            stage=stage,
            lora_r=options.lora_r,
            lora_alpha=2 * options.lora_r,
            learning_rate=recipe.learning_rate,
            max_steps=recipe.steps,
            batch_size=recipe.batch_size,
            gradient_accumulation=1,
            logging_steps=max(1, recipe.steps // 10),
            save_steps=recipe.steps,
            save_total_limit=1,
            seed=options.seed,
            progress_bar=options.progress,
            precision="fp32",
        )
        result = train(config)
        target = model_dir / "adapters" / stage
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy2(run_dir / name, target / name)
        results[stage] = result
    return results


def build_demo_model(
    options: DemoOptions, dataset: SourceDataset, examples: Mapping[str, Sequence[ChatExample]]
) -> tuple[Path, dict[str, Any]]:
    """Build the tiny base model, give it the language-model pass; returns the model dir."""
    from samalign.testing.tiny import build_tiny_model

    model_dir = options.out / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    lm_texts = language_model_corpus(
        dataset,
        demo_domain(),
        copy_exercises=options.copy_exercises,
        seed=options.seed,
        ner_mode=options.ner_mode,
    )
    # the tokenizer learns the prompts and the label-free pass texts, not the gold answers
    corpus = [ex.prompt for exs in examples.values() for ex in exs] + lm_texts
    build_tiny_model(model_dir, adapters=options.stages, identity_adapters=(),
                     seed=options.seed, corpus=corpus)  # fmt: skip
    stats = language_model_pass(
        model_dir / "base",
        lm_texts,
        steps=options.lm_steps,
        learning_rate=options.lm_learning_rate,
        batch_size=options.lm_batch_size,
        seed=options.seed,
        progress=options.progress,
    )
    manifest_path = model_dir / "samalign-model.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["note"] = "samalign demo: tiny model trained on the demo sentences (not a real model)"
    manifest["identity_adapters"] = []
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return model_dir, stats


# ------------------------------------------------------------------------------------------
# serving and the graph
# ------------------------------------------------------------------------------------------


@contextmanager
def demo_models(model_dir: Path, options: DemoOptions) -> Iterator[StageModels]:
    """Stage models serving the demo model directory with the chosen backend.

    Raises:
        ConfigError: The backend is not available here (naming what is missing).
    """
    stages = list(options.stages)
    if options.backend == "transformers":
        import importlib

        transformers_models = getattr(
            importlib.import_module("samalign.serving"), "transformers_models", None
        )
        if transformers_models is None:
            raise ConfigError(
                "the in-process transformers backend (samalign.serving.transformers_models) "
                "is not part of this build; run the demo with --backend vllm-server "
                "--vllm-python <python of a vLLM environment>"
            )
        with quiet_transformers():
            models: StageModels = transformers_models(model_dir, stages=stages)
        try:
            yield models
        finally:
            close = getattr(models, "close", None)
            if callable(close):
                close()
        return
    if not options.vllm_python:
        raise ConfigError("the vllm-server backend needs --vllm-python (a vLLM environment)")
    from samalign.serving import vllm_server_models
    from samalign.serving.server_process import running_vllm_server

    with running_vllm_server(
        model_dir,
        python=options.vllm_python,
        log_path=options.out / "vllm-server.log",
        max_model_len=4096,
        identity=False,
        extra_args=["--dtype", "float32"],
    ) as server:
        yield vllm_server_models(server.url, stages=stages)


def _entity_json(entity: Any) -> dict[str, Any]:
    return {
        "start": entity.start,
        "end": entity.end,
        "text": entity.text,
        "label": entity.label,
        "archetype": entity.archetype.value if entity.archetype else None,
    }


def _triplet_json(triplet: Any) -> dict[str, Any]:
    return {
        "head": triplet.head.text,
        "head_label": triplet.head.label,
        "relation": triplet.relation,
        "tail": triplet.tail.text,
        "tail_label": triplet.tail.label,
        "sources": list(triplet.sources),
    }


def _triplet_key(triplet: Any) -> TripletKey:
    h, t = triplet.head, triplet.tail
    return (h.start, h.end, str(h.label), triplet.relation, t.start, t.end, str(t.label))


def run_joint_graph(
    texts: Sequence[str],
    models: StageModels,
    domain: Domain,
    *,
    constrain_mentions: bool = True,
    concurrency: int = 8,
    ner_mode: NerMode = "zero_shot",
) -> list[JointResult]:
    """Run the joint graph over the texts; one typed result per text, in order."""
    from samalign.graphs import JointResult, PipelineOptions, RunContext, build_joint_graph

    graph = build_joint_graph(
        PipelineOptions(constrain_mentions=constrain_mentions, ner_mode=ner_mode)
    )
    context = RunContext(domain=domain, models=models)
    states = graph.batch(
        [{"text": t} for t in texts], config={"max_concurrency": concurrency}, context=context
    )
    return [JointResult.from_state(state) for state in states]


def sentence_record(
    text: str,
    result: JointResult,
    gold_entities: set[EntityKey],
    gold_triplets: set[Any],
    *,
    ner_mode: NerMode = "zero_shot",
) -> dict[str, Any]:
    """The stage-by-stage flow of one sentence (for the report and the printout)."""
    return {
        "text": text,
        "supervised": ner_mode == "supervised",
        "anchor": list(result.anchor_mentions),
        "explorer": list(result.explorer_mentions),
        "ccr_dropped": [n.mention for n in result.noise],
        "archetypes": {e.text: e.archetype.value for e in result.archetyped if e.archetype},
        "entities": [_entity_json(e) for e in result.entities],
        "forward": [_triplet_json(t) for t in result.forward_triplets],
        "reverse": [_triplet_json(t) for t in result.reverse_triplets],
        "kept": [_triplet_json(t) for t in result.triplets],
        "filtered": [
            {**_triplet_json(d.triplet), "reason": d.reason} for d in result.dropped_triplets
        ],
        "gold_entities": sorted(gold_entities),
        "gold_triplets": sorted(gold_triplets),
        "diagnostics": [f"{d.stage}/{d.kind}: {d.message}" for d in result.diagnostics],
    }


def format_flow(record: Mapping[str, Any], index: int) -> list[str]:
    """Human-readable lines of one sentence's stage-by-stage flow."""
    gold_entities = {(s, e, label) for s, e, label in record["gold_entities"]}
    lines = [f"[{index}] {record['text']}"]
    supervised = record.get("supervised", False)
    if not supervised:
        lines.append(f"    anchor      {record['anchor']}")
        lines.append(f"    explorer    {record['explorer']}")
        lines.append(f"    CCR dropped {record['ccr_dropped']}")
        lines.append(f"    archetypes  {record['archetypes']}")
    labelled = []
    for ent in record["entities"]:
        mark = "ok" if (ent["start"], ent["end"], ent["label"]) in gold_entities else "WRONG"
        labelled.append(f"{ent['text']}={ent['label']} ({mark})")
    lines.append(f"    {'supervised' if supervised else 'calibrated'}  {labelled}")
    missed = sorted(
        gold_entities - {(e["start"], e["end"], e["label"]) for e in record["entities"]}
    )
    if missed:
        text = record["text"]
        lines.append(f"    missed      {[f'{text[s:e]}={label}' for s, e, label in missed]}")

    def show(items: Sequence[Mapping[str, Any]]) -> list[str]:
        return [f"({t['head']}, {t['relation']}, {t['tail']})" for t in items]

    lines.append(f"    forward     {show(record['forward'])}")
    lines.append(f"    reverse     {show(record['reverse'])}")
    lines.append(f"    kept        {show(record['kept'])}")
    if record["filtered"]:
        filtered = [
            f"({t['head']}, {t['relation']}, {t['tail']}): {t['reason']}"
            for t in record["filtered"]
        ]
        lines.append(f"    filtered    {filtered}")
    return lines


# ------------------------------------------------------------------------------------------
# the demo
# ------------------------------------------------------------------------------------------


def run_demo(options: DemoOptions) -> DemoReport:
    """Run the whole demo (see module docs) and write ``OUT/demo_report.json``.

    Args:
        options: Output folder, backend and recipe.

    Raises:
        ConfigError: A backend that is not available, or bad options.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # only effective before torch loads
    start = time.perf_counter()
    phases: dict[str, float] = {}
    options.out.mkdir(parents=True, exist_ok=True)
    domain = demo_domain()
    dataset = demo_dataset(options.sentences, options.train_file)
    examples = demo_examples(dataset, domain, options.ner_mode)
    phases["build_data"] = time.perf_counter() - start

    t = time.perf_counter()
    model_dir, lm_stats = build_demo_model(options, dataset, examples)
    phases["base_model_and_language_model_pass"] = time.perf_counter() - t

    t = time.perf_counter()
    trained = train_demo_adapters(model_dir, examples, options)
    phases["train_adapters"] = time.perf_counter() - t

    t = time.perf_counter()
    scored = dataset.records[: options.eval_sentences]
    texts = [rec.text for rec in scored]
    with demo_models(model_dir, options) as models:
        results = run_joint_graph(
            texts,
            models,
            domain,
            constrain_mentions=options.constrain_mentions,
            ner_mode=options.ner_mode,
        )
    phases["serve_and_run_graph"] = time.perf_counter() - t

    gold_entities: list[set[EntityKey]] = []
    gold_triplets: list[set[TripletKey]] = []
    for rec in scored:
        labels = {m: domain.label_for_name(m.type) or m.type for m in rec.mentions}
        gold_entities.append({(m.start or 0, m.end or 0, labels[m]) for m in rec.mentions})
        triplets: set[TripletKey] = set()
        for rel in rec.relations:
            h, tl = rec.mentions[rel.head], rec.mentions[rel.tail]
            rtype = domain.relation_for_name(rel.type)
            triplets.add(
                (h.start or 0, h.end or 0, labels[h], rtype.label if rtype else rel.type,
                 tl.start or 0, tl.end or 0, labels[tl])
            )  # fmt: skip
        gold_triplets.append(triplets)
    pred_entities = [{(e.start, e.end, str(e.label)) for e in r.entities} for r in results]
    pred_triplets = [{_triplet_key(t) for t in r.triplets} for r in results]
    entity = score_entities(gold_entities, pred_entities)
    relation = score_relations(gold_triplets, pred_triplets)
    records = [
        sentence_record(text, result, ge, gt, ner_mode=options.ner_mode)
        for text, result, ge, gt in zip(texts, results, gold_entities, gold_triplets, strict=True)
    ]
    training = {"language_model_pass": lm_stats}
    for stage, result in trained.items():
        training[stage] = {
            **{k: v for k, v in result.to_dict().items() if k != "output_dir"},
            "learning_rate": options.recipes[stage].learning_rate,
            "lora_r": options.lora_r,
        }
    report = DemoReport(
        entity=entity,
        relation_strict=relation,
        sentences=len(texts),
        seconds=time.perf_counter() - start,
        phases=phases,
        training=training,
        backend=options.backend,
        results=records,
        constrain_mentions=options.constrain_mentions,
        ner_mode=options.ner_mode,
    )
    (options.out / REPORT_NAME).write_text(
        json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return report


__all__ = [
    "DEFAULT_RECIPES",
    "DEMO_NOTE",
    "DEMO_PROMPTS",
    "DEMO_STAGES",
    "REPORT_NAME",
    "SUPERVISED_DEMO_STAGES",
    "DemoOptions",
    "DemoReport",
    "StageRecipe",
    "build_demo_model",
    "demo_dataset",
    "demo_domain",
    "demo_examples",
    "demo_models",
    "demo_stages",
    "format_flow",
    "language_model_corpus",
    "language_model_pass",
    "run_demo",
    "run_joint_graph",
    "score_entities",
    "score_relations",
    "sentence_record",
    "train_demo_adapters",
]
