"""The PostgreSQL ledger's statements, each one round trip; why each is safe under READ COMMITTED.

Row locks are always taken in the order holds -> vouchers -> chain_head, so two replicas
never deadlock. Every statement that changes money is one statement (data-modifying CTEs
run to completion in one snapshot) or runs inside one short transaction.
"""

from __future__ import annotations

from suanli.router.ledger.usage import CACHE_COLUMNS, USAGE_COLUMNS

__all__ = [
    "APPEND_SETTLED",
    "APPEND_USAGE",
    "CLAIM_HOLD",
    "DEBIT_VOUCHER",
    "DROP_DEAD_OWNERS",
    "HELD_OWNER_KEYS",
    "HOLD_STATE",
    "INSERT_CASH_HOLD",
    "LOCK_CHAIN",
    "NEXT_USAGE_ID",
    "RESERVE",
    "VOID_ONE",
    "VOID_OWNERS",
    "VOID_STALE",
]

_HOLD_INSERT = (
    "INSERT INTO holds (id, owner, request_id, key_id, region, model, work_class, origin, voucher_id,"
    " scale, held_q, held_units, created)"
)

# The hold: one conditional UPDATE ... WHERE balance_q > held_q ... RETURNING. Under READ
# COMMITTED a concurrent UPDATE of the same row makes this one wait, then re-check WHERE and
# re-compute SET on the newest committed version, so held_q can never pass balance_q (the
# CHECK constraint would refuse it anyway). PostgreSQL 15 cannot RETURN the old row, so the
# amount taken is written to last_hold_q by the same UPDATE and returned from there; the hold
# row is inserted by the same statement. $1 id, $2 owner, $3 request, $4 key, $5 region,
# $6 model, $7 class, $8 origin, $9 voucher, $10 units wanted (x scale), $11 created.
RESERVE = (
    "WITH v AS ("
    " UPDATE vouchers SET last_hold_q = LEAST(balance_q - held_q, $10::bigint),"
    " held_q = held_q + LEAST(balance_q - held_q, $10::bigint)"
    " WHERE id = $9 AND balance_q > held_q RETURNING id, scale, last_hold_q) "
    f"{_HOLD_INSERT} SELECT $1, $2, $3, $4, $5, $6, $7, $8, v.id, v.scale, v.last_hold_q,"
    " v.last_hold_q::float8 / v.scale, $11 FROM v RETURNING held_q, scale"
)

INSERT_CASH_HOLD = f"{_HOLD_INSERT} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, 1, 0, 0, $9)"

# Settle, step 1: flip pending -> settled; the row lock makes a concurrent settle or void wait,
# and after it commits this one finds state <> 'pending' and claims nothing: idempotent. The
# request's columns come first, in the order ``usage.usage_values`` takes them.
CLAIM_HOLD = (
    "UPDATE holds SET state = 'settled', resolved = $1 WHERE id = $2 AND state = 'pending'"
    " RETURNING request_id, key_id, region, model, work_class, origin, voucher_id, scale, held_q"
)
HOLD_STATE = "SELECT state FROM holds WHERE id = $1"

# Settle, step 2: post the debit and release the whole hold.
DEBIT_VOUCHER = "UPDATE vouchers SET balance_q = balance_q - $1, held_q = held_q - $2 WHERE id = $3"

# Settle, step 3: the chain tail, locked until COMMIT, so usage ids and links are one order.
LOCK_CHAIN = "SELECT last_hash FROM chain_head FOR UPDATE"
# The row's id, taken once the tail is locked (the escrow's chains take theirs from the same sequence).
NEXT_USAGE_ID = "SELECT nextval('usage_ids')"

APPEND_USAGE = (
    "WITH head AS (UPDATE chain_head SET last_id = $1, last_hash = $23) "
    f"INSERT INTO usage ({USAGE_COLUMNS}, voucher_q) VALUES ({', '.join(f'${i}' for i in range(1, 25))})"
)
# A settle's row: APPEND_USAGE and the prompt-cache figures beside the chain.
APPEND_SETTLED = (
    "WITH head AS (UPDATE chain_head SET last_id = $1, last_hash = $23) "
    f"INSERT INTO usage ({USAGE_COLUMNS}, voucher_q, {CACHE_COLUMNS})"
    f" VALUES ({', '.join(f'${i}' for i in range(1, 27))})"
)

VOID_ONE = (
    "WITH h AS (UPDATE holds SET state = 'voided', resolved = $1 WHERE id = $2 AND state = 'pending'"
    " RETURNING voucher_id, held_q),"
    " v AS (UPDATE vouchers SET held_q = vouchers.held_q - h.held_q FROM h WHERE vouchers.id = h.voucher_id)"
    " SELECT count(*) FROM h"
)


def _void_where(condition: str) -> str:
    """One statement voiding the pending holds matching ``condition`` (SQL over ``holds``).

    SKIP LOCKED leaves a hold that is being settled or voided right now to its owner; the
    candidates are locked in id order, and the voucher rows after them, as everywhere.
    """
    return (
        "WITH t AS (SELECT id FROM holds WHERE state = 'pending' AND "
        f"({condition}) ORDER BY id FOR UPDATE SKIP LOCKED),"
        " h AS (UPDATE holds SET state = 'voided', resolved = $1 FROM t"
        " WHERE holds.id = t.id AND holds.state = 'pending' RETURNING holds.voucher_id, holds.held_q),"
        " s AS (SELECT voucher_id, SUM(held_q) AS q FROM h WHERE voucher_id IS NOT NULL GROUP BY voucher_id),"
        " v AS (UPDATE vouchers SET held_q = vouchers.held_q - s.q FROM s WHERE vouchers.id = s.voucher_id)"
        " SELECT count(*) FROM h"
    )


# $1 now, $2 owner ids whose holds can never be settled.
VOID_OWNERS = _void_where("owner = ANY($2::text[])")
# $1 now, $2 created before.
VOID_STALE = _void_where("created < $2")

# Second keys of the owner advisory locks granted in this database right now; $1 the lock space.
HELD_OWNER_KEYS = (
    "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2"
    " AND classid = $1::bigint::oid"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)

# Owners gone for good (in $1) that hold nothing any more.
DROP_DEAD_OWNERS = (
    "DELETE FROM owners o WHERE o.id = ANY($1::text[])"
    " AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.owner = o.id AND h.state = 'pending')"
)
