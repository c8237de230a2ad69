"""Setup shared by the unit and integration tests.

Imported as ``support`` (pytest puts ``tests/`` on ``sys.path`` for ``tests/conftest.py``, as it
does for :mod:`fault_server`), so nothing here is part of the ``samalign`` package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

JOHN_SMITH_RELATIONS = json.dumps(
    [
        {
            "subject": "John Smith",
            "relations": [
                {"relation": "work for", "object": "IBM"},
                {"relation": "live in", "object": "Armonk"},
            ],
        }
    ]
)
"""A ``relations_forward`` answer for "John Smith works for IBM in Armonk": two relations."""


def skip_without(*modules: str) -> list[Any]:
    """Skip the calling test module unless every one of ``modules`` imports; returns them."""
    return [pytest.importorskip(name) for name in modules]


def random_llama(*, vocab_size: int, hidden_size: int, layers: int, **config: Any) -> Any:
    """A randomly initialised ``LlamaForCausalLM`` (from torch's current seed), small.

    The MLP is twice ``hidden_size`` wide and attention has two heads (two key-value heads);
    ``config`` holds any other ``LlamaConfig`` settings.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=layers,
            num_attention_heads=2,
            num_key_value_heads=2,
            **config,
        )
    )


def recording_client() -> tuple[Any, list[dict[str, Any]]]:
    """An ``openai`` async HTTP client and the list it appends each chat request body to."""
    import openai

    bodies: list[dict[str, Any]] = []

    async def hook(request: Any) -> None:
        if request.url.path.endswith("/chat/completions"):
            bodies.append(json.loads(request.content))

    return openai.DefaultAsyncHttpxClient(event_hooks={"request": [hook]}, timeout=120), bodies


def run_samalign(
    *args: str,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 1200,
) -> subprocess.CompletedProcess[bytes]:
    """``python -m samalign ARGS`` in a new process (``env`` added to this one's), captured."""
    return subprocess.run(
        [sys.executable, "-m", "samalign", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )
