"""Exhaustion that heals: a 402 marks a voucher or a region's cash gone, and the mark is retried.

A platform answering 402 (or a quota code) marks the voucher that was held, or the region's
cash, exhausted on the ledger (``RegionPicker``), and the chooser stops drawing on it. A top-up
or a new billing period restores it without telling us, so a mark is not forever:

- after ``health.exhausted.recheck_s`` (600 s) it is *half-open*: the mark is cleared and the
  next request may go there again; a second 402 marks it anew (one failed attempt, which
  fails over, per interval);
- ``POST /admin/regions/{id}/clear``, ``POST /admin/vouchers/{id}/clear`` and
  ``suanli vouchers clear REGION|VOUCHER`` clear it at once (after a top-up);
- a mark cleared elsewhere (the CLI on the ledger file, another replica) is followed within
  ``health.exhausted.check_s``.

``marks()`` says why each account is out and when it is tried again (status, monitor, admin).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from suanli.config.health import ExhaustedSettings
from suanli.router.core.accounts import Accounts

__all__ = ["ExhaustionWatch"]

log = logging.getLogger("suanli.exhaustion")


class ExhaustionWatch:
    """Re-opens exhaustion marks after their interval and follows marks cleared elsewhere."""

    def __init__(
        self, accounts: Accounts, settings: ExhaustedSettings, clock: Callable[[], datetime]
    ) -> None:
        self.accounts = accounts
        self.settings = settings
        self.clock = clock
        self.rechecks = 0  # marks re-opened after their interval
        self._vouchers: set[str] = set()  # voucher ids marked at the last step
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.check_s)
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - a database blip: try again next period
                log.warning("exhaustion re-check failed: %s", exc)

    def marks(self) -> list[dict[str, object]]:
        """Every mark: account, region, voucher_id, since and recheck_at (ISO times), reason."""
        out = []
        regions = {v.id: v.region for v in self.accounts.config.vouchers}
        for account, mark in sorted(self.accounts.ledger.book.exhausted().items()):
            since = float(mark["since"])  # type: ignore[arg-type]
            recheck = since + self.settings.recheck_s if self.settings.recheck_s > 0 else None
            out.append({
                "account": account,
                "region": mark["region"] or regions.get(str(mark["voucher_id"])),
                "voucher_id": mark["voucher_id"],
                "since": _iso(since),
                "reason": mark["reason"],
                "recheck_at": _iso(recheck) if recheck is not None else None,
            })
        return out

    def step(self) -> list[str]:
        """One look at the marks (public so tests drive it); the accounts re-opened now."""
        accounts = self.accounts
        book = accounts.ledger.book
        now_s = self.clock().timestamp()
        marks = book.exhausted()
        reopened: list[str] = []
        if self.settings.recheck_s > 0:
            for account, mark in marks.items():
                if float(mark["since"]) + self.settings.recheck_s <= now_s:  # type: ignore[arg-type]
                    log.warning("re-checking %s (out since %s: %s): it may be drawn on again", account,
                                _iso(float(mark["since"])), mark["reason"])  # type: ignore[arg-type]
                    voucher = mark["voucher_id"]
                    accounts.clear_exhausted(voucher_id=str(voucher) if voucher else None,
                                             region=None if voucher else str(mark["region"]))
                    reopened.append(account)
                    self.rechecks += 1
        left = {a: m for a, m in marks.items() if a not in reopened}
        # Follow the ledger: marks made or cleared by another process or replica.
        cash = {str(m["region"]) for m in left.values() if m["voucher_id"] is None}
        if cash != accounts.cash_exhausted:
            accounts.cash_exhausted.clear()
            accounts.cash_exhausted.update(cash)
        vouchers = {str(m["voucher_id"]) for m in left.values() if m["voucher_id"] is not None}
        gone = self._vouchers - vouchers
        if gone:  # cleared here or elsewhere: draw on them again (their free balance from the ledger)
            fresh = book.balances()
            for voucher_id in gone & fresh.keys():
                accounts.available[voucher_id] = fresh[voucher_id]
        self._vouchers = vouchers
        return reopened


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()
