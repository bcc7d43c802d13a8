"""Which Ledger instances are alive, so a restart voids only holds whose owner is gone.

Every writing Ledger registers an owner row (host, pid, process start time). At open, a
pending hold is resolved (voided) only if its owner is dead: closed, a process that no
longer exists (or whose pid was reused), or an instance of this very process that was
closed. A `suanli vouchers` CLI opening the file while the server runs therefore never
voids the server's in-flight holds.
"""

from __future__ import annotations

import os
import socket

__all__ = ["LIVE_OWNERS", "OwnerRow", "owner_alive", "process_start", "this_process"]

# Owner ids of Ledger instances open in this process. Process state by nature: the pid
# alone cannot tell a closed instance of this process from an open one.
LIVE_OWNERS: set[str] = set()

# (id, host, pid, pid_start, closed epoch or None)
OwnerRow = tuple[str, str, int, str, float | None]


def process_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (Linux /proc), "" where unknown; "Z" for a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            data = f.read()
    except OSError:
        return ""
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = data.rsplit(")", 1)[-1].split()
    if len(fields) < 20:
        return ""
    return "Z" if fields[0] in ("Z", "X") else fields[19]


def this_process() -> tuple[str, int, str]:
    """(host, pid, start time) of the running process."""
    pid = os.getpid()
    return socket.gethostname(), pid, process_start(pid)


def owner_alive(owner: OwnerRow, *, host: str, pid: int) -> bool:
    """Whether the Ledger instance ``owner`` may still settle its holds."""
    owner_id, owner_host, owner_pid, owner_start, closed = owner
    if closed is not None:
        return False
    if owner_host != host:
        # Another machine on the same file: we cannot tell; stale holds are left to void_stale.
        return True
    if owner_pid == pid:
        return owner_id in LIVE_OWNERS
    try:
        os.kill(owner_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, under another user
    if not owner_start:
        return True
    return process_start(owner_pid) == owner_start
