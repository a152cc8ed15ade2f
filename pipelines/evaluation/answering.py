"""Answer questions the way a configuration's serving app would, in-process, for evaluation.

The retriever, prompt template and generator are the serving app's own classes built from the
config's `serve:` section; the prompt is assembled by the same pure functions the gateway uses.
The generator is the first step of the config's fallback chain (what answers while it is
healthy); the chain's failover and the gateway's production layer are not part of what is scored.
"""

from __future__ import annotations

from serving.config import ServeConfig
from serving.generator.extractive import ExtractiveGenerator
from serving.generator.protocol import GenerationRequest, Message
from serving.prompts import PromptRegistry
from serving.protocol import SearchRequest
from serving.rag import fit_context, grounded_messages
from serving.retriever import Retriever


def first_generator(serve: ServeConfig):
    """The generator the config's chain tries first, built locally."""
    step = serve.router.steps()[0].backend
    if step == "primary" and serve.primary is not None:
        from serving.generator.vllm_engine import VllmGenerator

        return VllmGenerator(serve.primary)
    if step == "fallback" and serve.fallback is not None:
        from serving.generator.llama_cpp_engine import LlamaCppGenerator

        return LlamaCppGenerator(serve.fallback)
    return ExtractiveGenerator()


class RagAnswerer:
    """Retrieve, fit the context, render the prompt, generate: the gateway's `/v1/query` path."""

    def __init__(self, serve: ServeConfig) -> None:
        self.serve = serve
        self.retriever = Retriever(serve.retriever)
        self.prompts = PromptRegistry.load(serve.gateway.prompts_dir, serve.gateway.default_prompt)
        self.generator = first_generator(serve)

    async def answer(self, question: str) -> dict:
        index = self.serve.retriever.indexes[0]
        result = await self.retriever.search(SearchRequest(query=question, index=index))
        chunks = fit_context(result.chunks, self.serve.gateway.max_context_chars)
        template = self.prompts.get(None)
        messages = grounded_messages(template.render(chunks), [Message(role="user", content=question)])
        request = GenerationRequest(
            messages=messages,
            max_tokens=self.serve.gateway.default_max_tokens,
            temperature=0.0,
            context=[c.text for c in chunks],
            request_id="eval",
        )
        generated = await self.generator.generate(request)
        return {
            "answer": generated.choices[0].text.strip(),
            "passages": [c.text for c in chunks],
            "model": f"{generated.backend}:{generated.model}",
            "prompt": template.ref,
            "index_version": result.version,
        }

    def close(self) -> None:
        self.retriever.close()
