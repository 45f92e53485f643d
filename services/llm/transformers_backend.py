"""In-process generation with Hugging Face transformers: the reference CPU backend and the training path.

Generation runs in a worker thread (never on the event loop), token by token through a streamer, and is
bounded by `GenerationSlots`. LoRA adapters are served per request with peft's mixed-adapter inference
(`adapter_names=`), so two requests with different adapters can run at once without a global switch.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.core.errors import ConfigError, GenerationError, NotReady
from services.core.settings import TransformersGeneratorSettings
from services.core.types import ChatMessage, GenerationParams
from services.llm.backend_base import InProcessBackend, ThreadedRun
from services.llm.streaming import Emit

logger = logging.getLogger(__name__)

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in mixed-adapter batches


def cpu_supports_bf16() -> bool:
    """bf16 matmuls are fast only with avx512_bf16 or AMX; elsewhere they are emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class TransformersGenerator(InProcessBackend):
    _settings: TransformersGeneratorSettings  # this backend's own settings model

    def __init__(self, settings: TransformersGeneratorSettings, data_dir: Path) -> None:
        super().__init__(settings)
        self._data_dir = data_dir
        self._model: Any = None
        self._tokenizer: Any = None
        self._seed_lock = threading.Lock()
        # peft's mixed-adapter inference (`adapter_names=`) installs forward hooks on the shared model for
        # the length of one generate() call, so two concurrent calls overwrite each other's hooks (a tuned
        # request answered with base weights in a test). With adapters, generations run one at a time.
        self._adapter_lock = threading.Lock()
        self.model_dir: Path | None = None

    def warm_up(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from services.llm.model_prep import prepare_hf_model

        if self._settings.threads > 0:
            torch.set_num_threads(self._settings.threads)
        model_dir = prepare_hf_model(self._settings, self._data_dir)
        use_bf16 = self._settings.dtype == "bf16" or (self._settings.dtype == "auto" and cpu_supports_bf16())
        dtype = torch.bfloat16 if use_bf16 else torch.float32
        logger.info("loading %s with transformers (%s)", model_dir, dtype)
        self._tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
        if self._settings.adapters:
            model = self._attach_adapters(model)
        model.eval()  # type: ignore[no-untyped-call]
        self._model = model
        self.model_dir = model_dir

    def _attach_adapters(self, model: Any) -> Any:
        from peft import PeftModel

        items = list(self._settings.adapters.items())
        for name, folder in items:
            if not Path(folder).is_dir():
                raise ConfigError(f"adapter {name!r}: folder not found: {folder}")
        first_name, first_dir = items[0]
        peft_model = PeftModel.from_pretrained(model, first_dir, adapter_name=first_name)
        for name, folder in items[1:]:
            peft_model.load_adapter(folder, adapter_name=name)
        return peft_model

    def load_adapter(self, name: str, folder: Path) -> None:
        """Load (or replace) an adapter at run time; requests already running keep their weights."""
        from peft import PeftModel

        model = self._require_model()
        if not folder.is_dir():
            raise ConfigError(f"adapter {name!r}: folder not found: {folder}")
        if isinstance(model, PeftModel):
            if name in model.peft_config:
                model.delete_adapter(name)
            model.load_adapter(str(folder), adapter_name=name)
        else:
            self._model = PeftModel.from_pretrained(model, str(folder), adapter_name=name)
        self._settings = self._settings.model_copy(
            update={"adapters": {**self._settings.adapters, name: str(folder)}}
        )

    def _require_model(self) -> Any:
        if self._model is None or self._tokenizer is None:
            raise NotReady("transformers generator is not warmed up")
        return self._model

    def count_tokens(self, text: str) -> int:
        self._require_model()
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def _prompt_ids(self, messages: Sequence[ChatMessage]) -> list[int]:
        self._require_model()
        chat = [{"role": m.role, "content": m.content} for m in messages]
        encoded = self._tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
        # transformers 5 returns a BatchEncoding here; older versions a plain list.
        ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
        return [int(i) for i in ids]

    def render_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self._prompt_ids(messages))

    def _checked_prompt_ids(self, messages: Sequence[ChatMessage], params: GenerationParams) -> list[int]:
        self._require_model()
        self.check_adapter(params.adapter)
        return self._prompt_ids(messages)

    def _eos_ids(self) -> set[int]:
        eos = self._model.generation_config.eos_token_id
        if eos is None:
            return set()
        return set(eos) if isinstance(eos, list) else {int(eos)}

    def _generate_blocking(
        self, prompt_ids: list[int], params: GenerationParams, run: ThreadedRun, emit: Emit
    ) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        model = self._require_model()

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), run.cancel.is_set(), dtype=torch.bool)

        streamer = _IncrementalDecoder(self._tokenizer, run, emit)
        kwargs: dict[str, Any] = {
            "input_ids": torch.tensor([prompt_ids]),
            "attention_mask": torch.ones(1, len(prompt_ids), dtype=torch.long),
            "max_new_tokens": params.max_tokens,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_Cancelled()]),
            "pad_token_id": self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
        }
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if self._settings.adapters:
            kwargs["adapter_names"] = [params.adapter or BASE_ADAPTER]
        lock = self._adapter_lock if self._settings.adapters else contextlib.nullcontext()
        try:
            with lock, torch.inference_mode():
                if params.seed is not None:
                    # torch's RNG is process-global: serialise seeded sampling so the seed means something.
                    with self._seed_lock:
                        torch.manual_seed(params.seed)
                        model.generate(**kwargs)
                else:
                    model.generate(**kwargs)
        except Exception as exc:  # a model crash must surface as a domain error, not a thread traceback
            raise GenerationError(f"transformers generation failed: {exc}") from exc
        run.hit_eos = bool(run.generated_ids) and run.generated_ids[-1] in self._eos_ids()

    async def aclose(self) -> None:
        self._model = None


class _IncrementalDecoder:
    """A transformers streamer that decodes token ids incrementally and hands text to `emit`.

    Decoding the whole answer and emitting the new suffix keeps multi-byte characters and
    SentencePiece spacing right; a trailing U+FFFD means an incomplete character, so it waits.
    """

    def __init__(self, tokenizer: Any, run: ThreadedRun, emit: Emit) -> None:
        self._tokenizer = tokenizer
        self._run = run
        self._emit = emit
        self._seen_prompt = False
        self._emitted = 0
        self._eos = tokenizer.eos_token_id

    def put(self, value: Any) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True  # generate() first passes the prompt itself
            return
        ids = [int(i) for i in value.reshape(-1).tolist()]
        self._run.generated_ids.extend(ids)
        text = self._tokenizer.decode(self._run.generated_ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return
        if len(text) > self._emitted:
            self._emit(text[self._emitted :])
            self._emitted = len(text)

    def end(self) -> None:
        text = self._tokenizer.decode(self._run.generated_ids, skip_special_tokens=True)
        if len(text) > self._emitted:
            self._emit(text[self._emitted :])
            self._emitted = len(text)
