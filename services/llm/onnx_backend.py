"""In-process generation with ONNX Runtime GenAI: the fast CPU serving backend.

The model is converted once (services/llm/model_prep.py); at run time only onnxruntime-genai is needed,
no torch or transformers. Requests share the read-only `og.Model`; `GenerationSlots` bounds how many run
at once (`max_concurrency`) and how many wait.

With `max_concurrency` > 1 requests are decoded together, up to `max_concurrency` per step: by default as
cohorts of one batched `og.Generator` (services/llm/onnx_cohort.py), or by `og.Engine`
(services/llm/onnx_batching.py; `batch_scheduler: engine`). Requests a batch cannot take run alone on the
unbatched path: an adapter (a batch runs one adapter and the Engine API has none), guided decoding
(response_format), a fixed sampling seed (the static engine refuses per-request seeds; a cohort shares one
random state) and, in a cohort, a prompt containing the batch's pad token. Those run beside the batch.

Adapters can be loaded at run time (`load_adapter`, POST /admin/adapters): a new version loads beside the
old one and becomes current for requests that arrive later; a request keeps the version current when it
entered the backend to its end (services/llm/onnx_adapter_versions.py).

The unbatched path (and every request with `max_concurrency` 1) gets an `og.Generator` of its own: a fresh
one, or one the prefix cache kept with a prompt that starts like this one's
(services/llm/onnx_prefix_cache.py). It is driven token by token (`generate_next_token`) inside one worker
thread, so no two threads ever touch one generator. Its prefill and decode steps (on the batched paths'
generators too) run without holding the GIL (services/llm/oga_native.py), so the event loop keeps serving.
On both paths the consumer closing the stream cancels the request between tokens, so a client that
disconnects frees its place within one token. A requested JSON format is enforced by the library's guided
decoding where it initialises for the model; otherwise the runner validates and repairs
(services/llm/structured_output.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import weakref
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core.errors import ConfigError, GenerationError, InvalidRequest, NotReady, StructuredOutputError
from services.core.settings import GraphOptimization, OnnxGeneratorSettings
from services.core.types import ChatMessage, GenerationParams, Role
from services.llm.backend_base import InProcessBackend, RawCounts, ThreadedRun, TokenLoop
from services.llm.hf_folder import prepare_hf_model
from services.llm.model_prep import GENAI_CONFIG_NAME, prepare_onnx_model, verify_onnx_model
from services.llm.oga_native import compute_calls
from services.llm.onnx_adapter_versions import AdapterPin, AdapterVersions
from services.llm.onnx_batching import (
    BatchScheduler,
    EngineScheduler,
    EngineTurnResult,
    TurnSpec,
    engine_config_overlay,
    stream_engine_tokens,
)
from services.llm.onnx_cohort import CohortScheduler, choose_pad_id, pad_candidates, pad_token_overlay
from services.llm.onnx_prefix_cache import PrefixCache, PrefixLease
from services.llm.streaming import Emit, run_producer_in_thread
from services.llm.structured_output import (
    ResponseFormatSpec,
    format_instruction,
    guidance_schema,
    parse_response_format,
    with_instruction,
)

logger = logging.getLogger(__name__)


@dataclass
class PinnedRun(ThreadedRun):
    """An unbatched run and the adapter version it pinned when it entered the backend (None: base model)."""

    adapter: AdapterPin | None = None


def read_chat_template(model_dir: Path) -> str | None:
    """The model's own chat template (a jinja string) as the builder copied it next to the model."""
    template_file = model_dir / "chat_template.jinja"
    if template_file.is_file():
        return template_file.read_text(encoding="utf-8")
    try:
        config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    template = config.get("chat_template")
    return template if isinstance(template, str) else None


class OnnxGenerator(InProcessBackend):
    _settings: OnnxGeneratorSettings  # this backend's own settings model

    def __init__(self, settings: OnnxGeneratorSettings, data_dir: Path) -> None:
        super().__init__(settings)
        self._data_dir = data_dir
        self._model: Any = None
        self._tokenizer: Any = None
        self._adapter_versions: AdapterVersions | None = None
        # The target modules of the peft template the LoRA-ready model was built from (None: no LoRA inputs).
        self._lora_modules: list[str] | None = None
        self._chat_template: str | None = None
        self._eos_ids: frozenset[int] = frozenset()
        self._context_length = 0
        self._guidance_ready = False
        self._scheduler: BatchScheduler | None = None
        self._batch_pad_id: int | None = None
        self._prefix_cache = PrefixCache(slots=0, tokens=0)
        # Compute calls on this model's generators run one at a time (oga_native.compute_calls).
        self._compute_lock = threading.Lock()
        self.model_dir: Path | None = None

    # ------------------------------------------------------------------ loading

    def warm_up(self) -> None:
        model_dir = prepare_onnx_model(self._settings, self._data_dir)
        adapter_files: dict[str, Path] = {}
        if self._settings.adapters:
            from services.llm.onnx_adapters import peft_template, prepare_adapters, target_modules

            adapter_files = prepare_adapters(self._settings, self._data_dir)
            hf_dir = prepare_hf_model(self._settings, self._data_dir)
            template = peft_template(self._settings.adapters, hf_dir, self._data_dir)
            self._lora_modules = target_modules(template) if template is not None else None
        self.load(model_dir, adapter_files)

    def load(self, model_dir: Path, adapter_files: dict[str, Path] | None = None) -> None:
        """Load an already converted model folder (warm_up prepares and then calls this)."""
        import onnxruntime_genai as og

        verify_onnx_model(model_dir)
        config = session_config(model_dir, SessionOptions.of(self._settings))
        batch_size = self._settings.max_concurrency
        if batch_size > 1:
            config.overlay(engine_config_overlay(batch_size))
        try:
            model = og.Model(config)
            tokenizer = og.Tokenizer(model)
        except Exception as exc:  # og raises RuntimeError with ORT's message for damaged graphs
            raise ConfigError(
                f"cannot load ONNX model {model_dir}: {exc}; delete it to convert again"
            ) from exc
        adapter_versions = None
        if adapter_files:
            adapter_versions = AdapterVersions(og.Adapters(model))
            for adapter_name, adapter_file in adapter_files.items():
                try:
                    adapter_versions.load(adapter_name, adapter_file)
                except Exception as exc:
                    raise ConfigError(f"adapter {adapter_name!r}: cannot load {adapter_file}: {exc}") from exc
        genai_config = json.loads((model_dir / GENAI_CONFIG_NAME).read_text(encoding="utf-8"))
        self._context_length = int(genai_config["model"].get("context_length", 2048))
        self._eos_ids = frozenset(int(i) for i in tokenizer.eos_token_ids)
        self._chat_template = read_chat_template(model_dir)
        self._guidance_ready = guided_decoding_works(model, model_dir)
        self._model, self._tokenizer, self._adapter_versions = model, tokenizer, adapter_versions
        self._prefix_cache = PrefixCache(
            self._settings.prefix_cache_slots, min(self._settings.prefix_cache_tokens, self._context_length)
        )
        if batch_size > 1:
            self._batch_pad_id = choose_pad_id(self._scaffold_ids(), pad_candidates(genai_config))
            self._scheduler = self._batch_scheduler(model_dir, model, batch_size, genai_config)
        self.model_dir = model_dir
        logger.info(
            "loaded ONNX model %s (threads=%s, batch size=%s, adapters=%s)",
            model_dir,
            self._settings.threads or "default",
            batch_size,
            sorted(adapter_files or {}),
        )

    def _batch_scheduler(
        self, model_dir: Path, model: Any, batch_size: int, genai_config: dict[str, Any]
    ) -> BatchScheduler:
        """The scheduler that runs batches of up to `batch_size` requests (settings' `batch_scheduler`)."""
        import onnxruntime_genai as og

        window_s = self._settings.batch_window_ms / 1000

        def demand() -> int:
            return self._slots.running + self._slots.waiting

        if self._settings.batch_scheduler == "engine" or self._batch_pad_id is None:
            if self._batch_pad_id is None:
                logger.warning("no pad token outside the chat template; batching with og.Engine instead")
            return EngineScheduler(
                model, max_batch_size=batch_size, admission_window_s=window_s, demand=demand
            )
        if self._batch_pad_id != genai_config["model"].get("pad_token_id"):
            # The attention mask of a batch is built from the model's pad id: load it with the chosen one.
            config = session_config(model_dir, SessionOptions.of(self._settings))
            config.overlay(pad_token_overlay(self._batch_pad_id))
            model = og.Model(config)
        return CohortScheduler(
            model,
            pad_id=self._batch_pad_id,
            eos_ids=self._eos_ids,
            context_length=self._context_length,
            max_batch_size=batch_size,
            admission_window_s=window_s,
            demand=demand,
            release_gil=self._settings.release_gil,
            compute_lock=self._compute_lock,
        )

    def load_adapter(self, name: str, folder: Path) -> None:
        """Load a new version of adapter `name` from a peft folder (or a converted one) while requests run.

        The folder is converted once to an `.onnx_adapter` (cached under the data dir, written atomically).
        Requests already running keep the version they started with; later ones get this one. The adapter
        must target the modules of the adapter the model was built with at start (its LoRA inputs).
        """
        from services.llm.onnx_adapters import PEFT_CONFIG_NAME, adapter_file, target_modules

        self._require_model()
        if self._adapter_versions is None or self._lora_modules is None:
            raise InvalidRequest(
                f"generator {self.name!r} was started without adapters, so its ONNX model has no LoRA "
                "inputs; configure one in generator.adapters to serve adapters",
                param="name",
            )
        if not (folder / PEFT_CONFIG_NAME).is_file():
            raise InvalidRequest(
                f"path: {folder} has no {PEFT_CONFIG_NAME} (a peft LoRA folder)", param="path"
            )
        try:
            modules = target_modules(folder)
            if modules != self._lora_modules:
                raise InvalidRequest(
                    f"path: adapter {name!r} targets {modules}, but this model's LoRA inputs are for "
                    f"{self._lora_modules} (the adapter configured at start); train it with those "
                    "target_modules",
                    param="path",
                )
            hf_dir = prepare_hf_model(self._settings, self._data_dir)
            converted = adapter_file(name, folder, self._settings, hf_dir, self._data_dir)
            self._adapter_versions.load(name, converted)
        except ConfigError as exc:  # an unreadable or unsupported peft folder is the caller's input
            raise InvalidRequest(f"path: {exc.message}", param="path") from exc
        except RuntimeError as exc:  # og refused the file (e.g. tensors the model has no input for)
            raise InvalidRequest(f"path: adapter {name!r} cannot be loaded: {exc}", param="path") from exc
        self._settings = self._settings.model_copy(
            update={"adapters": {**self._settings.adapters, name: str(folder)}}
        )

    @property
    def loaded_adapter_versions(self) -> list[str]:
        """The adapter versions in memory (each current one and replaced ones still in use)."""
        return self._adapter_versions.loaded() if self._adapter_versions is not None else []

    @property
    def supports_response_format(self) -> bool:
        """With guided decoding a requested JSON format is produced in one pass, valid by construction."""
        return self._guidance_ready

    @property
    def batch_scheduler(self) -> BatchScheduler | None:
        """The batched engine's scheduler; None with max_concurrency 1 (every request unbatched)."""
        return self._scheduler

    @property
    def batch_pad_id(self) -> int | None:
        """The pad id batched og.Generator runs use (services/llm/onnx_cohort.py); None: batching is off
        (max_concurrency 1) or no token is safe as a pad."""
        return self._batch_pad_id

    def _scaffold_ids(self) -> set[int]:
        """The token ids the chat template itself puts around messages (plain text gives no special ids)."""
        roles: tuple[Role, ...] = ("system", "user", "assistant", "user")
        return set(self.prompt_ids([ChatMessage(role, "text") for role in roles]))

    def _require_model(self) -> Any:
        if self._model is None:
            raise NotReady(f"ONNX generator {self.name!r} is not warmed up")
        return self._model

    # ------------------------------------------------------------------ tokens

    def count_tokens(self, text: str) -> int:
        self._require_model()
        return len(self._tokenizer.encode(text))

    def render_prompt(self, messages: Sequence[ChatMessage]) -> str:
        self._require_model()
        chat = json.dumps([{"role": m.role, "content": m.content} for m in messages])
        rendered: str = self._tokenizer.apply_chat_template(
            chat, template_str=self._chat_template, add_generation_prompt=True
        )
        return rendered

    def prompt_ids(self, messages: Sequence[ChatMessage]) -> list[int]:
        return [int(i) for i in self._tokenizer.encode(self.render_prompt(messages))]

    def render_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self.prompt_ids(messages))

    # ------------------------------------------------------------------ generation

    def _checked_prompt_ids(self, messages: Sequence[ChatMessage], params: GenerationParams) -> list[int]:
        self._require_model()
        self._check_params(params)
        spec = self._guided_format(params)
        if spec is not None:
            messages = with_instruction(messages, format_instruction(spec))
        prompt_ids = self.prompt_ids(messages)
        if len(prompt_ids) >= self._context_length:
            raise InvalidRequest(
                f"prompt is {len(prompt_ids)} tokens; the model's context is {self._context_length}"
            )
        return prompt_ids

    def _check_params(self, params: GenerationParams) -> None:
        if params.max_tokens < 1:
            raise InvalidRequest(f"max_tokens must be >= 1, got {params.max_tokens}", param="max_tokens")
        if params.temperature < 0:
            raise InvalidRequest(f"temperature must be >= 0, got {params.temperature}", param="temperature")
        if not 0 < params.top_p <= 1:
            raise InvalidRequest(f"top_p must be in (0, 1], got {params.top_p}", param="top_p")
        self.check_adapter(params.adapter)

    def _guided_format(self, params: GenerationParams) -> ResponseFormatSpec | None:
        """The checked response_format this request's decoding is constrained to, if guidance is on."""
        return parse_response_format(params.response_format) if self._guidance_ready else None

    def _session_tokens(self, prompt_len: int, params: GenerationParams) -> int:
        """The tokens one request can reach: its prompt and answer, within the model's context."""
        return min(prompt_len + params.max_tokens, self._context_length)

    def _search_options(self, max_length: int, params: GenerationParams) -> dict[str, Any]:
        """og search options for one sequence of at most `max_length` tokens, with the request's sampling."""
        options: dict[str, Any] = {"max_length": max_length, "batch_size": 1}
        if params.temperature > 0:
            options.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
            if params.seed is not None:
                options["random_seed"] = params.seed
        else:
            options.update(do_sample=False)
        return options

    def _runs_batched(self, params: GenerationParams) -> bool:
        """Whether this request can share the batched engine (see the module docstring for the others)."""
        return (
            self._scheduler is not None
            and params.adapter is None
            and params.seed is None
            and self._guided_format(params) is None
        )

    def _token_loop(self, messages: Sequence[ChatMessage], params: GenerationParams) -> TokenLoop:
        if not self._runs_batched(params):
            return self._unbatched_loop(messages, params)
        assert self._scheduler is not None
        prompt_ids = self._checked_prompt_ids(messages, params)
        if isinstance(self._scheduler, CohortScheduler) and self._batch_pad_id in prompt_ids:
            return self._unbatched_loop(messages, params)  # the batch's mask would hide its own pad token
        spec = TurnSpec(
            prompt_ids=prompt_ids,
            max_tokens=params.max_tokens,
            max_session_tokens=self._session_tokens(len(prompt_ids), params),
            temperature=params.temperature,
            top_p=params.top_p,
        )
        result = EngineTurnResult()

        def counts() -> RawCounts:
            ended_by_model = result.end is not None and result.end.ended_by_model
            return RawCounts(len(prompt_ids), len(result.token_ids), ended_by_model=ended_by_model)

        return TokenLoop(self._batched_pieces(self._scheduler, spec, result), counts)

    def _unbatched_loop(self, messages: Sequence[ChatMessage], params: GenerationParams) -> TokenLoop:
        """One og.Generator in a worker thread; an adapter version is pinned now, on entering the backend."""
        prompt_ids = self._checked_prompt_ids(messages, params)
        run = PinnedRun(adapter=self._pin_adapter(params.adapter))
        if run.adapter is not None:
            # A request refused before its thread starts (queue full) still ends its pin when dropped.
            weakref.finalize(run, run.adapter.release).atexit = False
        pieces = run_producer_in_thread(
            lambda emit: self._generate_blocking(prompt_ids, params, run, emit), cancel=run.cancel
        )
        return TokenLoop(pieces, lambda: run.counts(len(prompt_ids)))

    def _pin_adapter(self, adapter: str | None) -> AdapterPin | None:
        if adapter is None:
            return None
        if self._adapter_versions is None or self._adapter_versions.current(adapter) is None:
            raise InvalidRequest(f"unknown adapter {adapter!r}", param="model")
        return self._adapter_versions.pin(adapter)

    async def _batched_pieces(
        self, scheduler: BatchScheduler, spec: TurnSpec, result: EngineTurnResult
    ) -> AsyncGenerator[str, None]:
        tokens = stream_engine_tokens(scheduler, spec, result)
        decoder = self._tokenizer.create_stream()
        try:
            async for token in tokens:
                # The stream decoder returns "" until a multi-byte character is complete.
                text = decoder.decode(token)
                if text:
                    yield text
        finally:
            await tokens.aclose()

    def _generate_blocking(
        self, prompt_ids: list[int], params: GenerationParams, run: ThreadedRun, emit: Emit
    ) -> None:
        model = self._require_model()
        # Runs from _unbatched_loop carry their pin; any other caller pins at generation start.
        pin = run.adapter if isinstance(run, PinnedRun) else self._pin_adapter(params.adapter)
        try:
            self._generate_with(model, prompt_ids, params, pin, run, emit)
        finally:
            if pin is not None:
                pin.release()  # after _generate_with returned, so its og.Generator (and its hold) is gone

    def _generate_with(
        self,
        model: Any,
        prompt_ids: list[int],
        params: GenerationParams,
        pin: AdapterPin | None,
        run: ThreadedRun,
        emit: Emit,
    ) -> None:
        lease = self._prefix_lease(model, prompt_ids, params, pin)
        if lease is not None:
            generator, reused = lease.generator, lease.reused
        else:
            generator, reused = self._new_og_generator(model, prompt_ids, params), 0
        intact = False
        try:
            if pin is not None:
                generator.set_active_adapter(pin.container, pin.loaded_as)
            # Prefill and decode steps run without the GIL where the binding allows (oga_native.py).
            calls = compute_calls(generator, release_gil=self._settings.release_gil, lock=self._compute_lock)
            # The prefill (of what a kept generator does not already hold); the first token comes next step.
            calls.append_tokens(prompt_ids[reused:])
            run.cached_tokens = reused
            decoder = self._tokenizer.create_stream()
            # A kept generator's buffer is longer than this request's max_length: count its tokens here.
            while (
                not run.cancel.is_set()
                and not generator.is_done()
                and len(run.generated_ids) < params.max_tokens
            ):
                calls.generate_next_token()
                token = int(generator.get_next_tokens()[0])
                run.generated_ids.append(token)
                if token in self._eos_ids:
                    run.hit_eos = True
                    break
                # The stream decoder returns "" until a multi-byte character is complete.
                text = decoder.decode(token)
                if text:
                    emit(text)
            intact = True
        except Exception as exc:  # a runtime failure must surface as a domain error
            raise GenerationError(f"ONNX generation failed: {exc}") from exc
        finally:
            if lease is not None:
                self._prefix_cache.give_back(lease, intact=intact)

    def _prefix_lease(
        self, model: Any, prompt_ids: list[int], params: GenerationParams, pin: AdapterPin | None
    ) -> PrefixLease | None:
        """A kept generator for this request (services/llm/onnx_prefix_cache.py), or None: use a fresh one.

        Not for an adapter (a kept generator would hold the adapter version past the request's pin), guided
        decoding (its grammar state is per request) or a fixed seed (the answer must not depend on what
        the generator sampled before).
        """
        cache = self._prefix_cache
        if (
            pin is not None
            or params.seed is not None
            or self._guided_format(params) is not None
            or not cache.fits(self._session_tokens(len(prompt_ids), params))
        ):
            return None
        options = self._search_options(cache.tokens, params)
        key = tuple(sorted(options.items()))
        try:
            return cache.take(key, prompt_ids, lambda: self._og_generator(model, options, None))
        except GenerationError:
            raise
        except Exception as exc:  # rewind_to refused: a runtime failure
            raise GenerationError(f"ONNX generation failed: {exc}") from exc

    def _new_og_generator(self, model: Any, prompt_ids: list[int], params: GenerationParams) -> Any:
        search_options = self._search_options(self._session_tokens(len(prompt_ids), params), params)
        return self._og_generator(model, search_options, self._guided_format(params))

    def _og_generator(
        self, model: Any, search_options: dict[str, Any], spec: ResponseFormatSpec | None
    ) -> Any:
        import onnxruntime_genai as og

        try:
            generator_params = og.GeneratorParams(model)
            generator_params.set_search_options(**search_options)
            if spec is not None:
                generator_params.set_guidance("json_schema", guidance_schema(spec))
            return og.Generator(model, generator_params)
        except Exception as exc:
            if spec is not None:  # the grammar compiler refused this schema
                raise StructuredOutputError(
                    f"guided decoding cannot use this response_format: {exc}", param="response_format"
                ) from exc
            raise GenerationError(f"ONNX generation failed: {exc}") from exc

    async def aclose(self) -> None:
        self._prefix_cache.clear()
        if self._scheduler is not None:
            scheduler, self._scheduler = self._scheduler, None
            await asyncio.to_thread(scheduler.close)
        self._model = None
        self._tokenizer = None
        self._adapter_versions = None


ORT_OPTIMIZATION_LEVELS: dict[GraphOptimization, str] = {
    "disable_all": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


@dataclass(frozen=True)
class SessionOptions:
    """The decoder's ONNX Runtime session options (OnnxGeneratorSettings; the TTFT bench varies them)."""

    threads: int  # intra-op threads; 0: the library's default
    intra_op_spinning: bool = True
    inter_op_spinning: bool = True
    graph_optimization: GraphOptimization = "all"

    @classmethod
    def of(cls, settings: OnnxGeneratorSettings) -> SessionOptions:
        return cls(
            threads=settings.threads,
            intra_op_spinning=settings.intra_op_spinning,
            inter_op_spinning=settings.inter_op_spinning,
            graph_optimization=settings.graph_optimization,
        )

    def genai_session_options(self) -> dict[str, Any]:
        """genai_config.json's `session_options`: keys it does not know become ORT session config entries."""
        options: dict[str, Any] = {
            "session.intra_op.allow_spinning": "1" if self.intra_op_spinning else "0",
            "session.inter_op.allow_spinning": "1" if self.inter_op_spinning else "0",
            "graph_optimization_level": ORT_OPTIMIZATION_LEVELS[self.graph_optimization],
        }
        if self.threads > 0:
            options.update(intra_op_num_threads=self.threads, inter_op_num_threads=1)
        return options


def session_config(model_dir: Path, options: SessionOptions) -> Any:
    """The og.Config of `model_dir` with `options` overlaid on its decoder's session options."""
    import onnxruntime_genai as og

    config = og.Config(str(model_dir))
    overlay = {"model": {"decoder": {"session_options": options.genai_session_options()}}}
    config.overlay(json.dumps(overlay))
    return config


def guided_decoding_works(model: Any, model_dir: Path) -> bool:
    """Whether onnxruntime-genai's guided decoding (llguidance) initialises with this model's tokenizer."""
    import onnxruntime_genai as og

    try:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=8, batch_size=1)
        params.set_guidance("json_schema", json.dumps({"type": "object"}))
        og.Generator(model, params)
    except Exception as exc:
        logger.warning(
            "guided decoding unavailable for %s (%s); response_format falls back to validate-and-repair",
            model_dir,
            exc,
        )
        return False
    return True
