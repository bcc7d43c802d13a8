"""The voucher ledger: two-phase holds (reserve / settle / void) and hash-chained usage rows.

After TigerBeetle's pending/post/void transfers. ``reserve`` checks the available balance and
inserts the pending hold in one ``BEGIN IMMEDIATE`` transaction, so no interleaving of
threads or processes can hold more than a voucher has; ``settle`` debits the real usage,
releases the rest and appends a usage row; ``void`` releases everything. A voucher row keeps
``balance`` (amount minus settled spend) and ``held`` (sum of its pending holds), so
``available = balance - held`` is one row read. Storage conventions: ``ledger_schema``.

Calls are synchronous and short (tens of microseconds, see benchmarks/ledger.py), meant to
run on the event loop of one process; other processes (the CLI, another server) may open
the same file at the same time.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import count
from typing import Any

from suanli.config import Voucher
from suanli.router.errors import InsufficientBalanceError, LedgerError
from suanli.router.ledger.chain import GENESIS, row_hash
from suanli.router.ledger.exhausted import clear as clear_mark
from suanli.router.ledger.exhausted import mark as add_mark
from suanli.router.ledger.keys import (
    KeyLedgerMixin,
    hold_key_budget,
    rebuild_key_held,
    release_key_budget,
    settle_key_budget,
)
from suanli.router.ledger.sqlite.owners import LIVE_OWNERS, owner_alive, this_process
from suanli.router.ledger.sqlite.reads import USAGE_COLUMNS, LedgerReadsMixin, usage_row
from suanli.router.ledger.sqlite.schema import connect, migrate, sqlite_path
from suanli.router.ledger.types import Hold, HoldRequest, Settlement, UsageRow, VoucherStatus
from suanli.router.ledger.vouchers import sync_vouchers

__all__ = [
    "Hold",
    "HoldRequest",
    "Ledger",
    "Settlement",
    "UsageRow",
    "VoucherStatus",
    "open_readonly",
]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

_INSERT_USAGE = f"INSERT INTO usage ({USAGE_COLUMNS}, voucher_q) VALUES ({', '.join('?' * 24)})"
_HOLD_COLUMNS = "state, voucher_id, held_q, request_id, key_id, region, model, work_class, origin"
# Resolve a pending hold (state, resolved time, id) and read it back in one statement.
_TAKE_PENDING = (
    f"UPDATE holds SET state = ?, resolved = ? WHERE id = ? AND state = 'pending' RETURNING {_HOLD_COLUMNS}"
)


class Ledger(KeyLedgerMixin, LedgerReadsMixin):
    """Voucher balances, pending holds and usage rows in one SQLite file (WAL)."""

    def __init__(self, conn: sqlite3.Connection, *, clock: Clock, owner: str | None) -> None:
        self._conn = conn
        self._clock = clock
        self._owner = owner
        # One connection, possibly used from a worker thread too: serialise its use.
        self._lock = threading.RLock()
        self._grouped = False  # inside group(): every write joins the one open transaction
        self._seq = count(1)
        self._hold_prefix = f"{owner}-"
        # voucher id -> scale: fixed when the voucher row is created, so read once.
        self._scales: dict[str, int] = {}
        # The usage chain's last (id, hash), valid while no other connection has committed:
        # PRAGMA data_version moves when one does, checked once per write transaction (which
        # holds the write lock, so nobody can append in between).
        self._head: tuple[int, str] | None = None
        self._head_version: int | None = None
        self._head_checked = False
        self.recovered_holds = 0  # pending holds of dead owners voided when this instance opened

    @classmethod
    def open(cls, url: str, vouchers: Sequence[Voucher], *, clock: Clock) -> Ledger:
        """Open (creating and migrating) the ledger at ``url`` for reading and writing.

        Vouchers of the config not yet in the ledger start with balance = amount; those
        already there keep their balance (the ledger is the truth) and get the config's
        metadata. Pending holds whose owner died (a previous process, a closed instance)
        are voided: their clients never got a complete answer. The count is logged and
        kept in ``recovered_holds``. ``Ledger.open(url, [], clock=...)`` touches no voucher.
        """
        path, synchronous = sqlite_path(url)
        conn = connect(path, synchronous=synchronous)
        migrate(conn)
        owner = secrets.token_hex(6)
        ledger = cls(conn, clock=clock, owner=owner)
        with ledger._immediate() as c:
            sync_vouchers(c, vouchers)
            host, pid, start = this_process()
            c.execute(
                "INSERT INTO owners (id, host, pid, pid_start, opened) VALUES (?, ?, ?, ?, ?)",
                (owner, host, pid, start, clock().timestamp()),
            )
        LIVE_OWNERS.add(owner)
        ledger.recovered_holds = ledger._recover()
        if ledger.recovered_holds:
            log.warning("ledger: voided %d pending holds left by a previous process", ledger.recovered_holds)
        return ledger

    def close(self) -> None:
        """Close the connection; holds still pending are voided by the next open."""
        if self._conn is None:
            return
        if self._owner is not None:
            LIVE_OWNERS.discard(self._owner)
            with self._immediate() as c:
                c.execute(
                    "UPDATE owners SET closed = ? WHERE id = ?", (self._clock().timestamp(), self._owner)
                )
        with self._lock:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def group(self) -> Iterator[None]:
        """Several writes in one transaction and one commit (router.ledger_group batches with it).

        No savepoint per write: each write makes its checks before its first change, so one
        that raises a refusal (a voucher ran dry, an unknown hold) has changed nothing. A write
        that fails after changing rows (``changes`` moved) must end the group with an exception,
        which rolls all of it back. Nothing is durable before the block exits without error.
        """
        with self._lock, self._immediate():
            self._grouped = True
            try:
                yield
            finally:
                self._grouped = False

    @property
    def changes(self) -> int:
        """Rows this connection has inserted, updated or deleted so far (SQLite's total_changes)."""
        return self._connection().total_changes

    @contextmanager
    def _immediate(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE takes the write lock before the first read."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise LedgerError("the ledger is closed")
            if self._grouped:
                yield conn  # part of the group's transaction
                return
            conn.execute("BEGIN IMMEDIATE")
            self._head_checked = False
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                self._head = None  # it may name a row the rollback just undid
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _writer(self) -> str:
        if self._owner is None:
            raise LedgerError("this ledger was opened read-only")
        return self._owner

    def reserve(self, req: HoldRequest) -> Hold:
        """Hold ``min(available, req.voucher_units)`` of the voucher, atomically.

        Raises InsufficientBalanceError when the voucher has nothing available. A hold
        without a voucher holds nothing but is recorded like any other.
        """
        owner = self._writer()
        # Zero-padded so ids sort in creation order: each insert appends to the index's last page.
        hold_id = f"{self._hold_prefix}{next(self._seq):012d}"
        created = self._clock()
        with self._immediate() as c:
            # Every check before the first change (see group()).
            held_q, scale = 0, 1
            if req.voucher_id is not None:
                row = c.execute(
                    "SELECT balance_q - held_q, scale FROM vouchers WHERE id = ?", (req.voucher_id,)
                ).fetchone()
                if row is None:
                    raise LedgerError(f"unknown voucher {req.voucher_id!r}")
                available_q, scale = row
                self._scales[req.voucher_id] = scale
                if available_q <= 0:
                    raise InsufficientBalanceError(req.voucher_id, req.voucher_units, available_q / scale)
                held_q = min(available_q, max(round(req.voucher_units * scale), 0))
            if req.key_budget is not None:
                hold_key_budget(c, hold_id, req.key_budget)  # checks both periods, then writes
            if held_q:
                c.execute("UPDATE vouchers SET held_q = held_q + ? WHERE id = ?", (held_q, req.voucher_id))
            c.execute(
                "INSERT INTO holds (id, owner, request_id, key_id, region, model, work_class, origin,"
                " voucher_id, held_q, held_units, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    hold_id,
                    owner,
                    req.request_id,
                    req.key_id,
                    req.region,
                    req.model,
                    req.work_class,
                    req.origin,
                    req.voucher_id,
                    held_q,
                    held_q / scale,
                    created.timestamp(),
                ),
            )
        return Hold(
            id=hold_id,
            request_id=req.request_id,
            voucher_id=req.voucher_id,
            voucher_units=held_q / scale,
            created=created,
        )

    def settle(self, hold_id: str, s: Settlement) -> UsageRow:
        """Debit ``s.voucher_units``, release the rest of the hold, append the usage row.

        Idempotent: a settled hold returns its existing row. A voided or unknown hold raises
        LedgerError. Units beyond the hold are clamped (and the excess moved to cash), logged.
        """
        self._writer()
        now = self._clock().timestamp()
        with self._immediate() as c:
            # Taking the hold and marking it settled is one statement; the usual case.
            rows = c.execute(_TAKE_PENDING, ("settled", now, hold_id)).fetchall()
            if not rows:
                return self._settled_before(c, hold_id)
            hold = rows[0]
            voucher_id, held_q = hold[1], hold[2]
            units_q, scale, s = self._debit(c, hold_id, voucher_id, held_q, s)
            settle_key_budget(c, hold_id, s.cost_yuan)
            last_id, prev_hash = self._chain_head(c)
            usage_id = last_id + 1
            values = (
                usage_id,
                hold_id,
                hold[3],
                now,
                hold[4],
                hold[5],
                hold[6],
                hold[7],
                hold[8],
                voucher_id,
                s.prompt_tokens,
                s.completion_tokens,
                s.tokens,
                s.cost_yuan,
                s.cash_yuan,
                units_q / scale,
                s.voucher_yuan,
                s.latency_ms,
                s.ttft_ms,
                s.attempts,
                s.status,
            )
            hash_ = row_hash(prev_hash, values)
            c.execute(_INSERT_USAGE, (*values, prev_hash, hash_, units_q))
            self._head = (usage_id, hash_)
        return usage_row((*values, prev_hash, hash_))

    def _settled_before(self, c: sqlite3.Connection, hold_id: str) -> UsageRow:
        """Settling a hold that is not pending: its usage row if settled, else LedgerError."""
        hold = c.execute("SELECT state FROM holds WHERE id = ?", (hold_id,)).fetchone()
        if hold is None:
            raise LedgerError(f"unknown hold {hold_id!r}")
        if hold[0] != "settled":
            raise LedgerError(f"hold {hold_id!r} is {hold[0]}, it cannot be settled")
        sql = f"SELECT {USAGE_COLUMNS} FROM usage WHERE hold_id = ?"
        return usage_row(c.execute(sql, (hold_id,)).fetchone())

    def _chain_head(self, c: sqlite3.Connection) -> tuple[int, str]:
        """The last usage row's (id, hash), or (0, GENESIS); inside a write transaction."""
        if not self._head_checked:
            (version,) = c.execute("PRAGMA data_version").fetchone()
            if version != self._head_version:
                self._head = None  # another connection committed: it may have appended rows
                self._head_version = version
            self._head_checked = True
        if self._head is None:
            last = c.execute("SELECT id, hash FROM usage ORDER BY id DESC LIMIT 1").fetchone()
            self._head = (0, GENESIS) if last is None else (last[0], last[1])
        return self._head

    def _scale(self, c: sqlite3.Connection, voucher_id: str) -> int:
        scale = self._scales.get(voucher_id)
        if scale is None:
            (scale,) = c.execute("SELECT scale FROM vouchers WHERE id = ?", (voucher_id,)).fetchone()
            self._scales[voucher_id] = scale
        return scale

    def _debit(
        self, c: sqlite3.Connection, hold_id: str, voucher_id: str | None, held_q: int, s: Settlement
    ) -> tuple[int, int, Settlement]:
        """Post the debit of a pending hold; ``(units debited, scale, settlement as charged)``."""
        if voucher_id is None:
            if s.voucher_units > 0:
                log.error(
                    "ledger: hold %s has no voucher but settles %g units; charged as cash",
                    hold_id,
                    s.voucher_units,
                )
                s = _clamped(s, 0.0)
            return 0, 1, s
        scale = self._scale(c, voucher_id)
        units_q = max(round(s.voucher_units * scale), 0)
        if units_q > held_q:
            # The router must never settle more than it held: the balance could go negative.
            log.error(
                "ledger: hold %s settles %g units of %s but held %g; clamped, excess charged as cash",
                hold_id,
                s.voucher_units,
                voucher_id,
                held_q / scale,
            )
            s = _clamped(s, held_q / scale)
            units_q = held_q
        c.execute(
            "UPDATE vouchers SET balance_q = balance_q - ?, held_q = held_q - ? WHERE id = ?",
            (units_q, held_q, voucher_id),
        )
        return units_q, scale, s

    def void(self, hold_id: str) -> None:
        """Release a pending hold entirely. Idempotent; voiding a settled hold changes nothing."""
        self._writer()
        now = self._clock().timestamp()
        with self._immediate() as c:
            rows = c.execute(_TAKE_PENDING, ("voided", now, hold_id)).fetchall()
            if not rows:
                if c.execute("SELECT 1 FROM holds WHERE id = ?", (hold_id,)).fetchone() is None:
                    raise LedgerError(f"unknown hold {hold_id!r}")
                return  # settled or voided already
            voucher_id, held_q = rows[0][1], rows[0][2]
            if voucher_id is not None:
                c.execute("UPDATE vouchers SET held_q = held_q - ? WHERE id = ?", (held_q, voucher_id))
            release_key_budget(c, hold_id)

    def void_stale(self, max_age_s: float) -> int:
        """Void pending holds older than ``max_age_s`` of clock time (any owner); how many."""
        self._writer()
        now = self._clock().timestamp()
        with self._immediate() as c:
            ids = [
                r[0]
                for r in c.execute(
                    "SELECT id FROM holds WHERE state = 'pending' AND created < ?", (now - max_age_s,)
                )
            ]
            _void_many(c, ids, now)
        if ids:
            log.warning("ledger: voided %d holds pending for over %g s", len(ids), max_age_s)
        return len(ids)

    def _recover(self) -> int:
        """Void the pending holds of dead owners, forget those owners, re-sum every ``held``."""
        host, pid, _ = this_process()
        now = self._clock().timestamp()
        with self._immediate() as c:
            owners = c.execute("SELECT id, host, pid, pid_start, closed FROM owners").fetchall()
            alive = {o[0] for o in owners if owner_alive(o, host=host, pid=pid)}
            pending = c.execute("SELECT id, owner FROM holds WHERE state = 'pending'").fetchall()
            ids = [hold_id for hold_id, owner in pending if owner not in alive]
            _void_many(c, ids, now)
            c.executemany("DELETE FROM owners WHERE id = ?", [(o[0],) for o in owners if o[0] not in alive])
            # held is a cache of the pending holds' sum: rebuild it, so no drift can outlive a restart.
            c.execute(
                "UPDATE vouchers SET held_q = (SELECT COALESCE(SUM(held_q), 0) FROM holds"
                " WHERE state = 'pending' AND voucher_id = vouchers.id)"
            )
            rebuild_key_held(c)
        return len(ids)

    def mark_exhausted(
        self, *, voucher_id: str | None = None, region: str | None = None, reason: str = ""
    ) -> None:
        """Record that a platform reported this voucher (or this region's cash) exhausted."""
        self._writer()
        now = self._clock().timestamp()
        with self._immediate() as c:
            add_mark(c, voucher_id=voucher_id, region=region, since=now, reason=reason)

    def clear_exhausted(self, *, voucher_id: str | None = None, region: str | None = None) -> None:
        """Forget an exhaustion mark (after a top-up)."""
        self._writer()
        with self._immediate() as c:
            clear_mark(c, voucher_id=voucher_id, region=region)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LedgerError("the ledger is closed")
        return self._conn

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        # A plain SELECT in autocommit mode reads one consistent WAL snapshot.
        with self._lock:
            return self._connection().execute(sql, params).fetchall()


def _clamped(s: Settlement, units: float) -> Settlement:
    """``s`` with only ``units`` paid by the voucher; the rest of its yuan share becomes cash."""
    share = units / s.voucher_units if s.voucher_units > 0 else 0.0
    voucher_yuan = s.voucher_yuan * share
    return Settlement(
        prompt_tokens=s.prompt_tokens,
        completion_tokens=s.completion_tokens,
        tokens=s.tokens,
        cost_yuan=s.cost_yuan,
        cash_yuan=s.cash_yuan + s.voucher_yuan - voucher_yuan,
        voucher_units=units,
        voucher_yuan=voucher_yuan,
        latency_ms=s.latency_ms,
        ttft_ms=s.ttft_ms,
        attempts=s.attempts,
        status=s.status,
    )


def _void_many(c: sqlite3.Connection, hold_ids: Sequence[str], now: float) -> None:
    """Void pending holds inside an open transaction and release what they held."""
    for hold_id in hold_ids:
        row = c.execute(
            "SELECT voucher_id, held_q FROM holds WHERE id = ? AND state = 'pending'", (hold_id,)
        ).fetchone()
        if row is None:
            continue
        if row[0] is not None:
            c.execute("UPDATE vouchers SET held_q = held_q - ? WHERE id = ?", (row[1], row[0]))
        release_key_budget(c, hold_id)
        c.execute("UPDATE holds SET state = 'voided', resolved = ? WHERE id = ?", (now, hold_id))


def open_readonly(url: str, *, clock: Clock | None = None) -> Ledger:
    """A ledger for reading only (the CLI): no voucher sync, no recovery, writes raise LedgerError.

    It never voids the holds of a server running on the same file.
    """
    path, _ = sqlite_path(url)
    conn = connect(path)
    migrate(conn)
    return Ledger(conn, clock=clock or (lambda: datetime.now(UTC)), owner=None)
