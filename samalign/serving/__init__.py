"""Chat-model backends for the stages, the model directory, and the vLLM server launcher.

Backends: a vLLM server, transformers + peft in this process, vLLM in this process. Model
directories are read and checked by :mod:`samalign.serving.model_dir` only;
:func:`running_vllm_server` starts a vLLM server for one and waits for it.
"""

from samalign.serving.chat import EngineChatModel
from samalign.serving.model_dir import ModelDir, load_model_dir
from samalign.serving.models import StageModel, StageModels
from samalign.serving.server_process import running_vllm_server
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
    "ModelDir",
    "StageModel",
    "StageModels",
    "TransformersEngine",
    "api_base",
    "check_server",
    "load_model_dir",
    "running_vllm_server",
    "served_models",
    "transformers_models",
    "vllm_inprocess_models",
    "vllm_server_models",
]
