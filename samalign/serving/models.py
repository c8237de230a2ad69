"""Stage → chat model mapping shared by every backend."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType

from langchain_core.language_models import BaseChatModel

from samalign.errors import ConfigError


@dataclass(frozen=True)
class StageModel:
    """A chat model serving one stage.

    Attributes:
        chat_model: Any LangChain chat model.
        adapter: The adapter (served model name) this stage uses by default, for reports.
        structured_output: Pass the stage's JSON schema as an OpenAI-style ``response_format``
            keyword when invoking (vLLM and OpenAI-compatible servers honour it). Set False for
            chat models that do not accept it; the answer is then parsed leniently.
        adapter_kwarg: The invoke keyword that selects another adapter per call (``"model"``
            for OpenAI-compatible servers), used when a domain names its own adapter; ``None``
            if the model cannot switch adapters per call.
        schema_in_extra_body: Send ``response_format`` inside ``extra_body`` (for
            ``ChatOpenAI``: keeps the plain completion path, so a truncated answer comes back
            as text with ``finish_reason="length"`` instead of raising).
    """

    chat_model: BaseChatModel
    adapter: str = ""
    structured_output: bool = True
    adapter_kwarg: str | None = None
    schema_in_extra_body: bool = False


class StageModels(Mapping[str, StageModel]):
    """Which chat model serves which stage.

    Args:
        models: Stage name → :class:`StageModel` or a bare LangChain chat model (a bare model
            gets ``structured_output=False`` unless it is wrapped).
    """

    def __init__(self, models: Mapping[str, StageModel | BaseChatModel]) -> None:
        self._models: dict[str, StageModel] = {}
        for stage, model in models.items():
            if isinstance(model, StageModel):
                self._models[stage] = model
            elif isinstance(model, BaseChatModel):
                self._models[stage] = StageModel(model, adapter=stage, structured_output=False)
            else:
                raise ConfigError(
                    f"stage {stage!r}: expected a LangChain chat model or StageModel, "
                    f"got {type(model).__name__}"
                )

    def __getitem__(self, stage: str) -> StageModel:
        return self._models[stage]

    def require(self, stage: str) -> StageModel:
        """The model of ``stage``.

        Raises:
            ConfigError: If no model serves that stage, naming the configured ones.
        """
        try:
            return self._models[stage]
        except KeyError:
            raise ConfigError(
                f"no model configured for stage {stage!r}; configured stages: "
                f"{sorted(self._models)}. Add it to StageModels (for a vLLM server: "
                f"vllm_server_models(url, stages=options.model_stages))."
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def close(self) -> None:
        """Release in-process engines: calls ``close()`` on every chat model that has one.

        Server-backed models have nothing to release. Use ``with`` to close automatically::

            with transformers_models("runs/model") as models:
                graph.invoke({"text": ...}, context=RunContext("crossner_ai", models))
        """
        for model in self._models.values():
            close = getattr(model.chat_model, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> StageModels:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{k}={v.adapter or type(v.chat_model).__name__}" for k, v in self.items()
        )
        return f"StageModels({inner})"


__all__ = ["StageModel", "StageModels"]
