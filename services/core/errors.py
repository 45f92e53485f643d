"""Domain errors. Services raise these; only the gateway maps them to HTTP status codes."""

from __future__ import annotations


class HybridError(Exception):
    """Base class. `code` is a short machine-readable reason that ends up in the OpenAI error body."""

    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param


class ConfigError(HybridError):
    code = "invalid_config"


class InvalidRequest(HybridError):
    code = "invalid_request"


class UnknownModel(HybridError):
    code = "model_not_found"


class PayloadTooLarge(HybridError):
    code = "payload_too_large"


class Unauthorized(HybridError):
    code = "invalid_api_key"


class RateLimited(HybridError):
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class Overloaded(HybridError):
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class GenerationError(HybridError):
    """The generator failed (upstream error, model crash). Maps to 502."""

    code = "generation_failed"


class GenerationTimeout(GenerationError):
    """The generator did not answer within its deadline. Maps to 504."""

    code = "generation_timeout"


class RetrievalError(HybridError):
    code = "retrieval_failed"


class IndexCorrupted(RetrievalError):
    code = "index_corrupted"


class PolicyViolation(HybridError):
    """A privacy or safety policy refused the request. Maps to 400; never carries the offending value."""

    code = "policy_violation"


class StructuredOutputError(HybridError):
    """The model could not produce output matching `response_format`. Maps to 422."""

    code = "structured_output_failed"


class NotReady(HybridError):
    code = "not_ready"
