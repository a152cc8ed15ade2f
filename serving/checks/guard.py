"""The gateway's one entry point to keys and quotas: admit a request, scope it, charge it."""

from __future__ import annotations

from collections.abc import Mapping

from serving.checks.auth import Authenticator
from serving.checks.guardrails import Guardrails
from serving.config import GatewayConfig
from serving.errors import LimitExceeded
from serving.generator.protocol import GenerationResult, Message
from serving.protocol import SearchRequest
from serving.stores.keys import Principal
from serving.stores.quotas import Quotas


class Guard:
    def __init__(self, config: GatewayConfig, auth: Authenticator | None = None, quotas: Quotas | None = None,
                 system_prompt: str = "") -> None:  # fmt: skip
        self.auth = auth or Authenticator(config.auth)
        self.quotas = quotas or Quotas(config.quotas)
        self.guardrails = Guardrails(config.guardrails, system_prompt)
        self.max_input_chars = config.max_input_chars
        self.limits = config.limits

    @property
    def private(self) -> bool:
        """Whether callers must not learn what is served beyond what their key may use."""
        return self.auth.config.enabled

    def admit(self, headers: Mapping[str, str]) -> Principal:
        """401 without a valid key, 429 over a limit; else the caller."""
        principal = self.auth.authenticate(headers.get("authorization"))
        self.quotas.admit(principal)
        return principal

    def check_index(self, who: Principal, index: str) -> None:
        self.auth.check_index(who, index)

    def check_model(self, who: Principal, model: str) -> None:
        self.auth.check_model(who, model)

    def charge(self, who: Principal, tokens: int) -> None:
        self.quotas.charge(who, tokens)

    def check_length(self, text: str, param: str) -> None:
        if len(text) > self.max_input_chars:
            message = f"{param} is {len(text)} characters; the limit is {self.max_input_chars}"
            raise LimitExceeded(message, param=param)

    @staticmethod
    def check_count(count: int, cap: int, param: str) -> None:
        """A list the client controls is bounded (`serve.gateway.limits`): 400 naming it when over."""
        if count > cap:
            raise LimitExceeded(f"{param} has {count} items; the limit is {cap}", param=param)

    def check_search(self, search: SearchRequest) -> None:
        """The retrieval filters a client sends are bounded like any other text."""
        for param in ("source", "section"):
            value = getattr(search, param)
            if value is not None and len(value) > self.limits.max_filter_chars:
                raise LimitExceeded(
                    f"{param} is {len(value)} characters; the limit is {self.limits.max_filter_chars}", param=param
                )

    def screen(self, text: str, param: str) -> str:
        """Length limit, then the input guardrails; the text to use (PII redacted when configured)."""
        self.check_length(text, param)
        return self.guardrails.screen_input(text, param)

    def screen_messages(self, messages: list[Message]) -> list[Message]:
        """Every message the client sends is checked and (if configured) redacted, whatever its role: an
        instruction override in a system, developer, tool or assistant turn reaches the model as surely as
        in a user turn. The length limit is on the whole conversation."""
        self.check_count(len(messages), self.limits.max_messages, "messages")
        self.check_length("".join(m.content for m in messages), "messages")
        return [m.model_copy(update={"content": self.guardrails.screen_input(m.content, "messages")})
                for m in messages]  # fmt: skip

    def screen_result(self, result: GenerationResult) -> GenerationResult:
        """Withhold answers that fail an output check, the OpenAI way: empty text, finish_reason content_filter."""
        choices = []
        for choice in result.choices:
            violated = self.guardrails.screen_output(choice.text)
            choices.append(
                choice.model_copy(update={"text": "", "finish_reason": "content_filter"}) if violated else choice
            )
        return result.model_copy(update={"choices": choices})
