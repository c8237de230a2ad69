"""Helpers for testing code built on samalign.

* :mod:`samalign.testing.fakes`: scripted chat models for unit tests (no model, no network;
  see ``docs/testing.md``).
* :mod:`samalign.testing.tiny`: a tiny random model directory built offline, for integration
  and smoke tests against real backends (``python -m samalign.testing build-tiny DIR``).
* the kill-switch for real model requests (:mod:`samalign.serving.guard`), re-exported here.

Example:
    >>> from samalign.testing import block_model_requests
    >>> with block_model_requests():
    ...     graph.invoke({"text": text}, context=context)  # a real backend raises
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
