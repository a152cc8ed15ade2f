"""JSON mode's safety net: check every answer parses (and fits the schema), retry a bounded number of times.

The backends constrain decoding (vLLM guided decoding, llama.cpp grammars), so an answer is
normally valid by construction; it can still be cut off by `max_tokens`, and a chain step
without constraints could answer too. A non-streamed answer is therefore validated with
`jsonschema`; an invalid one is generated again (sampling at `retry_temperature` at least, since
a greedy retry would repeat itself) up to `retries` times, then refused with an error that says
why (finish reason `length` means: raise max_tokens). Streams are constrained but not retried:
tokens already sent cannot be taken back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import jsonschema

from serving.errors import ServingError
from serving.generator.protocol import GenerationRequest, GenerationResult, Usage

log = logging.getLogger(__name__)


class InvalidJsonOutput(ServingError):
    status, type, code = 502, "server_error", "invalid_json_output"


def json_problem(text: str, schema: dict | None) -> str | None:
    """Why `text` is not the JSON asked for, or None when it is."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"not valid JSON ({exc.msg} at character {exc.pos})"
    if schema is None:
        return None if isinstance(value, dict) else "not a JSON object"
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        return f"does not match the schema ({exc.message})"
    return None


def result_problem(result: GenerationResult, request: GenerationRequest) -> str | None:
    schema = request.response_format.schema_ if request.response_format else None
    for choice in result.choices:
        if (problem := json_problem(choice.text, schema)) is not None:
            return f"choice {choice.index} is {problem}; finish_reason={choice.finish_reason}"
    return None


async def generate_json(
    generate: Callable[[GenerationRequest], Awaitable[GenerationResult]],
    request: GenerationRequest,
    retries: int,
    retry_temperature: float = 0.7,
) -> GenerationResult:
    """`generate(request)`, checked; regenerated up to `retries` times when the JSON is invalid.
    The usage returned covers every attempt: all of them were paid for."""
    result = await generate(request)
    if request.response_format is None:
        return result
    spent = Usage()
    for attempt in range(retries + 1):
        spent = spent + result.usage
        if (problem := result_problem(result, request)) is None:
            return result.model_copy(update={"usage": spent})
        log.warning("json mode: attempt %d: %s", attempt + 1, problem)
        if attempt == retries:
            break
        request = request.model_copy(update={"temperature": max(request.temperature, retry_temperature)})
        result = await generate(request)
    hint = " (the answer was cut off: raise max_tokens)" if "finish_reason=length" in problem else ""
    raise InvalidJsonOutput(f"no valid JSON after {retries + 1} attempts: {problem}{hint}", param="response_format")
