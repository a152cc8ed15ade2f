"""Who is calling (401 without a valid key) and whether they may use an index or model (403).

Authorization is checked before existence, and a refused index gets the same answer whether it
exists or not, so a key never learns another tenant's index names. With auth off every caller is
the anonymous principal with access to everything (the single-user local default); a key may also
come from the environment (`env_key_var`) for a single-user setup with auth on.
"""

from __future__ import annotations

import hmac
import os

from serving.config import AuthConfig
from serving.errors import ServingError
from serving.stores.keys import KeyStore, Principal


class Unauthorized(ServingError):
    status, type, code = 401, "invalid_request_error", "invalid_api_key"


class Forbidden(ServingError):
    status, type, code = 403, "invalid_request_error", "permission_denied"


ANONYMOUS = Principal(key_id="anonymous", tenant="default", ingest=["*"])  # auth off: the one local user


class Authenticator:
    def __init__(self, config: AuthConfig, store: KeyStore | None = None) -> None:
        self.config = config
        self.store = store if store is not None else (KeyStore(config.store) if config.enabled else None)
        self._env_key = os.environ.get(config.env_key_var) if config.env_key_var else None

    def authenticate(self, authorization: str | None) -> Principal:
        if not self.config.enabled:
            return ANONYMOUS
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
        token = token.strip()
        if self._env_key and hmac.compare_digest(token, self._env_key):
            return Principal(key_id="env", tenant="default", ingest=["*"])  # the single user's own key
        principal = self.store.lookup(token) if self.store else None
        if principal is None:
            raise Unauthorized("invalid or revoked API key")
        return principal

    @staticmethod
    def check_index(principal: Principal, index: str) -> None:
        if not principal.may_use_index(index):
            raise Forbidden(f"this key may not use index {index!r}", param="index")

    @staticmethod
    def check_model(principal: Principal, model: str) -> None:
        if not principal.may_use_model(model):
            raise Forbidden(f"this key may not use model {model!r}", param="model")
