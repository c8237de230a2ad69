"""Where the stage models are, as plain data, and the per-process models built from it.

A LangGraph server hands a graph its run context as JSON, so live chat-model objects cannot
travel in it. :class:`ModelsConfig` says where the models are instead (a vLLM server URL, one
per stage if needed, with the adapter map; or a model directory for an in-process backend),
and :func:`shared_models` builds the :class:`StageModels` once per distinct configuration
and process: every run with the same configuration shares one set of clients (one in-process
engine). They are closed when the process exits (or by :func:`close_shared_models`).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable
from typing import Generic, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from samalign.errors import ConfigError, validation_problems
from samalign.serving.models import StageModel, StageModels
from samalign.types import ALL_STAGES

log = logging.getLogger(__name__)

Backend = Literal["server", "transformers", "vllm-inprocess"]
C = TypeVar("C", bound=BaseModel)
V = TypeVar("V")


class ModelsConfig(BaseModel):
    """Where the stage models are (the ``models`` part of a JSON run context).

    Give either ``server`` (and/or ``servers``) or ``model_dir``.

    Attributes:
        server: vLLM (OpenAI-compatible) server URL serving one adapter per stage, e.g.
            ``http://127.0.0.1:8000``.
        servers: Stage → server URL, for stages served elsewhere than ``server``.
        adapters: Stage → adapter (served model name); default: the domain's, else the
            stage's own name.
        model_dir: A model directory (``base/`` + ``adapters/<name>/``) run in this process.
        backend: ``server`` (default with a URL), ``transformers`` (default with a model
            directory) or ``vllm-inprocess``.
        vllm_python: With ``vllm-inprocess``: the interpreter of an environment with vLLM.
        stages: The stages to configure (default: every stage the server may serve, or every
            stage whose adapter the model directory has).
        timeout: Seconds per request (server backend).
        max_retries: Retries on connection errors, timeouts and 5xx (server backend).
        temperature: Sampling temperature (server backend; 0 = greedy).
        seed: Sampling seed (server backend).
        api_key_env: Name of an environment variable holding the server's API key (the key
            itself never travels in the context).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    server: str | None = None
    servers: dict[str, str] = Field(default_factory=dict)
    adapters: dict[str, str] = Field(default_factory=dict)
    model_dir: str | None = None
    backend: Backend | None = None
    vllm_python: str | None = None
    stages: tuple[str, ...] | None = None
    timeout: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    temperature: float = Field(default=0.0, ge=0)
    seed: int | None = 0
    api_key_env: str | None = None

    @model_validator(mode="after")
    def _one_place(self) -> Self:
        urls = self.server is not None or bool(self.servers)
        if urls == (self.model_dir is not None):
            raise ValueError(
                "give the server URL ('server', or 'servers' per stage) or a 'model_dir', "
                "not both and not neither"
            )
        if self.backend == "server" and not urls:
            raise ValueError("backend 'server' needs 'server' (a URL)")
        if self.backend in ("transformers", "vllm-inprocess") and self.model_dir is None:
            raise ValueError(f"backend {self.backend!r} needs 'model_dir'")
        if self.vllm_python is not None and self.chosen_backend != "vllm-inprocess":
            raise ValueError("'vllm_python' applies only to backend 'vllm-inprocess'")
        unknown = sorted(
            (set(self.servers) | set(self.adapters) | set(self.stages or ())) - set(ALL_STAGES)
        )
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; stages: {list(ALL_STAGES)}")
        return self

    @property
    def chosen_backend(self) -> Backend:
        """The backend these settings select."""
        if self.backend is not None:
            return self.backend
        return "transformers" if self.model_dir is not None else "server"

    @classmethod
    def parse(cls, data: object) -> ModelsConfig:
        """Validate a JSON ``models`` value.

        Raises:
            ConfigError: Naming each wrong field.
        """
        if isinstance(data, ModelsConfig):
            return data
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            problems = validation_problems(err, "models")
            raise ConfigError(
                f"invalid models settings in the run context: {problems}. Example: "
                '{"server": "http://127.0.0.1:8000"} or {"model_dir": "runs/model"}'
            ) from None


def _server_models(config: ModelsConfig) -> StageModels:
    from samalign.serving.vllm_server import vllm_server_models

    stages = list(config.stages or ALL_STAGES)
    api_key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
    by_url: dict[str, list[str]] = {}
    for stage in stages:
        url = config.servers.get(stage, config.server)
        if url is None:
            raise ConfigError(f"no server URL for stage {stage!r}: set 'server' or 'servers'")
        by_url.setdefault(url, []).append(stage)
    merged: dict[str, StageModel] = {}
    for url, url_stages in by_url.items():
        models = vllm_server_models(
            url,
            stages=url_stages,
            adapters={s: a for s, a in config.adapters.items() if s in url_stages},
            timeout=config.timeout,
            max_retries=config.max_retries,
            temperature=config.temperature,
            seed=config.seed,
            api_key=api_key or "EMPTY",
        )
        merged.update(models.items())
    return StageModels(merged)


def _local_models(config: ModelsConfig) -> StageModels:
    from samalign.serving.model_dir import load_model_dir

    assert config.model_dir is not None
    directory = load_model_dir(config.model_dir)
    stages = (
        list(config.stages)
        if config.stages is not None
        else [s for s in ALL_STAGES if config.adapters.get(s, s) in directory.adapters]
    )
    adapters = {s: a for s, a in config.adapters.items() if s in stages}
    if config.chosen_backend == "transformers":
        from samalign.serving.transformers_backend import transformers_models

        return transformers_models(config.model_dir, stages=stages, adapters=adapters)
    from samalign.serving.vllm_inprocess import vllm_inprocess_models

    return vllm_inprocess_models(
        config.model_dir, stages=stages, adapters=adapters, python=config.vllm_python
    )


def build_models(config: ModelsConfig) -> StageModels:
    """New stage models for ``config`` (not shared; the caller closes them).

    Raises:
        ConfigError: A bad model directory or a missing adapter.
    """
    if config.chosen_backend == "server":
        return _server_models(config)
    return _local_models(config)


class ProcessShared(Generic[C, V]):
    """Objects built from settings once per process and distinct settings, closed at exit.

    Args:
        build: Builds the object of one setting.
        close: Closes one object (at exit, or on :meth:`close`).
    """

    def __init__(self, build: Callable[[C], V], close: Callable[[V], None]) -> None:
        self._build = build
        self._close = close
        self._lock = threading.Lock()
        self._items: dict[str, V] = {}
        self._registered = False

    def get(self, config: C) -> V:
        """The object of ``config`` (a pydantic model), built on first use."""
        key = config.model_dump_json()
        with self._lock:  # building an in-process engine under the lock: one per setting
            item = self._items.get(key)
            if item is None:
                item = self._build(config)
                self._items[key] = item
                if not self._registered:
                    atexit.register(self.close)
                    self._registered = True
            return item

    def close(self) -> None:
        """Close every object now (the next use builds them again)."""
        with self._lock:
            items, self._items = list(self._items.values()), {}
        for item in items:
            try:
                self._close(item)
            except Exception:  # shutting down: log and go on closing the others
                log.exception("closing a shared %s failed", type(item).__name__)

    def __len__(self) -> int:
        return len(self._items)


_MODELS: ProcessShared[ModelsConfig, StageModels] = ProcessShared(build_models, lambda m: m.close())


def shared_models(config: ModelsConfig | object) -> StageModels:
    """The stage models of ``config``, built on first use and shared by the whole process.

    Runs with equal settings share one set of models (one client set or one in-process
    engine); they are closed when the process exits.

    Raises:
        ConfigError: Invalid settings, a bad model directory or a missing adapter.
    """
    return _MODELS.get(ModelsConfig.parse(config))


def close_shared_models() -> None:
    """Close every shared model set now (the next use builds them again)."""
    _MODELS.close()


def shared_model_sets() -> int:
    """How many shared model sets this process holds (for tests and monitoring)."""
    return len(_MODELS)


__all__ = [
    "Backend",
    "ModelsConfig",
    "ProcessShared",
    "build_models",
    "close_shared_models",
    "shared_model_sets",
    "shared_models",
]
