"""JSON mode's validation and bounded retries."""

from __future__ import annotations

import asyncio

import pytest

from serving.checks.json_mode import InvalidJsonOutput, generate_json, json_problem
from serving.generator.protocol import Choice, GenerationRequest, GenerationResult, Usage

pytestmark = pytest.mark.unit
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def test_json_problem_names_what_is_wrong():
    assert json_problem('{"answer": "x"}', SCHEMA) is None
    assert "not valid JSON" in json_problem('{"answer": ', SCHEMA)
    assert "does not match the schema" in json_problem('{"other": 1}', SCHEMA)
    assert json_problem("[1, 2]", None) == "not a JSON object"


class Scripted:
    """Answers the given texts in order and records the requests."""

    def __init__(self, *texts: str, finish: str = "stop") -> None:
        self.texts, self.finish, self.requests = list(texts), finish, []

    async def __call__(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        text = self.texts.pop(0)
        return GenerationResult(
            model="m", backend="b", choices=[Choice(index=0, text=text, finish_reason=self.finish)],
            usage=Usage(prompt_tokens=10, completion_tokens=5),
        )  # fmt: skip


def request(schema=SCHEMA) -> GenerationRequest:
    fmt = {"type": "json_schema", "schema": schema} if schema else {"type": "json_object"}
    return GenerationRequest(prompt="answer", response_format=fmt)


def test_an_invalid_answer_is_regenerated_and_every_attempt_is_paid_for():
    backend = Scripted("not json", '{"answer": "yes"}')
    result = asyncio.run(generate_json(backend, request(), retries=2))
    assert result.choices[0].text == '{"answer": "yes"}'
    assert result.usage.completion_tokens == 10
    assert backend.requests[1].temperature >= 0.7  # a greedy retry would repeat itself


def test_after_the_retries_a_clear_error():
    backend = Scripted('{"answer": ', '{"answer": ', finish="length")
    with pytest.raises(InvalidJsonOutput, match="raise max_tokens") as caught:
        asyncio.run(generate_json(backend, request(), retries=1))
    assert caught.value.status == 502 and len(backend.requests) == 2


def test_requests_without_json_mode_pass_through():
    backend = Scripted("plain text")
    plain = GenerationRequest(prompt="hi")
    assert asyncio.run(generate_json(backend, plain, retries=2)).choices[0].text == "plain text"
