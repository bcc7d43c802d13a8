"""A background pass repeated at an interval, by the leading replica only, that outlives a bad pass."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

__all__ = ["repeat"]


async def repeat(
    run: Callable[[], Awaitable[object]], *, every_s: Callable[[], float], leads: Callable[[], bool],
    log: logging.Logger, what: str,
) -> None:
    """Run ``run`` every ``every_s()`` seconds while ``leads()``; log a failed pass and go on."""
    while True:
        try:
            if leads():
                await run()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a background task must outlive one bad pass
            log.exception("%s failed", what)
        await asyncio.sleep(every_s())
