"""Loading adapter versions into the ONNX backend while requests run (the real SmolLM2, LoRA-ready): a
replaced version stays loaded exactly as long as a request that entered with it, including one refused for
a full queue, and an adapter on other modules is refused without touching the served one."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest

from services.core.errors import InvalidRequest, Overloaded
from services.core.settings import OnnxGeneratorSettings
from services.core.types import ChatMessage, GenerationParams
from services.llm.onnx_backend import OnnxGenerator
from tests.gateway.test_adapter_swap import loras
from tests.llm.test_onnx_backend import onnx_data_dir, smollm2_settings

pytestmark = pytest.mark.integration
__all__ = ["loras", "onnx_data_dir", "smollm2_settings"]  # session fixtures shared with those files

STORY = [ChatMessage("user", "Write a long story about a lighthouse keeper and her cat.")]


async def test_a_replaced_version_lives_as_long_as_the_requests_that_entered_with_it(
    loras: dict[str, Path], smollm2_settings: OnnxGeneratorSettings, onnx_data_dir: Path
) -> None:
    settings = smollm2_settings.model_copy(
        update={"adapters": {"tuned": str(loras["v1"])}, "max_concurrency": 1, "max_queue": 0}
    )
    generator = OnnxGenerator(settings, onnx_data_dir)
    generator.warm_up()
    [first] = generator.loaded_adapter_versions

    running = generator.stream(STORY, GenerationParams(max_tokens=64, adapter="tuned"))
    await anext(running)  # decoding on version 1, holding the only slot
    with pytest.raises(Overloaded) as refused:  # entered with version 1 too, then refused: no place
        await generator.complete(STORY, GenerationParams(max_tokens=4, adapter="tuned"))
    del refused
    gc.collect()  # its traceback no longer keeps the refused request's run alive

    with pytest.raises(InvalidRequest, match="targets"):
        await asyncio.to_thread(generator.load_adapter, "tuned", loras["other-modules"])
    await asyncio.to_thread(generator.load_adapter, "tuned", loras["v2"])
    assert len(generator.loaded_adapter_versions) == 2  # version 1 is still decoding

    async for _ in running:
        pass
    [now] = generator.loaded_adapter_versions
    assert now != first  # version 1 unloaded: neither request holds it any more
    answer = await generator.complete(STORY, GenerationParams(max_tokens=4, adapter="tuned"))
    assert answer.text
    await generator.aclose()
