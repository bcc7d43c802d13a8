"""The voucher ledger: two-phase holds (reserve / settle / void) and hash-chained usage rows.

After TigerBeetle's pending/post/void transfers. ``reserve`` checks the available balance and
inserts the pending hold in one ``BEGIN IMMEDIATE`` transaction, so no interleaving of
threads or processes can hold more than a voucher has; ``settle`` debits the real usage,
releases the rest and appends a usage row; ``void`` releases everything. A voucher row keeps
``balance`` (amount minus settled spend) and ``held`` (sum of its pending holds), so
``available = balance - held`` is one row read. Storage conventions: ``ledger/tables.py``.

Calls are synchronous and short (tens of microseconds, see benchmarks/ledger.py), meant to
run on the event loop of one process; other processes (the CLI, another server) may open
the same file at the same time. A full disk, a busy file or an I/O error is
``LedgerUnavailableError`` (503); on a full disk settles still commit in the room kept
back for them (``sqlite/space.py``).
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
from suanli.router.errors import InsufficientBalanceError, LedgerError, LedgerUnavailableError
from suanli.router.ledger.adjust import Adjustment
from suanli.router.ledger.chain import GENESIS, row_hash
from suanli.router.ledger.exhausted import MARK_COLUMNS, account_of, mark_values
from suanli.router.ledger.figures import FIGURE_COLUMNS, SPEND_SQL, Figure, RegionSpend, figure_of, spend_of
from suanli.router.ledger.keys import KeyRow
from suanli.router.ledger.rules import debit, hold_q, not_pending
from suanli.router.ledger.sqlite import keys as key_sql
from suanli.router.ledger.sqlite import reads, recovery, space
from suanli.router.ledger.sqlite.adjust import adjust_voucher
from suanli.router.ledger.sqlite.opening import open_with_room
from suanli.router.ledger.sqlite.owners import LIVE_OWNERS, this_process
from suanli.router.ledger.sqlite.schema import connect, migrate, sqlite_options, sqlite_path
from suanli.router.ledger.sqlite.vouchers import sync_vouchers, voucher_statuses
from suanli.router.ledger.types import Hold, HoldRequest, Settlement, UsageRow, VoucherStatus
from suanli.router.ledger.usage import CACHE_COLUMNS, USAGE_COLUMNS, cache_values, usage_row, usage_values

__all__ = ["Hold", "HoldRequest", "Ledger", "Settlement", "UsageRow", "VoucherStatus", "open_readonly"]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

_INSERT_USAGE = f"INSERT INTO usage ({USAGE_COLUMNS}, voucher_q, {CACHE_COLUMNS}) VALUES ({'?, ' * 25}?)"
# A hold's voucher and amount, then the request it was for (as ``usage_values`` takes it).
_HOLD_COLUMNS = "voucher_id, held_q, request_id, key_id, region, model, work_class, origin"
# Resolve a pending hold (state, resolved time, id) and read it back in one statement.
_TAKE_PENDING = (
    f"UPDATE holds SET state = ?, resolved = ? WHERE id = ? AND state = 'pending' RETURNING {_HOLD_COLUMNS}"
)


class Ledger:
    """Voucher balances, pending holds and usage rows in one SQLite file (WAL).

    Writes are here; reads are ``sqlite/reads.py``'s functions, keys' SQL ``sqlite/keys.py``'s,
    every number and usage row ``rules``' and ``usage``'s (shared with the PostgreSQL driver).
    """

    def __init__(self, conn: sqlite3.Connection, *, clock: Clock, owner: str | None,
                 room: space.Room | None = None) -> None:
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
        self.room = room or space.Room(0)  # the full-disk state and the spare kept for settles

    @classmethod
    def open(cls, url: str, vouchers: Sequence[Voucher], *, clock: Clock) -> Ledger:
        """Open (creating and migrating) the ledger at ``url`` for reading and writing.

        Vouchers of the config not yet in the ledger start with balance = amount; those
        already there keep their balance (the ledger is the truth) and get the config's
        metadata. Pending holds whose owner died (a previous process, a closed instance) are
        voided (counted in ``recovered_holds``). ``Ledger.open(url, [], ...)`` touches no voucher.
        """
        path, options = sqlite_options(url)
        room = space.Room(options.spare_pages, None if path in ("", ":memory:") else path)
        owner = secrets.token_hex(6)

        def build(conn: sqlite3.Connection) -> Ledger:
            ledger = cls(conn, clock=clock, owner=owner, room=room)
            ledger._start(vouchers)
            return ledger

        ledger = open_with_room(path, options, room, build)
        if ledger.recovered_holds:
            log.warning("ledger: voided %d pending holds left by a previous process", ledger.recovered_holds)
        return ledger

    def _start(self, vouchers: Sequence[Voucher]) -> None:
        migrate(self._connection())
        with self._immediate() as c:
            sync_vouchers(c, vouchers)
            host, pid, start = this_process()
            c.execute(
                "INSERT OR IGNORE INTO owners (id, host, pid, pid_start, opened) VALUES (?, ?, ?, ?, ?)",
                (self._owner, host, pid, start, self._clock().timestamp()),
            )
        LIVE_OWNERS.add(self._writer())
        self.recovered_holds = self._recover()

    def close(self) -> None:
        """Close the connection; holds still pending are voided by the next open."""
        if self._conn is None:
            return
        if self._owner is not None:
            LIVE_OWNERS.discard(self._owner)
            try:
                with self._immediate() as c:
                    closed = (self._clock().timestamp(), self._owner)
                    c.execute("UPDATE owners SET closed = ? WHERE id = ?", closed)
            except LedgerUnavailableError as exc:  # a full disk: the next open finds this process gone
                log.warning("ledger: could not mark this owner closed: %s", exc.message)
        with self._lock:
            if self._owner is not None:
                self.room.closing(self._conn)  # no WAL left behind, the spare file back for the next start
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def group(self) -> Iterator[None]:
        """Several writes in one transaction and one commit (``sqlite/group.py`` batches with it).

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
    def changes(self) -> int:  # rows this connection has inserted, updated or deleted (total_changes)
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
            try:
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
            except sqlite3.OperationalError as exc:
                if not space.is_transient(exc):
                    raise
                if space.is_full(exc):
                    self.room.now_full("write")
                raise space.unavailable("write", exc) from exc

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
        with self._lock:  # 503 while the disk is full
            self.room.check(self._connection(), probe=not self._grouped)
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
                held_q = hold_q(available_q, req.voucher_units, scale)
            if req.key_budget is not None:
                key_sql.hold_key_budget(c, hold_id, req.key_budget)  # checks both periods, then writes
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
        return Hold(id=hold_id, request_id=req.request_id, voucher_id=req.voucher_id,
                    voucher_units=held_q / scale, created=created)

    def settle(self, hold_id: str, s: Settlement) -> UsageRow:
        """Debit ``s.voucher_units``, release the rest of the hold, append the usage row.

        Idempotent: a settled hold returns its existing row. A voided or unknown hold raises
        LedgerError. Units beyond the hold are clamped (and the excess moved to cash), logged.
        """
        self._writer()
        try:
            return self._settle(hold_id, s)
        except LedgerUnavailableError:
            if self.room.full_since is None or self._grouped:
                raise  # busy or I/O: the caller retries (LedgerHandle.settle); in a group, alone
            # The upstream answered: settle in the room kept back for it.
            with self._lock:
                self.room.give_back(self._connection())
            return self._settle(hold_id, s)

    def _settle(self, hold_id: str, s: Settlement) -> UsageRow:
        now = self._clock().timestamp()
        with self._immediate() as c:
            # Taking the hold and marking it settled is one statement; the usual case.
            rows = c.execute(_TAKE_PENDING, ("settled", now, hold_id)).fetchall()
            if not rows:
                return self._settled_before(c, hold_id)
            voucher_id, held_q, *request = rows[0]
            scale = 1 if voucher_id is None else self._scale(c, voucher_id)
            units_q, s = debit(hold_id, voucher_id, held_q, scale, s)
            if voucher_id is not None:
                c.execute(
                    "UPDATE vouchers SET balance_q = balance_q - ?, held_q = held_q - ? WHERE id = ?",
                    (units_q, held_q, voucher_id),
                )
            key_sql.settle_key_budget(c, hold_id, s.cost_yuan)
            last_id, prev_hash = self._chain_head(c)
            values = usage_values(
                last_id + 1, hold_id, now=now, request=request, voucher_id=voucher_id, s=s,
                voucher_units=units_q / scale,
            )
            hash_ = row_hash(prev_hash, values)
            c.execute(_INSERT_USAGE, (*values, prev_hash, hash_, units_q, *cache_values(s)))
            self._head = (last_id + 1, hash_)
        return usage_row((*values, prev_hash, hash_))

    def _settled_before(self, c: sqlite3.Connection, hold_id: str) -> UsageRow:
        """Settling a hold that is not pending: its usage row if settled, else LedgerError."""
        hold = c.execute("SELECT state FROM holds WHERE id = ?", (hold_id,)).fetchone()
        not_pending(hold_id, None if hold is None else hold[0])
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
            voucher_id, held_q = rows[0][0], rows[0][1]
            if voucher_id is not None:
                c.execute("UPDATE vouchers SET held_q = held_q - ? WHERE id = ?", (held_q, voucher_id))
            key_sql.release_key_budget(c, hold_id)

    def void_stale(self, max_age_s: float) -> int:
        """Void pending holds older than ``max_age_s`` of clock time (any owner); how many."""
        self._writer()
        now = self._clock().timestamp()
        with self._immediate() as c:
            voided = recovery.void_stale(c, now=now, created_before=now - max_age_s)
        if voided:
            log.warning("ledger: voided %d holds pending for over %g s", voided, max_age_s)
        return voided

    def _recover(self) -> int:
        """Void the pending holds of dead owners (sqlite/recovery.py); how many."""
        with self._immediate() as c:
            return recovery.recover(c, now=self._clock().timestamp())

    def mark_exhausted(
        self, *, voucher_id: str | None = None, region: str | None = None, reason: str = ""
    ) -> None:
        """Record that a platform reported this voucher (or this region's cash) exhausted."""
        self._writer()
        now = self._clock().timestamp()
        with self._immediate() as c:
            c.execute(
                f"INSERT INTO exhausted ({MARK_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(account) DO UPDATE SET since = excluded.since, reason = excluded.reason",
                mark_values(voucher_id=voucher_id, region=region, since=now, reason=reason),
            )

    def clear_exhausted(self, *, voucher_id: str | None = None, region: str | None = None) -> None:
        """Forget an exhaustion mark (after a top-up)."""
        self._writer()
        with self._immediate() as c:
            account = account_of(voucher_id=voucher_id, region=region)
            c.execute("DELETE FROM exhausted WHERE account = ?", (account,))

    def adjust(self, voucher_id: str, amount: float, reason: str) -> Adjustment:
        """Top up (``amount`` > 0) or cut a voucher, recorded in the chain (``ledger/adjust.py``)."""
        owner = self._writer()
        with self._immediate() as c:
            done, self._head = adjust_voucher(c, owner=owner, head=self._chain_head(c), voucher_id=voucher_id,
                                              amount=amount, reason=reason, now=self._clock().timestamp())
        return done

    def sync_vouchers(self, vouchers: Sequence[Voucher]) -> None:
        """Vouchers new to the ledger start at their amount; known ones take only metadata (a reload)."""
        with self._immediate() as c:
            sync_vouchers(c, vouchers)

    def create_key(self, row: KeyRow, secret_sha256: str) -> None:
        """Store a new key; its secret only as ``secret_sha256``."""
        with self._immediate() as c:
            key_sql.create_key(c, row, secret_sha256)

    def revoke_key(self, key_id: str, at: float) -> KeyRow:
        """Mark a key revoked at ``at`` (epoch s); revoking twice keeps the first time."""
        with self._immediate() as c:
            found = key_sql.revoke_key(c, key_id, at)
        row = self.key(key_id) if found else None
        if row is None:
            raise LedgerError(f"unknown key {key_id!r}")
        return row

    # Reads: one plain SELECT each (sqlite/reads.py, sqlite/keys.py), under the lock.
    def balance(self, voucher_id: str) -> float:
        """Posted balance of a voucher: amount minus settled spend (pending holds not subtracted)."""
        return reads.balance(self._read, voucher_id)

    def balances(self) -> dict[str, float]:
        """Voucher id -> available units (balance minus pending holds; 0 once marked exhausted)."""
        return reads.balances(self._read)

    def exhausted(self) -> dict[str, dict[str, object]]:
        """``voucher:<id>`` / ``cash:<region>`` -> region, voucher_id, since (epoch s), reason."""
        return reads.exhausted(self._read)

    def vouchers(self) -> list[VoucherStatus]:
        """Every voucher in the ledger (config or not) with balance, holds, spend and burn."""
        with self._lock:
            return voucher_statuses(self._connection(), now=self._clock())

    def pending_holds(self) -> int:
        """How many holds are pending, across every process on this file."""
        return reads.pending_holds(self._read)

    def usage(self, *, since: datetime | None = None, until: datetime | None = None) -> list[UsageRow]:
        """Usage rows settled in ``[since, until)``, in chain order."""
        return reads.usage_between(self._read, since, until)

    def totals(self) -> dict[str, float]:
        """Sums over every usage row: requests, cash_yuan, voucher_yuan, cost_yuan, tokens."""
        return reads.totals(self._read)

    def usage_of_request(self, request_id: str) -> UsageRow | None:
        """The newest usage row of one request id, or None."""
        sql = f"SELECT {USAGE_COLUMNS} FROM usage WHERE request_id = ? ORDER BY id DESC LIMIT 1"
        rows = self._read(sql, (request_id,))
        return usage_row(rows[0]) if rows else None

    def record_figures(self, rows: Sequence[Figure]) -> None:
        """Append platform balance figures (a baseline, a manual reading)."""
        self._writer()
        with self._immediate() as c:
            c.executemany(
                f"INSERT INTO platform_figures ({FIGURE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(f.id, f.region, f.at, f.source, f.unit, f.amount, int(f.baseline), f.note) for f in rows],
            )

    def figures(self) -> list[Figure]:
        """Every recorded figure, oldest first."""
        rows = self._read(f"SELECT {FIGURE_COLUMNS} FROM platform_figures ORDER BY at, id")
        return [figure_of(r) for r in rows]

    def spend_between(self, region: str, since: float, until: float) -> RegionSpend:
        """What usage rows at ``region`` settled in ``(since, until]`` (epoch s) paid, by payer."""
        return spend_of(self._read(SPEND_SQL.format(p1="?", p2="?", p3="?"), (region, since, until)))

    def verify_chain(self) -> int | None:
        """Id of the first usage row whose hash chain is broken, or None if all verify."""
        return reads.verify_chain(self._read)

    def chain_orphans(self) -> tuple[int | None, int]:
        """(first usage row id no settled hold made, how many settled holds lack a usage row)."""
        return reads.chain_orphans(self._read)

    def chain_rows(self, batch: int = 5000) -> Iterator[tuple[int, tuple[Any, ...], str, str]]:
        """Every usage row as ``(id, HASHED_COLUMNS values, prev_hash, hash)``, in id order."""
        return reads.chain_rows(self._read, batch)

    def key_by_secret(self, secret_sha256: str) -> KeyRow | None:
        """The key whose secret hashes to ``secret_sha256`` (revoked or not), or None."""
        return next(iter(key_sql.keys_where(self._read, "secret_sha256 = ?", (secret_sha256,))), None)

    def key(self, key_id: str) -> KeyRow | None:
        return next(iter(key_sql.keys_where(self._read, "id = ?", (key_id,))), None)

    def keys(self) -> list[KeyRow]:
        """Every key, revoked ones included, oldest first."""
        return key_sql.keys_where(self._read)

    def key_spend(self, key_id: str, periods: Sequence[str]) -> dict[str, tuple[float, float]]:
        """Period -> (spent yuan, held yuan) of one key."""
        return key_sql.key_spend(self._read, key_id, periods)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LedgerError("the ledger is closed")
        return self._conn

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        # A plain SELECT in autocommit mode reads one consistent WAL snapshot.
        with self._lock:
            return self._connection().execute(sql, params).fetchall()


def open_readonly(url: str, *, clock: Clock | None = None) -> Ledger:
    """A ledger for reading only (the CLI): no voucher sync, no recovery, writes raise LedgerError.

    It never voids the holds of a server running on the same file.
    """
    path, _ = sqlite_path(url)
    conn = connect(path)
    migrate(conn)
    return Ledger(conn, clock=clock or (lambda: datetime.now(UTC)), owner=None)
