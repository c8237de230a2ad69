"""Dynamic batching and adapter memory of the in-process transformers backend.

Runs the SAM-NER graph (``--graph joint``: the joint graph) over dev sentences with the
transformers + peft backend (no server) at several concurrencies and reports sentences/s, the
speed-up over concurrency 1, the batch sizes the micro-batcher reached and the queue waits.
``--load 0 1`` repeats the runs with N CPU-bound co-processes busy during the measurement (a
busy machine), and ``--threads`` chooses the backend's thread setting (``auto``: the backend's
own choice; ``none``: torch's defaults). Then measures peak and steady RSS of a process that
loads the base model with 1 vs 5 LoRA adapters (each answering one request) to show that an
extra adapter costs its own size, not a model copy (the peak is usually set while the base
model loads; the steady RSS after serving shows the adapters' cost). Prints one JSON object.

    python benchmarks/local_batching.py                      # tiny model, built in a temp dir
    python benchmarks/local_batching.py --model runs/model --device cuda --concurrency 1 16 64
    python benchmarks/local_batching.py --model DIR --graph joint --domain conll04 --load 0 1

The RSS probe uses a larger random model (hidden 1024, 4 layers, ~230 MB float32, built in a
temp dir) unless ``--rss-model`` names one, so that a model copy would stand out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import DATA, LLAMA3_8B, bench_domain, bench_texts


def _mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


RSS_SHAPE: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "max_position_embeddings": 4096,
}
"""The RSS probe's random model: ~230 MB in float32, so that a model copy would stand out."""
STAGE_ADAPTERS = (
    "anchor", "explorer", "archetype", "calibrate", "relations_forward", "relations_reverse"
)  # fmt: skip


def build_random_model(
    out: Path,
    tokenizer_from: Path,
    adapters: Sequence[str],
    shape: dict[str, Any] | None = None,
    device: str = "cpu",
    dtype: str = "float32",
) -> Path:
    """A random Llama model directory with one random rank-8 LoRA adapter per name.

    Args:
        out: The model directory to write (``base/`` + ``adapters/<name>/``).
        tokenizer_from: A base folder whose tokenizer and special tokens are reused.
        adapters: Adapter names.
        shape: ``LlamaConfig`` sizes (default :data:`RSS_SHAPE`; e.g. ``common.LLAMA3_8B``).
        device: Where to initialise the weights (``cuda`` for large shapes).
        dtype: Weight dtype saved.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    base = out / "base"
    base.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tokenizer_from / name).is_file():
            shutil.copy(tokenizer_from / name, base / name)
    tiny_config = json.loads((tokenizer_from / "config.json").read_text())
    sizes = {"vocab_size": tiny_config["vocab_size"], **(shape or RSS_SHAPE)}
    config = LlamaConfig(
        **sizes,
        tie_word_embeddings=False,
        bos_token_id=tiny_config["bos_token_id"],
        eos_token_id=tiny_config["eos_token_id"],
        pad_token_id=tiny_config["eos_token_id"],
    )
    warnings.simplefilter("ignore")  # peft/transformers deprecation notes
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(base)
    lora = LoraConfig(
        r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM", lora_dropout=0.0
    )
    peft_model = get_peft_model(model, lora)
    for index, adapter in enumerate(adapters):
        generator = torch.Generator(device=device).manual_seed(index)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.01, generator=generator)
        peft_model.save_pretrained(str(out / "adapters" / adapter))
    return out


def rss_probe(model: Path, adapters: int) -> dict[str, Any]:
    """In this (fresh) process: load ``adapters`` adapters, answer one request with each."""
    from samalign.serving.engine import ChatTurn, GenerationRequest
    from samalign.serving.model_dir import load_model_dir
    from samalign.serving.transformers_backend import TransformersEngine

    names = sorted(n for n in load_model_dir(model).adapters if "calibrate" not in n)[:adapters]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    engine = TransformersEngine(model, adapters=names)
    for name in names:
        engine.generate(
            GenerationRequest(
                messages=(ChatTurn("user", "Marie Curie was born in Warsaw."),),
                adapter=name,
                max_tokens=4,
            )
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    steady = _current_rss_mb()
    engine.close()
    return {"adapters": names, "peak_rss_mb": peak, "steady_rss_mb": steady, "before_mb": before}


def _current_rss_mb() -> float:
    """Resident memory now (Linux /proc; else the peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


BUSY = """
import os
parent = os.getppid()
while os.getppid() == parent:  # ends when the benchmark does, even when it is killed
    for _ in range(100_000):
        pass
"""


def busy_processes(count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` CPU-bound co-processes (each keeps one core busy) until they are killed.

    Each also ends when the benchmark's process does (killed or crashed): an orphan would
    load every later measurement on the machine.
    """
    return [
        subprocess.Popen([sys.executable, "-c", BUSY], start_new_session=True) for _ in range(count)
    ]


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for proc in processes:
        proc.kill()
        proc.wait()


async def run_concurrency(
    models: Any, engine: Any, graph: Any, domain: Any, records: list[Any], concurrency: int
) -> dict[str, Any]:
    from samalign import RunContext
    from samalign.batch.run import run_records

    engine.reset_stats()
    context = RunContext(domain=domain, models=models)
    start = time.perf_counter()
    results = [r async for r in run_records(graph, context, records, concurrency=concurrency)]
    elapsed = time.perf_counter() - start
    stats = engine.stats()
    calls = sum(u.calls for r in results for u in r.usage.values())
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "sentences_per_s": round(len(records) / elapsed, 3),
        "errors": sum(r.error is not None for r in results),
        "calls_per_sentence": round(calls / len(records), 3),
        "mean_batch_size": round(stats["mean_generate_batch_size"], 2),
        "generate_seconds": round(stats["generate_seconds"], 3),
        "generating_share": round(stats["generate_seconds"] / elapsed, 3),
        "mean_collected_batch_size": round(stats["mean_batch_size"], 2),
        "largest_batch": stats["largest_batch"],
        "queue_wait_p50_s": round(stats["queue_wait_p50_s"], 4),
        "queue_wait_p95_s": round(stats["queue_wait_p95_s"], 4),
        "threads_last": stats["threads"],
        "prefix_cache_reused_share": round(
            stats["prefix_cache_reused_tokens"] / max(stats["prefix_cache_prompt_tokens"], 1), 3
        ),
        "prefix_cache_mb": round(stats["prefix_cache_bytes"] / 2**20, 1),
    }


def _threads(value: str) -> Any:
    if value == "none":
        return None
    return value if value == "auto" else int(value)


async def throughput(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    from samalign import PipelineOptions, build_joint_graph, build_ner_graph, transformers_models
    from samalign.batch.records import InputRecord

    texts = bench_texts(args.data, args.domain, args.n)
    records = [InputRecord(id=sid, text=t, line=i) for i, (sid, t) in enumerate(texts)]
    options = PipelineOptions(
        constrain_mentions=args.constrain_mentions,
        max_completion_tokens=args.max_tokens,
        relation_schedule=args.relation_schedule,
    )
    joint = args.graph == "joint"
    graph = build_joint_graph(options) if joint else build_ner_graph(options)
    domain = bench_domain(args.domain)
    models = transformers_models(
        model,
        stages=options.joint_model_stages if joint else options.model_stages,
        device=args.device,
        dtype=args.dtype,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        threads=_threads(args.threads),
        prefix_cache_mb=args.prefix_cache_mb,
        reserve_kv=not args.no_reserve_kv,
    )
    engine = models["anchor"].chat_model.engine  # type: ignore[attr-defined]
    import torch

    cuda = engine.device.type == "cuda"
    loaded_bytes = torch.cuda.memory_allocated(engine.device) if cuda else 0
    runs: list[dict[str, Any]] = []
    try:
        # warm-up (other sentences than the timed ones): compiled grammars, allocator,
        # kernels, the stages' prompt heads in the prefix cache
        warm = [InputRecord(id=f"warm-{i}", text=t, line=i) for i, (_, t) in enumerate(
            bench_texts(args.data, args.domain, args.n + args.warmup)[args.n :]
        )]  # fmt: skip
        warm = warm or records[:8]
        await run_concurrency(models, engine, graph, domain, warm, 8)
        for load in args.load:
            busy = busy_processes(load)
            try:
                time.sleep(0.5 if load else 0)  # let the co-processes get going
                for c in args.concurrency:
                    # every timed run starts from the warm-up's prefix cache (an earlier run
                    # of the same sentences would have left their whole prompts in it)
                    engine.prefix_cache.clear()
                    await run_concurrency(models, engine, graph, domain, warm, 8)
                    run = await run_concurrency(models, engine, graph, domain, records, c)
                    runs.append({"load": load, **run, "loadavg_1m": round(os.getloadavg()[0], 2)})
            finally:
                stop(busy)
    finally:
        models.close()
    gpu: dict[str, Any] = {}
    if engine.device.type == "cuda":
        gpu = {
            "gpu": torch.cuda.get_device_name(engine.device),
            "gpu_memory_after_load_gb": round(loaded_bytes / 2**30, 2),
            "gpu_peak_memory_gb": round(torch.cuda.max_memory_allocated(engine.device) / 2**30, 2),
            "adapters_loaded": len(engine.adapters),
        }
    return {
        **gpu,
        "device": str(engine.device),
        "dtype": str(engine.dtype),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
        "torch_threads_main": torch.get_num_threads(),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model directory (default: build tiny)")
    parser.add_argument("--domain", default="crossner_ai", help="domain (demo: the demo's)")
    parser.add_argument("--graph", choices=["ner", "joint"], default="ner")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    parser.add_argument("--n", type=int, default=48, help="sentences per run")
    parser.add_argument(
        "--warmup", type=int, default=16, help="warm-up sentences (after the timed ones)"
    )
    parser.add_argument(
        "--load",
        type=int,
        nargs="+",
        default=[0],
        help="CPU-bound co-processes during the runs (one set of runs per value)",
    )
    parser.add_argument(
        "--relation-schedule", choices=["needed", "always", "parallel"], default="needed"
    )
    parser.add_argument("--prefix-cache-mb", type=float, default=256.0)
    parser.add_argument(
        "--no-reserve-kv", action="store_true", help="transformers' default KV cache (as before)"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--max-tokens", type=int, default=64, help="completion budget/stage")
    parser.add_argument("--constrain-mentions", action="store_true")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument(
        "--threads",
        default="auto",
        help="the backend's CPU threads: auto (default), none (torch's defaults) or a count",
    )
    parser.add_argument("--rss-model", type=Path, help="model dir for the RSS probe")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--rss-probe", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--build-model",
        type=Path,
        help="only write a random model directory of --shape (one adapter per stage) here",
    )
    parser.add_argument("--shape", choices=["rss", "llama3-8b"], default="llama3-8b")
    args = parser.parse_args()
    if args.build_model is not None:
        from samalign.testing.tiny import build_tiny_model

        with tempfile.TemporaryDirectory(prefix="samalign-tok-") as tmp:
            tokenizer = build_tiny_model(Path(tmp) / "tiny") / "base"
            shape = LLAMA3_8B if args.shape == "llama3-8b" else RSS_SHAPE
            import torch

            cuda = args.device.startswith("cuda") or (
                args.device == "auto" and torch.cuda.is_available()
            )
            build_random_model(
                args.build_model, tokenizer, STAGE_ADAPTERS, shape,
                device="cuda" if cuda else "cpu", dtype="bfloat16" if cuda else "float32",
            )  # fmt: skip
        print(json.dumps({"model": str(args.build_model), "shape": args.shape}))
        return
    if args.threads != "none":  # before torch loads, as the backend would
        from samalign.serving.threads import prefer_passive_openmp

        prefer_passive_openmp()

    if args.rss_probe is not None:
        print(json.dumps(rss_probe(args.model, args.rss_probe)))
        return

    with tempfile.TemporaryDirectory(prefix="samalign-bench-") as tmp:
        model = args.model
        if model is None:
            from samalign.testing.tiny import build_tiny_model

            model = build_tiny_model(Path(tmp) / "tiny")
        result: dict[str, Any] = {
            "model": str(args.model or "tiny (build-tiny: 2-layer Llama, hidden 128, float32)"),
            "graph": args.graph,
            "domain": args.domain,
            "threads": args.threads,
            "prefix_cache_mb": args.prefix_cache_mb,
            "reserve_kv": not args.no_reserve_kv,
            "n": args.n,
            "max_tokens": args.max_tokens,
            "constrain_mentions": args.constrain_mentions,
            "max_batch_size": args.max_batch_size,
            "max_wait_ms": args.max_wait_ms,
            "cpu_count": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        }
        result.update(asyncio.run(throughput(args, model)))
        low, high = min(args.concurrency), max(args.concurrency)
        for load in args.load:
            runs = {r["concurrency"]: r for r in result["runs"] if r["load"] == load}
            tag = f"_load{load}" if load else ""
            result[f"sentences_per_s_c{low}{tag}"] = runs[low]["sentences_per_s"]
            result[f"sentences_per_s_c{high}{tag}"] = runs[high]["sentences_per_s"]
            result[f"speedup{tag}"] = round(
                runs[high]["sentences_per_s"] / runs[low]["sentences_per_s"], 2
            )
        quiet = {r["concurrency"]: r for r in result["runs"] if r["load"] == min(args.load)}
        result["mean_batch_size"] = quiet[high]["mean_batch_size"]
        result["queue_wait_p50_s"] = quiet[high]["queue_wait_p50_s"]
        result["queue_wait_p95_s"] = quiet[high]["queue_wait_p95_s"]
        for load in args.load:
            if load != min(args.load):
                busy = {r["concurrency"]: r for r in result["runs"] if r["load"] == load}
                result[f"c{high}_load{load}_vs_quiet"] = round(
                    busy[high]["sentences_per_s"] / quiet[high]["sentences_per_s"], 3
                )

        if not args.skip_rss:
            rss_model = args.rss_model or build_random_model(
                Path(tmp) / "rss", Path(model) / "base", [f"adapter{i}" for i in range(5)]
            )
            probes = {}
            for count in (1, 5):
                done = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--rss-probe",
                        str(count),
                        "--model",
                        str(rss_model),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                probes[count] = json.loads(done.stdout.strip().splitlines()[-1])
            adapters = sorted((Path(rss_model) / "adapters").iterdir())
            result["rss_model_base_mb"] = round(_mb(Path(rss_model) / "base"), 1)
            result["rss_model_adapter_mb"] = round(_mb(adapters[0]), 2)
            result["rss_mb_1_adapter"] = round(probes[1]["peak_rss_mb"], 1)
            result["rss_mb_5_adapters"] = round(probes[5]["peak_rss_mb"], 1)
            result["rss_mb_per_extra_adapter"] = round(
                (probes[5]["peak_rss_mb"] - probes[1]["peak_rss_mb"]) / 4, 2
            )
            result["steady_rss_mb_1_adapter"] = round(probes[1]["steady_rss_mb"], 1)
            result["steady_rss_mb_5_adapters"] = round(probes[5]["steady_rss_mb"], 1)
            result["steady_rss_mb_per_extra_adapter"] = round(
                (probes[5]["steady_rss_mb"] - probes[1]["steady_rss_mb"]) / 4, 2
            )
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
