"""The per-minute capacity book: what fits, the first minute with room, moving the base."""

from __future__ import annotations

from suanli.optimizer import CapacityBook
from tests.unit.optimizer.tiny import make_config, region

CONFIG = make_config([region("a", "east", limits={"tpm": 1000, "rpm": 2}), region("b", "west")])


def test_a_minute_takes_requests_up_to_its_limits() -> None:
    book = CapacityBook(CONFIG)
    assert book.fits("a", 100, 1000) and not book.fits("a", 100, 1001)
    book.add("a", 100, 600)
    assert not book.fits("a", 100, 500) and book.fits("a", 100, 400)
    book.add("a", 100, 100)
    assert not book.fits("a", 100, 1)  # rpm 2
    assert book.fits("b", 100, 10**9)  # no limits
    assert book.used("a", 100) == (700.0, 2.0) and book.fill(100) == {"a": 1.0}


def test_first_fit_skips_minutes_without_room_and_keeps_the_reserve() -> None:
    book = CapacityBook(CONFIG)
    for minute in (10, 11):
        book.add("a", minute, 900)
    assert book.first_fit("a", 10, 20, 200) == 12
    assert book.first_fit("a", 10, 11, 200) is None
    assert book.first_fit("a", 10, 20, 50) == 10
    assert book.first_fit("a", 10, 20, 50, reserve_tokens=100) == 12
    assert book.first_fit("a", 5000, 5001, 200) == 5000  # past everything booked


def test_bookings_before_the_base_and_forgetting_the_past() -> None:
    book = CapacityBook(CONFIG)
    book.add("a", 500, 10)
    book.add("a", 400, 20)  # before the first booking: the arrays grow backwards
    book.add("a", 5000, 30)  # far ahead: they grow forwards
    assert book.committed_from(0) == {
        ("a", 400): (20.0, 1.0),
        ("a", 500): (10.0, 1.0),
        ("a", 5000): (30.0, 1.0),
    }
    book.forget_before(450)
    assert book.committed_from(0) == {("a", 500): (10.0, 1.0), ("a", 5000): (30.0, 1.0)}
    assert book.used("a", 400) == (0.0, 0.0)
