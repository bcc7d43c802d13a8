"""The deferral scheduler on frozen plans: where and when work that may wait starts."""

from __future__ import annotations

import pytest

from suanli.optimizer import CapacityBook, Deferrer, Job, Plan, minute_of
from tests.unit.optimizer.tiny import make_config, region

T0 = 1_796_054_400.0  # 2026-12-01T00:00:00+08:00, a whole hour


def _plan() -> Plan:
    # one free hour: no prices, so cash alone ranks the regions
    return Plan(
        edges=(T0, T0 + 3600.0),
        voucher_price={},
        token_price={},
        request_price={},
        interactive_tpm={},
        interactive_rpm={},
        cash_yuan=0.0,
        unserved_requests=0.0,
    )


def _job(index: int, work_class: str) -> Job:
    output = 0.0 if work_class == "training" else 100.0
    return Job(index, T0, T0 + 7200.0, "m", work_class, "east", 1000.0, output)


def test_training_is_not_kept_off_a_slot_batch_found_full() -> None:
    # Region a is the cheaper but its hour is booked full; training books no tpm/rpm,
    # so the full hour must not keep training off a.
    config = make_config(
        [region("a", "west", price=1.0, limits={"tpm": 2000, "rpm": 10}), region("b", "west", price=5.0)]
    )
    book = CapacityBook(config)
    for minute in range(minute_of(T0), minute_of(T0 + 3600.0)):
        book.add("a", minute, 2000)
    deferrer = Deferrer(config)
    deferrer.set_plan(_plan())
    batch = deferrer.place(_job(0, "batch"), T0, book, {})
    assert batch is not None and batch.region == "b"
    training = deferrer.place(_job(1, "training"), T0, book, {})
    assert training is not None and training.region == "a" and training.start_s == T0


def test_the_front_holds_the_least_score_of_every_window_from_its_start() -> None:
    # The first pick comes from the front alone: for any job (input, output >= 0) and any
    # window end, the first least-scored entry of all must be on it.
    import random

    import numpy as np

    from suanli.optimizer.defer import _front

    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 40)
        # few distinct values, so that ties and dominance are common
        coef = np.array([[rng.choice((0.0, 1e-6, 2e-6, 3e-6, 0.01)) for _ in range(n)] for _ in range(3)])
        lo = rng.choice((0, rng.randrange(n)))
        front = _front(coef, lo)
        for _ in range(10):
            hi = rng.randint(lo + 1, n)
            job = (rng.choice((0.0, 1.0, 500.0, 8000.0)), rng.choice((0.0, 1.0, 300.0)), 1.0)
            scores = np.dot(job, coef[:, lo:hi])
            picked = min((job[0] * a + job[1] * b + c, e) for e, a, b, c in front if e < hi)
            # numpy may add in another order (or fuse a multiply-add), so "least" is up to
            # rounding: the front's pick scores the least of the whole window, and numpy agrees.
            best = float(scores.min())
            assert picked[0] == pytest.approx(best, rel=1e-12, abs=1e-15)
            assert float(scores[picked[1] - lo]) == pytest.approx(best, rel=1e-12, abs=1e-15)
