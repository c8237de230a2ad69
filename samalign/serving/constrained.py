"""JSON-schema-constrained decoding for the transformers backend, with xgrammar.

xgrammar is the library vLLM itself uses for structured output, so the transformers backend
compiles a stage's schema exactly as a vLLM server started by ``samalign serve`` does
(``compile_json_schema(schema, any_whitespace=False, separators=(",", ":"))``, vLLM's
``disable_any_whitespace`` setting, with the model's end-of-sequence tokens as the grammar's
stop tokens). With the same logits, greedy answers are then token-identical. See
``docs/backends.md`` for the comparison with llguidance, outlines and lm-format-enforcer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from samalign.errors import ConfigError
from samalign.serving.extras import require_extra

COMPACT_SEPARATORS = (",", ":")
"""JSON separators without whitespace (vLLM's ``disable_any_whitespace``)."""


def _xgrammar() -> Any:
    require_extra("constrained decoding in the transformers backend", ("xgrammar",))
    import xgrammar

    return xgrammar


class JsonSchemaConstraints:
    """Compiles JSON schemas into per-request grammar matchers and applies their masks.

    Compiled grammars are cached by schema (a stage's schema usually depends only on the
    domain, so it is compiled once).

    Args:
        tokenizer: The model's Hugging Face tokenizer.
        vocab_size: Size of the model's logits (may exceed the tokenizer's vocabulary).
        stop_token_ids: Tokens that end a completed answer (end of sequence).
        compact: No free whitespace inside the JSON (as ``samalign serve`` configures vLLM).
        cache_limit_mb: Memory bound of the compiled-grammar cache.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        vocab_size: int,
        stop_token_ids: Iterable[int],
        compact: bool = True,
        cache_limit_mb: int = 512,
    ) -> None:
        xgr = _xgrammar()
        self._xgr = xgr
        self.vocab_size = vocab_size
        self.stop_token_ids = sorted(set(stop_token_ids))
        self.compact = compact
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self._compiler = xgr.GrammarCompiler(
            info, max_threads=8, cache_enabled=True, cache_limit_bytes=cache_limit_mb << 20
        )

    def matcher(self, schema: Mapping[str, Any]) -> Any:
        """A fresh grammar matcher for one request answering with ``schema``.

        Raises:
            ConfigError: If xgrammar cannot compile the schema.
        """
        try:
            compiled = self._compiler.compile_json_schema(
                json.dumps(schema),
                any_whitespace=not self.compact,
                separators=COMPACT_SEPARATORS if self.compact else None,
            )
        except (RuntimeError, ValueError, TypeError) as err:
            raise ConfigError(
                f"cannot compile the JSON schema for constrained decoding: {err}"
            ) from None
        return self._xgr.GrammarMatcher(compiled, override_stop_tokens=self.stop_token_ids)

    def allocate(self, rows: int) -> Any:
        """A token bitmask for ``rows`` rows (CPU tensor)."""
        return self._xgr.allocate_token_bitmask(rows, self.vocab_size)

    def mask(self, logits: Any, bitmask: Any, matchers: Sequence[tuple[int, Any]]) -> None:
        """Disallow, in place, the tokens each row's grammar forbids next.

        Args:
            logits: ``[rows, vocab]`` float logits (any device).
            bitmask: From :meth:`allocate` with at least as many rows.
            matchers: (row index, matcher) for the constrained rows still generating.
        """
        if not matchers:
            return
        for row, matcher in matchers:
            matcher.fill_next_token_bitmask(bitmask, row)
        self._xgr.apply_token_bitmask_inplace(
            logits,
            bitmask.to(logits.device, non_blocking=True),
            vocab_size=self.vocab_size,
            indices=[row for row, _ in matchers],
        )


__all__ = ["COMPACT_SEPARATORS", "JsonSchemaConstraints"]
