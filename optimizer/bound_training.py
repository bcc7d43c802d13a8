"""The bound's training part: vouchers only training jobs can use, kept as rows, not priced.

``optimizer.bound`` relaxes every voucher row with its LP price, and a training job (a
million tokens or more, indivisible) then counts as if it could be split across vouchers
and regions: where two jobs of 0.9 M and 1.7 M tokens share a 2.2 M tokens voucher, the
relaxation lets the voucher pay for 2.2 M of their tokens at the best yuan per token, a
policy cannot. That made hindsight 1.2-2.7x the bound on training-heavy random days.

A voucher whose every column belongs to a training job (``classes: [training]``, or one
no other class may use) touches no other row: its row stays in the problem, and the
training jobs are solved exactly against it, with every other row still relaxed at the
LP's prices (weak duality holds for any subset of rows relaxed). Exactly, but over a
relaxation of the payment rule, so the value stays a lower bound:

- a job either takes its best relaxed column (cash, a relaxed voucher, the unserved
  penalty: ``base``) or one kept voucher ``v`` in one slot where it is valid; there it
  pays ``max(floor, cost - density x u)`` for the ``u`` units it draws, with ``cost``
  its list cost in that slot, ``density`` the yuan one unit of ``v`` covers and
  ``floor`` the cash left when all of it is covered (slots alike in the three share
  one option);
- the units the jobs on ``v`` draw add up to at most its balance (drawn in any order,
  one voucher per job): a fractional knapsack, whose optimum is at most any order's;
- every assignment of jobs to ``base`` or a kept voucher is tried (there are few), or
  when there are too many the relaxed value (each job's best column at the LP's
  prices) is used instead: still a bound.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["KeptOption", "TrainingJob", "training_value"]

_MAX_ASSIGNMENTS = 50_000  # combinations tried at most; past it the relaxed value stands


@dataclass(frozen=True, slots=True)
class KeptOption:
    """One training job on one kept voucher: what it may pay and draw (see the docstring)."""

    cost: float  # yuan with nothing covered
    floor: float  # yuan it pays at least, however much is covered
    density: float  # yuan covered per unit drawn (> 0)


@dataclass(frozen=True, slots=True)
class TrainingJob:
    """A training job's best relaxed column and its options on kept vouchers."""

    base: float  # least value over the relaxed columns (LP prices on relaxed rows)
    relaxed: float  # least value over every column with every row relaxed: the old bound's term
    kept: Mapping[str, tuple[KeptOption, ...]]  # voucher id -> its options (one per kind of slot)


def training_value(
    jobs: Sequence[TrainingJob], balances: Mapping[str, float], prices: Mapping[str, float]
) -> float:
    """The least total over the jobs, the kept vouchers held to ``balances`` exactly.

    When there are too many assignments to try, the kept rows are relaxed after all, at
    ``prices`` (voucher id -> the LP's yuan per unit): each job's best column, less
    ``prices . balances`` (the term ``optimizer.bound`` leaves out for kept rows).
    """
    if not jobs:
        return 0.0
    choices = [[None, *((v, o) for v in sorted(job.kept) for o in job.kept[v])] for job in jobs]
    count = 1
    for options in choices:
        count *= len(options)
    if count > _MAX_ASSIGNMENTS:
        held = sum(prices.get(v, 0.0) * max(units, 0.0) for v, units in balances.items())
        return sum(job.relaxed for job in jobs) - held
    best = float("inf")
    for assignment in itertools.product(*choices):
        total = 0.0
        on: dict[str, list[KeptOption]] = {}
        for job, choice in zip(jobs, assignment, strict=True):
            if choice is None:
                total += job.base
            else:
                on.setdefault(choice[0], []).append(choice[1])
        for voucher, options in on.items():
            total += _knapsack(options, max(balances.get(voucher, 0.0), 0.0))
        best = min(best, total)
    return best


def _knapsack(options: list[KeptOption], balance: float) -> float:
    # cash of the jobs on one voucher: each pays cost less what it gets covered, down to
    # its floor; the voucher's balance goes to the densest first (fractional knapsack)
    total = sum(o.cost for o in options)
    left = balance
    for o in sorted(options, key=lambda o: -o.density):
        if left <= 0:
            break
        room = max(o.cost - o.floor, 0.0)
        units = min(room / o.density, left)
        total -= units * o.density
        left -= units
    return total
