"""The gateway's one entry point to keys and quotas: admit a request, scope it, charge it."""

from __future__ import annotations

from collections.abc import Mapping

from serving.config import GatewayConfig
from serving.middleware.auth import Authenticator
from serving.middleware.keys import Principal
from serving.middleware.quotas import Quotas


class Guard:
    def __init__(self, config: GatewayConfig, auth: Authenticator | None = None, quotas: Quotas | None = None) -> None:
        self.auth = auth or Authenticator(config.auth)
        self.quotas = quotas or Quotas(config.quotas)

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
