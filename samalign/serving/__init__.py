"""Chat-model backends for the stages, the model directory, and the vLLM server launcher.

Backends: a vLLM server (or several, balanced with failover: :mod:`samalign.serving.balancer`),
transformers + peft in this process, vLLM in this process; :class:`BackendSpec` names one as
data (for other processes, e.g. Ray actors). Model directories are read and checked by
:mod:`samalign.serving.model_dir` only; :func:`running_vllm_server` starts a vLLM server for
one and waits for it.
"""

from samalign.serving.balancer import BalancedChatModel, ServerPool
from samalign.serving.chat import EngineChatModel
from samalign.serving.model_dir import ModelDir, load_model_dir
from samalign.serving.models import StageModel, StageModels
from samalign.serving.server_process import ServerProcess, running_vllm_server
from samalign.serving.spec import BackendSpec
from samalign.serving.transformers_backend import TransformersEngine, transformers_models
from samalign.serving.vllm_inprocess import vllm_inprocess_models
from samalign.serving.vllm_server import (
    api_base,
    check_server,
    check_servers,
    served_models,
    server_urls,
    vllm_server_models,
)

__all__ = [
    "BackendSpec",
    "BalancedChatModel",
    "EngineChatModel",
    "ModelDir",
    "ServerPool",
    "ServerProcess",
    "StageModel",
    "StageModels",
    "TransformersEngine",
    "api_base",
    "check_server",
    "check_servers",
    "load_model_dir",
    "running_vllm_server",
    "served_models",
    "server_urls",
    "transformers_models",
    "vllm_inprocess_models",
    "vllm_server_models",
]
