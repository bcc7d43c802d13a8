"""The planner's LP in protobuf's wire format, written from arrays.

``MPModelProto`` filled a row at a time costs a Python call or two per row, and at 64
regions the LP has thousands of rows. Here every variable and every row is written into
one byte buffer with numpy, exactly as protobuf would serialize them (the same bytes:
``tests/unit/optimizer/test_lp_arrays.py``), and ``MergeFromString`` parses it once.
"""

from __future__ import annotations

import numpy as np

__all__ = ["constraints_bytes", "variables_bytes"]

# One MPVariableProto inside MPModelProto.variable (field 3), as protobuf writes it:
# tag 0x1a, length 27, then lower_bound (0x09), upper_bound (0x11), objective (0x19).
_VARIABLE = np.dtype(
    [("tag", "u1"), ("size", "u1"), ("t_lb", "u1"), ("lb", "<f8"), ("t_ub", "u1"), ("ub", "<f8"),
     ("t_obj", "u1"), ("obj", "<f8")]
)  # fmt: skip
_CONSTRAINT, _LOWER, _UPPER, _INDEX, _COEF = 0x22, 0x11, 0x19, 0x32, 0x3A  # field tags
_BYTE8 = np.arange(8)


def variables_bytes(objective: np.ndarray) -> bytes:
    """``MPModelProto.variable`` entries in [0, 1] with these objective coefficients."""
    variables = np.zeros(objective.size, dtype=_VARIABLE)
    variables["tag"], variables["size"] = 0x1A, 27
    variables["t_lb"], variables["t_ub"], variables["t_obj"] = 0x09, 0x11, 0x19
    variables["ub"] = 1.0
    variables["obj"] = objective
    return variables.tobytes()


def constraints_bytes(
    lower: np.ndarray, upper: np.ndarray, counts: np.ndarray, index: np.ndarray, coef: np.ndarray
) -> bytes:
    """``MPModelProto.constraint`` entries: row r has bounds ``lower[r]``, ``upper[r]`` and
    the next ``counts[r]`` terms of (``index``, ``coef``) (rows' terms one after another)."""
    n_rows = lower.size
    row_of = np.repeat(np.arange(n_rows), counts)
    index_size = _varint_size(index)
    index_len = np.bincount(row_of, weights=index_size, minlength=n_rows).astype(np.int64)
    coef_len = 8 * counts.astype(np.int64)
    has = counts > 0
    body = 18 + np.where(has, 2 + _varint_size(index_len) + index_len + _varint_size(coef_len) + coef_len, 0)
    total = 1 + _varint_size(body) + body
    start = np.cumsum(total) - total
    out = np.zeros(int(total.sum()), dtype=np.uint8)
    out[start] = _CONSTRAINT
    at = _put_varint(out, start + 1, body)
    out[at] = _LOWER
    out[(at + 1)[:, None] + _BYTE8] = lower.astype("<f8").view(np.uint8).reshape(-1, 8)
    out[at + 9] = _UPPER
    out[(at + 10)[:, None] + _BYTE8] = upper.astype("<f8").view(np.uint8).reshape(-1, 8)
    at = at + 18
    filled = np.flatnonzero(has)
    at_f = at[filled]
    out[at_f] = _INDEX
    index_at = _put_varint(out, at_f + 1, index_len[filled])  # where each row's indices start
    # each term's index goes after the earlier terms of its row
    first = np.cumsum(counts) - counts
    before = np.cumsum(index_size) - index_size
    row_index_at = np.zeros(n_rows, dtype=np.int64)
    row_index_at[filled] = index_at
    _put_varint(out, row_index_at[row_of] + before - before[first][row_of], index)
    coef_tag = index_at + index_len[filled]
    out[coef_tag] = _COEF
    coef_at = _put_varint(out, coef_tag + 1, coef_len[filled])
    row_coef_at = np.zeros(n_rows, dtype=np.int64)
    row_coef_at[filled] = coef_at
    term = np.arange(index.size) - first[row_of]
    out[(row_coef_at[row_of] + 8 * term)[:, None] + _BYTE8] = coef.astype("<f8").view(np.uint8).reshape(-1, 8)
    return out.tobytes()


def _varint_size(values: np.ndarray) -> np.ndarray:
    # bytes of each non-negative value as a protobuf varint
    size = np.ones(values.shape, dtype=np.int64)
    for bits in (7, 14, 21, 28, 35, 42, 49, 56, 63):
        size += values >= (1 << bits)
    return size


def _put_varint(out: np.ndarray, at: np.ndarray, values: np.ndarray) -> np.ndarray:
    # write each value as a varint at its position; where each one ends
    values = values.astype(np.int64)
    size = _varint_size(values)
    for b in range(int(size.max()) if size.size else 0):
        more = size > b
        byte = (values[more] >> (7 * b)) & 0x7F
        out[at[more] + b] = byte | np.where(size[more] > b + 1, 0x80, 0)
    return at + size
