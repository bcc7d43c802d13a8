"""Errors of the upstream adapters; aiohttp and litellm exceptions never leave providers/.

    ProviderError
    └── UpstreamError(region, status, retryable, retry_after_s, code)
        ├── UpstreamTimeout     connect / first-byte / idle timeout
        └── UpstreamBroken      the connection broke after the first byte
"""

from __future__ import annotations

__all__ = ["ProviderError", "UpstreamBroken", "UpstreamError", "UpstreamTimeout"]


class ProviderError(Exception):
    """Base of everything providers/ raises."""


class UpstreamError(ProviderError):
    """A region failed to answer, or answered with an error.

    ``status`` is the upstream HTTP status (0 when no answer came at all). ``retryable``
    says whether another region may be tried: connect errors, timeouts, 5xx and 429
    before the first byte. ``code`` carries the upstream's error code when it gave one
    (for example ``insufficient_quota``), ``param`` the parameter it named. ``message`` never
    contains a credential; ``code`` and ``param`` are identifier-shaped or None
    (``providers/redaction.py``). ``in_doubt``: the request reached the upstream and no verdict
    came back (a timeout after sending), so the upstream may have served and billed it.
    """

    def __init__(
        self,
        region: str,
        status: int,
        message: str,
        *,
        retryable: bool,
        retry_after_s: float | None = None,
        code: str | None = None,
        body: dict | None = None,
        param: str | None = None,
        in_doubt: bool = False,
    ) -> None:
        super().__init__(f"region {region}: {message}")
        self.region = region
        self.status = status
        self.message = message
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.code = code
        self.body = body
        self.param = param
        self.in_doubt = in_doubt


class UpstreamTimeout(UpstreamError):
    """No answer (or no next chunk) within the region's timeout."""


class UpstreamBroken(UpstreamError):
    """The stream broke after the first byte: never retried, never spliced."""
