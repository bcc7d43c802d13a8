"""What a config reload may change and reports (router/core/reload.py), and the shortage state
priorities read (router/core/shedding.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from suanli.config import load_config
from suanli.router.core.reload import check_reloadable, config_changes, shrinks
from suanli.router.core.shedding import Shedding
from suanli.router.errors import BadRequestError, ShedError
from tests.harness import small_config


def _data(config) -> dict:
    return config.model_dump(mode="json", exclude_none=True)


def test_changes_name_prices_regions_vouchers_and_settings(tmp_path: Path):
    old = small_config(tmp_path)
    data = _data(old)
    data["regions"][0]["models"][0]["price"]["input"] = 3.0
    data["regions"][1]["limits"] = {"rpm": 10}
    data["regions"] = data["regions"][:2]
    data["vouchers"] = data["vouchers"][:1] + [
        {"id": "new", "region": "wuhan", "kind": "credit", "amount": 1.0}]
    data["planner"] = {"replan_s": 5}
    changes = config_changes(old, load_config(data))
    assert changes["regions_removed"] == ["qingyang"] and changes["regions_added"] == []
    assert changes["regions_changed"] == {"shanghai": ["models.deepseek-flash.price"], "wuhan": ["limits"]}
    assert changes["vouchers_added"] == ["new"] and changes["vouchers_removed"] == ["shanghai-credit"]
    assert changes["settings_changed"] == ["planner"] and changes["changed"] is True
    assert shrinks(changes)


def test_the_same_config_changes_nothing_and_a_top_up_style_change_shrinks_nothing(tmp_path: Path):
    old = small_config(tmp_path)
    assert config_changes(old, old)["changed"] is False
    data = _data(old)
    data["regions"][0]["models"][0]["price"]["input"] = 1.0  # cheaper: no capacity lost
    assert not shrinks(config_changes(old, load_config(data)))


def test_what_the_process_is_built_on_cannot_change(tmp_path: Path):
    old = small_config(tmp_path)
    moved = small_config(tmp_path / "elsewhere")
    with pytest.raises(BadRequestError, match="ledger"):
        check_reloadable(old, moved)
    check_reloadable(old, small_config(tmp_path, planner={"replan_s": 5}))


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 7, 10, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_sheddable_work_is_refused_while_short_and_served_after():
    clock, down = _Clock(), set()
    shedding = Shedding(clock, lambda: frozenset(down), hold_s=600)
    assert shedding.admit("sheddable") is None  # not short
    shedding.shrank("voucher cut")
    with pytest.raises(ShedError) as caught:
        shedding.admit("sheddable")
    assert caught.value.retry_after_s == pytest.approx(600)
    clock.now += timedelta(seconds=601)
    assert shedding.admit("sheddable") is None


def test_an_outage_is_short_while_down_and_for_hold_s_after():
    clock, down = _Clock(), {"wuhan"}
    shedding = Shedding(clock, lambda: frozenset(down), hold_s=60)
    assert shedding.short() == "region wuhan down"
    clock.now += timedelta(hours=1)
    assert shedding.short()  # still down
    down.clear()
    assert shedding.short()  # just back
    clock.now += timedelta(seconds=61)
    assert shedding.short() is None


def test_normal_work_leaves_a_share_for_critical_only_when_critical_work_is_about():
    clock = _Clock()
    shedding = Shedding(clock, frozenset, hold_s=600, reserve_share=0.2)
    shedding.shrank("reload")
    assert shedding.admit("normal") is None  # no critical traffic: nothing is kept back
    assert shedding.admit("critical") is None
    assert shedding.admit("normal") == pytest.approx(0.8)
    clock.now += timedelta(seconds=601)
    assert shedding.admit("normal") is None  # not short any more
