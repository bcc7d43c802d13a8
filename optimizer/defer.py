"""The deferral scheduler: when and where work that may wait (batch, training) starts.

For a job with start window ``[now, latest]`` every (region, slot, payment) of the plan
gets the chooser's score (cash + voucher shadow price x units + capacity price),
linear in the job's input and output tokens; the least wins, and the job is booked in
the first clock minute of that slot with room left after the interactive traffic the
plan expects there. "Start now" is simply the case where the current slot wins. When no
planned slot has room the job takes the earliest minute with room anywhere, so no
deadline is missed while feasible capacity exists.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from suanli.config import Config, WorkClass, Zone
from suanli.optimizer.capacity import CapacityBook, minute_of
from suanli.optimizer.choose import VOUCHER_TIE
from suanli.optimizer.index import Candidate, ConfigIndex, index_for
from suanli.optimizer.packages import renewals
from suanli.optimizer.snapshot import Job, Placement, Plan

if TYPE_CHECKING:  # numpy (~13 MB) loads on first use: a proxy without batch work never needs it
    import numpy as np

__all__ = ["Deferrer"]

_INF = float("inf")
_RESERVE_FACTOR = 1.5  # book batch only beyond 1.5x the interactive load the plan expects
_INTERACTIVE_FLOOR = 0.3  # share of a minute's limits batch leaves free where interactive runs
_MAX_TRIES = 64
# A voucher entry's score is shrunk by ``choose.VOUCHER_TIE`` (so it wins near-ties with
# cash), and among equal slots the earlier wins.
_VOUCHER_WINS = 1 - VOUCHER_TIE
_DELAY_TIE = 1e-9


@dataclass(frozen=True, slots=True)
class _Table:
    # entries e over (candidate, slot, payment), sorted by slot; score = (I, O, 1) . coef[:, e]
    slot: np.ndarray
    coef: np.ndarray  # shape (3, entries): rows a_in, a_out, c
    cand: tuple[Candidate, ...]
    entry_voucher: tuple[str | None, ...]
    cand_of: tuple[int, ...]  # entry -> index into cand
    # The request path reads these one item at a time: Python tuples, not numpy arrays,
    # whose item reads cost a dispatch and a boxed scalar each.
    slot_of: tuple[int, ...]  # entry -> slot
    offsets: tuple[int, ...]  # slot k's entries are [offsets[k], offsets[k + 1])
    # voucher units one reference input / output token draws (0 on cash entries)
    need_in: tuple[float, ...]
    need_out: tuple[float, ...]
    # the same, and entry -> the cash entry of the same region and slot, for ``_rescore``
    need_in_array: np.ndarray
    need_out_array: np.ndarray
    cash_entry: np.ndarray
    entries: dict[str, np.ndarray]  # voucher id -> its entries, sorted
    # fronts[k0]: (entry, a_in, a_out, c) of the entries from slot k0 on that no earlier
    # such entry dominates (is at most as dear in all three coefficients); only these can
    # score least in a window from slot k0. For k0 = 0 and 1: a plan is replaced before
    # its second slot is over, nearly always.
    fronts: tuple[tuple[tuple[int, float, float, float], ...], ...]


class Deferrer:
    """Places deferrable jobs with the prices of the current plan (set by ``set_plan``)."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._index: ConfigIndex = index_for(config)
        self._plan: Plan | None = None
        self._spent: frozenset[str] = frozenset()  # vouchers with no free units at the last plan
        # packages and capped vouchers: when each renews next; what each may pay from then on
        # for the placement being made (``place``'s ``renewed``)
        self._renew_at: dict[str, float] = {}
        self._renewed: Mapping[str, float] = {}
        self._tables: dict[tuple[str, str, str], _Table] = {}
        self._full: set[tuple[str, int]] = set()  # (region, slot) with no minute left for batch
        # (region, slot) -> model tokens and requests per minute batch leaves free there,
        # as ``first_fit``'s keyword arguments
        self._reserves: dict[tuple[str, int], dict[str, float]] = {}
        self._cursor: dict[tuple[str, int], int] = {}  # (region, slot) -> first minute worth trying

    @property
    def plan(self) -> Plan | None:
        return self._plan

    def set_plan(self, plan: Plan, *, available: Mapping[str, float] | None = None) -> None:
        """Price later placements with ``plan``; builds its price tables now, off the request path.

        Vouchers with nothing ``available`` (voucher id -> free units) are left out of the
        tables: the plan has no price for them, and they would head every ranking.
        """
        self._spent = frozenset(v for v, units in (available or {}).items() if units <= 0)
        self._renew_at = renewals(self._config, plan.edges[0]) if plan.edges else {}
        tables: dict[tuple[str, str, str], _Table] = {}
        for d in plan.demand:
            if d.work_class != "interactive":
                key = (d.model, d.work_class, d.origin)
                if key not in tables:
                    tables[key] = self._build(plan, d.model, d.work_class, d.origin)
        for key in self._tables:
            if key not in tables:
                tables[key] = self._build(plan, *key)
        self._plan = plan
        self._tables = tables
        self._reserves = self._reserves_for(plan)
        self._full = set()
        self._cursor = {}

    def place(
        self,
        job: Job,
        now_s: float,
        book: CapacityBook,
        available: Mapping[str, float],
        renewed: Mapping[str, float] | None = None,
    ) -> Placement | None:
        """The placement of ``job`` (None: no region has room before its deadline).

        ``renewed``: what each package or capped voucher may pay once it renews (its next
        period or day), less what booked work means to draw then; without it, a renewed
        voucher counts as ``available``.
        """
        self._renewed = renewed or {}
        plan = self._plan
        if plan is None or now_s >= plan.end_s:
            return self._earliest(job, now_s, book, available)
        table = self._table(plan, job)
        if table.slot.size:
            k0, k1 = plan.slot_at(now_s), plan.slot_at(min(job.latest_s, plan.end_s - 1e-6))
            lo, hi = table.offsets[k0], table.offsets[k1 + 1]
            if hi > lo:
                tried = None
                if k0 < len(table.fronts):
                    found, tried = self._first(plan, job, now_s, book, available, table, k0, hi)
                    if found is not None:
                        return found
                scores = self._scores(table, job, lo, hi)
                if tried is not None:
                    scores[tried - lo] = _INF
                found = self._best(plan, job, now_s, book, available, table, scores, lo)
                if found is not None:
                    return found
        return self._earliest(job, now_s, book, available)

    def _first(
        self,
        plan: Plan,
        job: Job,
        now_s: float,
        book: CapacityBook,
        available: Mapping[str, float],
        table: _Table,
        k0: int,
        hi: int,
    ) -> tuple[Placement | None, int | None]:
        # The common case without numpy: the least-scored entry of a window from slot k0 is
        # on the table's front (a dominated entry never scores below, nor ties ahead of, the
        # earlier entry dominating it), a dozen entries of a few hundred. When that entry
        # serves the job it is the placement; otherwise ``_best`` searches every entry, the
        # one tried here (returned) left out, exactly as if it had picked it first.
        inp, out = job.input_tokens, job.output_tokens
        entry, score = -1, _INF
        for e, a_in, a_out, c in table.fronts[k0]:
            if e >= hi:
                break
            s = inp * a_in + out * a_out + c
            if s < score:
                entry, score = e, s
        if entry < 0:
            return None, None
        voucher = table.entry_voucher[entry]
        if voucher is not None:
            need = inp * table.need_in[entry] + out * table.need_out[entry]
            if self._have(plan, voucher, table.slot_of[entry], available) < need:
                return None, None  # a voucher short of the job: ``_best`` rescores it
        cand = table.cand[table.cand_of[entry]]
        k = table.slot_of[entry]
        if cand.uses_capacity and (cand.region_id, k) in self._full:
            return None, entry
        tokens = _tokens(cand, job)
        start = self._minute_in_slot(plan, cand, k, job, now_s, tokens, book)
        if start is None:
            return None, entry
        return Placement(cand.region_id, cand.offer, start, voucher, tokens), None

    def _scores(self, table: _Table, job: Job, lo: int, hi: int) -> np.ndarray:
        import numpy as np  # lazily: the proxy only needs it once batch work is deferred

        # Score of every entry in [lo, hi) for this job, as if each voucher covered it whole.
        return np.dot((job.input_tokens, job.output_tokens, 1.0), table.coef[:, lo:hi])

    def _best(
        self,
        plan: Plan,
        job: Job,
        now_s: float,
        book: CapacityBook,
        available: Mapping[str, float],
        table: _Table,
        scores: np.ndarray,
        lo: int,
    ) -> Placement | None:
        inp, out = job.input_tokens, job.output_tokens
        rescored: set[tuple[str, bool]] = set()  # (voucher, renewed): a renewal splits its entries
        for _ in range(_MAX_TRIES):
            e = int(scores.argmin())
            score = float(scores[e])
            if score == _INF:
                return None
            entry = lo + e
            voucher = table.entry_voucher[entry]
            side = (voucher, self._renews(plan, voucher, table.slot_of[entry])) if voucher else None
            if voucher is not None and side not in rescored:
                have = self._have(plan, voucher, table.slot_of[entry], available)
                if have < inp * table.need_in[entry] + out * table.need_out[entry]:
                    # Scores assume a voucher covers the whole job. One that cannot is
                    # rescored, all its entries at once (on this side of its renewal), when
                    # one of them is about to win.
                    within = self._split(plan, table, voucher, side[1])
                    _rescore(table, voucher, have, inp, out, scores, lo, within)
                    rescored.add(side)
                    continue
            scores[e] = _INF
            cand = table.cand[table.cand_of[entry]]
            k = table.slot_of[entry]
            if cand.uses_capacity and (cand.region_id, k) in self._full:
                continue  # training books no tpm/rpm: a slot full for batch still takes it
            tokens = _tokens(cand, job)
            start = self._minute_in_slot(plan, cand, k, job, now_s, tokens, book)
            if start is not None:
                return Placement(cand.region_id, cand.offer, start, voucher, tokens)
        return None

    def _renews(self, plan: Plan, voucher: str, k: int) -> bool:
        # slot k starts once the voucher has renewed (and ``place`` was told what it holds then)
        renew = self._renew_at.get(voucher)
        return renew is not None and plan.edges[k] >= renew and voucher in self._renewed

    def _split(self, plan: Plan, table: _Table, voucher: str, renewed: bool) -> tuple[int, int]:
        # the entries [from, to) on one side of the voucher's renewal
        renew = self._renew_at.get(voucher)
        if renew is None or voucher not in self._renewed:
            return 0, len(table.slot_of)
        k = next((k for k in range(len(plan.edges) - 1) if plan.edges[k] >= renew), len(plan.edges) - 1)
        edge = table.offsets[min(k, len(table.offsets) - 1)]
        return (edge, len(table.slot_of)) if renewed else (0, edge)

    def _have(self, plan: Plan, voucher: str, k: int, available: Mapping[str, float]) -> float:
        # what the voucher may pay in slot k: once renewed (a new period or day), ``renewed``'s
        renew = self._renew_at.get(voucher)
        if renew is not None and plan.edges[k] >= renew and voucher in self._renewed:
            return self._renewed[voucher]
        return available.get(voucher, 0.0)

    def _minute_in_slot(
        self, plan: Plan, cand: Candidate, k: int, job: Job, now_s: float, tokens: int, book: CapacityBook
    ) -> float | None:
        # The first minute of slot k (within the job's window) with room beyond the
        # interactive reserve; None when there is none.
        begin = max(plan.edges[k], now_s, job.arrival_s)
        end = min(plan.edges[k + 1], job.latest_s + 1e-9)
        if end <= begin:
            return None
        if not cand.uses_capacity:
            return begin
        rid = cand.region_id
        key = (rid, k)
        reserves = self._reserves[key]
        first, last = minute_of(begin), minute_of(end - 1e-6)
        # Minutes before the cursor had no room even for a tiny job; skip them.
        cursor = max(self._cursor.get(key, first), first)
        found = book.first_fit(rid, cursor, last, tokens, **reserves)
        if found is not None:
            return max(found * 60.0, begin)
        if cursor <= last:
            cursor = book.first_fit(rid, cursor, last, 1, **reserves)
            cursor = last + 1 if cursor is None else cursor
        self._cursor[key] = cursor
        if cursor > last and end >= plan.edges[k + 1]:
            self._full.add(key)
        return None

    def _reserves_for(self, plan: Plan) -> dict[tuple[str, int], dict[str, float]]:
        # What batch leaves free per minute, per (region, slot): once per plan rather than
        # on each placement. The limits are the config's, as the book's.
        out: dict[tuple[str, int], dict[str, float]] = {}
        for r in self._config.regions:
            rid = r.id
            tpm_k = plan.interactive_tpm.get(rid)
            rpm_k = plan.interactive_rpm.get(rid)
            tpm = float(r.limits.tpm) if r.limits.tpm else _INF
            rpm = float(r.limits.rpm) if r.limits.rpm else _INF
            for k in range(len(plan.edges) - 1):
                reserve_t = _RESERVE_FACTOR * _at(tpm_k, k)
                reserve_r = _RESERVE_FACTOR * _at(rpm_k, k)
                if tpm_k is not None:
                    # Interactive arrivals come in bursts the slot average hides: keep a floor free.
                    reserve_t = max(reserve_t, _INTERACTIVE_FLOOR * tpm)
                    reserve_r = max(reserve_r, _INTERACTIVE_FLOOR * rpm)
                out[(rid, k)] = {"reserve_tokens": reserve_t, "reserve_requests": reserve_r}
        return out

    def _earliest(
        self, job: Job, now_s: float, book: CapacityBook, available: Mapping[str, float]
    ) -> Placement | None:
        # Fallback: the first minute in the window where any candidate has room, cheapest first.
        cands = self._index.candidates(job.model, job.work_class, job.origin)
        if not cands:
            return None
        start = max(now_s, job.arrival_s)
        minute = minute_of(start)
        while minute * 60.0 <= job.latest_s:
            at = max(minute * 60.0, start)
            if at > job.latest_s:
                break
            best: tuple[float, Candidate] | None = None
            for cand in cands:
                tokens = _tokens(cand, job)
                if cand.uses_capacity and not book.fits(cand.region_id, minute, tokens):
                    continue
                cost = job.input_tokens * cand.yuan_in + job.output_tokens * cand.yuan_out
                factor = self._index.factor(cand.offer, at) if cand.timed else 1.0
                if factor != 1.0:
                    cost *= factor
                if best is None or cost < best[0]:
                    best = (cost, cand)
            if best is not None:
                cand = best[1]
                return Placement(cand.region_id, cand.offer, at, None, _tokens(cand, job))
            minute += 1
        return None

    def _table(self, plan: Plan, job: Job) -> _Table:
        key = (job.model, job.work_class, job.origin)
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = self._build(plan, job.model, job.work_class, job.origin)
        return table

    def _build(self, plan: Plan, model: str, work_class: WorkClass, origin: Zone) -> _Table:
        import numpy as np

        cands = self._index.candidates(model, work_class, origin)
        n_slots = len(plan.edges) - 1
        # (slot, a_in, a_out, c, candidate, voucher, need_in, need_out, cash entry)
        rows: list[tuple[int, float, float, float, int, str | None, float, float, int]] = []
        for k in range(n_slots):
            mid = (plan.edges[k] + plan.edges[k + 1]) / 2
            for n, cand in enumerate(cands):
                # slots break at every band edge: the factor at the slot's start holds throughout
                factor = self._index.factor(cand.offer, plan.edges[k]) if cand.timed else 1.0
                y_in, y_out = cand.yuan_in * factor, cand.yuan_out * factor
                cap_in = cap_out = cap_req = 0.0
                if cand.uses_capacity:
                    mu = _at(plan.token_price.get(cand.region_id), k) * cand.ratio
                    cap_in = cap_out = mu
                    cap_req = _at(plan.request_price.get(cand.region_id), k)
                cash_entry = len(rows)
                rows.append((k, y_in + cap_in, y_out + cap_out, cap_req, n, None, 0.0, 0.0, cash_entry))
                for v in cand.vouchers:
                    renews = v.id in self._renew_at and plan.edges[k] >= self._renew_at[v.id]
                    if not v.from_s <= mid < v.to_s or (v.id in self._spent and not renews):
                        continue
                    lam = plan.voucher_price.get(v.id, 0.0)
                    if v.kind == "tokens":
                        need_in = need_out = cand.ratio
                        cash_in = cash_out = 0.0
                    elif v.kind == "credit":
                        need_in, need_out, cash_in, cash_out = y_in, y_out, 0.0, 0.0
                    else:
                        need_in, need_out = v.rate * y_in, v.rate * y_out
                        cash_in, cash_out = (1 - v.rate) * y_in, (1 - v.rate) * y_out
                    unit_in, unit_out = lam * need_in, lam * need_out
                    rows.append(
                        (
                            k,
                            (cash_in + unit_in + cap_in) * _VOUCHER_WINS,
                            (cash_out + unit_out + cap_out) * _VOUCHER_WINS,
                            cap_req * _VOUCHER_WINS,
                            n,
                            v.id,
                            need_in,
                            need_out,
                            cash_entry,
                        )
                    )
        slots = np.array([r[0] for r in rows], dtype=np.int64)
        delay = 1 + _DELAY_TIE * (slots - slots.min(initial=0))
        offsets = np.searchsorted(slots, np.arange(n_slots + 1), side="left")
        coef = np.array([[r[j] for r in rows] for j in (1, 2, 3)], dtype=np.float64) * delay
        return _Table(
            slot=slots,
            coef=coef,
            cand=cands,
            entry_voucher=tuple(r[5] for r in rows),
            cand_of=tuple(r[4] for r in rows),
            slot_of=tuple(r[0] for r in rows),
            offsets=tuple(int(o) for o in offsets),
            need_in=tuple(r[6] for r in rows),
            need_out=tuple(r[7] for r in rows),
            need_in_array=np.array([r[6] for r in rows], dtype=np.float64),
            need_out_array=np.array([r[7] for r in rows], dtype=np.float64),
            cash_entry=np.array([r[8] for r in rows], dtype=np.int64),
            entries={
                v: np.array([e for e, r in enumerate(rows) if r[5] == v], dtype=np.int64)
                for v in {r[5] for r in rows if r[5] is not None}
            },
            fronts=tuple(_front(coef, int(offsets[k])) for k in range(min(2, n_slots))),
        )


def _rescore(
    table: _Table,
    voucher: str,
    have: float,
    inp: float,
    out: float,
    scores: np.ndarray,
    lo: int,
    within: tuple[int, int] | None = None,
) -> None:
    # The voucher pays its balance and the rest is cash at the same slot's price: blend
    # each of its entries in the scores' range (and ``within``: entries [from, to)) with
    # its cash entry by the share covered.
    import numpy as np

    first, last = within if within is not None else (0, len(table.slot_of))
    entries = table.entries[voucher]
    begin, end = max(lo, first), min(lo + len(scores), last)
    at = entries[np.searchsorted(entries, begin) : np.searchsorted(entries, max(begin, end))]
    need = inp * table.need_in_array[at] + out * table.need_out_array[at]
    covered = np.minimum(max(have, 0.0) / np.maximum(need, 1e-300), 1.0)
    cash = np.dot((inp, out, 1.0), table.coef[:, table.cash_entry[at]])
    blended = covered * scores[at - lo] + (1.0 - covered) * cash
    # an entry already tried (infinite) stays so; one the voucher cannot pay at all drops out
    scores[at - lo] = np.where((covered > 0) & (scores[at - lo] < _INF), blended, _INF)


def _front(coef: np.ndarray, lo: int = 0) -> tuple[tuple[int, float, float, float], ...]:
    # Entries from ``lo`` on that no earlier one from ``lo`` dominates. Entries are sorted
    # by slot, so an earlier entry is in every window from lo's slot that holds a later
    # one; and an entry dominated by a dominated one is dominated by what dominates that
    # (the front), so checking the front found so far suffices.
    front: list[tuple[int, float, float, float]] = []
    for e, (a_in, a_out, c) in enumerate(zip(*coef[:, lo:].tolist(), strict=True), start=lo):
        if not any(f[1] <= a_in and f[2] <= a_out and f[3] <= c for f in front):
            front.append((e, a_in, a_out, c))
    return tuple(front)


def _at(values: tuple[float, ...] | None, k: int) -> float:
    return values[k] if values is not None and k < len(values) else 0.0


def _tokens(cand: Candidate, job: Job) -> int:
    reference = job.input_tokens if job.work_class == "training" else job.input_tokens + job.output_tokens
    if cand.ratio == 1.0 and reference == int(reference):
        return int(reference)  # ceil(round(x, 6)) of a whole x is x
    return math.ceil(round(reference * cand.ratio, 6))
