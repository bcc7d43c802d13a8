"""Rich rendering of the status document: regions, vouchers, spend and savings, recent routing.

Pure functions of the document, the terminal size and the latency history the monitor
keeps, so ``--once`` and the live screen draw exactly the same thing.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

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
    wide = width >= 120
    parts: list[RenderableType] = [_header(doc, source, note)]
    parts.append(_regions(doc, history, wide=wide))
    parts.append(_vouchers(doc, width=width))
    if doc["alerts"]:
        parts.append(_alerts(doc))
    # What is left of the screen goes to the most recent decisions (a line each).
    used = (
        6
        + len(doc["regions"])
        + 4
        + len(doc["vouchers"])
        + 4
        + (len(doc["alerts"]) + 2 if doc["alerts"] else 0)
    )
    room = height - used - 5
    if room > 0:
        parts.append(_recent(doc, rows=room, wide=wide))
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
        f"{source}  {datetime.fromisoformat(doc['time']):%Y-%m-%d %H:%M:%S %z}  up {_age(doc['uptime_s'])}\n",
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
    if note:
        line.append(f"\n{note}", style="dim")
    return Panel(line, border_style="cyan", padding=(0, 1))


def _regions(doc: dict, history: History | None, *, wide: bool) -> Table:
    table = Table(title="regions", title_justify="left", expand=True, pad_edge=False)
    columns = ["region", "zone", "health", "ttft p50/p95", "total p50/p95"]
    if wide and history is not None:
        columns.append("ttft trend")
    columns += ["rpm", "tpm", "in flight", "5 min int/bat/trn", "cash today"]
    for name in columns:
        table.add_column(
            name,
            justify="left" if name in ("region", "zone", "health", "ttft trend") else "right",
            no_wrap=True,
        )
    for r in doc["regions"]:
        health = r["health"]
        state = Text(health["state"], style=_STATE_STYLE.get(health["state"], ""))
        if health["ejections"]:
            state.append(f" ×{health['ejections']}", style="dim")
        lat = r["latency_ms"]
        cells: list[RenderableType] = [
            r["id"],
            r["zone"],
            state,
            _pair(lat["ttft"]),
            _pair(lat["total"]),
        ]
        if wide and history is not None:
            cells.append(Text(history.spark(r["id"]), style="magenta"))
        limits, share = r["limits"], r["share_5m"]
        cells += [
            _used(limits["rpm_used"], limits["rpm_limit"]),
            _used(limits["tpm_used"], limits["tpm_limit"]),
            "-" if r["in_flight"] is None else str(r["in_flight"]),
            "/".join(f"{share[c]:.0%}" for c in ("interactive", "batch", "training")),
            f"¥{r['today']['cash_yuan']:,.4f}",
        ]
        table.add_row(*cells)
    return table


def _vouchers(doc: dict, *, width: int) -> Table:
    table = Table(title="vouchers", title_justify="left", expand=True, pad_edge=False)
    bar_width = max(10, min(40, width // 4))
    for name in ("voucher", "region", "kind", "balance", "used", "burn/h", "expires in", "exhausted at"):
        table.add_column(name, justify="right" if name in ("balance", "burn/h") else "left", no_wrap=True)
    for v in doc["vouchers"]:
        table.add_row(
            v["id"],
            v["region"],
            v["kind"],
            _units(v["available"], v["kind"]),
            _bar(v["used_share"], bar_width),
            _units(v["burn_per_hour"], v["kind"]),
            _expiry(v["expires_in_s"]),
            _exhaustion(v),
        )
    return table


def _alerts(doc: dict) -> Panel:
    text = Text()
    for n, alert in enumerate(doc["alerts"]):
        if n:
            text.append("\n")
        text.append(f"{alert['severity']:>8} ", style=_SEVERITY_STYLE.get(alert["severity"], ""))
        text.append(alert["message"])
    return Panel(text, title="alerts", title_align="left", border_style="red")


def _recent(doc: dict, *, rows: int, wide: bool) -> Table:
    table = Table(title="recent routing", title_justify="left", expand=True, pad_edge=False)
    columns = ["time", "region", "class", "model", "voucher", "tokens", "cash", "latency"]
    if wide:
        columns += ["origin", "key", "attempts"]
    for name in columns:
        table.add_column(
            name,
            justify="right" if name in ("tokens", "cash", "latency", "attempts") else "left",
            no_wrap=True,
        )
    for d in doc["recent"][:rows]:
        cells = [
            d["time"][11:19],
            d["region"],
            d["class"],
            d["model"],
            d["voucher"] or "cash",
            f"{d['tokens']:,}",
            f"¥{d['cash_yuan']:.5f}",
            f"{d['latency_ms']:,.0f} ms",
        ]
        if wide:
            cells += [d["origin"], d["key"] or "-", str(d["attempts"])]
        table.add_row(*cells)
    return table


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


def _exhaustion(v: dict) -> Text:
    """When the balance runs out at the last hour's burn; dim when the voucher expires first."""
    at = v["projected_exhaustion"]
    if at is None:
        return Text("-")
    if v["expires"] and datetime.fromisoformat(at) >= datetime.fromisoformat(v["expires"]):
        return Text("after expiry", style="dim")
    return Text(datetime.fromisoformat(at).strftime("%m-%d %H:%M"), style="yellow")


def _units(value: float, kind: str) -> str:
    return f"{value:,.0f} tok" if kind == "tokens" else f"¥{value:,.4f}"


def _age(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"
