"""``suanli config check``'s account of the time- and period-dependent price rules of a config.

One plain sentence per rule DESIGN.md's "Payment semantics" applies beyond the list price:
each offer's off-peak window or time-of-use bands, its prompt-cache price and TTL, and each
voucher's package period and daily cap, so an operator reads what the config will charge.
"""

from __future__ import annotations

from rich.table import Table

from suanli.config import Config, Offer, Voucher

__all__ = ["pricing_rules", "rules_table"]

_UNITS = {"tokens": "tokens", "credit": "yuan", "discount": "yuan of discount"}
_PERIODS = {"day": "local day (from 00:00)", "week": "local week (from Monday 00:00)",
            "month": "local month (from the 1st, 00:00)"}


def _num(value: float) -> str:
    return f"{int(value):,}" if value == int(value) else f"{value:g}"


def _days(days: str | tuple[str, ...]) -> str:
    return days if isinstance(days, str) else ",".join(days)


def _offer_rules(config: Config, region: str, offer: Offer) -> list[tuple[str, str, str]]:
    where = f"{region}/{offer.name}"
    out = []
    if offer.off_peak is not None:
        window = offer.off_peak.window
        out.append((where, "off-peak", f"starts in {window} (every day, {config.timezone}) pay "
                    f"x{1 - offer.off_peak.discount:g} of the list price"))
    if offer.bands:
        parts = [f"{_days(b.days)} {b.window} x{b.factor:g}" for b in offer.bands]
        rule = (f"; otherwise x1. The first band holding a request's start ({config.timezone}) applies; "
                "a window crossing midnight belongs to the day it opens")
        out.append((where, "time-of-use bands", "; ".join(parts) + rule))
    price = offer.price
    if price.cached_input != price.input:
        out.append((where, "prompt cache", f"a session's cached input pays {price.cached_input:g} instead of "
                    f"{price.input:g} yuan/M when its previous request started here, same model, at most "
                    f"{offer.cache_ttl_s:g} s before"))
    return out


def _voucher_rules(voucher: Voucher) -> list[tuple[str, str, str]]:
    out = []
    units = _UNITS[voucher.kind]
    if voucher.period is not None:
        out.append((voucher.id, f"{voucher.period}ly package" if voucher.period != "day" else "daily package",
                    f"holds {_num(voucher.amount)} {units} afresh each {_PERIODS[voucher.period]} within its "
                    "validity; what is left at a period's end is lost"))
    if voucher.daily_cap is not None:
        out.append((voucher.id, "daily cap", f"pays at most {_num(voucher.daily_cap)} {units} per local day "
                    "(the day of each request's start)"))
    return out


def pricing_rules(config: Config) -> list[tuple[str, str, str]]:
    """``(offer or voucher, rule, what it charges)`` for every rule beyond the list price."""
    out = []
    for region in config.regions:
        for offer in region.models:
            out.extend(_offer_rules(config, region.id, offer))
    for voucher in config.vouchers:
        out.extend(_voucher_rules(voucher))
    return out


def rules_table(config: Config) -> Table | None:
    """The rules as a rich table, None when the config has none."""
    rows = pricing_rules(config)
    if not rows:
        return None
    table = Table(title="price rules beyond the list price")
    for column in ("where", "rule", "what it charges"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table
