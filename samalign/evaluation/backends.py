"""Backends the harness evaluates with: a vLLM server, gold replay, or noise simulation.

A backend gives the run context (domain + stage models) for each sentence. The server backend
uses one context for all; the replay backends give a sentence whose text occurs several times
in the data the models that know *its* annotation (see
:class:`~samalign.evaluation.gold.GoldOracle`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from samalign.agents.cache import StageCache
from samalign.errors import ConfigError
from samalign.evaluation.gold import GoldOracle, ReplayModels
from samalign.evaluation.sentences import Sentence
from samalign.evaluation.simulate import NoiseModel, SimulatedOracle
from samalign.graphs.context import RunContext
from samalign.prompts.domain import Domain
from samalign.prompts.profiles import resolve_profile
from samalign.serving.models import StageModels
from samalign.serving.vllm_server import check_servers, vllm_server_models
from samalign.types import ALL_STAGES

BackendName = Literal["gold", "simulated", "server", "transformers", "vllm-inprocess"]
BACKENDS: tuple[str, ...] = ("gold", "simulated", "server", "transformers", "vllm-inprocess")


@dataclass(frozen=True)
class EvalBackend:
    """Where the stage answers come from.

    Attributes:
        name: ``gold``, ``simulated``, ``server``, ``transformers`` or ``vllm-inprocess``.
        context_for: The run context of one sentence.
        settings: What the backend was built with, for the report.
    """

    name: str
    context_for: Callable[[Sentence], RunContext]
    settings: dict[str, Any] = field(default_factory=dict)


def _replay(
    name: str,
    oracle: GoldOracle,
    domain: Domain,
    settings: dict[str, Any],
    cache: StageCache | None = None,
) -> EvalBackend:
    models = ReplayModels(oracle, ALL_STAGES)
    contexts = [
        RunContext(domain, models.for_sentence_variant(k), cache) for k in range(oracle.variants)
    ]

    def context_for(sentence: Sentence) -> RunContext:
        return contexts[min(oracle.variant_of(sentence), len(contexts) - 1)]

    return EvalBackend(name, context_for, settings)


def gold_backend(
    sentences: Sequence[Sentence],
    domain: Domain,
    *,
    prompt_profile: str | None = None,
    cache: StageCache | None = None,
) -> EvalBackend:
    """Gold replay over ``sentences`` (see :mod:`samalign.evaluation.gold`).

    Args:
        sentences: The gold sentences.
        domain: The domain the graph runs with.
        prompt_profile: The graph's ``PipelineOptions.prompt_profile`` (answers are rendered
            as that profile reads them); ``None``: the domain's profile.
        cache: Stage-answer cache the runs share, or ``None``.
    """
    profile = resolve_profile(domain, prompt_profile)
    oracle = GoldOracle(sentences, domain, profile=profile)
    return _replay("gold", oracle, domain, {"prompt_profile": profile.name}, cache)


def simulated_backend(
    sentences: Sequence[Sentence],
    domain: Domain,
    *,
    noise: NoiseModel,
    seed: int,
    prompt_profile: str | None = None,
    cache: StageCache | None = None,
) -> EvalBackend:
    """Noise simulation over ``sentences`` (see :mod:`samalign.evaluation.simulate`)."""
    profile = resolve_profile(domain, prompt_profile)
    oracle = SimulatedOracle(sentences, domain, noise=noise, seed=seed, profile=profile)
    settings = {"seed": seed, "noise": noise.model_dump(), "prompt_profile": profile.name}
    return _replay("simulated", oracle, domain, settings, cache)


def models_backend(
    name: str,
    models: StageModels,
    domain: Domain,
    adapters: Mapping[str, str],
    settings: Mapping[str, Any] | None = None,
    *,
    cache: StageCache | None = None,
) -> EvalBackend:
    """Real stage models (a vLLM server or an in-process backend), one context for all.

    Args:
        name: The backend's name for the report (``server``, ``transformers`` …).
        models: The stage models.
        domain: The domain.
        adapters: The adapter of each stage the models serve.
        settings: What the backend was built with, for the report.
        cache: A stage-answer cache shared by the runs (e.g. a sweep's variants).
    """
    context = RunContext(
        domain.model_copy(update={"adapters": {**domain.adapters, **adapters}}), models, cache
    )
    return EvalBackend(
        name, lambda _sentence: context, {**(settings or {}), "adapters": dict(adapters)}
    )


def server_backend(
    url: str | Sequence[str],
    domain: Domain,
    stages: Sequence[str],
    *,
    adapters: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    check: bool = True,
    cache: StageCache | None = None,
) -> EvalBackend:
    """A vLLM server serving one adapter per stage.

    Args:
        url: Server URL, or several serving the same adapters (balanced, with failover).
        domain: The domain (its ``adapters`` name each stage's adapter unless overridden).
        stages: The stages the graph runs.
        adapters: Stage → adapter overrides.
        timeout: Seconds per request.
        check: Fail early unless the server serves every adapter.
        cache: A stage-answer cache shared by the runs.

    Raises:
        ConfigError: An adapter is given for a stage the graph does not run.
        BackendError: The server is down or lacks an adapter.
    """
    overrides = dict(adapters or {})
    unknown = sorted(set(overrides) - set(stages))
    if unknown:
        raise ConfigError(
            f"adapters given for stage(s) {unknown} this graph does not run; stages: {list(stages)}"
        )
    chosen = {s: overrides.get(s, domain.adapter_for(s)) for s in stages}
    if check:
        check_servers(url, chosen.values())
    models = vllm_server_models(url, stages=list(stages), adapters=chosen, timeout=timeout)
    servers = url if isinstance(url, str) else ",".join(url)
    return models_backend("server", models, domain, chosen, {"server": servers}, cache=cache)


__all__ = [
    "BACKENDS",
    "BackendName",
    "EvalBackend",
    "gold_backend",
    "models_backend",
    "server_backend",
    "simulated_backend",
]
