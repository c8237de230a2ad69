"""Chat-model backends for the stages, and the vLLM server launcher."""

from samalign.serving.models import StageModel, StageModels
from samalign.serving.vllm_server import (
    api_base,
    check_server,
    served_models,
    vllm_server_models,
)

__all__ = [
    "StageModel",
    "StageModels",
    "api_base",
    "check_server",
    "served_models",
    "vllm_server_models",
]
