"""A conversation's later turns in a turn's price: hindsight's shortest path, the online estimate."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from suanli.optimizer import Ask, State, rank
from suanli.optimizer.affinity import Conversations, FollowUps, with_follow_ups
from suanli.router.simulate.trace import parse_trace
from tests.unit.optimizer.tiny import make_config, make_trace, region


def _config(ttl: int = 300):  # noqa: ANN202
    # a: 1.0 a token, no cache price; b: 1.1, a cached input token 0.1
    b = region("b", "east", price=1.1)
    b["models"][0]["price"]["cached_input"] = 0.1
    b["models"][0]["cache_ttl_s"] = ttl
    return make_config([region("a", "east", price=1.0), b])


def _turns(gap: float) -> list[str]:
    return make_trace([
        {"t": 0, "input": 1000, "output": 100, "session": "s", "cached": 0},
        {"t": gap, "input": 1300, "output": 100, "session": "s", "cached": 1100},
    ])  # fmt: skip


def test_later_turns_price_the_region_that_keeps_the_prompt():
    config = _config()
    jobs = parse_trace(_turns(60.0), config).jobs
    talks = Conversations(config, jobs, {})
    # second turn: at a 1400e-6; at b after a first turn there 200e-6 x 1.1 + 1100e-6 x 0.1 + 100e-6 x 1.1
    follow_at_b = (200 * 1.1 + 1100 * 0.1 + 100 * 1.1) / 1e6
    assert talks.later(jobs[0], "b") == 0.0
    assert talks.later(jobs[0], "a") == pytest.approx(1400 / 1e6 - follow_at_b)
    assert talks.later(jobs[1], "a") == 0.0  # the last turn: nothing after it


def test_no_later_value_beyond_the_ttl():
    config = _config(ttl=300)
    jobs = parse_trace(_turns(400.0), config).jobs
    talks = Conversations(config, jobs, {})
    assert talks.later(jobs[0], "a") == talks.later(jobs[0], "b") == 0.0


def test_follow_up_statistics_are_learnt_from_what_arrived():
    follow = FollowUps()
    assert follow.share == pytest.approx(0.5) and follow.repeat == 1.0  # priors
    follow.seen("s", 1000, 0)
    follow.seen("s", 1500, 1200)  # follows a 1000-token prompt with 1200 cached
    follow.seen("t", 800, 0)
    follow.seen("u", 800, 0)
    assert follow.share == pytest.approx((1 + 1) / (4 + 2))
    assert follow.repeat == pytest.approx(1201 / 1001)
    follow.seen(None, 500, 0)  # not a session: not counted
    assert follow.share == pytest.approx(2 / 6)


def test_the_online_credit_moves_a_first_turn_to_the_cache_region():
    config = _config()
    ask = Ask("m", "interactive", "east", 1000.0, 100.0)
    options = rank(config, ask, State(balances={}), datetime(2026, 12, 1, 2, tzinfo=UTC))
    assert [o.region.id for o in options] == ["a", "b"]
    follow = FollowUps()
    follow.seen("s", 1000, 0)
    assert [o.region.id for o in with_follow_ups(options, ask, follow)] == ["b", "a"]
    # a session that is never followed: the credit shrinks below b's extra cost
    for n in range(200):
        follow.seen(f"x{n}", 1000, 0)
    assert [o.region.id for o in with_follow_ups(options, ask, follow)] == ["a", "b"]


def test_no_credit_where_the_room_is_wanted():
    # b half full this minute, or its capacity priced by the plan: the first turn stays at a
    config = _config()
    ask = Ask("m", "interactive", "east", 1000.0, 100.0)
    options = rank(config, ask, State(balances={}), datetime(2026, 12, 1, 2, tzinfo=UTC))
    follow = FollowUps()
    follow.seen("s", 1000, 0)
    assert [o.region.id for o in with_follow_ups(options, ask, follow, {"b": 0.1})] == ["b", "a"]
    assert [o.region.id for o in with_follow_ups(options, ask, follow, {"b": 0.5})] == ["a", "b"]
    assert [o.region.id for o in with_follow_ups(options, ask, follow, scarce=frozenset({"b"}))] == ["a", "b"]
