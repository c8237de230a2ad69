"""Chat-model backends for the stages, and the vLLM server launcher.

Backends: a vLLM server, transformers + peft in this process, vLLM in this process.
"""

from samalign.serving.chat import EngineChatModel
from samalign.serving.models import StageModel, StageModels
from samalign.serving.transformers_backend import TransformersEngine, transformers_models
from samalign.serving.vllm_inprocess import vllm_inprocess_models
from samalign.serving.vllm_server import (
    api_base,
    check_server,
    served_models,
    vllm_server_models,
)

__all__ = [
    "EngineChatModel",
    "StageModel",
    "StageModels",
    "TransformersEngine",
    "api_base",
    "check_server",
    "served_models",
    "transformers_models",
    "vllm_inprocess_models",
    "vllm_server_models",
]
