"""CPU time the PostgreSQL server spent for suanli's sessions, read from /proc (a local server).

``pg_stat_activity`` names each session (``suanli OWNER``) and its backend pid; the kernel
counts each backend's user and system time. Where /proc is not the server's (a remote
database) the figures are None.
"""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg

__all__ = ["backend_cpu", "cpu_delta_ms"]

_TICK = os.sysconf("SC_CLK_TCK")


async def backend_cpu(conn: asyncpg.Connection, names: list[str]) -> dict[int, float] | None:
    """Backend pid -> CPU seconds so far, for the sessions whose application_name is in ``names``
    (``suanli OWNER``: other runs on the same database, other schemas, are not counted)."""
    pids = [r[0] for r in await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = ANY($1::text[])"
        " AND datname = current_database()", names)]
    found: dict[int, float] = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
    return found if found or not pids else None


def cpu_delta_ms(before: dict[int, float] | None, after: dict[int, float] | None) -> float | None:
    """Milliseconds of server CPU between two readings (a session opened meanwhile counts from 0)."""
    if before is None or after is None:
        return None
    return sum(max(t - before.get(pid, 0.0), 0.0) for pid, t in after.items()) * 1000
