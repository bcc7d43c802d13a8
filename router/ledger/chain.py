"""The hash chain over usage rows, so an export for a subsidy claim can be verified.

``hash = sha256(prev_hash + "\\n" + json([id, hold_id, request_id, time, key_id, region,
model, work_class, origin, voucher_id, prompt_tokens, completion_tokens, tokens, cost_yuan,
cash_yuan, voucher_units, voucher_yuan, latency_ms, ttft_ms, attempts, status]))`` with
compact JSON (separators "," and ":"), REAL columns as floats (0 hashes as 0.0), floats in
shortest round-trip form, and the first row's ``prev_hash`` equal to ``GENESIS``. Editing,
dropping or reordering any row breaks every hash after it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence

import orjson

__all__ = ["GENESIS", "HASHED_COLUMNS", "canonical_json", "chain_root", "first_broken", "row_hash"]

GENESIS = "0" * 64

HASHED_COLUMNS = (
    "id",
    "hold_id",
    "request_id",
    "time",
    "key_id",
    "region",
    "model",
    "work_class",
    "origin",
    "voucher_id",
    "prompt_tokens",
    "completion_tokens",
    "tokens",
    "cost_yuan",
    "cash_yuan",
    "voucher_units",
    "voucher_yuan",
    "latency_ms",
    "ttft_ms",
    "attempts",
    "status",
)

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

# Positions of the REAL columns: hashed as floats whatever type the writer passed, so a
# settlement given 0 (int) hashes as the 0.0 that SQLite stores and an audit reads back.
_REAL = tuple(
    HASHED_COLUMNS.index(c)
    for c in ("time", "cost_yuan", "cash_yuan", "voucher_units", "voucher_yuan", "latency_ms", "ttft_ms")
)


_PLAIN = frozenset((str, int, bool, type(None)))


def row_hash(prev_hash: str, values: Sequence[object]) -> str:
    """The hash of one row, given the previous row's hash and its HASHED_COLUMNS values."""
    canonical = list(values)
    for i in _REAL:
        if isinstance(canonical[i], int):
            canonical[i] = float(canonical[i])
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical_json(canonical)).hexdigest()


def canonical_json(values: list[object]) -> bytes:
    """``values`` as the chain's JSON (the ``json`` module's compact form, UTF-8), fast.

    orjson writes the same bytes for strings, ints, None and the floats Python prints without
    an exponent (0 and 1e-4 <= |x| < 1e16); Python writes 1e-05 where orjson writes 0.00001,
    so any other float, anything but a plain scalar, and what orjson refuses (ints beyond 64
    bits) take the json module.
    """
    for v in values:
        kind = type(v)
        if kind is float:
            if v != 0.0 and not 1e-4 <= abs(v) < 1e16:  # NaN fails both tests, as it should
                return _dumps(values).encode()
        elif kind not in _PLAIN:
            return _dumps(values).encode()
    try:
        return orjson.dumps(values)
    except TypeError:  # orjson.JSONEncodeError: an int beyond 64 bits, an unknown type
        return _dumps(values).encode()


def first_broken(rows: Iterable[tuple[int, Sequence[object], str, str]]) -> int | None:
    """Id of the first row whose chain does not verify, or None.

    ``rows`` are ``(id, HASHED_COLUMNS values, prev_hash, hash)`` in id order.
    """
    expected_prev = GENESIS
    for row_id, values, prev_hash, hash_ in rows:
        if prev_hash != expected_prev or row_hash(prev_hash, values) != hash_:
            return row_id
        expected_prev = hash_
    return None


def chain_root(heads: Iterable[tuple[str, int, int, str]]) -> str:
    """One hash sealing several chains' heads ``(chain id, rows, head row id, head hash)``.

    sha256 over the heads sorted by chain id, one ``id rows row hash`` line each: publishing
    the root pins every replica's chain at once, as a head pins the single chain.
    """
    lines = "".join(f"{name} {rows} {row_id} {hash_}\n" for name, rows, row_id, hash_ in sorted(heads))
    return hashlib.sha256(lines.encode()).hexdigest()
