"""The serving error vocabulary: every failure a request can meet, with its HTTP status.

Deployments raise these; Ray re-raises them through handles as subclasses of the same type, so
the router can tell a retryable failure (fall back) from a client error (never fall back), and
the gateway maps them once, at the edge, into OpenAI's error JSON.
"""

from __future__ import annotations


class ServingError(Exception):
    """Base class: `status` is the HTTP status, `type`/`code` fill OpenAI's error object."""

    status = 500
    type = "server_error"
    code: str | None = None
    param: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if param is not None:
            self.param = param
        if code is not None:
            self.code = code

    def __reduce__(self):  # keep param/code when Ray pickles the error across processes
        return (_rebuild, (type(self), self.message, self.param, self.code))


def _rebuild(cls: type[ServingError], message: str, param: str | None, code: str | None) -> ServingError:
    return cls(message, param=param, code=code)


class InvalidRequest(ServingError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class LimitExceeded(InvalidRequest):
    """Input longer than the configured cap, or `max_tokens` over it; `param` names the limit."""

    code = "limit_exceeded"


class NotFound(ServingError):
    status, type, code = 404, "invalid_request_error", "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class RetryableError(ServingError):
    """The backend could not answer now; another backend (or a later retry) may."""

    status, type, code = 503, "server_error", "unavailable"


class NotReady(RetryableError):
    code = "not_ready"


class Overloaded(RetryableError):
    status, code = 429, "overloaded"


class GenerationTimeout(RetryableError):
    status, code = 504, "timeout"


class EngineDead(RetryableError):
    code = "engine_dead"


def unwrap(exc: BaseException) -> BaseException:
    """The original error behind Ray's wrapper (`RayTaskError` carries it as `cause`)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) and isinstance(exc, type(cause)) else exc
