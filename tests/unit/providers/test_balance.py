"""Reading a platform's balance: each known API's shape, a configured path and fields, units apart."""

from __future__ import annotations

import pytest

from suanli.config import Region
from suanli.providers.balance import balance_url, read_fields

OFFER = [{"name": "m", "price": {"input": 1, "output": 2}}]


def _region(balance: dict) -> Region:
    return Region.model_validate({"id": "r", "zone": "east", "provider": "openai", "models": OFFER,
                                  "balance": balance})


@pytest.mark.parametrize(("api", "url"), [
    ("deepseek", "https://api.example.cn/user/balance"),
    ("moonshot", "https://api.example.cn/v1/users/me/balance"),
    ("siliconflow", "https://api.example.cn/v1/user/info"),
])
def test_known_apis_are_read_at_the_root_of_the_base_url(api: str, url: str):
    assert balance_url(_region({"api": api}), "https://api.example.cn/v1")[0] == url


def test_deepseek_moonshot_and_siliconflow_bodies_keep_units_apart():
    _, fields = balance_url(_region({"api": "deepseek"}), "https://x/v1")
    info = {"currency": "CNY", "total_balance": "110.00", "granted_balance": "10.00",
            "topped_up_balance": "100.00"}
    body = {"is_available": True, "balance_infos": [info]}
    assert read_fields(body, fields) == {"cash_yuan": 100.0, "granted_yuan": 10.0}
    _, fields = balance_url(_region({"api": "moonshot"}), "https://x/v1")
    body = {"code": 0, "data": {"available_balance": 49.58, "voucher_balance": 46.58, "cash_balance": 3.0}}
    assert read_fields(body, fields) == {"cash_yuan": 3.0, "granted_yuan": 46.58}
    _, fields = balance_url(_region({"api": "siliconflow"}), "https://x/v1")
    body = {"code": 20000, "data": {"balance": "0.88", "chargeBalance": "88.00", "totalBalance": "88.88"}}
    assert read_fields(body, fields) == {"cash_yuan": 88.0, "granted_yuan": 0.88}


def test_a_configured_path_and_fields_and_a_missing_field_is_left_out_never_zero():
    region = _region({"api": "openai_compatible_path", "path": "/v1/dashboard/balance",
                      "fields": {"cash_yuan": "data.cash", "tokens": "data.packages.0.left"}})
    url, fields = balance_url(region, "https://platform.example.cn/v1")
    assert url == "https://platform.example.cn/v1/dashboard/balance"
    assert read_fields({"data": {"cash": "12.5", "packages": [{"left": 3000}]}}, fields) == {
        "cash_yuan": 12.5, "tokens": 3000.0}
    assert read_fields({"data": {"cash": None, "packages": []}}, fields) == {}


def test_path_api_needs_path_and_fields():
    with pytest.raises(ValueError):
        _region({"api": "openai_compatible_path"})
    with pytest.raises(ValueError):
        _region({"api": "openai_compatible_path", "path": "/b"})
    with pytest.raises(ValueError):
        balance_url(_region({"api": "manual"}), "https://x/v1")
