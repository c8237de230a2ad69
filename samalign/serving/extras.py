"""Optional dependencies: the one "is the extra installed?" check and a quiet transformers.

Used by everything that needs the ``local`` extra (torch, transformers, peft, …): the
transformers backend, the finetune trainer, the tiny-model builder and the demo. ``serving`` is
below ``finetune`` in the import layers, so both can import it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings
from collections.abc import Iterator, Sequence

from samalign.errors import ConfigError

LOCAL_MODULES: tuple[str, ...] = ("torch", "transformers", "peft")
"""The modules of the ``local`` extra every in-process model needs."""


def require_extra(
    purpose: str, modules: Sequence[str] = LOCAL_MODULES, *, extra: str = "local"
) -> None:
    """Raise a :class:`ConfigError` naming the missing modules and the install command.

    Args:
        purpose: What needs them, as the start of the message (``"training"``).
        modules: Import names to look for (found without importing them).
        extra: The samalign extra that installs them.

    Raises:
        ConfigError: ``"<purpose> needs the optional '<extra>' dependencies (missing: …);
            install them with: pip install 'samalign[<extra>]'"``.
    """
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"{purpose} needs the optional '{extra}' dependencies (missing: "
            f"{', '.join(missing)}); install them with: pip install 'samalign[{extra}]'"
        )


@contextlib.contextmanager
def quiet_transformers(*, ignore_warnings: bool = False) -> Iterator[None]:
    """Hide transformers' own progress bars (weight loading, shard writing) for a while.

    Args:
        ignore_warnings: Also silence Python warnings (deprecation chatter while loading).
    """
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        with warnings.catch_warnings() if ignore_warnings else contextlib.nullcontext():
            if ignore_warnings:
                warnings.simplefilter("ignore")
            yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


__all__ = ["LOCAL_MODULES", "quiet_transformers", "require_extra"]
