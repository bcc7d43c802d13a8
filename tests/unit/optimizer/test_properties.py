"""Property tests: replays of random small scenarios never break a DESIGN.md rule.

Every policy's decisions go through the independent checker (SLO, deadline window,
voucher validity, region, model and class restrictions, balances drawn in start
order, per-minute tpm/rpm, fine_tuning for training, off-peak by start time, cash).
"""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from suanli.router.simulate.engine import POLICIES, replay
from suanli.router.simulate.trace import parse_trace
from tests.unit.optimizer.checker import check_decisions
from tests.unit.optimizer.tiny import make_config, make_trace, region

_WINDOWS = ["00:30-08:30", "22:00-06:00", "01:00-02:00", "12:00-13:30"]
_DAYS = ["2026-11-30", "2026-12-01", "2026-12-02"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[object, list[str]]:
    n_regions = draw(st.integers(1, 3))
    regions = []
    for k in range(n_regions):
        extra: dict = {}
        if draw(st.booleans()):
            extra["limits"] = {"rpm": draw(st.integers(1, 6)), "tpm": draw(st.integers(1500, 12000))}
        if draw(st.booleans()):
            extra["off_peak"] = {
                "window": draw(st.sampled_from(_WINDOWS)),
                "discount": draw(st.sampled_from([0.3, 0.5])),
            }
        if draw(st.booleans()):
            extra["capabilities"] = ["chat"]
        regions.append(
            region(
                f"r{k}",
                draw(st.sampled_from(["east", "west"])),
                price=draw(st.sampled_from([0.5, 1.0, 2.0, 4.0])),
                ratio=draw(st.sampled_from([1.0, 1.3, 0.8])),
                **extra,
            )
        )
    vouchers = []
    for k in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["tokens", "credit", "discount"]))
        voucher = {
            "id": f"v{k}",
            "region": f"r{draw(st.integers(0, n_regions - 1))}",
            "kind": kind,
            "amount": draw(st.sampled_from([500, 3000, 20000]))
            if kind == "tokens"
            else draw(st.sampled_from([0.001, 0.01])),
        }
        if kind == "discount":
            voucher["rate"] = draw(st.sampled_from([0.2, 0.5]))
        if draw(st.booleans()):
            voucher["classes"] = draw(
                st.sampled_from([["batch"], ["interactive"], ["training"], ["batch", "training"]])
            )
        if draw(st.booleans()):
            voucher["valid_from"] = (
                f"{draw(st.sampled_from(_DAYS))}T{draw(st.integers(0, 23)):02d}:00:00+08:00"
            )
        if draw(st.booleans()):
            expires = f"{draw(st.sampled_from(_DAYS[1:]))}T{draw(st.integers(0, 23)):02d}:30:00+08:00"
            # the config rejects a voucher that expires before it is valid; keep the draw legal
            if expires > voucher.get("valid_from", ""):
                voucher["expires"] = expires
        vouchers.append(voucher)
    config = make_config(regions, vouchers)
    t = 0.0
    requests = []
    for _ in range(draw(st.integers(1, 25))):
        t += draw(st.sampled_from([0.0, 0.5, 7.0, 45.0, 600.0, 3000.0]))
        work_class = draw(st.sampled_from(["interactive", "interactive", "batch", "training"]))
        request = {
            "t": t,
            "class": work_class,
            "origin": draw(st.sampled_from(["east", "west"])),
            "input": draw(st.integers(0, 4000)),
            "output": 0 if work_class == "training" else draw(st.integers(0, 2000)),
        }
        if work_class != "interactive" and draw(st.booleans()):
            request["deadline_s"] = draw(st.sampled_from([0, 60, 3600, 30000]))
        requests.append(request)
    return config, make_trace(requests)


# 15 days under four policies: the random family (benchmarks/optimizer.py --random) and the
# tariff family (test_tariff_family.py) cover more; this keeps the suite inside its 10 minutes.
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_random_scenarios_never_break_a_rule(scenario: tuple[object, list[str]]) -> None:
    config, lines = scenario
    trace = parse_trace(lines, config)  # type: ignore[arg-type]
    paid: dict[str, float] = {}  # policy -> cash, of the policies that serve every request
    bound = None
    for policy in POLICIES:
        result = replay(config, trace, policy)  # type: ignore[arg-type]
        decisions = [
            orjson.dumps(
                {
                    "i": d.i,
                    "region": d.region,
                    "start": d.start,
                    "voucher": d.voucher,
                    "cash_yuan": d.cash_yuan,
                }
            ).decode()
            for d in result.decisions
        ]
        check = check_decisions(config, lines, decisions)  # type: ignore[arg-type]
        assert check.violations == [], (policy, check.violations[:5])
        assert check.rejected == result.rejected
        assert check.deadline_misses == result.deadline_misses
        if check.rejected == check.deadline_misses == 0:
            paid[policy] = check.cash_yuan
        if policy == "hindsight":
            bound = result.bound_cash_yuan
    # a lower bound on what any decisions that serve every request pay
    assert bound is not None
    for policy, cash in paid.items():
        assert cash >= bound - 1e-9, (policy, cash, bound)
