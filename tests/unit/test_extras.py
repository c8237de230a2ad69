"""The one optional-dependency check and the one quiet-transformers helper."""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

import pytest

from samalign.errors import ConfigError
from samalign.serving.extras import quiet_transformers, require_extra


def test_require_extra_names_what_is_missing_and_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name in ("peft", "xgrammar") else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    require_extra("training", ("json",))
    with pytest.raises(ConfigError) as caught:
        require_extra("training", ("json", "peft", "xgrammar"))
    assert str(caught.value) == (
        "training needs the optional 'local' dependencies (missing: peft, xgrammar); "
        "install them with: pip install 'samalign[local]'"
    )
    from samalign.finetune.trainer import train
    from samalign.serving.constrained import JsonSchemaConstraints

    with pytest.raises(ConfigError, match=r"training needs .*missing: peft"):
        train(None)  # type: ignore[arg-type]  # refused before the config is looked at
    with pytest.raises(ConfigError, match=r"constrained decoding .*missing: xgrammar"):
        JsonSchemaConstraints(None, vocab_size=1, stop_token_ids=frozenset())


def test_quiet_transformers_restores_the_progress_bar_and_warnings() -> None:
    hf_logging = pytest.importorskip("transformers.utils.logging")
    before = hf_logging.is_progress_bar_enabled()
    try:
        _check_quiet(hf_logging)
    finally:
        (hf_logging.enable_progress_bar if before else hf_logging.disable_progress_bar)()


def _check_quiet(hf_logging: Any) -> None:
    hf_logging.enable_progress_bar()
    with quiet_transformers():
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_transformers(ignore_warnings=True):
            warnings.warn("chatter", DeprecationWarning, stacklevel=1)
        with quiet_transformers():
            warnings.warn("shown", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["shown"]
    hf_logging.disable_progress_bar()
    with quiet_transformers():
        pass
    assert not hf_logging.is_progress_bar_enabled()  # left as it was
