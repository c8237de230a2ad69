"""``samalign demo``: the whole loop offline on a tiny model (see :mod:`samalign.demo`)."""

from __future__ import annotations

import argparse
import os
from dataclasses import fields
from pathlib import Path

from samalign.cli.options import Subcommands, add_command, bounded


def add_parser(sub: Subcommands) -> None:
    """Add ``samalign demo``."""
    p = add_command(sub, "demo", run)
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    p.add_argument(
        "--backend",
        choices=["transformers", "vllm-server"],
        default="transformers",
        help="serve in-process with transformers + peft (default) or through a vLLM server",
    )
    p.add_argument("--vllm-python", help="interpreter of a vLLM environment (vllm-server)")
    bounded(
        p.add_argument("--sentences", type=int, default=None, help="use the first N sentences"),
        minimum=1,
    )
    p.add_argument(
        "--ner-mode",
        choices=["zero_shot", "supervised"],
        default="zero_shot",
        help="zero_shot: train SAM-NER's anchor, explorer, archetype and calibrate adapters "
        "(default); supervised: AnchorAlign's setting, train one supervised_ner adapter and "
        "run the supervised joint graph",
    )
    p.add_argument(
        "--train-file",
        type=Path,
        default=None,
        help="train on this SpERT JSON file (CoNLL04 types) instead of the bundled sentences, "
        "e.g. ../shared/data/conll04/train_triples.json: a model that writes candidates for "
        "nearly every CoNLL04 sentence (the throughput benchmarks' fixture; not a good model)",
    )
    bounded(
        p.add_argument(
            "--eval-sentences",
            type=int,
            default=None,
            help="run and score the graph on the first N training sentences (default: all)",
        ),
        minimum=1,
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Offline demo: build a tiny model, train every stage adapter, run the joint graph.

    Builds a tiny model offline, trains the anchor, explorer, archetype, calibrate and relation
    adapters on 24 bundled CoNLL04 sentences with the data builders and the LoRA trainer, serves
    them in-process, runs the joint graph on the same sentences and prints the stage-by-stage flow
    and the scores. The model is a tiny demonstration model trained on those sentences. Writes
    DIR/demo_report.json.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (shared CPUs)
    from samalign.demo import DEMO_NOTE, DemoOptions, format_flow, run_demo

    # Every DemoOptions field with a flag of its name takes the flag's value.
    flags = {f.name: getattr(args, f.name) for f in fields(DemoOptions) if hasattr(args, f.name)}
    options = DemoOptions(**flags, progress=not args.quiet)
    report = run_demo(options)
    print(DEMO_NOTE)
    print()
    for index, record in enumerate(report.results):
        print("\n".join(format_flow(record, index)))
    print()
    e, r = report.entity, report.relation_strict
    print(
        f"entities  P {e['precision']:.3f} R {e['recall']:.3f} F1 {e['f1']:.3f} "
        f"({e['tp']}/{e['gold']} gold)"
    )
    print(
        f"relations P {r['precision']:.3f} R {r['recall']:.3f} strict F1 {r['f1']:.3f} "
        f"({r['tp']}/{r['gold']} gold)"
    )
    report_path = args.out / "demo_report.json"
    print(f"{report.sentences} sentences, {report.seconds:.0f} s; report: {report_path}")
    print("(a tiny demonstration model trained on these very sentences: see the note above)")
    return 0


__all__ = ["add_parser", "run"]
