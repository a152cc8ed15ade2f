"""The vLLM primary on a CUDA GPU (the `gpu` extra's `vllm`): a replica with `num_gpus: 1` answers,
greedily, the same text the CPU build answers, and streams with token usage."""

from __future__ import annotations

import asyncio
import time

import pytest

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)


def test_vllm_generator_on_the_gpu():
    from serving.config import VllmConfig
    from serving.generator.protocol import GenerationRequest, Message
    from serving.generator.vllm_engine import VllmGenerator

    generator = VllmGenerator(VllmConfig(dtype="float32", gpu_memory_utilization=0.3))
    deadline = time.monotonic() + 600
    while not generator.ready and generator.error is None and time.monotonic() < deadline:
        time.sleep(1)
    assert generator.ready, generator.error
    request = GenerationRequest(
        messages=[Message(role="user", content="What is the capital of France?")], max_tokens=16
    )

    async def run():
        whole = await generator.generate(request)
        deltas = [d async for d in generator.stream(request)]
        return whole, deltas

    whole, deltas = asyncio.run(run())
    assert "Paris" in whole.choices[0].text and whole.usage.completion_tokens > 0
    assert "".join(d.text for d in deltas) == whole.choices[0].text and deltas[-1].usage.completion_tokens > 0
