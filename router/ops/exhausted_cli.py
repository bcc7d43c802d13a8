"""``suanli vouchers clear REGION|VOUCHER``: draw again on what a platform's 402 marked exhausted.

With ``--url`` it asks the running server (``POST /admin/regions/{id}/clear``, else
``/admin/vouchers/{id}/clear``), which acts at once. Without, it clears the mark in the
config's ledger; a server running on that ledger follows within ``health.exhausted.check_s``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime

from suanli.config import Config
from suanli.router.ledger.port import open_ledger

__all__ = ["clear"]


def clear(target: str | None, *, url: str | None, key: str | None, config: Config | None) -> int:
    """Clear ``target``'s marks; prints what was cleared. Exit code: 0 done, 1 unknown or unreachable."""
    if not target:
        print("usage: suanli vouchers clear REGION|VOUCHER [--url URL | --config FILE]", file=sys.stderr)
        return 2
    cleared = _over_http(target, url, key) if url else _in_ledger(target, config)
    if cleared is None:
        return 1
    print(f"{target}: cleared {', '.join(cleared)}" if cleared else f"{target}: nothing was marked exhausted")
    return 0


def _over_http(target: str, url: str, key: str | None) -> list[str] | None:
    for kind in ("regions", "vouchers"):
        address = f"{url.rstrip('/')}/admin/{kind}/{target}/clear"
        request = urllib.request.Request(address, data=b"", method="POST")
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return list(json.loads(response.read())["cleared"])
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                continue
            print(f"{url} answered {exc.code}: {exc.read().decode(errors='replace')}", file=sys.stderr)
            return None
        except (urllib.error.URLError, OSError) as exc:
            print(f"cannot reach {url}: {exc}", file=sys.stderr)
            return None
    print(f"{target} is neither a region nor a voucher of the server", file=sys.stderr)
    return None


def _in_ledger(target: str, config: Config | None) -> list[str] | None:
    if config is None:
        raise ValueError("a config is needed to clear marks in the ledger directly")
    regions = {r.id for r in config.regions}
    vouchers = {v.id: v.region for v in config.vouchers}
    if target not in regions and target not in vouchers:
        print(f"{target} is neither a region nor a voucher of the config", file=sys.stderr)
        return None

    async def run() -> list[str]:
        now = lambda: datetime.now(UTC)  # noqa: E731
        ledger = await open_ledger(config.ledger, config.vouchers, clock=now, sweep_s=None)
        try:
            cleared = []
            for account, mark in (await ledger.exhausted()).items():
                voucher = mark["voucher_id"]
                region = mark["region"] or vouchers.get(str(voucher))
                if account == f"voucher:{target}" or (target in regions and region == target):
                    await ledger.clear_exhausted(voucher_id=str(voucher) if voucher else None,
                                                 region=None if voucher else str(mark["region"]))
                    cleared.append(account)
            return cleared
        finally:
            await ledger.close()

    return asyncio.run(run())
