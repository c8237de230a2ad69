"""Command-line flags shared by several commands, defined once.

* :func:`add_command`: one subcommand's parser, bound to the function that runs it, its help
  and description taken from that function's docstring (every command and ``finetune``'s
  subcommands).
* :func:`add_field_flag`: a flag whose default, type, choices and range are a pydantic options
  model's field (``extract``'s Ray flags, ``--relation-schedule``, ``--relation-arguments``).
* :func:`add_pipeline_flags` / :func:`pipeline_values`: the pipeline options (``--ner-mode``
  …) and the published ablations (``--no-anchor`` … ``--no-anchor-constraint``), used by
  ``extract`` and ``eval``.
* :func:`add_backend_flags` / :func:`stage_models`: where the stage models come from (a vLLM
  server, or a model directory run in this process), used by ``extract`` and ``eval``.
* :func:`add_data_format_flags`: how a dataset file is read (``--format``,
  ``--bio-columns``), used by ``eval`` and ``finetune build``.
* :func:`parse_pairs`: repeated ``NAME=VALUE`` values (``--adapter``, ``--noise``).
* :func:`given_flags` / :func:`refuse_flags`: the flags given, and the error naming those
  that do not apply.
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import Any, Literal, TypeAlias, Union, get_args, get_origin

from pydantic import BaseModel

from samalign.agents.cache import CacheConfig, StageCache
from samalign.datasets import BIO_COLUMNS, FORMATS
from samalign.errors import ConfigError
from samalign.graphs.options import PipelineOptions
from samalign.serving import StageModels
from samalign.serving.spec import BackendSpec

MODEL_DIR_ENV = "SAMALIGN_MODEL_DIR"
"""Environment variable naming the default model directory of the in-process backends."""

MODEL_BACKENDS = ("server", "transformers", "vllm-inprocess")
"""Backends that run real models: a vLLM server, or a model directory in this process."""

JOINT_ONLY_FLAGS = (
    "no_aggregation",
    "no_anchor_constraint",
    "recover_dropped",
    "relation_schedule",
)
"""Pipeline flags that only the joint graph has."""


Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What ``add_subparsers`` returns: where :func:`add_command` adds a command."""


def add_command(
    sub: Subcommands,
    name: str,
    run: Callable[[argparse.Namespace], int] | None,
    *,
    help: str | None = None,
    description: str | None = None,
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """Add the subcommand ``name``, run by ``run`` (``args.func``).

    ``run``'s docstring is the command's text: its first line is the one-line ``help`` (first
    letter lowercased, final period dropped), the paragraphs after it the ``description``
    of the command's ``--help``.

    Args:
        sub: The subcommands of the parser the command belongs to.
        name: The command's name.
        run: What runs it (returns the exit status); ``None`` for a group of subcommands.
        help: The one line in the parent's command list, instead of ``run``'s.
        description: The text of the command's ``--help``, instead of ``run``'s.
        **kwargs: Other ``add_parser`` settings (``epilog``, ``formatter_class``).

    Returns:
        The command's parser, to add its flags to.
    """
    summary, _, body = inspect.cleandoc((run and run.__doc__) or "").partition("\n")
    if help is None and summary:
        help = summary[:1].lower() + summary[1:].removesuffix(".")
    if description is None and body.strip():
        description = " ".join(body.split())
    p = sub.add_parser(name, help=help, description=description, **kwargs)
    if run is not None:
        p.set_defaults(func=run)
    return p


def bounded(
    action: argparse.Action,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
) -> argparse.Action:
    """Declare the range of a numeric flag (checked by :func:`check_numbers` after parsing).

    Args:
        action: What ``add_argument`` returned.
        minimum: Smallest value allowed.
        above: The value must be greater than this.
        maximum: Largest value allowed.

    Returns:
        ``action``, for chaining.
    """
    action.samalign_bounds = (minimum, above, maximum)  # type: ignore[attr-defined]
    return action


def _describe(minimum: float | None, above: float | None, maximum: float | None) -> str:
    parts = []
    if above is not None:
        parts.append(f"greater than {above:g}")
    if minimum is not None:
        parts.append(f"at least {minimum:g}")
    if maximum is not None:
        parts.append(f"at most {maximum:g}")
    return " and ".join(parts) or "a finite number"


def _actions(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[argparse.Action]:
    """The actions of ``parser`` and of the subcommands ``args`` chose."""
    found: list[argparse.Action] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                found += _actions(chosen, args)
        else:
            found.append(action)
    return found


def check_numbers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check every numeric flag of the chosen command: finite, and in its declared range.

    Every ``type=float`` flag must be a finite number (no ``nan``, no ``inf``); a flag declared
    with :func:`bounded` must be in its range.

    Raises:
        ConfigError: Naming the flag, the value and the range.
    """
    for action in _actions(parser, args):
        value = getattr(args, action.dest, None)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if not action.option_strings:
            continue
        flag = max(action.option_strings, key=len)
        minimum, above, maximum = getattr(action, "samalign_bounds", (None, None, None))
        wrong = not math.isfinite(value)
        wrong = wrong or (minimum is not None and value < minimum)
        wrong = wrong or (above is not None and value <= above)
        wrong = wrong or (maximum is not None and value > maximum)
        if wrong:
            raise ConfigError(f"{flag} must be {_describe(minimum, above, maximum)}, got {value}")


def parse_pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    """Parse repeated ``NAME=VALUE`` command-line values.

    Raises:
        ConfigError: Naming the flag and the value that has no ``=``, name or value.
    """
    out: dict[str, str] = {}
    for value in values:
        name, sep, target = value.partition("=")
        if not sep or not name or not target:
            raise ConfigError(f"{flag} expects NAME=VALUE, got {value!r}")
        out[name] = target
    return out


def given_flags(args: argparse.Namespace, dests: Iterable[str]) -> list[str]:
    """The flags among ``dests`` (their ``dest`` names) the command line gave.

    A flag counts as given when its value is neither ``None`` nor ``False`` (the defaults of
    optional values and switches).

    Returns:
        The flags as typed (``no_anchor`` -> ``--no-anchor``), in the order of ``dests``.
    """
    values = {dest: getattr(args, dest) for dest in dests}
    return [
        f"--{dest.replace('_', '-')}"
        for dest, value in values.items()
        if value is not None and value is not False
    ]


def refuse_flags(args: argparse.Namespace, dests: Iterable[str], reason: str) -> None:
    """Refuse the flags among ``dests`` that were given, where they do not apply.

    Raises:
        ConfigError: ``"--a, --b: <reason>"``, naming every such flag.
    """
    given = given_flags(args, dests)
    if given:
        raise ConfigError(f"{', '.join(given)}: {reason}")


def add_field_flag(
    group: argparse._ActionsContainer,
    flag: str,
    model: type[BaseModel],
    field: str,
    **kwargs: Any,
) -> argparse.Action:
    """Add a flag that sets ``field`` of the options model ``model``.

    The model is the one home of the setting: the flag takes the field's default (unless
    ``default`` is given, e.g. ``None`` to tell a flag left out), its type (``int``,
    ``float``; a ``Literal``'s values as the choices) and its range (``ge`` / ``gt``
    constraints, checked by :func:`check_numbers`).

    Args:
        group: The parser or argument group.
        flag: The flag, e.g. ``--batch-size``.
        model: The pydantic model the value goes to.
        field: The model's field.
        **kwargs: Other ``add_argument`` settings (``help``, ``metavar``, ``default``).

    Returns:
        The flag's action.
    """
    info = model.model_fields[field]
    kind = info.annotation
    if get_origin(kind) in (Union, UnionType):  # X | None: the flag's value is an X
        [kind] = [t for t in get_args(kind) if t is not type(None)]
    if get_origin(kind) is Literal:
        kwargs["choices"] = list(get_args(kind))
    elif kind in (int, float):
        kwargs["type"] = kind
    kwargs.setdefault("default", info.default)
    action = group.add_argument(flag, **kwargs)
    minimum = next((m.ge for m in info.metadata if hasattr(m, "ge")), None)
    above = next((m.gt for m in info.metadata if hasattr(m, "gt")), None)
    return bounded(action, minimum=minimum, above=above)


def add_pipeline_flags(p: argparse.ArgumentParser) -> None:
    """Add the pipeline options and ablation switches (one definition for every command)."""
    g = p.add_argument_group("pipeline options and ablations")
    g.add_argument(
        "--ner-mode",
        choices=["zero_shot", "supervised"],
        default="zero_shot",
        help="zero_shot: SAM-NER (anchor, explorer, CCR, archetype, calibrate; default); "
        "supervised: AnchorAlign's setting, one dataset-trained supervised_ner stage whose "
        "typed entities are final (no SAM-NER stages)",
    )
    g.add_argument("--grounding", choices=["flat", "nested"], default="flat")
    bounded(
        g.add_argument("--max-chars", type=int, default=4000, help="longest text accepted"),
        minimum=1,
    )
    bounded(
        g.add_argument(
            "--max-tokens", type=int, default=None, help="completion budget per stage (default 512)"
        ),
        minimum=1,
    )
    g.add_argument(
        "--constrain-mentions",
        action="store_true",
        help="restrict answers to strings of the text (per-request schemas: slower, never "
        "hallucinates a mention)",
    )
    bounded(
        g.add_argument(
            "--anchor-schema-chunk",
            type=int,
            default=None,
            help="types per anchor request (the public IEPile LoRA: 6)",
        ),
        minimum=1,
    )
    g.add_argument(
        "--prompt-profile",
        choices=["default", "reference"],
        default=None,
        help="prompts of every SAM-NER stage: default (samalign's, constrained decoding) or "
        "reference (the SAM-NER authors' code; docs/reference.md); default: the domain's",
    )
    g.add_argument("--no-anchor", action="store_true", help="ablation: w/o anchor extractor")
    g.add_argument("--no-explorer", action="store_true", help="ablation: w/o explorer extractor")
    g.add_argument("--no-consensus", action="store_true", help="ablation: w/o CCR (plain union)")
    g.add_argument("--no-calibration", action="store_true", help="ablation: direct target typing")
    g.add_argument(
        "--no-aggregation",
        action="store_true",
        help="joint ablation: forward relation decoder only (w/o decoder aggregation)",
    )
    g.add_argument(
        "--no-anchor-constraint",
        "--no-constraint",
        dest="no_anchor_constraint",
        action="store_true",
        help="joint ablation: keep every relation candidate (w/o the anchor filter)",
    )
    g.add_argument(
        "--recover-dropped",
        action="store_true",
        help="joint, beyond the paper: ask the anchor whether a relation argument NER missed "
        "is an entity, and keep the triplet if so",
    )
    add_field_flag(
        g,
        "--relation-schedule",
        PipelineOptions,
        "relation_schedule",
        default=None,
        help="joint: when the relation decoders are asked (default needed: only for a sentence "
        "whose NER entities could form a kept triplet; always; parallel: together with NER, "
        "lower latency, more requests)",
    )
    add_field_flag(
        g,
        "--relation-arguments",
        PipelineOptions,
        "relation_arguments",
        default=None,
        help="which occurrences of a repeated mention a triple links (default: closest; "
        "samalign eval uses the dataset's annotation convention: all for conll04)",
    )


def pipeline_values(args: argparse.Namespace, *, joint: bool) -> dict[str, Any]:
    """The :class:`~samalign.graphs.PipelineOptions` fields the flags set.

    Options left at their default are left out, so the options' own defaults apply.

    Raises:
        ConfigError: A joint-only flag without a joint graph, or a value out of range.
    """
    if not joint:
        refuse_flags(args, JOINT_ONLY_FLAGS, "these are options of --graph joint")
    if args.ner_mode == "supervised":
        refuse_flags(
            args,
            ("no_anchor", "no_explorer", "no_consensus", "no_calibration"),
            "SAM-NER ablations do not apply to --ner-mode supervised (it has no anchor, explorer, "
            "CCR or calibration stage)",
        )
    values: dict[str, Any] = {
        "ner_mode": args.ner_mode,
        "use_anchor": not args.no_anchor,
        "use_explorer": not args.no_explorer,
        "use_consensus": not args.no_consensus,
        "use_calibration": not args.no_calibration,
        "grounding": args.grounding,
        "max_text_chars": args.max_chars,
        "max_completion_tokens": args.max_tokens,
        "constrain_mentions": args.constrain_mentions,
        "anchor_schema_chunk": args.anchor_schema_chunk,
    }
    if args.no_aggregation:
        values["aggregate_relations"] = False
    if args.no_anchor_constraint:
        values["anchor_constraint"] = False
    if args.recover_dropped:
        values["recover_dropped"] = True
    if args.relation_arguments is not None:
        values["relation_arguments"] = args.relation_arguments
    if args.prompt_profile is not None:
        values["prompt_profile"] = args.prompt_profile
    if args.relation_schedule is not None:
        values["relation_schedule"] = args.relation_schedule
    return values


def add_data_format_flags(p: argparse.ArgumentParser, *, formats: Sequence[str] = FORMATS) -> None:
    """Add ``--format`` and ``--bio-columns`` (how a dataset file is read; docs/data.md)."""
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", *formats],
        help="the data file's format (default: detect it from the content; docs/data.md)",
    )
    p.add_argument(
        "--bio-columns",
        default="auto",
        choices=list(BIO_COLUMNS),
        help="BIO files: token-tag (CrossNER, CoNLL) or tag-token (MIT Restaurant/Movie); "
        "default: detect which column holds the tags",
    )


def add_backend_flags(p: argparse.ArgumentParser, *, backends: Sequence[str]) -> None:
    """Add the model-backend flags (``--server``, ``--backend``, ``--model`` …)."""
    g = p.add_argument_group("model backend")
    g.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="URL",
        help="vLLM server URL, e.g. http://127.0.0.1:8000; repeat it for several servers "
        "serving the same adapters (requests are balanced, a server that stops answering is "
        "taken out and its requests go to the others)",
    )
    g.add_argument(
        "--backend",
        choices=list(backends),
        help="server (needs --server; the default with --server), transformers (in-process "
        "transformers + peft on --model DIR; the default without --server), vllm-inprocess "
        "(vLLM in this process, or in --vllm-python's environment)"
        + (
            "; gold (replay gold answers: the harness's self-test) or simulated (seeded noise)"
            if "gold" in backends
            else ""
        ),
    )
    g.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help=f"model directory for the in-process backends (default: ${MODEL_DIR_ENV})",
    )
    g.add_argument(
        "--vllm-python",
        metavar="EXE",
        help="with --backend vllm-inprocess: run the engine with this interpreter (an "
        "environment with vLLM) in a child process",
    )
    g.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="let --model's manifest (or links in it) point outside the directory (refused by "
        "default, see docs/model_dir.md)",
    )
    g.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="STAGE=NAME",
        help="serve STAGE with adapter NAME (repeatable; default: the domain's, else the "
        "stage's name)",
    )
    bounded(
        g.add_argument(
            "--timeout",
            type=float,
            default=120.0,
            help="seconds per model request, a total deadline from sending it to the last byte "
            "of the answer (a failed request is retried up to 3 times)",
        ),
        above=0,
    )
    g.add_argument(
        "--cache",
        metavar="memory|sqlite:PATH",
        help="replay stage answers already given for the same request instead of calling the "
        "model again (memory: this run; sqlite:PATH: a file kept across runs)",
    )
    bounded(
        g.add_argument(
            "--cache-size",
            type=int,
            default=None,
            metavar="N",
            help="stage answers the cache keeps (least recently used go first; default 100000)",
        ),
        minimum=1,
    )


SERVER_CONCURRENCY = 64
"""Default records in flight with ``--server``: a vLLM server runs many sequences at once and
one record has one or two requests there at a time (docs/benchmarks.md: the joint graph at 16
in flight reached 59 % of its best rate, at 64 90 %)."""

LOCAL_CONCURRENCY = 16
"""Default records in flight in-process (the transformers backend batches up to 16 rows)."""


def concurrency_for(args: argparse.Namespace, backend: str) -> int:
    """``--concurrency``, else the default for ``backend`` (more for a server)."""
    if args.concurrency is not None:
        return int(args.concurrency)
    return SERVER_CONCURRENCY if backend == "server" else LOCAL_CONCURRENCY


CONCURRENCY_HELP = (
    f"in flight at once (default: {SERVER_CONCURRENCY} with --server, {LOCAL_CONCURRENCY} "
    "otherwise)"
)


def chosen_backend(args: argparse.Namespace, *, default: str | None = "transformers") -> str:
    """The backend the flags select: ``--backend``, else server with ``--server``.

    Raises:
        ConfigError: No backend can be chosen, or flags that do not apply to it.
    """
    backend: str | None = args.backend or ("server" if args.server else default)
    if backend is None:
        raise ConfigError(
            "choose a backend: --server URL, --model DIR (in-process), --backend gold or "
            "--backend simulated"
        )
    if args.vllm_python and backend != "vllm-inprocess":
        raise ConfigError("--vllm-python applies only to --backend vllm-inprocess")
    if backend == "server" and not args.server:
        raise ConfigError("--backend server needs --server URL")
    if backend != "server" and args.server:
        raise ConfigError(
            f"--server does not apply to --backend {backend} (it is only for the server backend)"
        )
    if backend not in ("transformers", "vllm-inprocess") and args.model is not None:
        raise ConfigError(f"--model applies only to the in-process backends, not {backend!r}")
    if backend not in ("transformers", "vllm-inprocess") and getattr(
        args, "allow_outside_paths", False
    ):
        raise ConfigError("--allow-outside-paths applies only to --model (in-process backends)")
    return backend


def backend_spec(args: argparse.Namespace, backend: str) -> BackendSpec:
    """The :class:`~samalign.serving.spec.BackendSpec` of a real backend the flags select.

    Raises:
        ConfigError: No model directory for an in-process backend, or a bad timeout.
    """
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise ConfigError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if backend == "server":
        return BackendSpec(kind="server", servers=tuple(args.server), timeout=args.timeout)
    model_dir = args.model or os.environ.get(MODEL_DIR_ENV)
    if not model_dir:
        raise ConfigError(
            f"no model: pass --server URL (a vLLM server), or --model DIR (or set "
            f"{MODEL_DIR_ENV}) to run a model directory in this process"
        )
    kind = "transformers" if backend == "transformers" else "vllm-inprocess"
    return BackendSpec(
        kind=kind,
        model_dir=Path(model_dir),
        vllm_python=args.vllm_python,
        allow_outside_paths=bool(getattr(args, "allow_outside_paths", False)),
    )


def stage_models(
    args: argparse.Namespace, backend: str, stages: Sequence[str], adapters: Mapping[str, str]
) -> StageModels:
    """The stage models of a real backend (``server``, ``transformers``, ``vllm-inprocess``).

    Raises:
        ConfigError: The server is unreachable or lacks an adapter, or no model directory.
    """
    spec = backend_spec(args, backend)
    spec.check(adapters)
    return spec.models(stages, adapters)


def stage_cache(args: argparse.Namespace) -> StageCache | None:
    """The stage-answer cache the flags ask for (``--cache``, ``--cache-size``), or ``None``.

    Raises:
        ConfigError: A bad ``--cache`` value, or ``--cache-size`` without ``--cache``.
    """
    if args.cache is None:
        if args.cache_size is not None:
            raise ConfigError("--cache-size needs --cache memory or --cache sqlite:PATH")
        return None
    config = CacheConfig.parse(args.cache)
    if args.cache_size is not None:
        config = CacheConfig.parse({**config.model_dump(), "max_entries": args.cache_size})
    return config.build()


def stage_adapters(
    args: argparse.Namespace, stages: Sequence[str], domain_adapter: Any
) -> dict[str, str]:
    """Each stage's adapter: ``--adapter``, else the domain's, else the stage's name.

    Args:
        args: The parsed flags.
        stages: The stages the pipeline runs.
        domain_adapter: ``Domain.adapter_for``.

    Raises:
        ConfigError: ``--adapter`` names a stage the pipeline does not run.
    """
    overrides = parse_pairs(args.adapter, "--adapter")
    unknown = sorted(set(overrides) - set(stages))
    if unknown:
        raise ConfigError(
            f"--adapter names stage(s) {unknown} this pipeline does not run; stages: {list(stages)}"
        )
    return {s: overrides.get(s, domain_adapter(s)) for s in stages}


__all__ = [
    "JOINT_ONLY_FLAGS",
    "MODEL_BACKENDS",
    "MODEL_DIR_ENV",
    "Subcommands",
    "add_backend_flags",
    "add_command",
    "add_data_format_flags",
    "add_field_flag",
    "add_pipeline_flags",
    "backend_spec",
    "bounded",
    "check_numbers",
    "chosen_backend",
    "given_flags",
    "parse_pairs",
    "pipeline_values",
    "refuse_flags",
    "stage_adapters",
    "stage_cache",
    "stage_models",
]
