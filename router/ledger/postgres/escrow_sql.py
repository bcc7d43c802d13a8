"""The escrow's tables and statements (``postgres/escrow.py``); why each is safe across replicas.

A lease is a slice of one account a replica may spend without asking the database again:
a voucher's balance (``voucher_id``) or one period of a key's budget (``key_id``,
``period``). Taking a lease adds it to the account's ``held_q`` in one short transaction,
under the row's lock and its CHECK (``held_q <= balance_q`` for a voucher, the limit for a
key period), so the sum of live slices never exceeds what the account has. Settling inside
a slice touches only the replica's own lease row (``used_q``); every second the replica
*posts* what it used (``posted_q``) to the account row, and a returned lease gives back
``leased_q - posted_q`` of ``held_q``. Lock order: leases -> key_spend -> vouchers, as the
per-hold path (holds -> key_spend -> vouchers -> chain_head).

An account's contribution to ``held_q`` from one live lease is ``max(leased - posted, 0)``;
what it has spent but not yet posted is ``used - posted``. Readers of the posted balance
(``VOUCHER_BOOKS``, ``KEY_BOOKS``) add that back, so a balance reads the same whether the
spend is posted yet or not.
"""

from __future__ import annotations

from suanli.router.ledger.usage import CACHE_COLUMNS, USAGE_COLUMNS

__all__ = [
    "ESCROW_MIGRATION",
    "FLUSH",
    "FLUSH_ARRAYS",
    "KEY_BOOKS",
    "POST_OWN",
    "RETURN_DEAD",
    "RECALL",
    "RETURN_IDS",
    "SHRINK",
    "TAKE_IDS",
    "VOUCHER_BOOKS",
]

ESCROW_MIGRATION: tuple[str, ...] = (
    # One hash chain per replica (usage.chain = the chain's id; '' is the per-hold path's chain).
    "ALTER TABLE usage ADD COLUMN chain TEXT NOT NULL DEFAULT ''",
    "CREATE INDEX usage_chain ON usage(chain, id)",
    # Usage ids for every chain, so chains never collide and ids still order rows in time.
    "CREATE SEQUENCE usage_ids",
    "SELECT setval('usage_ids', GREATEST((SELECT COALESCE(max(id), 0) FROM usage),"
    " (SELECT last_id FROM chain_head)) + 1, false)",
    # Each chain's head as its writer last committed it: the audit checks every chain ends
    # there, and seals them into one root (ledger/audit.py).
    """CREATE TABLE chains (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        opened DOUBLE PRECISION NOT NULL,
        last_id BIGINT NOT NULL DEFAULT 0,
        last_hash TEXT NOT NULL,
        rows BIGINT NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE leases (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        voucher_id TEXT,
        key_id TEXT,
        period TEXT,
        leased_q BIGINT NOT NULL DEFAULT 0 CHECK (leased_q >= 0),
        used_q BIGINT NOT NULL DEFAULT 0,
        posted_q BIGINT NOT NULL DEFAULT 0,
        epoch BIGINT NOT NULL DEFAULT 0,
        opened DOUBLE PRECISION NOT NULL,
        state TEXT NOT NULL DEFAULT 'live',
        returned DOUBLE PRECISION
    )""",
    "CREATE INDEX leases_live ON leases(owner) WHERE state = 'live'",
    # Bumped to recall every slice of a voucher (a replica short of it, a central adjust).
    "ALTER TABLE vouchers ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0",
    # What each replica did, for benchmarks/replicas.py and status: round trips per request.
    """CREATE TABLE replica_stats (
        owner TEXT PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        round_trips BIGINT NOT NULL,
        reserves BIGINT NOT NULL,
        settles BIGINT NOT NULL,
        leases BIGINT NOT NULL,
        flushes BIGINT NOT NULL,
        path_trips BIGINT NOT NULL
    )""",
)

_LIVE = "SELECT voucher_id, key_id, period, sum(used_q - posted_q) AS unposted,"
_LIVE += " sum(GREATEST(leased_q - posted_q, 0)) AS outstanding FROM leases WHERE state = 'live'"

# The vouchers as the per-hold path would show them: spend inside live slices counted as
# spent, their unspent rest as available (it is, to the replica holding it), and held_q
# only what per-hold holds keep. Used as a table: ``FROM {VOUCHER_BOOKS}``.
VOUCHER_BOOKS = (
    "(SELECT v.id, v.region, v.kind, v.scale, v.amount_q, v.valid_from, v.expires,"
    " (v.balance_q - COALESCE(l.unposted, 0))::bigint AS balance_q,"
    " (v.held_q - COALESCE(l.outstanding, 0))::bigint AS held_q"
    f" FROM vouchers v LEFT JOIN ({_LIVE} AND voucher_id IS NOT NULL GROUP BY 1, 2, 3) l"
    " ON l.voucher_id = v.id) AS vouchers"
)
KEY_BOOKS = (
    "(SELECT k.key_id, k.period, (k.spent_q + COALESCE(l.unposted, 0))::bigint AS spent_q,"
    " (k.held_q - COALESCE(l.outstanding, 0))::bigint AS held_q"
    f" FROM key_spend k LEFT JOIN ({_LIVE} AND key_id IS NOT NULL GROUP BY 1, 2, 3) l"
    " ON l.key_id = k.key_id AND l.period = k.period) AS key_spend"
)


def _settle_leases(pick: str, *, returning: bool) -> str:
    """Post (and, ``returning``, return) the live leases ``pick`` selects, in one statement.

    ``pick`` is SQL over ``leases`` after ``WHERE state = 'live' AND``; $1 is the time. The
    leases are locked first (SKIP LOCKED for a peer's: an owner flushing into its lease right
    now keeps it this round), then the accounts, in id order: never a deadlock.
    """
    state = ", state = 'returned', returned = $1" if returning else ""
    held = "l.rest" if returning else "LEAST(l.d, l.rest)"
    return (
        "WITH l AS (SELECT id, voucher_id, key_id, period, used_q, used_q - posted_q AS d,"
        f" GREATEST(leased_q - posted_q, 0) AS rest, $1::float8 AS at FROM leases"
        f" WHERE state = 'live' AND ({pick})"
        " ORDER BY id FOR UPDATE SKIP LOCKED),"
        f" p AS (UPDATE leases SET posted_q = l.used_q{state} FROM l WHERE leases.id = l.id),"
        f" s AS (SELECT voucher_id, key_id, period, sum(l.d) AS d, sum({held}) AS h FROM l GROUP BY 1, 2, 3),"
        " v AS (UPDATE vouchers SET balance_q = vouchers.balance_q - s.d, held_q = vouchers.held_q - s.h"
        " FROM s WHERE vouchers.id = s.voucher_id),"
        " k AS (UPDATE key_spend SET spent_q = key_spend.spent_q + s.d, held_q = key_spend.held_q - s.h"
        " FROM s WHERE key_spend.key_id = s.key_id AND key_spend.period = s.period)"
        " SELECT l.id FROM l"
    )


# $1 now, $2 owner: move this replica's spend into the account rows (the 1 s tick).
POST_OWN = _settle_leases("owner = $2 AND used_q <> posted_q", returning=False)
# $1 now, $2 lease ids: return them (idle slices, a recall, close).
RETURN_IDS = _settle_leases("id = ANY($2::text[])", returning=True)
# $1 now, $2 dead owner ids: their slices come back (kill -9, a replica silent past the lease TTL).
RETURN_DEAD = _settle_leases("owner = ANY($2::text[]) OR owner NOT IN (SELECT id FROM owners)",
                             returning=True)

# $1 lease id, $2 what it keeps (>= what it used and holds): the rest of a recalled voucher
# slice goes back while the replica keeps serving from it.
SHRINK = (
    "WITH l AS (SELECT id, voucher_id, leased_q FROM leases WHERE id = $1 AND state = 'live'"
    " AND leased_q > $2::bigint FOR UPDATE),"
    " u AS (UPDATE leases SET leased_q = $2 FROM l WHERE leases.id = l.id)"
    " UPDATE vouchers SET held_q = vouchers.held_q - (l.leased_q - $2) FROM l"
    " WHERE vouchers.id = l.voucher_id"
    " RETURNING l.id"
)
# A central change of a voucher (a top-up, a cut: /admin/vouchers/{id}/adjust): bump the
# epoch in the same transaction, and every replica gives back the free part of its slice at
# its next tick. A cut can take at most balance_q - held_q at once (the CHECK), so it is
# floored at what slices and holds keep: cut that now and the rest once they are back.
RECALL = "UPDATE vouchers SET lease_epoch = lease_epoch + 1 WHERE id = $1"

# $1 how many usage ids: a block for this replica's chain.
TAKE_IDS = "SELECT nextval('usage_ids') FROM generate_series(1, $1)"

_HOLD_COLUMNS = ("id", "request_id", "key_id", "region", "model", "work_class", "origin", "voucher_id",
                 "scale", "held_q", "created")
_HOLD_TYPES = ("text", "text", "text", "text", "text", "text", "text", "text", "int8", "int8", "float8")
_USAGE_TYPES = ("int8", "text", "text", "float8", "text", "text", "text", "text", "text", "text", "int8",
                "int8", "int8", "float8", "float8", "float8", "float8", "float8", "float8", "int8", "int8",
                "text", "text")
_USAGE_NAMES = tuple(c.strip() for c in USAGE_COLUMNS.split(","))
# Per row: the hold, its usage row, what it debits (units_q) of which voucher lease, and the
# key-period leases it posts cost to (klease1/2, kcost, kheld = what comes off held), and its
# prompt-cache figures (c_tokens, c_saved: beside the chain, not in it).
_EXTRA = (("units_q", "int8"), ("vlease", "text"), ("klease1", "text"), ("klease2", "text"),
          ("kcost", "int8"), ("c_tokens", "int8"), ("c_saved", "float8"))
_ARRAYS = (
    [(f"h_{c}", t) for c, t in zip(_HOLD_COLUMNS, _HOLD_TYPES, strict=True)]
    + [(f"u_{c}", t) for c, t in zip(_USAGE_NAMES, _USAGE_TYPES, strict=True)]
    + list(_EXTRA)
)
_N = len(_ARRAYS)
_UNNEST = ", ".join(f"${i + 5}::{t}[]" for i, (_, t) in enumerate(_ARRAYS))
_NAMES = ", ".join(n for n, _ in _ARRAYS)

# One round trip for a batch of settles: the settled holds, their usage rows (this replica's
# chain), the spend on this replica's leases and its chain head. $1 owner, $2 now, $3 this
# chain's id, $4 the lease ids the batch spends on: if any is no longer live (a peer returned
# it: this replica was silent past the TTL) nothing is written and the batch is redone.
# A hold already settled (a retry after a lost answer) is skipped with its row and spend.
FLUSH = (
    f"WITH b AS (SELECT * FROM unnest({_UNNEST}) AS b({_NAMES})),"
    " g AS (SELECT id FROM leases WHERE id = ANY($4::text[]) AND state = 'live' FOR UPDATE),"
    " ins AS (INSERT INTO holds (id, owner, request_id, key_id, region, model, work_class, origin,"
    " voucher_id, scale, held_q, held_units, created, state, resolved)"
    " SELECT h_id, $1, h_request_id, h_key_id, h_region, h_model, h_work_class, h_origin, h_voucher_id,"
    " h_scale, h_held_q, h_held_q::float8 / h_scale, h_created, 'settled', $2 FROM b"
    " WHERE (SELECT count(*) FROM g) = cardinality($4::text[])"
    " ON CONFLICT (id) DO NOTHING RETURNING id),"
    " bb AS (SELECT b.* FROM b JOIN ins ON ins.id = b.h_id),"
    f" u AS (INSERT INTO usage ({USAGE_COLUMNS}, voucher_q, chain, {CACHE_COLUMNS})"
    f" SELECT {', '.join(f'u_{c}' for c in _USAGE_NAMES)}, units_q, $3, c_tokens, c_saved FROM bb),"
    " s AS (SELECT vlease AS id, units_q AS q FROM bb WHERE vlease IS NOT NULL"
    " UNION ALL SELECT klease1, kcost FROM bb WHERE klease1 IS NOT NULL"
    " UNION ALL SELECT klease2, kcost FROM bb WHERE klease2 IS NOT NULL),"
    " l AS (UPDATE leases SET used_q = leases.used_q + t.q FROM (SELECT id, sum(q) AS q FROM s GROUP BY id) t"
    " WHERE leases.id = t.id),"
    " c AS (UPDATE chains SET last_id = x.id, last_hash = x.hash, rows = chains.rows + x.n"
    " FROM (SELECT max(u_id) AS id, (array_agg(u_hash ORDER BY u_id DESC))[1] AS hash, count(*) AS n"
    " FROM bb) x WHERE chains.id = $3 AND x.n > 0)"
    " SELECT (SELECT count(*) FROM g) AS live, (SELECT count(*) FROM ins) AS written"
)
FLUSH_ARRAYS = _N  # how many arrays FLUSH takes after its four scalars
