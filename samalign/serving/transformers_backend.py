"""The embedded backend: transformers + peft, every stage's adapter on one base model.

:class:`TransformersEngine` loads the base model of a model directory once and every adapter
into it (peft ``load_adapter``; an extra adapter costs its own size, never a model copy).
Concurrent requests — from ``abatch``, parallel graph nodes or several threads — are collected
by a :class:`~samalign.serving.batcher.MicroBatcher` and generated together: left-padded rows,
mixed adapters in one batch (peft ``adapter_names=``), greedy decoding by default, each row
with its own token budget, stop strings and JSON-schema constraint (xgrammar, as vLLM).

The prompt is the base tokenizer's chat template rendered with the generation prompt and
tokenised without extra special tokens — what vLLM's chat endpoint does — so a stage request
gets the same tokens here as from a vLLM server. Adapters that the manifest marks as identity
(every ``lora_B`` zero) compute exactly the base model, so their rows run without a LoRA.

Two things make it fast where it runs:

* **A prompt-prefix cache** (:mod:`samalign.serving.prefix_cache`): the keys and values of a
  stage's shared prompt head are kept per adapter and reused, so a request computes only the
  rest of its prompt. A batch row is laid out as ``[padding][cached prefix][padding][rest]``
  with the prefix KV (zeros under the padding) as the starting cache and the attention mask
  marking both paddings, so positions and attention are those of the plain prompt: greedy
  answers are the same tokens as without the cache.
* **CPU threads that yield to other work** (:mod:`samalign.serving.threads`): with
  ``threads="auto"`` (default) idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``, if
  torch is not imported yet) and the intra-op threads follow the cores other processes leave
  free, so a competing CPU load slows the backend down in proportion instead of collapsing it.

Use :func:`transformers_models` to get :class:`~samalign.serving.models.StageModels`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from samalign.errors import BackendError, ConfigError, InputError, at_least
from samalign.serving.batcher import BatcherStats, MicroBatcher
from samalign.serving.chat import choose_adapters, engine_stage_models
from samalign.serving.constrained import JsonSchemaConstraints
from samalign.serving.engine import GenerationRequest, GenerationResult, LoopThread
from samalign.serving.extras import LOCAL_MODULES, quiet_transformers, require_extra
from samalign.serving.model_dir import ModelDir, check_adapter_fits, load_model_dir
from samalign.serving.models import StageModels
from samalign.serving.prefix_cache import (
    NO_PREFIX,
    PrefixCache,
    PrefixPlan,
    reserved_layer_class,
)
from samalign.serving.rows import Row, RowControl, cut_at_stop, hf_hooks, length_groups
from samalign.serving.threads import CpuShare, prefer_passive_openmp
from samalign.types import NER_STAGES

log = logging.getLogger(__name__)

BASE_ROW = "__base__"
"""peft's ``adapter_names`` entry for a row computed by the base model alone."""

_NEEDED = (*LOCAL_MODULES, "xgrammar")


def resolve_device(device: str) -> Any:
    """``"auto"`` → CUDA when available, else CPU; other values as torch names them."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"invalid device {device!r}: {err}") from None


def resolve_dtype(dtype: str, device: Any) -> Any:
    """``"auto"`` → bfloat16 on GPUs that support it, float16 on other GPUs, float32 on CPU."""
    import torch

    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ConfigError(f"invalid dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return value


@dataclass
class _Prepared:
    """A request ready for a batch: tokens, budget, grammar matcher, peft row name."""

    request: GenerationRequest
    prompt_ids: list[int]
    budget: int
    matcher: Any
    row_adapter: str
    plan: PrefixPlan = NO_PREFIX


class TransformersEngine:
    """One base model with every adapter of a model directory, behind a micro-batcher.

    Loading happens in the constructor, so a bad model directory fails here, not at the
    first request. Requests are answered on a background thread; :meth:`generate` blocks the
    calling thread, :meth:`agenerate` awaits from any event loop. Call :meth:`close` (or
    ``StageModels.close()``) to release the model.

    Args:
        model_dir: A samalign model directory (see ``docs/model_dir.md``), or one already
            loaded with :func:`~samalign.serving.model_dir.load_model_dir` (pass that to
            allow manifest paths outside the directory).
        adapters: Adapter names to load (default: all in the directory).
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda:1"``, ...
        dtype: ``"auto"`` (bfloat16 on GPUs that support it, float16 on other GPUs,
            float32 on CPU) or a torch dtype name.
        max_batch_size: Most requests generated together.
        max_wait_ms: Longest a request waits for companions before its batch starts.
        max_queue: Most requests waiting for a batch; more wait for room (backpressure).
        max_padding_ratio: A batch whose prompts differ more than this in length (longest /
            shortest) is generated as several groups of similar length, one after the other.
        queue_timeout_s: Fail a request that waited this long for room in a full queue.
        max_model_len: Context length (prompt + answer) limit; default the model's
            ``max_position_embeddings``.
        temperature: 0 decodes greedily; > 0 samples with this temperature.
        compact_json: No free whitespace inside constrained JSON (as ``samalign serve``).
        seed: Seed for sampling (``temperature > 0``).
        threads: CPU intra-op threads: ``"auto"`` (default) uses the cores other processes
            leave free (updated before each batch), up to the count that pays off for this
            model (measured once: 1 for small models) and makes idle OpenMP threads sleep when
            torch is not imported yet; an ``int`` fixes the count; ``None`` leaves torch's
            settings alone. Ignored on GPU.
        prefix_cache_mb: Memory bound of the prompt-prefix KV cache (least recently used
            entries are evicted); 0 turns it off.
        prefix_min_tokens: Shortest shared prompt prefix worth caching.
        reserve_kv: Give each batch's KV cache room for its prompts and answers up front
            (``False``: transformers' default cache, which copies the whole context at every
            decoding step).

    Raises:
        ConfigError: Missing packages, a bad model directory, an adapter that does not fit
            the base model, an invalid option.
    """

    llm_type = "samalign-transformers"

    def __init__(
        self,
        model_dir: str | Path | ModelDir,
        *,
        adapters: Sequence[str] | None = None,
        device: str = "auto",
        dtype: str = "auto",
        max_batch_size: int = 16,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        queue_timeout_s: float | None = None,
        max_padding_ratio: float = 2.0,
        max_model_len: int | None = None,
        temperature: float = 0.0,
        compact_json: bool = True,
        seed: int = 0,
        threads: int | Literal["auto"] | None = "auto",
        prefix_cache_mb: float = 256.0,
        prefix_min_tokens: int = 32,
        reserve_kv: bool = True,
    ) -> None:
        require_extra("the transformers backend", _NEEDED)
        if (
            threads is not None
            and threads != "auto"
            and (not isinstance(threads, int) or threads < 1)
        ):
            raise ConfigError(
                f"threads must be 'auto', None or a positive integer, got {threads!r}"
            )
        at_least("prefix_cache_mb", prefix_cache_mb, 0)
        if threads is not None:
            prefer_passive_openmp()  # only effective before torch loads
        at_least("temperature", temperature, 0)
        if max_model_len is not None:
            at_least("max_model_len", max_model_len, 2)
        self.model_dir = model_dir if isinstance(model_dir, ModelDir) else load_model_dir(model_dir)
        names = list(adapters) if adapters is not None else list(self.model_dir.adapters)
        unknown = sorted(set(names) - set(self.model_dir.adapters))
        if unknown:
            raise ConfigError(
                f"{self.model_dir.root or self.model_dir.base}: no adapter(s) {unknown}; it has "
                f"{sorted(self.model_dir.adapters)}"
            )
        if not names:
            raise ConfigError("load at least one adapter")
        self.temperature = temperature
        self.max_padding_ratio = at_least("max_padding_ratio", max_padding_ratio)
        self.seed = seed
        self._tokenizer_lock = threading.Lock()
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self._load(names)
        self._cpu_share: CpuShare | None = None
        self._fixed_threads: int | None = None
        self._last_threads: int | None = None
        self._most_threads: int | None = None
        if self.device.type == "cpu" and threads is not None:
            self._cpu_share = CpuShare() if threads == "auto" else None
            self._fixed_threads = threads if isinstance(threads, int) else None
        self._cache_kwarg = _cache_kwarg()
        self._kv_layers = self._plain_kv_layers()  # else generate makes its own cache
        self._reserve_kv = reserve_kv
        self.prefix_cache = PrefixCache(
            int(prefix_cache_mb * 2**20) if self._kv_layers else 0, min_tokens=prefix_min_tokens
        )
        self.constraints = JsonSchemaConstraints(
            self.tokenizer,
            vocab_size=self.vocab_size,
            stop_token_ids=self.stop_token_ids,
            compact=compact_json,
        )
        limit = max_model_len or math.inf
        self.max_model_len = int(min(limit, self._model_context()))
        self._thread = LoopThread("samalign-transformers")
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="samalign-generate")
        self.batcher: MicroBatcher[_Prepared, GenerationResult] = MicroBatcher(
            self._run_batch,
            max_batch_size=max_batch_size,
            max_wait_s=max_wait_ms / 1000,
            max_queue=max_queue,
            queue_timeout_s=queue_timeout_s,
            name="transformers backend",
            incoming=lambda: self._preparing,
        )
        self._preparing = 0  # requests being tokenised: the next batch waits for them
        self._generate_counts = (0, 0, 0.0)
        self._closed = False

    # -- loading ---------------------------------------------------------------------------

    def _load(self, names: list[str]) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        base = self.model_dir.base
        with quiet_transformers(ignore_warnings=True):
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(base)
            except (OSError, ValueError) as err:
                raise ConfigError(f"cannot load the tokenizer of {base}: {err}") from None
            if not getattr(self.tokenizer, "chat_template", None):
                raise ConfigError(
                    f"the tokenizer of {base} has no chat template; stage prompts are chat "
                    "messages, so the base model needs one (tokenizer_config.json or "
                    "chat_template.jinja)"
                )
            try:
                model: Any = AutoModelForCausalLM.from_pretrained(base, dtype=self.dtype)
            except (OSError, ValueError) as err:
                raise ConfigError(f"cannot load the base model {base}: {err}") from None
            model.to(self.device)
            model.eval()
            modules = dict(model.named_modules())

            def lookup(module: str) -> tuple[int, int] | None:
                layer = modules.get(module)
                if layer is None:
                    return None
                weight = getattr(layer, "weight", None)
                if not isinstance(layer, torch.nn.Linear) or weight is None:
                    return (-1, -1)
                return int(layer.out_features), int(layer.in_features)

            for name in names:
                check_adapter_fits(name, self.model_dir.adapters[name], base, lookup)
            self.identity = frozenset(n for n in names if n in self.model_dir.identity_adapters)
            lora = [n for n in names if n not in self.identity]
            if lora:
                from peft import PeftModel

                first, *rest = lora
                model = PeftModel.from_pretrained(
                    model, str(self.model_dir.adapters[first]), adapter_name=first
                )
                for name in rest:
                    model.load_adapter(str(self.model_dir.adapters[name]), adapter_name=name)
                model.eval()
        self.model = model
        self._peft = bool(lora)
        self._adapters = frozenset(names)
        self.tokenizer.padding_side = "left"
        eos = self.tokenizer.eos_token_id
        config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        stops = {int(eos)} if eos is not None else set()
        if isinstance(config_eos, int):
            stops.add(config_eos)
        elif isinstance(config_eos, list):
            stops.update(int(x) for x in config_eos)
        if not stops:
            raise ConfigError(f"the tokenizer of {base} has no end-of-sequence token")
        self.stop_token_ids = frozenset(stops)
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else min(stops))
        output = model.get_output_embeddings()
        self.vocab_size = int(
            output.weight.shape[0] if output is not None else model.config.vocab_size
        )

    # -- threads and the prefix cache ------------------------------------------------------

    def _set_threads(self) -> None:
        """Set the generation thread's intra-op threads (CPU; see :mod:`.threads`)."""
        if self._fixed_threads is not None:
            wanted = self._fixed_threads
        elif self._cpu_share is not None:
            if self._most_threads is None:
                self._most_threads = self._calibrate_threads()
            wanted = self._cpu_share.threads(self._most_threads)
        else:
            return
        import torch

        if wanted != torch.get_num_threads():  # per calling thread: set it on this one
            torch.set_num_threads(wanted)
        self._last_threads = wanted

    def _calibrate_threads(self) -> int:
        """The most intra-op threads worth using for this model on this CPU (measured once).

        More threads pay off only when the operators are large enough to split: for a small
        model every operator waking a second thread costs more than it saves. And a small
        model's batches are not only torch: the grammar masks, stop checks, tokenisation and
        the caller's own graph run in Python beside it, so one core is left to them. Times a
        decoding-sized and a prompt-sized forward pass with one thread and with all usable
        cores but one (on the generation thread, at its first batch) and keeps the faster;
        with two cores or fewer that is one thread without measuring (measured on 2 cores with
        idle threads sleeping: two intra-op threads ran the joint graph at 1.8 sentences/s, one
        at 3.1-4.1, and one kept its speed beside a busy co-process; ``docs/benchmarks.md``).
        Models of a billion parameters and more use every core without measuring.
        """
        import torch

        assert self._cpu_share is not None
        cores = self._cpu_share.cores
        if cores <= 1:
            return 1
        if sum(p.numel() for p in self.model.parameters()) >= 1_000_000_000:
            return cores
        cores -= 1  # the Python side's core
        if cores <= 1:
            return 1
        shapes = [
            torch.full(shape, self.pad_token_id, device=self.device) for shape in ((16, 1), (4, 64))
        ]

        def seconds(threads: int) -> float:
            torch.set_num_threads(threads)
            best = math.inf
            with torch.inference_mode():
                for _ in range(4):
                    start = time.perf_counter()
                    for ids in shapes:
                        self.model(input_ids=ids)
                    best = min(best, time.perf_counter() - start)
            return best

        one, many = seconds(1), seconds(cores)
        chosen = cores if many < 0.8 * one else 1
        log.info("intra-op threads: at most %d (forward %.1f ms with 1, %.1f ms with %d)",
                 chosen, 1000 * one, 1000 * many, cores)  # fmt: skip
        return chosen

    def _plain_kv_layers(self) -> bool:
        """Whether the model's KV cache is a plain per-layer cache (prefix cache, reserved room)."""
        try:
            from transformers import DynamicCache
            from transformers.cache_utils import DynamicLayer
        except ImportError:  # pragma: no cover - older transformers
            return False
        try:
            layers = DynamicCache(config=self.model.config).layers
        except (AttributeError, TypeError, ValueError):
            return False
        plain = bool(layers) and all(type(layer) is DynamicLayer for layer in layers)
        if not plain:
            log.info("prefix cache off: the model's KV cache has sliding or special layers")
        return plain

    def _batch_cache(self, batch: list[_Prepared], cached: int, width: int) -> Any:
        """The starting KV cache of a batch: each row's cached prefix, zeros under padding.

        Its layers reserve room for the prompts and the answers (no copy per decoding step).
        """
        import torch
        from transformers import DynamicCache

        cache: Any = DynamicCache(config=self.model.config)
        if self._reserve_kv:
            reserve = width + max(p.budget for p in batch)
            layer_class = reserved_layer_class()
            cache.layers = [layer_class(reserve) for _ in cache.layers]
        if cached == 0:
            return cache
        sample = next(p.plan.entry for p in batch if p.plan.entry is not None)
        assert sample is not None
        for layer, (keys, _) in enumerate(sample.kv):
            heads, dim = keys.shape[0], keys.shape[-1]
            per_row: list[list[Any]] = [[], []]
            for p in batch:
                entry, c = p.plan.entry, p.plan.cached
                for which in (0, 1):
                    head = torch.zeros(
                        (heads, cached - c, dim), dtype=keys.dtype, device=keys.device
                    )
                    part = entry.kv[layer][which][:, :c] if entry is not None else head[:, :0]
                    per_row[which].append(torch.cat([head, part], dim=1))
            cache.layers[layer].update(torch.stack(per_row[0]), torch.stack(per_row[1]))
        return cache

    @staticmethod
    def _storing(batch: list[_Prepared]) -> bool:
        return any(p.plan.store > p.plan.cached for p in batch)

    def _store_prefixes(self, batch: list[_Prepared], cache: Any, cached: int, width: int) -> None:
        """Copy the KV of the prompt prefixes the plans ask to keep out of the batch's cache."""
        import torch

        for row, p in enumerate(batch):
            keep = p.plan.store
            if keep <= p.plan.cached:
                continue
            c = p.plan.cached
            rest_start = cached + width - (len(p.prompt_ids) - c)
            kv = []
            for layer in cache.layers:
                pair = []
                for tensor in (layer.keys, layer.values):
                    head = tensor[row, :, cached - c : cached]
                    rest = tensor[row, :, rest_start : rest_start + keep - c]
                    pair.append(torch.cat([head, rest], dim=1).clone())
                kv.append((pair[0], pair[1]))
            self.prefix_cache.store(p.row_adapter, p.prompt_ids[:keep], kv)

    def _model_context(self) -> int:
        config = getattr(self.model, "config", None)
        length = getattr(config, "max_position_embeddings", None)
        if isinstance(length, int) and length > 0:
            return length
        tok_length = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok_length, int) and 0 < tok_length < 10**7:
            return tok_length
        return 4096

    # -- Engine protocol -------------------------------------------------------------------

    @property
    def adapters(self) -> frozenset[str]:
        """The adapter names this engine serves."""
        return self._adapters

    def stats(self) -> dict[str, Any]:
        """Batching counters.

        Returns:
            The batcher's counters (``batches``, ``requests``, ``mean_batch_size`` of the
            collected batches, ``queue_wait_p50_s``/``_p95_s``, ``cancelled`` ...) plus
            ``generate_calls``, ``mean_generate_batch_size`` (rows per ``generate`` call, after
            splitting batches by prompt length), ``generate_seconds`` (time spent
            generating), the prefix cache's counters (``prefix_cache_hits``,
            ``prefix_cache_reused_tokens``, ``prefix_cache_prompt_tokens``,
            ``prefix_cache_entries``, ``prefix_cache_bytes`` …) and ``threads`` (the intra-op
            threads of the last batch; ``None`` when the engine does not set them).
        """
        stats = self.batcher.stats.snapshot()
        calls, rows, seconds = self._generate_counts
        stats["generate_calls"] = calls
        stats["mean_generate_batch_size"] = rows / calls if calls else 0.0
        stats["generate_seconds"] = seconds
        stats.update(self.prefix_cache.stats())
        stats["threads"] = self._last_threads
        return stats

    def reset_stats(self) -> None:
        """Start the counters of :meth:`stats` afresh (call while no request is in flight).

        The prefix cache keeps its entries (only its counters restart).
        """
        self.batcher.stats = BatcherStats()
        self._generate_counts = (0, 0, 0.0)
        self.prefix_cache.reset_stats()

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Answer one request, blocking the calling thread (batched with concurrent ones)."""
        return self._thread.run(self._submit(request))

    async def agenerate(self, request: GenerationRequest) -> GenerationResult:
        """Answer one request; cancelling the caller drops the request if it still waits."""
        return await self._thread.arun(self._submit(request))

    def close(self) -> None:
        """Stop the batcher and threads and drop the model (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._thread.close(self.batcher.aclose())
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.prefix_cache.clear()
        self.model = None

    # -- requests ----------------------------------------------------------------------------

    async def _submit(self, request: GenerationRequest) -> GenerationResult:
        if self._closed:
            raise BackendError("the transformers backend is closed")
        self._preparing += 1  # on the engine's loop, as the batcher reads it
        try:
            prepared = await asyncio.to_thread(self._prepare, request)
        finally:
            self._preparing -= 1
        result, info = await self.batcher.submit(prepared)
        return GenerationResult(
            text=result.text,
            token_ids=result.token_ids,
            prompt_tokens=result.prompt_tokens,
            finish_reason=result.finish_reason,
            queue_wait_s=info.queue_wait_s,
            generation_s=result.generation_s,
            batch_size=result.batch_size,
        )

    def render(self, request: GenerationRequest) -> list[int]:
        """The prompt tokens of a request: chat template + generation prompt, no extra BOS.

        Raises:
            InputError: If the chat template rejects the messages.
        """
        from jinja2 import TemplateError

        messages = [{"role": t.role, "content": t.content} for t in request.messages]
        with self._tokenizer_lock:
            try:
                text = self.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False
                )
            except TemplateError as err:
                raise InputError(f"the chat template rejected the messages: {err}") from None
            ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def decode(self, ids: list[int]) -> str:
        """Completion text of tokens (special tokens skipped, as vLLM's default)."""
        with self._tokenizer_lock:  # a fast tokenizer must not be used by two threads at once
            return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def _prepare(self, request: GenerationRequest) -> _Prepared:
        if request.adapter not in self._adapters:
            raise BackendError(
                f"adapter {request.adapter!r} is not loaded; loaded: {sorted(self._adapters)}"
            )
        ids = self.render(request)
        room = self.max_model_len - len(ids)
        if room < 1:
            raise InputError(
                f"the prompt for adapter {request.adapter!r} has {len(ids)} tokens, which "
                f"leaves no room in the model's context of {self.max_model_len} tokens; "
                "shorten the text (e.g. split it into sentences)"
            )
        matcher = self.constraints.matcher(request.schema) if request.schema else None
        return _Prepared(
            request=request,
            prompt_ids=ids,
            budget=min(request.max_tokens, room),
            matcher=matcher,
            row_adapter=BASE_ROW if request.adapter in self.identity else request.adapter,
        )

    async def _run_batch(
        self, batch: list[_Prepared]
    ) -> Sequence[GenerationResult | BaseException]:
        """Generate a batch as groups of similar prompt length (little padding), in turn.

        A group that fails is retried one request at a time, so only the requests that fail
        alone get an error.
        """
        loop = asyncio.get_running_loop()
        results: list[GenerationResult | BaseException | None] = [None] * len(batch)
        if self.prefix_cache.enabled:
            for prepared in batch:
                prepared.plan = self.prefix_cache.match(prepared.row_adapter, prepared.prompt_ids)
        # grouped by the whole prompt's length, cached part included: a cached head shortens
        # every row's prefill alike, so the cache never splits a batch that plain prompts
        # would generate together (each extra group is a whole extra decoding loop)
        lengths = [len(p.prompt_ids) for p in batch]
        for group in length_groups(lengths, self.max_padding_ratio):
            rows = [batch[i] for i in group]
            try:
                answers = await loop.run_in_executor(self._pool, self._generate_batch, rows)
            except Exception as exc:
                if len(rows) == 1:
                    answers = [exc]
                else:
                    log.warning("a batch of %d failed (%s); retrying one by one", len(rows), exc)
                    answers = []
                    for row in rows:
                        try:
                            answers += await loop.run_in_executor(
                                self._pool, self._generate_batch, [row]
                            )
                        except Exception as alone:
                            answers.append(alone)
            for index, answer in zip(group, answers, strict=True):
                results[index] = answer
        return [r if r is not None else BackendError("no result") for r in results]

    def _generate_batch(self, batch: list[_Prepared]) -> list[GenerationResult | BaseException]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        if self.model is None:
            raise BackendError("the transformers backend is closed")
        start = time.perf_counter()
        self._set_threads()
        # row layout: [padding][cached prefix][padding][rest of the prompt]; with no cached
        # prefix in the batch this is plain left padding
        cached = max(p.plan.cached for p in batch)
        width = max(len(p.prompt_ids) - p.plan.cached for p in batch)
        pad = self.pad_token_id
        id_rows: list[list[int]] = []
        mask_rows: list[list[int]] = []
        for p in batch:
            c, rest = p.plan.cached, p.prompt_ids[p.plan.cached :]
            gap_head, gap_rest = cached - c, width - len(rest)
            id_rows.append([pad] * gap_head + p.prompt_ids[:c] + [pad] * gap_rest + rest)
            mask_rows.append([0] * gap_head + [1] * c + [0] * gap_rest + [1] * len(rest))
        ids = torch.tensor(id_rows, device=self.device)
        attention = torch.tensor(mask_rows, device=self.device)
        rows = [Row(p.budget, p.matcher, p.request.stop) for p in batch]
        processor, criterion = hf_hooks()
        control = RowControl(rows, self.constraints, self.stop_token_ids, self.decode)
        sampling = self.temperature > 0
        config = GenerationConfig(  # type: ignore[no-untyped-call]
            max_new_tokens=max(p.budget for p in batch),
            do_sample=sampling,
            temperature=self.temperature if sampling else None,
            top_k=None,
            top_p=None,
            pad_token_id=pad,
            eos_token_id=sorted(self.stop_token_ids),
        )
        kwargs: dict[str, Any] = {}
        if self._peft:
            kwargs["adapter_names"] = [p.row_adapter for p in batch]
        starting = self._kv_layers and (self._reserve_kv or cached > 0 or self._storing(batch))
        cache = self._batch_cache(batch, cached, width) if starting else None
        if cache is not None:
            kwargs[self._cache_kwarg] = cache
        with torch.inference_mode():
            if sampling:
                torch.manual_seed(self.seed)
                self.seed += 1
            self.model.generate(
                input_ids=ids,
                attention_mask=attention,
                generation_config=config,
                logits_processor=LogitsProcessorList([processor(control.mask)]),
                stopping_criteria=StoppingCriteriaList([criterion(control.stop)]),
                **kwargs,
            )
        if cache is not None:
            self._store_prefixes(batch, cache, cached, width)
        elapsed = time.perf_counter() - start
        calls, total, seconds = self._generate_counts
        self._generate_counts = (calls + 1, total + len(batch), seconds + elapsed)
        results: list[GenerationResult | BaseException] = []
        for prepared, row in zip(batch, rows, strict=True):
            if row.error is not None:
                results.append(row.error)
                continue
            content = [t for t in row.ids if t not in self.stop_token_ids]
            text = self.decode(content)
            if row.finish == "stop" and prepared.request.stop:
                text = cut_at_stop(text, prepared.request.stop)
            results.append(
                GenerationResult(
                    text=text,
                    token_ids=tuple(row.ids),
                    prompt_tokens=len(prepared.prompt_ids),
                    finish_reason="stop" if row.finish == "stop" else "length",
                    generation_s=elapsed,
                    batch_size=len(batch),
                )
            )
        return results


def _cache_kwarg() -> str:
    """The name ``generate`` takes a starting KV cache by (``cache`` since transformers 5.2x)."""
    try:
        from transformers.generation.utils import ALL_CACHE_NAMES
    except ImportError:  # pragma: no cover - older transformers
        return "past_key_values"
    return str(ALL_CACHE_NAMES[0])


def transformers_models(
    model_dir: str | Path,
    *,
    stages: Sequence[str] = NER_STAGES,
    adapters: Mapping[str, str] | None = None,
    max_tokens: int = 512,
    allow_outside: bool = False,
    **engine_options: Any,
) -> StageModels:
    """Build :class:`StageModels` on one in-process transformers + peft engine.

    The embedded default backend: no server, one process, CPU or CUDA. Every adapter of the
    model directory is loaded once into one base model; one chat model per stage shares it,
    and concurrent requests are generated in mixed-adapter batches. Close the models (or use
    ``with``) to release the engine.

    Args:
        model_dir: Model directory (``base/`` + ``adapters/<name>/`` + optional manifest).
        stages: Stages to configure.
        adapters: Stage → adapter name overrides (default: the adapter named like the stage).
        max_tokens: Completion budget of a call that does not set ``max_tokens``.
        allow_outside: Follow manifest paths and links that lead outside the directory.
        **engine_options: Passed to :class:`TransformersEngine` (``device``, ``dtype``,
            ``max_batch_size``, ``max_wait_ms``, ``max_queue``, ``max_model_len``, ...).

    Returns:
        The stage models; pass them in the graph's ``RunContext``.

    Raises:
        ConfigError: Bad model directory, an adapter missing or not matching the base model.

    Example:
        >>> with transformers_models("runs/tiny-model") as models:
        ...     ctx = RunContext(domain="crossner_ai", models=models)
        ...     build_ner_graph().invoke({"text": "LSTM was proposed by Hochreiter."}, context=ctx)
    """
    directory = load_model_dir(model_dir, allow_outside=allow_outside)
    choose_adapters(stages, adapters, frozenset(directory.adapters))  # fail before loading
    engine = TransformersEngine(directory, **engine_options)
    return engine_stage_models(engine, stages=stages, adapters=adapters, max_tokens=max_tokens)


__all__ = [
    "BASE_ROW",
    "TransformersEngine",
    "resolve_device",
    "resolve_dtype",
    "transformers_models",
]
