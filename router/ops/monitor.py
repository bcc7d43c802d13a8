"""``suanli monitor``: a live terminal dashboard over ``GET /admin/status``.

Refreshes every second, quits on ``q`` (or Ctrl-C), redraws to the terminal's size, and
keeps running while the server is away: it says so and recovers when it answers again.
``--once`` prints one snapshot and exits (for scripts and SSH).
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from rich.console import Console

from suanli.router.ops.monitor_view import History, render_status, render_unreachable

__all__ = ["MonitorOptions", "StatusUnavailable", "fetch_status", "run_monitor", "show_once"]

REFRESH_S = 1.0
_RECONNECTED_NOTE_S = 10.0


class StatusUnavailable(Exception):
    """The server did not answer with a status document; the message says why."""


@dataclass(frozen=True, slots=True)
class MonitorOptions:
    url: str = "http://127.0.0.1:8080"
    key: str | None = None
    timeout_s: float = 2.0


def fetch_status(options: MonitorOptions) -> dict:
    """The server's status document; StatusUnavailable when it cannot be had."""
    base = options.url.rstrip("/").removesuffix("/v1")
    request = urllib.request.Request(base + "/admin/status")
    if options.key:
        request.add_header("Authorization", f"Bearer {options.key}")
    try:
        with urllib.request.urlopen(request, timeout=options.timeout_s) as response:
            doc = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        try:
            detail = json.loads(detail)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            pass
        raise StatusUnavailable(f"HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusUnavailable(str(reason)) from exc
    if not isinstance(doc, dict) or doc.get("object") != "suanli.status" or doc.get("version") != 1:
        raise StatusUnavailable("the answer is not a suanli status document (version 1)")
    return doc


def show_once(options: MonitorOptions, console: Console) -> int:
    """Print one snapshot; 0, or 1 with the reason on stderr when the server does not answer."""
    try:
        doc = fetch_status(options)
    except StatusUnavailable as exc:
        print(f"cannot get the status from {options.url}: {exc}", file=sys.stderr)
        return 1
    console.print(render_status(doc, width=console.width, height=10_000, source=options.url))
    return 0


def run_monitor(options: MonitorOptions, console: Console) -> int:
    """The live dashboard until ``q``; 0."""
    from rich.live import Live

    history = History()
    last_screen = None
    down_since: datetime | None = None
    back_at: float | None = None  # monotonic time the server answered again
    with _keys() as pressed, Live(console=console, screen=True, auto_refresh=False) as live:
        while True:
            started = time.monotonic()
            width, height = console.size
            try:
                doc = fetch_status(options)
            except StatusUnavailable as exc:
                down_since = down_since or datetime.now()
                live.update(
                    render_unreachable(options.url, str(exc), since=down_since, last=last_screen),
                    refresh=True,
                )
            else:
                if down_since is not None:
                    back_at, down_since = started, None
                reconnected = back_at is not None and started - back_at < _RECONNECTED_NOTE_S
                note = "reconnected; q quits" if reconnected else "q quits"
                history.add(doc)
                last_screen = render_status(
                    doc, width=width, height=height, history=history, source=options.url, note=note
                )
                live.update(last_screen, refresh=True)
            if pressed(max(0.0, REFRESH_S - (time.monotonic() - started))) in ("q", "Q"):
                return 0


@contextmanager
def _keys() -> Iterator:
    """``pressed(timeout_s)``: the key typed within the timeout, or None. Raw keys on a tty."""
    if not sys.stdin.isatty():
        yield lambda timeout_s: time.sleep(timeout_s)
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def pressed(timeout_s: float) -> str | None:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        return os.read(fd, 1).decode(errors="replace") if ready else None

    try:
        yield pressed
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
