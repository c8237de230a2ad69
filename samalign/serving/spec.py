"""Where the stage models come from, as plain data that can travel to another process.

A :class:`BackendSpec` names a backend (a vLLM server or several, or a model directory run in
the process that builds the models) and its settings; :meth:`BackendSpec.models` builds the
stage models there. ``samalign extract`` and ``samalign eval`` build their models through it,
and the Ray Data stage ships it to every actor, which builds its own models once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from samalign.errors import ConfigError
from samalign.serving.models import StageModels

BackendKind = Literal["server", "transformers", "vllm-inprocess"]


class BackendSpec(BaseModel):
    """A real model backend, as data (picklable, JSON-serialisable).

    Attributes:
        kind: ``server`` (vLLM servers), ``transformers`` (transformers + peft in process) or
            ``vllm-inprocess`` (vLLM in process, or in ``vllm_python``'s environment).
        servers: The server URLs (``server``); several are balanced with failover.
        model_dir: The model directory (the in-process backends).
        vllm_python: Interpreter of an environment with vLLM (``vllm-inprocess`` only).
        device: Device of the transformers backend (``auto``, ``cpu``, ``cuda:0`` …).
        timeout: Seconds per model request (``server``).
        max_retries: Retries per request on connection errors, timeouts and 5xx (``server``).
        allow_outside_paths: Let the model directory's manifest and links point outside it
            (the in-process backends; see ``docs/model_dir.md``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: BackendKind
    servers: tuple[str, ...] = ()
    model_dir: Path | None = None
    vllm_python: str | None = None
    device: str = "auto"
    timeout: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    allow_outside_paths: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> BackendSpec:
        if self.kind == "server":
            if not self.servers:
                raise ConfigError("the server backend needs at least one server URL (--server)")
            from samalign.serving.vllm_server import server_urls

            server_urls(self.servers)  # each URL parses, none twice
            if self.model_dir is not None or self.allow_outside_paths:
                raise ConfigError("a model directory applies only to the in-process backends")
        else:
            if self.servers:
                raise ConfigError(f"server URLs do not apply to the {self.kind} backend")
            if self.model_dir is None:
                raise ConfigError(f"the {self.kind} backend needs a model directory (--model)")
        if self.vllm_python and self.kind != "vllm-inprocess":
            raise ConfigError("vllm_python applies only to the vllm-inprocess backend")
        return self

    def check(self, adapters: Mapping[str, str]) -> None:
        """Fail early unless the backend can serve ``adapters`` (servers: up, adapters served).

        Raises:
            BackendError: No server answers, or one lacks an adapter.
        """
        if self.kind == "server":
            from samalign.serving.vllm_server import check_servers

            check_servers(self.servers, adapters.values())

    def models(self, stages: Sequence[str], adapters: Mapping[str, str]) -> StageModels:
        """Build the stage models in this process.

        Args:
            stages: The stages the pipeline runs.
            adapters: Stage → adapter name.
        """
        if self.kind == "server":
            from samalign.serving.vllm_server import vllm_server_models

            return vllm_server_models(
                self.servers if len(self.servers) > 1 else self.servers[0],
                stages=stages,
                adapters=dict(adapters),
                timeout=self.timeout,
                max_retries=self.max_retries,
            )
        assert self.model_dir is not None  # checked by the validator
        build: Callable[..., StageModels]
        if self.kind == "transformers":
            from samalign.serving.transformers_backend import transformers_models

            build = partial(transformers_models, device=self.device)
        else:
            from samalign.serving.vllm_inprocess import vllm_inprocess_models

            build = partial(vllm_inprocess_models, python=self.vllm_python)
        return build(
            self.model_dir,
            stages=stages,
            adapters=dict(adapters),
            allow_outside=self.allow_outside_paths,
        )


__all__ = ["BackendKind", "BackendSpec"]
