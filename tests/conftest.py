"""Shared test configuration."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get("SAMALIGN_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
"""``$SAMALIGN_DATA_DIR`` (e.g. for a git worktree elsewhere), else ``../shared/data``."""


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The benchmark data folder (``../shared/data`` beside the checkout)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA
