"""Any OpenAI-compatible `/v1/chat/completions` endpoint behind the Generator contract.

Used where a remote model is wanted without hosting it, e.g. as the judge of answer evaluation:
another rayrag gateway, a vLLM server, or a hosted API. JSON mode is passed through as OpenAI's
`response_format`; an HTTP error becomes the same `serving.errors` type the local backends raise,
so callers handle one set of failures.
"""

from __future__ import annotations

import os

import httpx

from serving.errors import EngineDead, InvalidRequest, RetryableError
from serving.generator.protocol import Choice, GenerationRequest, GenerationResult, Usage


class OpenAICompatibleGenerator:
    backend = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60.0):
        self.model = model
        key = os.environ.get(api_key_env)
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)

    def _body(self, request: GenerationRequest) -> dict:
        messages = [m.model_dump() for m in request.messages] if request.messages else None
        body = {"model": self.model, "messages": messages or [{"role": "user", "content": request.prompt}],
                "max_tokens": request.max_tokens, "temperature": request.temperature, "top_p": request.top_p,
                "n": request.n, "stop": request.stop or None, "seed": request.seed}  # fmt: skip
        if request.response_format is not None:
            body["response_format"] = _response_format(request)
        return {k: v for k, v in body.items() if v is not None}

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        try:
            response = await self.client.post("/chat/completions", json=self._body(request))
        except httpx.HTTPError as exc:
            raise EngineDead(f"judge endpoint {self.client.base_url} unreachable: {exc}") from exc
        if response.status_code >= 400:
            kind = InvalidRequest if response.status_code < 500 else RetryableError
            raise kind(f"{self.client.base_url} answered {response.status_code}: {response.text[:300]}")
        data = response.json()
        choices = [Choice(index=c["index"], text=c["message"]["content"] or "", finish_reason=c.get("finish_reason"))
                   for c in data["choices"]]  # fmt: skip
        usage = data.get("usage") or {}
        return GenerationResult(
            model=data.get("model", self.model),
            backend=self.backend,
            choices=choices,
            usage=Usage(
                prompt_tokens=usage.get("prompt_tokens", 0), completion_tokens=usage.get("completion_tokens", 0)
            ),
        )

    async def aclose(self) -> None:
        await self.client.aclose()


def _response_format(request: GenerationRequest) -> dict:
    fmt = request.response_format
    if fmt.type == "json_object" or fmt.schema_ is None:
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": fmt.schema_}}
