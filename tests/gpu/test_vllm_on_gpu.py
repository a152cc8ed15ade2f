"""The vLLM primary on a CUDA GPU (the `gpu` extra's `vllm`): greedy float32 answers equal, token for
token, the CPU build's committed answers (`tests/data/vllm/cpu_reference.json`, see
`tests/gpu/cpu_reference.py`), and a stream gives the same text with token usage."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.gpu.cpu_reference import DTYPE, MAX_TOKENS, PROMPTS, REFERENCE, answers, wait_ready

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)


def test_vllm_on_the_gpu_answers_what_the_cpu_build_answers():
    from serving.config import VllmConfig
    from serving.generator.protocol import GenerationRequest, Message
    from serving.generator.vllm_engine import VllmGenerator

    generator = VllmGenerator(VllmConfig(dtype=DTYPE, gpu_memory_utilization=0.3))
    wait_ready(generator)
    reference = json.loads(REFERENCE.read_text())
    assert reference["dtype"] == DTYPE and reference["max_tokens"] == MAX_TOKENS
    assert answers(generator) == reference["answers"]  # text and completion tokens, prompt by prompt

    request = GenerationRequest(messages=[Message(role="user", content=PROMPTS[0])], max_tokens=MAX_TOKENS)

    async def streamed():
        return [d async for d in generator.stream(request)]

    deltas = asyncio.run(streamed())
    assert "".join(d.text for d in deltas) == reference["answers"][0]["text"]
    assert deltas[-1].usage.completion_tokens == reference["answers"][0]["tokens"]
