"""Fine-tuning throughput: training tokens/s and peak memory, with and without length grouping.

CPU (default): builds the tiny model offline, builds explorer examples from CrossNER ai
train and Pile-NER (SLIMER) passages — a realistic spread of lengths — and trains the same
LoRA (Table 7 settings, fp32) twice, once with random batches and once with length-grouped
batches, each in its own subprocess so that the peak resident memory of one run does not
hide the other's. Prints one JSON object.

    python benchmarks/finetune_throughput.py --examples 256 --steps 8

GPU (``--gpu``): a randomly initialised model of Llama-3-8B's shape (32 layers, hidden 4096,
GQA 32/8 heads, MLP 14336, vocab 128256) in bf16 with a rank-8 LoRA on every linear layer,
trained with and without gradient checkpointing on the same examples; reports tokens/s and
peak GPU memory (``torch.cuda.max_memory_allocated``). ``--gpu-shape tiny`` runs the same
code path with a small model (a smoke test that works on CPU too).

    python benchmarks/finetune_throughput.py --gpu --examples 64 --steps 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import DATA, LLAMA3_8B

from samalign.finetune.builders import build_extraction_examples, read_source, write_examples
from samalign.finetune.builders.io import ChatExample, read_examples
from samalign.finetune.config import TrainConfig
from samalign.finetune.trainer import epoch_batches, tokenize_examples, train
from samalign.prompts import load_domain

TINY_SHAPE = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "vocab_size": 4096,
    "max_position_embeddings": 8192,
}


def build_examples(n: int, seed: int) -> list[ChatExample]:
    """Explorer examples of mixed length: CrossNER ai sentences and Pile-NER passages."""
    crossner = read_source(DATA / "crossner" / "ai" / "train.txt")
    pilener = read_source(
        DATA / "pilener_slimer" / "5pos_5neg_perNE_top391NEs_TrueDef" / "validation.jsonl"
    )
    a, _ = build_extraction_examples("explorer", [crossner], domain=load_domain("crossner_ai"))
    b, _ = build_extraction_examples("explorer", [pilener], max_text_chars=2000)
    examples = a + b
    random.Random(seed).shuffle(examples)
    return examples[:n]


def padding_share(lengths: list[int], batch_size: int, grouped: bool, n_batches: int) -> float:
    """Share of padding tokens in the first ``n_batches`` micro-batches the trainer forms."""
    pad = total = 0
    epoch = 0
    batches: list[list[int]] = []
    while len(batches) < n_batches:
        batches += epoch_batches(lengths, batch_size, seed=42, epoch=epoch, group_by_length=grouped)
        epoch += 1
    for batch in batches[:n_batches]:
        width = max(lengths[i] for i in batch)
        total += width * len(batch)
        pad += width * len(batch) - sum(lengths[i] for i in batch)
    return pad / total


def cpu_run(base: str, data: str, out: str, grouped: bool, steps: int) -> dict[str, Any]:
    """One training run (called in a subprocess)."""
    config = TrainConfig(
        base_model=base,
        train_file=data,
        output_dir=out,
        stage="explorer",
        max_steps=steps,
        group_by_length=grouped,
        precision="fp32",
        device="cpu",
        progress_bar=False,
        logging_steps=max(1, steps),
    )
    result = train(config)
    return {
        "seconds": round(result.seconds, 2),
        "tokens_per_second": round(result.tokens_per_second, 1),
        "peak_rss_mb": round(result.peak_memory_mb, 1),
        "steps": result.steps,
    }


def cpu_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from samalign.testing.tiny import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="ft-bench-"))
    model = build_tiny_model(work / "model")
    data = work / "train.jsonl"
    examples = build_examples(args.examples, args.seed)
    write_examples(data, examples)
    tokenizer = AutoTokenizer.from_pretrained(model / "base")
    tokenized, dropped = tokenize_examples(tokenizer, examples, 1024)
    lengths = [len(t.input_ids) for t in tokenized]
    results: dict[str, Any] = {
        "device": "cpu",
        "model": f"tiny random Llama (2 layers, hidden 128, vocab {len(tokenizer)}), fp32",
        "lora": "r 8, alpha 16, all linear layers",
        "examples": len(tokenized),
        "dropped_over_cutoff": dropped,
        "tokens_mean": round(sum(lengths) / len(lengths), 1),
        "tokens_max": max(lengths),
        "batch": "2 x accumulation 8",
        "steps": args.steps,
        "omp_wait_policy": args.omp_wait_policy or os.environ.get("OMP_WAIT_POLICY", "(default)"),
    }
    env = dict(os.environ)
    if args.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    runs: dict[str, list[dict[str, Any]]] = {"random_batches": [], "length_grouped": []}
    for repeat in range(args.repeat):  # alternate the two settings so drift hits both alike
        for grouped in (False, True):
            name = "length_grouped" if grouped else "random_batches"
            out = work / f"{name}-{repeat}"
            command = [
                sys.executable,
                __file__,
                "--cpu-run",
                json.dumps([str(model / "base"), str(data), str(out), grouped, args.steps]),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
            if done.returncode != 0:
                raise SystemExit(f"{name} run failed:\n{done.stderr[-3000:]}")
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    for name, items in runs.items():
        share = padding_share(lengths, 2, name == "length_grouped", args.steps * 8)
        best = sorted(items, key=lambda r: r["tokens_per_second"])[len(items) // 2]  # median
        results[name] = {
            **best,
            "tokens_per_second_runs": [r["tokens_per_second"] for r in items],
            "padding_share": round(share, 3),
            "padded_tokens_per_second": round(best["tokens_per_second"] / (1 - share), 1),
        }
    results["speedup_length_grouped"] = round(
        results["length_grouped"]["tokens_per_second"]
        / results["random_batches"]["tokens_per_second"],
        2,
    )
    return results


def gpu_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from samalign.finetune.trainer import collate, enable_activation_checkpointing, token_losses
    from samalign.testing.tiny import LORA_TARGET_MODULES, build_tiny_model

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if args.gpu_shape == "llama3-8b" and not cuda:
        raise SystemExit("--gpu with the Llama-3-8B shape needs a CUDA GPU (try --gpu-shape tiny)")
    shape = LLAMA3_8B if args.gpu_shape == "llama3-8b" else TINY_SHAPE
    work = Path(tempfile.mkdtemp(prefix="ft-bench-gpu-"))
    tokenizer = AutoTokenizer.from_pretrained(build_tiny_model(work / "model") / "base")
    examples = read_examples(args.data) if args.data else build_examples(args.examples, args.seed)
    tokenized, _ = tokenize_examples(tokenizer, examples, 1024)
    lengths = [len(t.input_ids) for t in tokenized]
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "model": f"random Llama, shape {args.gpu_shape}, {str(dtype).removeprefix('torch.')}",
        "examples": len(tokenized),
        "tokens_mean": round(sum(lengths) / len(lengths), 1),
        "batch": "2 x accumulation 8, length-grouped",
        "steps": args.steps,
    }
    for checkpointing in (False, True):
        torch.manual_seed(0)
        config = LlamaConfig(**shape, tie_word_embeddings=False)
        with torch.device(device):
            model = LlamaForCausalLM(config).to(dtype)
        model.config.use_cache = False
        lora = LoraConfig(
            r=8,
            lora_alpha=16,
            target_modules=list(LORA_TARGET_MODULES),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
        if checkpointing:
            enable_activation_checkpointing(model)
            model.enable_input_require_grads()
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=2e-5)
        batches = epoch_batches(lengths, 2, seed=42, epoch=0, group_by_length=True)
        autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else None

        class _Null:
            def __enter__(self) -> None:
                return None

            def __exit__(self, *a: object) -> None:
                return None

        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        tokens = 0
        start = time.perf_counter()
        for step in range(args.steps):
            group = [batches[(step * 8 + k) % len(batches)] for k in range(8)]
            target = max(1, sum(tokenized[i].target_tokens for b in group for i in b))
            optimizer.zero_grad(set_to_none=True)
            for indices in group:
                batch = collate([tokenized[i] for i in indices], tokenizer.eos_token_id, 1.0)
                losses, mask = token_losses(model, batch, device, autocast or _Null)
                ((losses * mask).sum() / target).backward()
                tokens += int(batch["attention_mask"].sum())
            optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        name = "gradient_checkpointing" if checkpointing else "no_checkpointing"
        results[name] = {
            "seconds": round(seconds, 2),
            "tokens_per_second": round(tokens / seconds, 1),
            "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        }
        del model, optimizer
        if cuda:
            torch.cuda.empty_cache()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--examples", type=int, default=256, help="training examples")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per setting (median kept)")
    parser.add_argument("--gpu", action="store_true", help="the Llama-3-8B-shape GPU benchmark")
    parser.add_argument("--gpu-shape", choices=["llama3-8b", "tiny"], default="llama3-8b")
    parser.add_argument("--data", help="GPU: a JSONL of examples instead of building them")
    parser.add_argument(
        "--omp-wait-policy",
        default="PASSIVE",
        help="OMP_WAIT_POLICY of the CPU runs (PASSIVE: idle OpenMP threads sleep instead of "
        "spinning, which keeps a shared machine's cores usable; '' = inherit)",
    )
    parser.add_argument("--cpu-run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cpu_run:
        base, data, out, grouped, steps = json.loads(args.cpu_run)
        print(json.dumps(cpu_run(base, data, out, grouped, steps)))
        return
    results = gpu_benchmark(args) if args.gpu else cpu_benchmark(args)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
