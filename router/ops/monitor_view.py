"""Rich rendering of the status document: regions, vouchers, spend and savings, recent routing.

Pure functions of the document, the terminal size and the latency history the monitor
keeps, so ``--once`` and the live screen draw exactly the same thing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from suanli.router.ops.monitor_accounts import balances_height, balances_table, deliveries_line

__all__ = ["History", "render_status", "render_unreachable"]

_SPARK = "▁▂▃▄▅▆▇█"
_STATE_STYLE = {"ok": "bold green", "cooling": "bold yellow", "ejected": "bold red"}
_SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow"}
SPARK_POINTS = 20


class History:
    """Per-region ttft p50 over the last refreshes, for the sparklines."""

    def __init__(self, points: int = SPARK_POINTS) -> None:
        self._points = points
        self._ttft: dict[str, deque[float | None]] = {}  # region id -> ttft p50 in ms, oldest first

    def add(self, doc: dict) -> None:
        for region in doc["regions"]:
            series = self._ttft.setdefault(region["id"], deque(maxlen=self._points))
            series.append(region["latency_ms"]["ttft"]["p50"])

    def spark(self, region_id: str) -> str:
        values = list(self._ttft.get(region_id, ()))
        known = [v for v in values if v is not None]
        if not known:
            return ""
        lo, hi = min(known), max(known)
        span = (hi - lo) or 1.0
        return "".join(" " if v is None else _SPARK[int((v - lo) / span * (len(_SPARK) - 1))] for v in values)


def render_status(
    doc: dict, *, width: int, height: int, history: History | None = None, source: str = "", note: str = ""
) -> RenderableType:
    """The whole screen for one status document, fitted to ``width`` x ``height``."""
    parts: list[RenderableType] = [_header(doc, source, note)]
    parts.append(_regions(doc, history, width=width))
    parts.append(_vouchers(doc, width=width))
    balances = balances_table(doc)
    if balances is not None:
        parts.append(balances)
    if doc["alerts"]:
        parts.append(_alerts(doc))
    # What is left of the screen goes to the most recent decisions (a line each).
    used = (
        7
        + len(routing_notes(doc))
        + len(doc["regions"])
        + 4
        + len(doc["vouchers"])
        + 4
        + (len(doc["alerts"]) + 2 if doc["alerts"] else 0)
        + balances_height(doc)
    )
    room = height - used - 5
    if room > 0:
        parts.append(_recent(doc, rows=room, width=width))
    return Group(*parts)


def render_unreachable(
    source: str, error: str, *, since: datetime | None, last: RenderableType | None
) -> RenderableType:
    """The message shown while the server does not answer, above the last good screen."""
    when = f" since {since.strftime('%H:%M:%S')}" if since else ""
    message = Text.assemble(
        ("server unreachable", "bold white on red"),
        f" {source}{when}: {error}\nretrying every second; press q to quit",
    )
    banner = Panel(message, border_style="red")
    return banner if last is None else Group(banner, last)


def _header(doc: dict, source: str, note: str) -> RenderableType:
    totals = doc["totals"]
    line = Text.assemble(
        ("suanli ", "bold cyan"),
        f"{source}  {_local(doc, doc['time']):%Y-%m-%d %H:%M:%S %z}  up {_age(doc['uptime_s'])}\n",
        ("today ", "bold"),
        f"{totals['requests_today']:,} requests  {totals['tokens_today']:,} tokens  ",
        ("cash ", "bold"),
        f"¥{totals['cash_yuan_today']:,.4f}  ",
        ("vouchers ", "bold"),
        f"¥{totals['voucher_yuan_today']:,.4f}  ",
        ("saved ", "bold green"),
        f"¥{totals['savings_vs_list_yuan']:,.4f} vs list (¥{totals['list_yuan_today']:,.4f}), "
        f"¥{totals['savings_vs_greedy_yuan']:,.4f} vs greedy (¥{totals['greedy_cash_yuan_today']:,.4f})",
    )
    kept = totals.get("vouchers_kept_vs_greedy_yuan", 0.0)
    if abs(kept) >= 5e-5:
        # Greedy spends a voucher on the first request it fits; suanli keeps units for the
        # requests they save most on. Cash alone would read as a loss until greedy runs dry.
        line.append(
            f"\n{'kept' if kept > 0 else 'drew'} ¥{abs(kept):,.4f} of vouchers "
            f"{'greedy would have spent' if kept > 0 else 'more than greedy'}: "
            f"¥{totals['savings_vs_greedy_with_vouchers_yuan']:,.4f} vs greedy counting them",
            style="green" if totals["savings_vs_greedy_with_vouchers_yuan"] >= 0 else "red",
        )
    cache = doc.get("cache") or {}
    if cache.get("regions"):
        shown = "  ".join(f"{rid} {c['hit_rate']:.0%}" for rid, c in cache["regions"].items() if c["hits"])
        line.append(
            f"\nprompt cache: {cache['hit_rate']:.1%} of requests hit, saved ¥{cache['saved_yuan']:,.4f}"
            + (f"  ({shown})" if shown else ""),
            style="green",
        )
    for why in routing_notes(doc):
        line.append(f"\n{why}", style="yellow")
    if note:
        line.append(f"\n{note}", style="dim")
    return Panel(line, border_style="cyan", padding=(0, 1))


def routing_notes(doc: dict) -> list[str]:
    """Why interactive work avoids a region whose priors admit it: the first token measured
    there is now over the SLO (so a share that moved is not a mystery). Regions whose priors
    are over the SLO never take interactive work, and say nothing."""
    notes = []
    for r in doc["regions"]:
        seen = r.get("interactive")
        if seen and not seen["within_slo"] and seen["prior_ttft_ms"] <= seen["slo_ms"]:
            notes.append(
                f"no interactive at {r['id']} ({r['zone']}): first token expected "
                f"{seen['expected_ttft_ms']:.0f} ms, over the {seen['slo_ms']:g} ms SLO"
            )
    return notes


# (header, least terminal width that shows it, justify, cell of a row): narrow screens drop columns
Column = tuple[str, int, str, Callable[[dict], RenderableType]]


def _fitted(title: str, columns: list[Column], rows: list[dict], width: int) -> Table:
    shown = [column for column in columns if width >= column[1]]
    table = Table(
        title=title,
        title_justify="left",
        expand=width >= 100,
        pad_edge=False,
        box=box.HEAVY_HEAD if width >= 100 else box.SIMPLE_HEAD,
    )
    for name, _, justify, _ in shown:
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(cell(row) for *_, cell in shown))
    return table


def _regions(doc: dict, history: History | None, *, width: int) -> Table:
    columns: list[Column] = [
        ("region", 0, "left", lambda r: r["id"]),
        ("zone", 100, "left", lambda r: r["zone"]),
        ("health", 0, "left", lambda r: _state(doc, r)),
        ("ttft p50/p95", 0, "right", lambda r: _pair(r["latency_ms"]["ttft"])),
        ("total p50/p95", 125, "right", lambda r: _pair(r["latency_ms"]["total"])),
    ]
    if history is not None:
        columns.append(("ttft trend", 130, "left", lambda r: Text(history.spark(r["id"]), style="magenta")))
    columns += [
        ("rpm", 0, "right", lambda r: _used(r["limits"]["rpm_used"], r["limits"]["rpm_limit"])),
        ("tpm", 110, "right", lambda r: _used(r["limits"]["tpm_used"], r["limits"]["tpm_limit"])),
        ("in flight", 130, "right", lambda r: "-" if r["in_flight"] is None else str(r["in_flight"])),
        ("5 min int/bat/trn", 90, "right", _shares),
        ("cash today", 0, "right", lambda r: f"¥{r['today']['cash_yuan']:,.4f}"),
    ]
    return _fitted("regions", columns, doc["regions"], width)


def _state(doc: dict, r: dict) -> Text:
    health = r["health"]
    state = Text(health["state"], style=_STATE_STYLE.get(health["state"], ""))
    if health["state"] == "ejected" and health["ejected_until"]:
        state.append(f" to {_local(doc, health['ejected_until']):%H:%M:%S}")
    if health["ejections"]:
        state.append(f" ×{health['ejections']}", style="dim")
    if health.get("cash_exhausted"):
        state.append(" no cash", style="bold red")
        why = health.get("exhausted") or {}
        if why.get("reason"):  # the platform's own words, short: why the region is out
            state.append(f" ({str(why['reason'])[:40]})", style="red")
    return state


def _shares(r: dict) -> str:
    return "/".join(f"{r['share_5m'][c]:.0%}" for c in ("interactive", "batch", "training"))


def _vouchers(doc: dict, *, width: int) -> Table:
    # The bar gives way first: at 160 columns every column fits whole (a 40-wide bar cut the rest).
    bar_width = max(10, min(24, width // 8))
    columns: list[Column] = [
        ("voucher", 0, "left", lambda v: v["id"]),
        ("region", 100, "left", lambda v: v["region"]),
        ("kind", 110, "left", lambda v: v["kind"]),
        ("balance", 0, "right", lambda v: _units(v["available"], v["kind"])),
        ("used", 0, "left", lambda v: _bar(v["used_share"], bar_width)),
        ("burn/h", 115, "right", lambda v: _units(v["burn_per_hour"], v["kind"])),
        ("expires in", 0, "left", lambda v: _expiry(v["expires_in_s"])),
        ("exhausted at", 130, "left", lambda v: _exhaustion(doc, v)),
    ]
    shadow = (doc.get("plan") or {}).get("shadow_prices") or {}  # voucher id -> yuan per unit
    if shadow:
        columns.append(("shadow ¥/unit", 150, "right", lambda v: f"{shadow.get(v['id'], 0.0):.3g}"))
    return _fitted("vouchers", columns, doc["vouchers"], width)


def _alerts(doc: dict) -> Panel:
    text = Text()
    for n, alert in enumerate(doc["alerts"]):
        if n:
            text.append("\n")
        text.append(f"{alert['severity']:>8} ", style=_SEVERITY_STYLE.get(alert["severity"], ""))
        text.append(alert["message"])
    deliveries = deliveries_line(doc)
    if deliveries:
        text.append(f"\n{deliveries}", style="dim")
    return Panel(text, title="alerts", title_align="left", border_style="red")


def _recent(doc: dict, *, rows: int, width: int) -> Table:
    columns: list[Column] = [
        ("time", 0, "left", lambda d: f"{_local(doc, d['time']):%H:%M:%S}"),
        ("region", 0, "left", lambda d: d["region"]),
        ("class", 0, "left", lambda d: d["class"]),
        ("model", 100, "left", lambda d: d["model"]),
        ("voucher", 90, "left", lambda d: d["voucher"] or "cash"),
        ("tokens", 110, "right", lambda d: f"{d['tokens']:,}"),
        ("cash", 0, "right", lambda d: f"¥{d['cash_yuan']:.5f}"),
        ("latency", 0, "right", lambda d: f"{d['latency_ms']:,.0f} ms"),
        ("origin", 130, "left", lambda d: d["origin"]),
        ("key", 140, "left", lambda d: d["key"] or "-"),
        ("attempts", 130, "right", lambda d: str(d["attempts"])),
    ]
    return _fitted("recent routing", columns, doc["recent"][:rows], width)


def _pair(p: dict) -> str:
    if p["p50"] is None:
        return "-"
    return f"{p['p50']:,.0f}/{p['p95']:,.0f} ms"


def _used(used: float | None, limit: float | None) -> Text:
    if used is None:
        return Text("-")
    if not limit:
        return Text(f"{used:,.0f}")
    share = used / limit
    style = "red" if share > 0.8 else "yellow" if share > 0.5 else ""
    return Text(f"{used:,.0f}/{limit:,.0f}", style=style)


def _bar(share: float, width: int) -> Text:
    filled = round(max(0.0, min(1.0, share)) * width)
    style = "red" if share > 0.9 else "yellow" if share > 0.6 else "green"
    return Text.assemble(("█" * filled, style), ("░" * (width - filled), "dim"), f" {share:.1%}")


def _expiry(seconds: float | None) -> Text:
    if seconds is None:
        return Text("never")
    if seconds <= 0:
        return Text("expired", style="red")
    days, rest = divmod(int(seconds), 86400)
    if days:
        return Text(f"{days}d {rest // 3600}h")
    return Text(f"{rest // 3600}h {rest % 3600 // 60}m", style="bold yellow")


def _local(doc: dict, moment: str) -> datetime:
    """``moment`` in the config's timezone (the document's), so every time on screen agrees."""
    when = datetime.fromisoformat(moment)
    try:
        return when.astimezone(ZoneInfo(doc.get("timezone") or "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        return when


def _exhaustion(doc: dict, v: dict) -> Text:
    """When the balance runs out at the last hour's burn; dim when the voucher expires first."""
    at = v["projected_exhaustion"]
    if at is None:
        return Text("-")
    if v["expires"] and datetime.fromisoformat(at) >= datetime.fromisoformat(v["expires"]):
        return Text("after expiry", style="dim")
    return Text(_local(doc, at).strftime("%m-%d %H:%M"), style="yellow")


def _units(value: float, kind: str) -> str:
    return f"{value:,.0f} tok" if kind == "tokens" else f"¥{value:,.4f}"


def _age(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"
