"""``samalign finetune``: build training data, train adapters, check them.

::

    samalign finetune build STAGE INPUT [INPUT ...] --out FILE.jsonl [options]
    samalign finetune train CONFIG.yaml [--resume] [--set key=value ...]
    samalign finetune config [--out CONFIG.yaml]
    samalign finetune check ADAPTER_DIR

The command functions return the exit status; samalign errors propagate to the main CLI,
which prints them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from samalign.cli.options import Subcommands, add_command, add_data_format_flags, bounded
from samalign.errors import ConfigError, InputError
from samalign.prompts.yamlfile import load_yaml_file

BUILD_STAGES: tuple[str, ...] = (
    "explorer",
    "anchor",
    "archetype",
    "direct_typing",
    "calibrate",
    "relations_forward",
    "relations_reverse",
    "supervised_ner",
    "joint",
)
"""What ``samalign finetune build`` writes examples for (``supervised_ner``: AnchorAlign's
supervised, typed NER; ``joint``: NER + both relation decoders, for one adapter trained with
the joint loss)."""


def add_parser(sub: Subcommands) -> None:
    """Add the ``finetune`` command group to the main parser's subcommands."""
    parser = add_command(
        sub,
        "finetune",
        None,
        help="build training data from public datasets and train stage adapters (peft LoRA)",
        description="Build chat training examples with the same prompt specs the stages use "
        "at inference, and train LoRA adapters that vLLM and peft load unchanged.",
    )
    commands = parser.add_subparsers(dest="finetune_command", required=True, metavar="COMMAND")
    _add_build(commands)
    _add_train(commands)
    _add_config(commands)
    _add_check(commands)


def _add_build(commands: Subcommands) -> None:
    p = add_command(commands, "build", _build)
    p.add_argument("stage", choices=BUILD_STAGES, help="the stage the examples train")
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="source data files")
    p.add_argument("--out", required=True, type=Path, help="JSONL file to write")
    add_data_format_flags(p)
    p.add_argument(
        "--domain",
        help="target domain (built-in name or YAML): verbalised type names, label→archetype "
        "table, prompt overrides; required for calibrate and direct_typing",
    )
    p.add_argument("--label-map", type=Path, help="YAML/JSON mapping source label → prompt name")
    p.add_argument("--archetype-map", type=Path, help="YAML/JSON mapping source label → archetype")
    p.add_argument(
        "--iepile-schema",
        type=Path,
        help="IEPile schema.json (its first line lists the types) for raw IEPile records",
    )
    bounded(
        p.add_argument(
            "--negative-ratio",
            type=float,
            default=1.0,
            help="extractors: negative types per positive type, sampled by frequency "
            "(open label sets such as Pile-NER; default 1.0)",
        ),
        minimum=0,
    )
    p.add_argument(
        "--sample-negatives",
        action="store_true",
        help="extractors: for closed label sets (BIO, SpERT) sample negatives instead of "
        "asking about every label",
    )
    shuffle = p.add_mutually_exclusive_group()
    shuffle.add_argument(
        "--shuffle-types",
        dest="shuffle",
        action="store_const",
        const=True,
        help="shuffle the schema order per example (default for the explorer)",
    )
    shuffle.add_argument(
        "--no-shuffle-types",
        dest="shuffle",
        action="store_const",
        const=False,
        help="keep the schema order (default for the anchor)",
    )
    p.add_argument(
        "--keep-ungrounded",
        action="store_true",
        help="extractors: keep gold mentions that do not occur in the text",
    )
    p.add_argument(
        "--schema",
        choices=["instance", "full"],
        default="instance",
        help="archetype: instance-specific archetype schema (paper, default) or all 14",
    )
    p.add_argument(
        "--unmapped",
        choices=["skip", "misc", "error"],
        default="skip",
        help="archetype: a label with no archetype is skipped (default), typed Misc, or an error",
    )
    p.add_argument(
        "--no-empty",
        action="store_true",
        help="relations: skip sentences without relations; supervised_ner: skip sentences "
        "without entities (default: keep them, answer [])",
    )
    p.add_argument(
        "--ner-stage",
        choices=["explorer", "anchor", "supervised_ner"],
        default="explorer",
        help="joint: which NER prompt the NER examples use (default explorer; supervised_ner "
        "for AnchorAlign's supervised setting: typed entities, final)",
    )
    p.add_argument(
        "--profile",
        choices=["default", "reference"],
        default=None,
        help="explorer, anchor, archetype, direct_typing, calibrate: the prompt profile the "
        "examples are rendered with (default: the domain's, else default). reference = the "
        "SAM-NER authors' prompts and answer formats; for archetype also their recipe (value "
        "types dropped, first-occurrence tagging; docs/finetune.md)",
    )
    p.add_argument("--grounding", choices=["flat", "nested"], default="flat")
    bounded(
        p.add_argument("--max-chars", type=int, default=None, help="skip longer passages"),
        minimum=1,
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="leave out every record whose text is a record's text in FILE (repeatable), e.g. "
        "ADE fold k's train part: ade_full.json --exclude ade_split_k_test.json",
    )
    bounded(
        p.add_argument(
            "--max-triples",
            type=int,
            default=None,
            metavar="K",
            help="keep only sentences with at most K gold relations (AnchorAlign's simple "
            "subset D_simple, Eq. 14, for the curriculum warm-up)",
        ),
        minimum=0,
    )
    bounded(
        p.add_argument("--limit", type=int, default=None, help="use the first N records per input"),
        minimum=1,
    )
    p.add_argument("--seed", type=int, default=0, help="seed for sampling and shuffling")


def _add_train(commands: Subcommands) -> None:
    p = add_command(commands, "train", _train)
    p.add_argument("config", type=Path, help="training config (YAML)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in output_dir",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config setting (repeatable), e.g. --set max_steps=100",
    )


def _add_config(commands: Subcommands) -> None:
    p = add_command(commands, "config", _config)
    p.add_argument("--out", type=Path, help="write the template here instead of stdout")


def _add_check(commands: Subcommands) -> None:
    p = add_command(commands, "check", _check)
    p.add_argument("adapter", type=Path, help="adapter folder")


def _read_mapping(path: Path | None, what: str) -> dict[str, str] | None:
    if path is None:
        return None
    data = load_yaml_file(path, what=what)
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ConfigError(f"{path}: a {what} must map label strings to strings")
    return data


def _build(args: argparse.Namespace) -> int:
    """Write JSONL training examples for one stage.

    Read source datasets (Pile-NER JSONL, UniNER conversations, IEPile NER, BIO files such as
    CrossNER in either column order, SpERT JSON such as CoNLL04/SciERC/ADE, CrossRE JSON Lines;
    detected automatically, see docs/data.md) and write training examples for STAGE rendered by its
    prompt spec. Prints the counts (JSON on stdout, a summary on stderr). Relation and joint
    examples need data with relations (SpERT, CrossRE) and a domain with relation types;
    supervised_ner examples need fully annotated data (SpERT, CrossRE, BIO) and --domain.
    """
    from samalign.batch.outputs import check_output_path
    from samalign.finetune.builders import (
        build_archetype_examples,
        build_calibrate_examples,
        build_extraction_examples,
        build_joint_examples,
        build_relation_examples,
        build_supervised_examples,
        read_source,
        write_examples,
    )
    from samalign.finetune.builders.common import DEFAULT_MAX_TEXT_CHARS
    from samalign.prompts import load_domain

    check_output_path(args.out, [*args.inputs, *args.exclude])

    domain = load_domain(args.domain) if args.domain else None
    schema = None
    if args.iepile_schema is not None:
        try:
            first = args.iepile_schema.read_text(encoding="utf-8").splitlines()[0]
            schema = json.loads(first)
        except (OSError, IndexError, json.JSONDecodeError):
            raise InputError(
                f"{args.iepile_schema}: expected IEPile's schema.json (first line: a JSON list)"
            ) from None
    excluded = {rec.text for path in args.exclude for rec in read_source(path).records}
    datasets = []
    left_out = over = 0
    relations = args.stage in ("relations_forward", "relations_reverse", "joint")
    for path in args.inputs:
        dataset = read_source(
            path,
            args.format,
            schema=schema,
            columns=args.bio_columns,
            require_relations=relations,
        )
        if excluded:
            kept = [rec for rec in dataset.records if rec.text not in excluded]
            left_out += len(dataset.records) - len(kept)
            dataset = dataclasses.replace(dataset, records=kept)
        if args.max_triples is not None:
            simple = [rec for rec in dataset.records if len(rec.relations) <= args.max_triples]
            over += len(dataset.records) - len(simple)
            dataset = dataclasses.replace(dataset, records=simple)
        if args.limit is not None:
            dataset = dataclasses.replace(dataset, records=dataset.records[: args.limit])
        datasets.append(dataset)
    max_chars = args.max_chars or DEFAULT_MAX_TEXT_CHARS
    stage: str = args.stage
    if stage in ("explorer", "anchor"):
        examples, report = build_extraction_examples(
            "explorer" if stage == "explorer" else "anchor",
            datasets,
            domain=domain,
            label_names=_read_mapping(args.label_map, "label map"),
            negative_ratio=args.negative_ratio,
            all_labels=not args.sample_negatives,
            shuffle_types=args.shuffle,
            keep_ungrounded=args.keep_ungrounded,
            max_text_chars=max_chars,
            seed=args.seed,
            profile=args.profile,
        )
    elif stage in ("archetype", "direct_typing"):
        examples, report = build_archetype_examples(
            datasets,
            domain=domain,
            archetype_map=_read_mapping(args.archetype_map, "archetype map"),
            unmapped=args.unmapped,
            schema=args.schema,
            direct=stage == "direct_typing",
            grounding=args.grounding,
            max_text_chars=max_chars,
            profile=args.profile,
        )
    elif stage == "supervised_ner":
        if domain is None:
            raise ConfigError(
                "supervised_ner examples need --domain (the types it writes, e.g. conll04, "
                "scierc, ade)"
            )
        examples, report = build_supervised_examples(
            datasets, domain=domain, keep_empty=not args.no_empty, max_text_chars=max_chars
        )
    elif stage in ("relations_forward", "relations_reverse", "joint"):
        if args.profile is not None:
            raise ConfigError(
                f"--profile: {stage} examples have one prompt profile (the relation prompts)"
            )
        if domain is None:
            raise ConfigError(
                f"{stage} examples need --domain with relation types (e.g. conll04, scierc, ade)"
            )
        if stage == "joint":
            examples, report = build_joint_examples(
                datasets,
                domain=domain,
                ner_stage=args.ner_stage,
                shuffle_types=bool(args.shuffle),
                seed=args.seed,
            )
        else:
            examples, report = build_relation_examples(
                stage,
                datasets,
                domain=domain,
                keep_empty=not args.no_empty,
                max_text_chars=max_chars,
            )
    else:
        if domain is None:
            raise ConfigError("calibrate examples need --domain (its types and definitions)")
        examples, report = build_calibrate_examples(
            datasets,
            domain=domain,
            archetype_map=_read_mapping(args.archetype_map, "archetype map"),
            grounding=args.grounding,
            max_text_chars=max_chars,
            profile=args.profile,
        )
    if left_out:
        report.skip("excluded", left_out)
    if over:
        report.skip("over_max_triples", over)
    if not examples:
        raise InputError(f"no {stage} examples could be built: {report.summary()}")
    write_examples(args.out, examples)
    print(f"samalign: {report.summary()} -> {args.out}", file=sys.stderr)
    print(json.dumps({**report.to_dict(), "out": str(args.out)}, ensure_ascii=False))
    return 0


def _train(args: argparse.Namespace) -> int:
    """Train a LoRA adapter from a YAML config.

    Train a peft LoRA adapter with a completion-only loss (SAM-NER Table 7 defaults) and write it to
    the config's output_dir, with the config, the loss log and resumable checkpoints. `samalign
    finetune config` prints every setting.
    """
    from samalign.finetune.config import load_config, parse_override
    from samalign.finetune.trainer import train

    overrides: dict[str, Any] = dict(parse_override(item) for item in args.set)
    config = load_config(args.config, overrides)
    result = train(config, resume=args.resume)
    print(json.dumps(result.to_dict(), indent=2))
    return 0


def _config(args: argparse.Namespace) -> int:
    """Print a training config template with every setting and its help."""
    from samalign.finetune.config import config_yaml

    text = config_yaml()
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
        print(f"samalign: wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _check(args: argparse.Namespace) -> int:
    """Check that an adapter folder can be served by vLLM and peft unchanged."""
    from samalign.serving.model_dir import check_servable

    check_servable(args.adapter)
    print(f"{args.adapter}: servable by vLLM and peft")
    return 0


__all__ = ["BUILD_STAGES", "add_parser"]
