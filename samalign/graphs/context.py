"""The per-invocation run context (LangGraph ``context_schema``), in Python or as JSON.

In Python, ``RunContext(domain, models)`` takes live objects. Over LangGraph's server (or
anywhere the context must be plain data) it is a JSON object::

    {
      "domain": "conll04",                                  # built-in name, YAML path, or
                                                            # an inline domain mapping
      "models": {"server": "http://127.0.0.1:8000",         # where the stage models are
                 "adapters": {"anchor": "iepile-anchor"}},  # (or {"model_dir": "runs/model"})
      "cache": {"kind": "sqlite", "path": "runs/cache.db"}, # optional stage-answer cache
      "options": {"use_calibration": false}                 # server: which graph variant
    }

LangGraph turns such a mapping into ``RunContext(**mapping)``. Parts a run leaves out come
from the deployment's defaults, the environment variable ``SAMALIGN_CONTEXT`` (the same JSON,
or the path of a JSON/YAML file holding it): a server knows where its models are, so its
clients send only the text (an MCP client cannot send a context at all) or just a domain.

The models are built on first use and shared by every run of the process with the same
``models`` settings (:func:`~samalign.serving.config.shared_models`), and so is the cache; both
are closed when the process exits. Options that change the graph's shape (the ablations) are
not part of the context: they are how the graph was built
(:class:`~samalign.graphs.PipelineOptions`; on a server, the graph factory's ``options``).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, ValidationError
from pydantic_core import core_schema

from samalign.agents.cache import CacheConfig, MemoryCache, SqliteCache, StageCache
from samalign.errors import ConfigError, shorten, validation_problems
from samalign.graphs.options import PipelineOptions
from samalign.prompts.domain import Domain, domain_from_mapping, load_domain
from samalign.prompts.yamlfile import load_yaml
from samalign.serving.config import ModelsConfig, ProcessShared, shared_models
from samalign.serving.models import StageModels


class ContextConfig(BaseModel):
    """The JSON form of a run context (what a server run's ``context`` holds).

    Attributes:
        domain: A built-in domain name, a domain YAML path (on the machine running the
            graph), or an inline domain mapping (the YAML file's content as JSON).
        models: Where the stage models are.
        cache: An optional stage-answer cache (``"memory"``, ``"sqlite:PATH"`` or a mapping).
        options: :class:`~samalign.graphs.PipelineOptions` fields for the server's graph
            factories (which graph variant runs; see :mod:`samalign.graphs.server`). In
            process, build the graph with its options instead.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    domain: str | dict[str, Any]
    models: ModelsConfig
    cache: CacheConfig | str | None = Field(default=None)
    options: dict[str, Any] = Field(default_factory=dict)


def _close_cache(cache: MemoryCache | SqliteCache) -> None:
    if isinstance(cache, SqliteCache):
        cache.close()


_CACHES: ProcessShared[CacheConfig, MemoryCache | SqliteCache] = ProcessShared(
    lambda c: c.build(), _close_cache
)


def shared_cache(config: CacheConfig | str | Mapping[str, Any]) -> StageCache:
    """The stage cache of ``config``, built on first use and shared by the whole process.

    Raises:
        ConfigError: Invalid settings, or an SQLite file that cannot be opened.
    """
    return _CACHES.get(CacheConfig.parse(config))


CONTEXT_ENV = "SAMALIGN_CONTEXT"
"""Environment variable with the deployment's default run context (JSON, or a file path)."""


@functools.lru_cache(maxsize=4)
def _defaults_of(value: str) -> dict[str, Any]:
    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            shown = shorten(value, 200)
            raise ConfigError(
                f"{CONTEXT_ENV}={shown!r}: not JSON and not a readable file ({err.strerror})"
            ) from None
    data = load_yaml(text, origin=CONTEXT_ENV)  # JSON is YAML; bounded (size, nesting, aliases)
    if not isinstance(data, dict):
        raise ConfigError(f"{CONTEXT_ENV} must hold a JSON object with domain and models")
    unknown = sorted(set(data) - set(ContextConfig.model_fields))
    if unknown:
        raise ConfigError(
            f"{CONTEXT_ENV}: unknown key(s) {unknown}; keys: {list(ContextConfig.model_fields)}"
        )
    return data


def deployment_defaults() -> dict[str, Any]:
    """The default run context of this deployment (``$SAMALIGN_CONTEXT``), or ``{}``.

    Raises:
        ConfigError: The variable holds neither a JSON object nor a readable file.
    """
    value = os.environ.get(CONTEXT_ENV, "")
    return dict(_defaults_of(value)) if value.strip() else {}


def _domain(value: Domain | str | Path | Mapping[str, Any]) -> Domain:
    if isinstance(value, Domain):
        return value
    if isinstance(value, Mapping):
        return domain_from_mapping(dict(value), origin="the run context's inline domain")
    if isinstance(value, str | Path):
        return load_domain(value)
    raise ConfigError(
        f"domain must be a Domain, a built-in name, a YAML path or a mapping, got "
        f"{type(value).__name__}"
    )


def _checked_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    values = dict(options or {})
    sentence_graph = values.pop("sentence_graph", None)
    if sentence_graph not in (None, "ner", "joint"):
        raise ConfigError(
            f"options.sentence_graph must be 'ner' or 'joint', got {sentence_graph!r}"
        )
    PipelineOptions(**values)  # raises ConfigError naming a bad field
    return dict(options or {})


@dataclass(frozen=True, eq=False)
class RunContext:
    """What one invocation runs with: the target domain, the stage models and a cache.

    Swapping domain, prompts or adapters means passing another context, never rebuilding the
    graph.

    Any argument left out (``None``) is taken from the deployment's defaults
    (``$SAMALIGN_CONTEXT``, see the module docs).

    Args:
        domain: A :class:`~samalign.prompts.Domain`, a built-in domain name, a YAML path, or
            an inline domain mapping.
        models: Stage → chat model (e.g. from :func:`~samalign.serving.vllm_server_models`),
            or where the models are as plain data (a :class:`ModelsConfig` or its mapping,
            e.g. ``{"server": "http://127.0.0.1:8000"}``): then they are built on first use
            and shared by the process. Its ``adapters`` override the domain's.
        cache: A stage-answer cache (:class:`~samalign.agents.cache.MemoryCache`,
            :class:`~samalign.agents.cache.SqliteCache`), or its settings (``"memory"``,
            ``"sqlite:PATH"``, a :class:`CacheConfig` or its mapping: shared by the process).
            ``None``: no cache.
        options: Pipeline options for the server's graph factories (see
            :class:`ContextConfig`); checked, and otherwise not used in process.

    Raises:
        ConfigError: An unknown or invalid domain, models or cache setting.
    """

    domain: Domain
    models_config: ModelsConfig | None
    cache: StageCache | None
    options: dict[str, Any]
    _models: list[StageModels] = field(repr=False, compare=False)
    _lock: threading.Lock = field(repr=False, compare=False)

    def __init__(
        self,
        domain: Domain | str | Path | Mapping[str, Any] | None = None,
        models: StageModels | ModelsConfig | Mapping[str, Any] | None = None,
        cache: StageCache | CacheConfig | str | Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if domain is None or models is None or cache is None:
            defaults = deployment_defaults()
            domain = domain if domain is not None else defaults.get("domain")
            models = models if models is not None else defaults.get("models")
            cache = cache if cache is not None else defaults.get("cache")
        if domain is None or models is None:
            missing = " and ".join(
                n for n, v in (("domain", domain), ("models", models)) if v is None
            )
            raise ConfigError(
                f"the run context has no {missing}: pass RunContext(domain, models) (as "
                'JSON: {"domain": "conll04", "models": {"server": "http://127.0.0.1:8000"}}), '
                f"or set {CONTEXT_ENV} to a default context for this deployment"
            )
        resolved = _domain(domain)
        config: ModelsConfig | None = None
        live: list[StageModels] = []
        if isinstance(models, StageModels):
            live.append(models)
        elif isinstance(models, ModelsConfig | Mapping):
            try:
                config = ModelsConfig.parse(models)
            except ConfigError as err:
                raise ConfigError(
                    f"models must be StageModels (e.g. vllm_server_models(url)) or where the "
                    f"models are as plain data; {err}"
                ) from None
            if config.adapters:
                resolved = resolved.model_copy(
                    update={"adapters": {**resolved.adapters, **config.adapters}}
                )
        else:
            raise ConfigError(
                f"models must be StageModels (e.g. vllm_server_models(url)) or where the "
                f"models are as a mapping (e.g. {{'server': URL}}), got {type(models).__name__}"
            )
        if cache is not None and not isinstance(cache, StageCache):
            cache = shared_cache(cache)
        object.__setattr__(self, "domain", resolved)
        object.__setattr__(self, "models_config", config)
        object.__setattr__(self, "cache", cache)
        object.__setattr__(self, "options", _checked_options(options))
        object.__setattr__(self, "_models", live)
        object.__setattr__(self, "_lock", threading.Lock())

    def __repr__(self) -> str:
        models = self.models_config if self.models_config is not None else self._models[0]
        cache = type(self.cache).__name__ if self.cache is not None else None
        return f"RunContext(domain={self.domain.name!r}, models={models!r}, cache={cache})"

    @property
    def models(self) -> StageModels:
        """Stage → chat model (built on first use when the context was given as data)."""
        if not self._models:
            assert self.models_config is not None
            with self._lock:
                if not self._models:
                    self._models.append(shared_models(self.models_config))
        return self._models[0]

    def with_domain(self, domain: Domain | str | Path | Mapping[str, Any]) -> RunContext:
        """This context with another domain (same models and cache)."""
        models: StageModels | ModelsConfig = (
            self.models_config if self.models_config is not None else self._models[0]
        )
        return RunContext(_domain(domain), models, self.cache, self.options)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> RunContext:
        """A context from its JSON form (see the module docs), as text or parsed.

        Raises:
            ConfigError: Naming each wrong field.
        """
        try:
            config = (
                ContextConfig.model_validate_json(data)
                if isinstance(data, str)
                else ContextConfig.model_validate(data)
            )
        except ValidationError as err:
            problems = validation_problems(err, "context")
            raise ConfigError(f"invalid run context: {problems}") from None
        return cls(config.domain, config.models, config.cache, config.options)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Validate (and describe, e.g. for LangGraph Studio) the context as its JSON form."""
        return core_schema.no_info_after_validator_function(
            lambda config: cls(config.domain, config.models, config.cache, config.options),
            handler(ContextConfig),
        )


__all__ = ["CONTEXT_ENV", "ContextConfig", "RunContext", "deployment_defaults", "shared_cache"]
