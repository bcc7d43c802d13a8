"""The router's typed exceptions.

    RouterError
    ├── InsufficientBalanceError   a voucher has nothing left to hold (the router re-ranks)
    ├── LedgerError                a ledger operation on an unknown or already-voided hold/voucher
    └── ApiError                   an error the client sees: status, OpenAI type and code
        ├── BadRequestError        400 (or 415): the request itself is wrong; nothing was held
        ├── AuthenticationError    401
        ├── PermissionDeniedError  403: the key may not use what it asked for (a region outside its policy)
        ├── BudgetExceededError    429 budget_exceeded: the key's budget is spent; retrying will not help
        ├── KeyRateLimitError      429 rate_limit_exceeded: the key is over its requests per minute
        ├── ModelNotFoundError     404 model_not_found
        ├── NotFoundError          404 for anything else the client named (a key id)
        ├── NoRouteError           503 no_route: no eligible region right now
        ├── LedgerUnavailableError 503 ledger_unavailable: the ledger cannot write (full disk, lost database)
        ├── RateLimitedError       429: every eligible region is at its limits or cooling down
        ├── RequestTooLargeError   413 request_too_large: over every eligible region's tokens per minute
        ├── ShedError              503 shed_low_priority: supply is short and the key's work is sheddable
        └── UpstreamFailedError    502 / 503 / 504 / 429 after the regions tried failed

Only ApiError and its subclasses carry what the client sees; the app's middleware
renders them as ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

from suanli.providers import UpstreamError, UpstreamTimeout

__all__ = [
    "ApiError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "InsufficientBalanceError",
    "KeyRateLimitError",
    "LedgerError",
    "LedgerUnavailableError",
    "ModelNotFoundError",
    "NoRouteError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitedError",
    "RequestTooLargeError",
    "ShedError",
    "RouterError",
    "UpstreamFailedError",
]


class RouterError(Exception):
    """Base of every error the router raises on purpose."""


class InsufficientBalanceError(RouterError):
    """A hold was asked of a voucher whose available balance is zero."""

    def __init__(self, voucher_id: str, wanted: float, available: float) -> None:
        super().__init__(f"voucher {voucher_id!r}: wanted {wanted:g}, available {available:g}")
        self.voucher_id = voucher_id
        self.wanted = wanted
        self.available = available


class LedgerError(RouterError):
    """The ledger was asked to act on something it does not hold, or cannot in its state."""


class ApiError(RouterError):
    """An error for the client: HTTP status, OpenAI error type, code, param, optional Retry-After."""

    status = 500
    type = "server_error"
    code: str | None = None
    should_retry: bool | None = None  # sent as x-should-retry when set (the openai SDK obeys it)

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.retry_after_s = retry_after_s


class BadRequestError(ApiError):
    status = 400
    type = "invalid_request_error"


class AuthenticationError(ApiError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDeniedError(ApiError):
    status = 403
    type = "invalid_request_error"
    code = "permission_denied"


class BudgetExceededError(ApiError):
    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"
    should_retry = False


class KeyRateLimitError(ApiError):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class ModelNotFoundError(ApiError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="model")


class NotFoundError(ApiError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class NoRouteError(ApiError):
    status = 503
    type = "server_error"
    code = "no_route"


class LedgerUnavailableError(ApiError):
    """The ledger cannot take a write now (a full disk, a lost or locked database); try again later.

    Nothing was held or settled by the failed write. Always carries ``retry_after_s``.
    """

    status = 503
    type = "server_error"
    code = "ledger_unavailable"

    def __init__(self, message: str, *, retry_after_s: float = 2.0) -> None:
        super().__init__(message, retry_after_s=retry_after_s)


class RateLimitedError(ApiError):
    """Always carries ``retry_after_s``: the app sends Retry-After and x-should-retry."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class RequestTooLargeError(ApiError):
    """Larger than the tokens-per-minute limit of every region that could serve it: no wait helps."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"
    should_retry = False


class ShedError(ApiError):
    """Supply shrank (an outage, a voucher cut, a reload): a sheddable key's work is refused first.

    Always carries ``retry_after_s``: when the shortage is expected to end (router/core/shedding.py).
    """

    status = 503
    type = "server_error"
    code = "shed_low_priority"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s=retry_after_s)


class UpstreamFailedError(ApiError):
    """Every region tried failed; the status says how (timeouts 504, throttling 429, else 502)."""

    status = 502
    type = "server_error"
    code = "upstream_error"

    @classmethod
    def from_upstream(cls, exc: UpstreamError) -> ApiError:
        """A non-retryable upstream answer: a 4xx about the request is the client's, others are ours.

        The client's come back typed as OpenAI types them (400 and 422 as 400, 404 as 404, all
        ``invalid_request_error``) with the upstream's vetted code and param; anything else is a
        502 ``server_error``. (401/403, our key for the region, are retried elsewhere first.)
        """
        if exc.status in (400, 422):
            return BadRequestError(exc.message, param=exc.param, code=exc.code)
        if exc.status == 404:
            code = exc.code or "not_found"
            param = exc.param or ("model" if code == "model_not_found" else None)
            return NotFoundError(exc.message, param=param, code=code)
        return cls(f"region {exc.region} failed: {exc.message}", status=502, code=exc.code or cls.code)

    @classmethod
    def in_doubt(cls, exc: UpstreamError, charged_yuan: float) -> UpstreamFailedError:
        """A whole (non-streamed) answer that never came: not sent elsewhere, charged at its hold."""
        error = cls(
            f"region {exc.region} got the request but did not answer ({exc.message}); it may still be"
            " generating it, so it was not sent to another region. It is recorded as in doubt and"
            f" charged at its upper bound ({charged_yuan:.6f} yuan); see `suanli audit verify`."
            " Stream long answers, or raise the region's timeouts.first_byte_s.",
            status=504,
            code="upstream_in_doubt",
        )
        error.should_retry = False  # the openai SDK would otherwise retry a 504: a third generation
        return error

    @classmethod
    def from_failures(cls, failures: list[UpstreamError]) -> ApiError:
        tried = ", ".join(f"{f.region} ({f.status or 'no answer'}: {f.message})" for f in failures)
        if all(f.status == 404 for f in failures):  # no region tried has the model after all
            return cls.from_upstream(failures[0])
        if all(f.status == 429 for f in failures):
            waits = [f.retry_after_s for f in failures if f.retry_after_s]
            return cls(
                f"every region is throttling: {tried}",
                status=429,
                code="rate_limit_exceeded",
                retry_after_s=min(waits) if waits else 1.0,
            )
        if all(isinstance(f, UpstreamTimeout) for f in failures):
            return cls(f"every region timed out: {tried}", status=504, code="upstream_timeout")
        if all(f.status in (401, 403) for f in failures):
            # Our credentials for the regions, not the client's: a 502 the operator must fix.
            message = f"every region refused the router's key: {tried}"
            return cls(message, status=502, code="upstream_auth_failed")
        return cls(f"every region tried failed: {tried}", status=502)
