"""The quantized fallback: a GGUF model in llama.cpp on CPU.

llama.cpp's `Llama` is not thread-safe, so calls run one at a time in a worker thread behind an
asyncio lock (the event loop stays free for health checks and other requests' streaming). Chat
messages are rendered with the chat template stored in the GGUF, like llama-cpp-python's own
chat handler, so both backends see the same prompt for the same model.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from serving.config import LlamaCppConfig
from serving.errors import InvalidRequest
from serving.generator.base import GeneratorBase
from serving.generator.models import gguf_path
from serving.generator.protocol import Choice, Delta, GenerationRequest, GenerationResult, Usage

GRAMMAR_CACHE = 64  # compiled JSON-mode grammars kept, least recently used first out


class LlamaCppGenerator(GeneratorBase):
    backend = "llama_cpp"

    def __init__(self, config: LlamaCppConfig) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        super().__init__(config.name, config.n_ctx)
        self.llm = Llama(
            model_path=str(gguf_path(config.model)), n_ctx=config.n_ctx, n_threads=config.n_threads, verbose=False
        )
        token = self.llm._model.token_get_text
        self.formatter = Jinja2ChatFormatter(
            template=self.llm.metadata["tokenizer.chat_template"],
            eos_token=token(self.llm.token_eos()),
            bos_token=token(self.llm.token_bos()) if self.llm.token_bos() != -1 else "",
        )
        self._lock = asyncio.Lock()
        self.ready = True
        self.started.set()

    def _prompt(self, request: GenerationRequest) -> tuple[str, list[str], int]:
        """The text to complete, the stop strings, and its length in tokens."""
        stop = list(request.stop)
        if request.messages is not None:
            rendered = self.formatter(messages=[m.model_dump() for m in request.messages])
            prompt = rendered.prompt
            stop += [rendered.stop] if isinstance(rendered.stop, str) else list(rendered.stop or [])
        else:
            prompt = request.prompt or ""
        tokens = len(self.llm.tokenize(prompt.encode(), add_bos=False, special=True))
        self._check_length(tokens, request)
        return prompt, stop, tokens

    def _kwargs(self, request: GenerationRequest, stop: list[str], prompt_tokens: int) -> dict[str, Any]:
        return {
            "max_tokens": min(request.max_tokens, self.max_context - prompt_tokens),
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stop": stop or None,
            "seed": request.seed,
            "grammar": self._grammar(request),
        }

    def _grammar(self, request: GenerationRequest) -> Any:
        """JSON mode as a llama.cpp GBNF grammar (the schema's own, or any JSON value), from a bounded
        cache (schemas are client input). A schema llama.cpp cannot compile is the client's error (400),
        which the router's circuit breaker never counts."""
        if request.response_format is None:
            return None
        schema = request.response_format.schema_
        try:
            return _compiled_grammar(json.dumps(schema, sort_keys=True) if schema else "")
        except Exception as exc:  # noqa: BLE001 - llama.cpp raises plain errors for schemas it cannot express
            raise InvalidRequest(
                f"response_format schema cannot be turned into a llama.cpp grammar ({type(exc).__name__})",
                param="response_format",
            ) from None

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        prompt, stop, prompt_tokens = self._prompt(request)
        kwargs = self._kwargs(request, stop, prompt_tokens)
        choices, completion_tokens = [], 0
        with self._in_flight():
            for index in range(request.n):
                async with self._lock:
                    out = await asyncio.to_thread(self.llm.create_completion, prompt, **kwargs)
                first = out["choices"][0]
                choices.append(Choice(index=index, text=first["text"], finish_reason=first["finish_reason"]))
                completion_tokens += out["usage"]["completion_tokens"]
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        return GenerationResult(model=self.model, backend=self.backend, choices=choices, usage=usage)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Yield one delta per token; llama.cpp streams one token per chunk, which is how usage is counted."""
        prompt, stop, prompt_tokens = self._prompt(request)
        kwargs = self._kwargs(request, stop, prompt_tokens)
        completion_tokens = 0
        with self._in_flight(), self._counting_cancelled():
            for index in range(request.n):
                async with self._lock:
                    async for chunk in _sampled(self.llm.create_completion(prompt, stream=True, **kwargs)):
                        choice = chunk["choices"][0]
                        tokens = 1 if choice["text"] or not choice["finish_reason"] else 0
                        completion_tokens += tokens
                        yield Delta(
                            index=index, text=choice["text"], finish_reason=choice["finish_reason"],
                            backend=self.backend, tokens=tokens, prompt_tokens=prompt_tokens,
                        )  # fmt: skip
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        yield Delta(backend=self.backend, usage=usage)


@functools.lru_cache(maxsize=GRAMMAR_CACHE)
def _compiled_grammar(schema: str) -> Any:
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    grammar = LlamaGrammar.from_json_schema(schema, verbose=False) if schema else None
    return grammar or LlamaGrammar.from_string(JSON_GBNF, verbose=False)


async def _sampled(chunks: Iterator[dict]) -> AsyncIterator[dict]:
    """llama.cpp's token generator, one step at a time in a worker thread. Hand-written instead of
    starlette's `iterate_in_threadpool` for what happens when the consumer goes away: a cancelled
    step is awaited to its end (llama.cpp is not thread-safe, and the lock is released right after),
    and the generator is closed, so no further token is sampled."""
    try:
        while True:
            step = asyncio.ensure_future(asyncio.to_thread(next, chunks, None))
            try:
                chunk = await asyncio.shield(step)
            except asyncio.CancelledError:
                await step
                raise
            if chunk is None:
                return
            yield chunk
    finally:
        chunks.close()
