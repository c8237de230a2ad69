"""Command line: ``samalign extract | eval | serve | domains | finetune | demo``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from samalign.errors import ConfigError, InputError, SamalignError
from samalign.evaluation.cli import add_eval_parser, parse_pairs
from samalign.finetune.cli import add_demo_parser, add_finetune_parser
from samalign.graphs import (
    PipelineOptions,
    RunContext,
    build_document_graph,
    build_joint_graph,
    build_ner_graph,
)
from samalign.graphs.batch import run_records
from samalign.prompts import builtin_domains, load_domain
from samalign.records import (
    InputRecord,
    JsonlWriter,
    completed_ids,
    finalize_output,
    read_records,
)
from samalign.serving import StageModels, check_server, vllm_server_models
from samalign.serving.identity import cached_identity_adapter
from samalign.serving.launcher import build_serve_command, read_model_dir

log = logging.getLogger("samalign")

BACKENDS = ("server", "transformers", "vllm-inprocess")
MODEL_DIR_ENV = "SAMALIGN_MODEL_DIR"


def _add_extract(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "extract",
        help="run the NER, joint or document graph over a file of texts (vLLM server or "
        "in-process model)",
        description="Extract entities (and, with --graph joint or document, relation "
        "triplets) from INPUT (JSONL of {id, text}, plain text with one document per line, or "
        "- for stdin) and write JSONL: one line per input record, in input order, with "
        "entities, triplets, diagnostics and error. Rerunning with the same --out resumes.",
    )
    p.add_argument("input", help="JSONL file, plain text file, or - for stdin")
    p.add_argument("--domain", required=True, help="built-in domain name or domain YAML path")
    p.add_argument("--server", help="vLLM server URL, e.g. http://127.0.0.1:8000")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help="server (needs --server), transformers (in-process, the default without "
        "--server) or vllm-inprocess (vLLM in this process, or in --vllm-python's env)",
    )
    p.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help=f"model directory for in-process backends (default: ${MODEL_DIR_ENV})",
    )
    p.add_argument(
        "--vllm-python",
        metavar="EXE",
        help="with --backend vllm-inprocess: run the engine with this interpreter (an "
        "environment with vLLM) in a child process",
    )
    p.add_argument(
        "--graph",
        choices=["ner", "joint", "document"],
        default="ner",
        help="ner: entities of each sentence (default); joint: entities and relation triplets "
        "(AnchorAlign; needs a domain with relation types); document: split each record into "
        "sentences and run the sentence graph (joint if the domain has relation types, else "
        "ner; see --sentence-graph) on each",
    )
    p.add_argument(
        "--sentence-graph",
        choices=["ner", "joint"],
        default=None,
        help="the sentence graph of --graph document (default: joint when the domain has "
        "relation types, else ner)",
    )
    p.add_argument("--out", type=Path, help="output JSONL (default: stdout; no resume)")
    p.add_argument("--concurrency", type=int, default=16, help="records in flight (default 16)")
    p.add_argument("--format", choices=["auto", "jsonl", "text"], default="auto")
    p.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="STAGE=NAME",
        help="serve STAGE with adapter NAME (repeatable; default: the stage's name)",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per model request")
    p.add_argument("--max-chars", type=int, default=4000, help="longest text accepted")
    p.add_argument(
        "--max-tokens", type=int, default=None, help="completion budget per stage (default 512)"
    )
    p.add_argument("--grounding", choices=["flat", "nested"], default="flat")
    p.add_argument(
        "--constrain-mentions",
        action="store_true",
        help="restrict answers to strings of the text (per-request schemas: slower, never "
        "hallucinates a mention)",
    )
    p.add_argument("--no-anchor", action="store_true", help="ablation: w/o anchor extractor")
    p.add_argument("--no-explorer", action="store_true", help="ablation: w/o explorer extractor")
    p.add_argument("--no-consensus", action="store_true", help="ablation: w/o CCR (plain union)")
    p.add_argument("--no-calibration", action="store_true", help="ablation: direct target typing")
    p.add_argument(
        "--no-aggregation",
        action="store_true",
        help="ablation: forward relation decoder only (w/o decoder aggregation)",
    )
    p.add_argument(
        "--no-anchor-constraint",
        action="store_true",
        help="ablation: keep every relation candidate (w/o generation constraint)",
    )
    p.add_argument(
        "--recover-dropped",
        action="store_true",
        help="ask the anchor whether a relation argument NER missed is an entity, and keep the "
        "triplet if so (beyond the paper)",
    )
    p.add_argument(
        "--retry-errors",
        action="store_true",
        help="when resuming, redo records whose earlier result has an error",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_extract)


def _stage_models(
    args: argparse.Namespace, stages: Sequence[str], adapters: dict[str, str]
) -> StageModels:
    """The stage models of the chosen backend (default: server with --server, else local)."""
    backend = args.backend or ("server" if args.server else "transformers")
    if args.vllm_python and backend != "vllm-inprocess":
        raise ConfigError("--vllm-python applies only to --backend vllm-inprocess")
    if backend == "server":
        if not args.server:
            raise ConfigError("--backend server needs --server URL")
        check_server(args.server, adapters.values())
        return vllm_server_models(
            args.server, stages=stages, adapters=adapters, timeout=args.timeout
        )
    if args.server:
        raise ConfigError(f"--server does not apply to --backend {backend}")
    model_dir = args.model or os.environ.get(MODEL_DIR_ENV)
    if not model_dir:
        raise ConfigError(
            f"no model: pass --server URL (a vLLM server), or --model DIR (or set "
            f"{MODEL_DIR_ENV}) to run a model directory in this process"
        )
    if backend == "transformers":
        from samalign.serving.transformers_backend import transformers_models

        return transformers_models(model_dir, stages=stages, adapters=adapters)
    from samalign.serving.vllm_inprocess import vllm_inprocess_models

    return vllm_inprocess_models(
        model_dir, stages=stages, adapters=adapters, python=args.vllm_python
    )


async def _extract_async(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    options = PipelineOptions(
        use_anchor=not args.no_anchor,
        use_explorer=not args.no_explorer,
        use_consensus=not args.no_consensus,
        use_calibration=not args.no_calibration,
        grounding=args.grounding,
        max_text_chars=args.max_chars,
        max_completion_tokens=args.max_tokens,
        constrain_mentions=args.constrain_mentions,
        aggregate_relations=not args.no_aggregation,
        anchor_constraint=not args.no_anchor_constraint,
        recover_dropped=args.recover_dropped,
    )
    domain = load_domain(args.domain)
    sentence_graph = args.sentence_graph or (
        "joint" if args.graph == "joint" or domain.relation_types else "ner"
    )
    if args.graph == "ner":
        sentence_graph = "ner"
    if sentence_graph == "joint" and not domain.relation_types:
        raise ConfigError(
            f"domain {domain.name!r} has no relation types; joint extraction needs them (use "
            "a domain such as conll04, scierc or ade, or --graph ner)"
        )
    stages = options.joint_model_stages if sentence_graph == "joint" else options.model_stages
    overrides = parse_pairs(args.adapter, "--adapter")
    unknown = sorted(set(overrides) - set(stages))
    if unknown:
        raise ConfigError(
            f"--adapter names stage(s) {unknown} this pipeline does not run; stages: {stages}"
        )
    # One place decides each stage's adapter: --adapter, else the domain, else the stage name.
    adapters = {s: overrides.get(s, domain.adapter_for(s)) for s in stages}
    domain = domain.model_copy(update={"adapters": {**domain.adapters, **adapters}})
    if args.input != "-" and not Path(args.input).is_file():
        raise InputError(f"input file {args.input} not found")
    models = _stage_models(args, stages, adapters)
    context = RunContext(domain=domain, models=models)
    inner = build_joint_graph(options) if sentence_graph == "joint" else build_ner_graph(options)
    graph = (
        build_document_graph(inner, max_sentence_chars=min(2000, args.max_chars))
        if args.graph == "document"
        else inner
    )

    done: set[str] = set()
    handle: TextIO
    if args.out is not None:
        done = completed_ids(args.out, retry_errors=args.retry_errors)
        try:
            handle = open(args.out, "a", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as err:
            raise InputError(f"cannot write {args.out}: {err.strerror}") from None
    else:
        handle = sys.stdout
    writer = JsonlWriter(handle)
    order: list[str] = []

    def pending() -> Iterator[InputRecord]:
        for record in read_records(args.input, fmt=args.format):
            order.append(record.id)
            if record.id not in done:
                yield record

    records = pending()
    failed = 0
    bar = tqdm(desc="extract", unit="rec", disable=args.quiet, file=sys.stderr, initial=len(done))
    sentence_bar = (
        tqdm(desc="sentences", unit="sent", disable=args.quiet, file=sys.stderr, position=1)
        if args.graph == "document"
        else None
    )

    def on_event(event: object) -> None:
        if sentence_bar is not None and isinstance(event, dict) and "document_progress" in event:
            sentence_bar.update(1)

    try:
        async for result in run_records(
            graph,
            context,
            records,
            concurrency=args.concurrency,
            on_event=on_event if sentence_bar is not None else None,
        ):
            writer.write(result)
            failed += result.error is not None
            bar.update(1)
    finally:
        bar.close()
        if sentence_bar is not None:
            sentence_bar.close()
        if handle is not sys.stdout:
            handle.close()
        models.close()
    if args.out is not None and done:
        finalize_output(args.out, order)
    if failed:
        print(
            f"samalign: {failed} record(s) have an error; see their 'error' field", file=sys.stderr
        )
    return 0


def _extract(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    return asyncio.run(_extract_async(args))


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="start a vLLM OpenAI-compatible server with one LoRA adapter per stage",
        description="Serve a samalign model directory (base/ + adapters/<name>/) or a base "
        "model with named adapters through vLLM. Binds 127.0.0.1 unless --host says otherwise.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir", type=Path, help="model directory (base/ + adapters/<name>/)")
    src.add_argument("--base", type=Path, help="base model folder (use with --adapter)")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--python", help="interpreter of the environment vLLM is installed in")
    p.add_argument("--max-model-len", type=int, help="context length limit")
    p.add_argument(
        "--allow-json-whitespace",
        action="store_true",
        help="let constrained JSON contain free whitespace (default: compact JSON, which keeps "
        "weak models from running away on whitespace)",
    )
    p.add_argument(
        "--no-identity",
        action="store_true",
        help="do not add an identity adapter as 'calibrate' when none is given",
    )
    p.add_argument("--dry-run", action="store_true", help="print the command, do not run it")
    p.add_argument("vllm_args", nargs=argparse.REMAINDER, help="-- then extra vLLM arguments")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    extra = [a for a in args.vllm_args if a != "--"]
    if args.model_dir is not None:
        model_dir = read_model_dir(args.model_dir)
        base: Path = model_dir.base
        adapters: dict[str, str | Path] = {
            **model_dir.adapters,
            **parse_pairs(args.adapter, "--adapter"),
        }
    else:
        base = args.base
        adapters = dict(parse_pairs(args.adapter, "--adapter"))
    if "calibrate" not in adapters and adapters and not args.no_identity:
        like = next(iter(adapters.values()))
        adapters["calibrate"] = cached_identity_adapter(like)
        print(
            f"samalign: no 'calibrate' adapter given; serving an identity adapter (zero LoRA "
            f"update, shaped like {like}) as 'calibrate'",
            file=sys.stderr,
        )
    command = build_serve_command(
        base,
        adapters,
        python=args.python,
        host=args.host,
        port=args.port,
        max_model_len=args.max_model_len,
        compact_json=not args.allow_json_whitespace,
        extra_args=extra,
    )
    if args.dry_run:
        print(command.shell())
        return 0
    env = dict(os.environ)
    for key, value in command.env.items():
        env.setdefault(key, value)
    print(f"samalign: starting {command.shell()}", file=sys.stderr, flush=True)
    try:
        os.execvpe(command.argv[0], command.argv, env)
    except OSError as err:
        raise ConfigError(
            f"cannot run {command.argv[0]}: {err.strerror}; pass --python with the interpreter "
            "of the environment vLLM is installed in"
        ) from None


def _add_domains(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("domains", help="list built-in domains, or show one")
    p.add_argument("name", nargs="?", help="show this domain's types and definitions")
    p.set_defaults(func=_domains)


def _domains(args: argparse.Namespace) -> int:
    if args.name:
        domain = load_domain(args.name)
        print(f"{domain.name}: {domain.description}")
        for t in domain.entity_types:
            arch = t.archetype.value if t.archetype else "-"
            print(f"  {t.label:<20} {t.name!r:<28} [{arch}] {t.definition}")
        if domain.relation_types:
            print("relations:")
        for r in domain.relation_types:
            kinds = f"{'|'.join(r.head_types) or '*'} -> {'|'.join(r.tail_types) or '*'}"
            print(f"  {r.label:<20} {r.name!r:<28} [{kinds}] {r.definition}")
        return 0
    for name in builtin_domains():
        domain = load_domain(name)
        print(
            f"{name:<22} {len(domain.entity_types):>3} entity types "
            f"{len(domain.relation_types):>3} relation types  {domain.description}"
        )
    return 0


def _demo_scorers() -> tuple[Callable[..., dict[str, Any]], Callable[..., dict[str, Any]]]:
    """The evaluation metrics as the demo's scorers (strict entity and relation micro-F1)."""
    from samalign.evaluation.metrics import PRF, relation_prf, span_prf

    def summary(prf: PRF) -> dict[str, Any]:
        return {
            "precision": round(prf.precision, 4),
            "recall": round(prf.recall, 4),
            "f1": round(prf.f1, 4),
            "tp": prf.tp,
            "predicted": prf.pred,
            "gold": prf.gold,
            "per_label_f1": {k: round(v.f1, 4) for k, v in sorted(prf.per_label.items())},
        }

    def entities(gold: Sequence[set[Any]], pred: Sequence[set[Any]]) -> dict[str, Any]:
        return summary(span_prf(gold, pred))  # (start, end, label): character offsets

    def relations(gold: Sequence[set[Any]], pred: Sequence[set[Any]]) -> dict[str, Any]:
        def tuples(items: set[Any]) -> set[Any]:
            return {((hs, he), hl, r, (ts, te), tl) for hs, he, hl, r, ts, te, tl in items}

        return summary(
            relation_prf([tuples(g) for g in gold], [tuples(p) for p in pred], mode="strict")
        )

    return entities, relations


def build_parser() -> argparse.ArgumentParser:
    """The ``samalign`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="samalign",
        description="Zero-shot NER with SAM-NER graphs over vLLM LoRA adapters.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_extract(sub)
    add_eval_parser(sub)
    _add_serve(sub)
    _add_domains(sub)
    add_finetune_parser(sub)
    add_demo_parser(sub, scorers=_demo_scorers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 on a samalign error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        status: int = args.func(args)
    except SamalignError as err:
        print(f"samalign: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("samalign: interrupted; rerun with the same --out to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `samalign domains | head`: the reader went away
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status


if __name__ == "__main__":
    raise SystemExit(main())
