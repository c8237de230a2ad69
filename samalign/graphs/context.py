"""The per-invocation run context (LangGraph ``context_schema``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from samalign.errors import ConfigError
from samalign.prompts.domain import Domain, load_domain
from samalign.serving.models import StageModels


@dataclass(frozen=True)
class RunContext:
    """What one invocation runs with: the target domain and the stage models.

    Swapping domain, prompts or adapters means passing another context, never rebuilding the
    graph.

    Args:
        domain: A :class:`~samalign.prompts.Domain`, a built-in domain name, or a YAML path.
        models: Stage → chat model (e.g. from :func:`~samalign.serving.vllm_server_models`).
    """

    domain: Domain
    models: StageModels

    def __init__(self, domain: Domain | str | Path, models: StageModels) -> None:
        resolved = domain if isinstance(domain, Domain) else load_domain(domain)
        if not isinstance(models, StageModels):
            raise ConfigError(
                f"models must be StageModels (e.g. vllm_server_models(url)), got "
                f"{type(models).__name__}"
            )
        object.__setattr__(self, "domain", resolved)
        object.__setattr__(self, "models", models)


__all__ = ["RunContext"]
