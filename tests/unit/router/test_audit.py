"""The audit: each way of tampering with the usage chain is named, at the right row."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from suanli.router.ledger.audit import ChainBrokenError, export_csv, parse_bound, verify
from suanli.router.ledger.chain import HASHED_COLUMNS, row_hash
from suanli.router.ledger.keys import KeyBudgetHold
from suanli.router.ledger.sqlite.ledger import HoldRequest, Ledger, Settlement

START = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
SHANGHAI = ZoneInfo("Asia/Shanghai")


def _ledger(path: Path, rows: int = 6) -> Ledger:
    ledger = Ledger.open(f"sqlite:///{path}", [], clock=lambda: START)
    for i in range(rows):
        hold = ledger.reserve(HoldRequest(request_id=f"req-{i}", region="wuhan", model="m",
                                          work_class="batch", origin="east", voucher_id=None,
                                          voucher_units=0, key_id="k1"))
        ledger.settle(hold.id, Settlement(prompt_tokens=10 + i, completion_tokens=5, tokens=15 + i,
                                          cost_yuan=0.01 * (i + 1), cash_yuan=0.01 * (i + 1), voucher_units=0,
                                          voucher_yuan=0, latency_ms=100.0, ttft_ms=None))
    return ledger


@pytest.fixture
def db(tmp_path: Path):
    path = tmp_path / "ledger.db"
    ledger = _ledger(path)
    conn = sqlite3.connect(path, isolation_level=None)
    yield ledger, conn
    conn.close()
    ledger.close()


def _rehash(conn: sqlite3.Connection, row_id: int) -> None:
    """What a careful forger does: recompute a row's own hash after editing it."""
    columns = ", ".join(HASHED_COLUMNS)
    *values, prev = conn.execute(f"SELECT {columns}, prev_hash FROM usage WHERE id = ?", (row_id,)).fetchone()
    conn.execute("UPDATE usage SET hash = ? WHERE id = ?", (row_hash(prev, values), row_id))


def _insert(conn: sqlite3.Connection, row: dict) -> None:
    marks = ", ".join("?" * len(row))
    conn.execute(f"INSERT INTO usage ({', '.join(row)}) VALUES ({marks})", list(row.values()))


def test_an_untouched_chain_verifies_with_its_head(db):
    ledger, conn = db
    report = verify(ledger)
    assert report.ok and report.rows == 6 and report.head_id == 6
    assert report.head_hash == conn.execute("SELECT hash FROM usage WHERE id = 6").fetchone()[0]


def test_an_edited_row_is_named(db):
    ledger, conn = db
    conn.execute("UPDATE usage SET cash_yuan = 0.0 WHERE id = 3")
    report = verify(ledger)
    assert (report.problem, report.row_id) == ("changed", 3)


def test_an_edited_and_rehashed_row_is_named(db):
    ledger, conn = db
    conn.execute("UPDATE usage SET tokens = 1 WHERE id = 4")
    _rehash(conn, 4)
    report = verify(ledger)
    assert (report.problem, report.row_id) == ("changed", 4)


def test_a_deleted_row_is_named(db):
    ledger, conn = db
    conn.execute("DELETE FROM usage WHERE id = 2")
    report = verify(ledger)
    assert (report.problem, report.row_id) == ("deleted", 2)


def test_deleting_the_last_rows_is_caught_by_the_holds(db):
    ledger, conn = db
    conn.execute("DELETE FROM usage WHERE id >= 5")
    report = verify(ledger)
    assert report.problem == "deleted" and report.row_id == 5
    assert "2 settled request(s)" in report.message


def test_a_forged_row_appended_with_a_valid_hash_is_named(db):
    ledger, conn = db
    last = conn.execute("SELECT * FROM usage WHERE id = 6").fetchone()
    names = [c[1] for c in conn.execute("PRAGMA table_info(usage)")]
    row = dict(zip(names, last, strict=True))
    row.update(id=7, hold_id="forged", request_id="req-forged", prev_hash=row["hash"])
    row["hash"] = row_hash(row["prev_hash"], [row[c] for c in HASHED_COLUMNS])
    _insert(conn, row)
    report = verify(ledger)
    assert (report.problem, report.row_id) == ("inserted", 7)


def test_a_row_inserted_in_the_middle_is_named(db):
    ledger, conn = db
    # Make room after row 3 (ids are part of the hash, so the shifted rows no longer verify) ...
    for row_id in (6, 5, 4):
        conn.execute("UPDATE usage SET id = id + 1, hold_id = hold_id || '-x' WHERE id = ?", (row_id,))
    # ... and put a well-formed row there, chained to row 3.
    names = [c[1] for c in conn.execute("PRAGMA table_info(usage)")]
    row = dict(zip(names, conn.execute("SELECT * FROM usage WHERE id = 3").fetchone(), strict=True))
    row.update(id=4, hold_id="forged", request_id="req-forged", prev_hash=row["hash"])
    row["hash"] = row_hash(row["prev_hash"], [row[c] for c in HASHED_COLUMNS])
    _insert(conn, row)
    report = verify(ledger)
    assert (report.problem, report.row_id) == ("inserted", 4)


def test_export_refuses_a_broken_chain(db):
    ledger, conn = db
    assert "req-5" in export_csv(ledger, voucher=None, since=None, until=None, tz=SHANGHAI)
    conn.execute("UPDATE usage SET model = 'other' WHERE id = 1")
    with pytest.raises(ChainBrokenError, match="row 1 was changed"):
        export_csv(ledger, voucher=None, since=None, until=None, tz=SHANGHAI)


def test_bounds_are_local_days_with_an_inclusive_end():
    assert parse_bound("2026-12-01", SHANGHAI, end=False) == datetime(2026, 12, 1, tzinfo=SHANGHAI)
    assert parse_bound("2026-12-01", SHANGHAI, end=True) == datetime(2026, 12, 2, tzinfo=SHANGHAI)
    assert parse_bound("2026-12-01T10:00:00Z", SHANGHAI, end=True) == datetime(2026, 12, 1, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="neither a date"):
        parse_bound("yesterday", SHANGHAI, end=False)


def test_a_key_budget_held_by_a_dead_process_is_released_on_restart(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    budget = KeyBudgetHold(key_id="k1", day="day:2026-12-01", month="month:2026-12", amount_yuan=1.0,
                           day_limit_yuan=1.5, month_limit_yuan=None)
    request = HoldRequest(request_id="r", region="wuhan", model="m", work_class="batch", origin="east",
                          voucher_id=None, voucher_units=0, key_id="k1", key_budget=budget)
    first = Ledger.open(url, [], clock=lambda: START)
    first.reserve(request)
    with pytest.raises(Exception, match="budget of 1.5 yuan today"):
        first.reserve(request)
    first.close()  # the hold is never settled: its owner is gone
    second = Ledger.open(url, [], clock=lambda: START + timedelta(seconds=1))
    assert second.recovered_holds == 1
    assert second.key_spend("k1", ["day:2026-12-01"]) == {"day:2026-12-01": (0.0, 0.0)}
    second.reserve(request)  # the budget is whole again
    second.close()


def _rehash_from(conn: sqlite3.Connection, first: int) -> None:
    """A forger who knows the algorithm: re-chain every row from ``first`` on."""
    columns = ", ".join(HASHED_COLUMNS)
    (prev,) = conn.execute("SELECT hash FROM usage WHERE id = ?", (first - 1,)).fetchone()
    for row in conn.execute(f"SELECT {columns} FROM usage WHERE id >= ? ORDER BY id", (first,)).fetchall():
        digest = row_hash(prev, row)
        conn.execute("UPDATE usage SET prev_hash = ?, hash = ? WHERE id = ?", (prev, digest, row[0]))
        prev = digest


def test_an_anchor_catches_a_fully_rehashed_forgery(db):
    ledger, conn = db
    anchor = (5, conn.execute("SELECT hash FROM usage WHERE id = 5").fetchone()[0])
    assert verify(ledger, anchor=anchor).ok
    conn.execute("UPDATE usage SET cost_yuan = 0.001 WHERE id = 2")
    _rehash_from(conn, 2)
    assert verify(ledger).ok  # self-consistent again: only a published head can tell
    report = verify(ledger, anchor=anchor)
    assert (report.problem, report.row_id) == ("changed", 5)


def test_an_anchor_catches_a_truncation_that_also_dropped_the_holds(db):
    ledger, conn = db
    anchor = (6, conn.execute("SELECT hash FROM usage WHERE id = 6").fetchone()[0])
    conn.execute("DELETE FROM holds WHERE id IN (SELECT hold_id FROM usage WHERE id >= 5)")
    conn.execute("DELETE FROM usage WHERE id >= 5")
    assert verify(ledger).ok
    report = verify(ledger, anchor=anchor)
    assert (report.problem, report.row_id) == ("deleted", 5)
