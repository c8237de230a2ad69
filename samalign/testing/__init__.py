"""Helpers for tests: scripted fake chat models and the kill-switch for real model requests.

Example:
    >>> from samalign.testing import block_model_requests
    >>> with block_model_requests():
    ...     graph.invoke({"text": text}, context=context)  # a real backend raises

See :mod:`samalign.serving.guard` (the switch), :mod:`samalign.testing.fakes` (the fakes)
and :mod:`samalign.testing.tiny` (a tiny random model directory, built offline).
"""

from samalign.errors import ModelRequestBlockedError
from samalign.serving.guard import (
    BLOCK_ENV,
    allow_model_requests,
    block_model_requests,
    model_requests_allowed,
)

__all__ = [
    "BLOCK_ENV",
    "ModelRequestBlockedError",
    "allow_model_requests",
    "block_model_requests",
    "model_requests_allowed",
]
