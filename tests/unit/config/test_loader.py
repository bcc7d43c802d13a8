"""Config loading: schema errors name their path, ${ENV} interpolation, cross-checks, the catalog."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from suanli.config import ConfigError, load_catalog, load_config

SCENARIOS = Path(__file__).resolve().parents[3] / "benchmarks" / "scenarios"


def _minimal(**region: object) -> dict:
    base = {"id": "wuhan", "zone": "east", "provider": "sim",
            "models": [{"name": "deepseek-flash", "price": {"input": 2.0, "output": 8.0}}]}
    base.update(region)
    return {"regions": [base]}


def _paths(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [path for path, _ in exc.value.problems]


def test_bundled_catalog_has_the_eight_platforms_and_runs_offline():
    config = load_catalog(environ={})
    ids = {r.id for r in config.regions}
    assert {"shanghai", "wuhu", "wuhan", "chongqing", "guiyang", "qingyang", "zhongwei", "horinger"} <= ids
    assert {r.zone for r in config.regions if r.id in ("shanghai", "wuhu", "wuhan")} == {"east"}
    assert all(r.provider == "sim" for r in config.regions)
    assert config.vouchers and all(v.expires and v.expires.tzinfo for v in config.vouchers)


@pytest.mark.parametrize("name", ["cityday", "expiry", "offpeak", "peaks", "scarcity", "shocks", "tokenizer"])
def test_public_scenario_configs_load(name: str):
    assert load_config(SCENARIOS / name / "config.yaml").regions


def test_negative_price_names_its_path():
    data = _minimal(models=[{"name": "m", "price": {"input": -1, "output": 1}}])
    with pytest.raises(ConfigError) as exc:
        load_config(data)
    assert _paths(exc) == ["regions[0].models[0].price.input"]


def test_unknown_key_is_rejected():
    with pytest.raises(ConfigError) as exc:
        load_config({**_minimal(), "regoins": []})
    assert _paths(exc) == ["regoins"]


def test_empty_model_list_is_rejected():
    with pytest.raises(ConfigError) as exc:
        load_config(_minimal(models=[]))
    assert _paths(exc) == ["regions[0].models"]


def test_voucher_on_unknown_region_or_model_is_rejected():
    data = {**_minimal(), "vouchers": [
        {"id": "a", "region": "nowhere", "kind": "credit", "amount": 1},
        {"id": "b", "region": "wuhan", "kind": "tokens", "amount": 1, "models": ["gpt-9"]},
    ]}
    with pytest.raises(ConfigError) as exc:
        load_config(data)
    assert _paths(exc) == ["vouchers[0].region", "vouchers[1].models[0]"]


def test_discount_voucher_needs_a_rate():
    data = {**_minimal(), "vouchers": [{"id": "d", "region": "wuhan", "kind": "discount", "amount": 5}]}
    with pytest.raises(ConfigError) as exc:
        load_config(data)
    assert _paths(exc) == ["vouchers[0]"]


def test_env_interpolation_with_and_without_default():
    data = _minimal(provider="openai", base_url="${BASE:-https://api.example.cn/v1}", api_key="${WUHAN_KEY}")
    config = load_config(data, environ={"WUHAN_KEY": "sk-wuhan"})
    assert config.regions[0].base_url == "https://api.example.cn/v1"
    assert config.regions[0].api_key == "sk-wuhan"
    with pytest.raises(ConfigError) as exc:
        load_config(data, environ={})
    assert exc.value.problems == [("regions[0].api_key", "environment variable WUHAN_KEY is not set")]


def test_api_key_is_not_in_the_repr():
    config = load_config(_minimal(api_key="sk-canary-123"), environ={})
    assert "sk-canary-123" not in repr(config)


def test_dates_without_offset_take_the_config_timezone():
    data = {**_minimal(), "vouchers": [{"id": "v", "region": "wuhan", "kind": "credit", "amount": 1,
                                        "expires": "2026-12-01T12:00:00"}]}
    voucher = load_config(data).vouchers[0]
    assert voucher.expires is not None and voucher.expires.utcoffset().total_seconds() == 8 * 3600


def test_yaml_file_errors_name_the_file(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("regions: [\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.source == str(path)
    assert "invalid YAML" in exc.value.problems[0][1]


def test_a_config_files_relative_ledger_and_data_dir_live_beside_it(tmp_path: Path):
    path = tmp_path / "conf" / "suanli.yaml"
    path.parent.mkdir()
    body = _minimal() | {"ledger": {"url": "sqlite:///state/suanli.db?synchronous=full"}, "data_dir": "data"}
    path.write_text(yaml.safe_dump(body))
    config = load_config(path)
    assert config.ledger.url == f"sqlite:///{tmp_path / 'conf' / 'state' / 'suanli.db'}?synchronous=full"
    assert config.data_dir == str(tmp_path / "conf" / "data")


def test_absolute_memory_and_server_ledgers_are_left_alone(tmp_path: Path):
    for url in ("sqlite:////var/lib/suanli.db", "sqlite:///:memory:", "postgresql://u:p@db/suanli"):
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(_minimal() | {"ledger": {"url": url}}))
        assert load_config(path).ledger.url == url


def test_the_catalog_keeps_its_state_in_the_xdg_data_home(tmp_path: Path):
    config = load_catalog(environ={"XDG_DATA_HOME": str(tmp_path)})
    assert config.ledger.url == f"sqlite:///{tmp_path / 'suanli' / 'suanli.db'}"
    assert load_catalog(environ={"HOME": "/home/ann"}).ledger.url == "sqlite:////home/ann/.local/share/suanli/suanli.db"


def test_a_provider_typo_is_an_error_with_the_nearest_name():
    with pytest.raises(ConfigError) as exc:
        load_config(_minimal(provider="deepsek"))
    why = "unknown provider 'deepsek': did you mean 'deepseek'?"
    assert exc.value.problems == [("regions[0].provider", why)]


def test_every_problem_is_reported_at_once():
    data = _minimal(provider="deepsek", zone="north", api_key="${NOT_SET_ANYWHERE}")
    data["vouchers"] = [{"id": "v", "region": "nowhere", "kind": "tokens", "amount": 5}]
    with pytest.raises(ConfigError) as exc:
        load_config(data, environ={})
    assert set(_paths(exc)) == {
        "regions[0].api_key", "regions[0].zone", "regions[0].provider", "vouchers[0].region"
    }


def test_an_unset_variable_and_a_bad_reference_come_together():
    data = _minimal(api_key="${NOT_SET_ANYWHERE}")
    data["vouchers"] = [{"id": "v", "region": "nowhere", "kind": "tokens", "amount": 5}]
    with pytest.raises(ConfigError) as exc:
        load_config(data, environ={})
    assert set(_paths(exc)) == {"regions[0].api_key", "vouchers[0].region"}


def test_bands_and_off_peak_together_name_the_path():
    bands = [{"days": "weekdays", "window": "09:00-12:00", "factor": 2.0}]
    offer = {"name": "m", "price": {"input": 1, "output": 1}, "bands": bands,
             "off_peak": {"window": "00:30-08:30", "discount": 0.5}}
    with pytest.raises(ConfigError) as exc:
        load_config(_minimal(models=[offer]))
    assert _paths(exc) == ["regions[0].models[0].bands"]
    assert "off_peak or bands" in str(exc.value)


BANDS0 = "regions[0].models[0].bands[0]"


@pytest.mark.parametrize(("band", "path"), [
    ({"days": "workdays", "window": "09:00-12:00", "factor": 2}, BANDS0 + ".days"),
    ({"days": ["mon", "funday"], "window": "09:00-12:00", "factor": 2}, BANDS0 + ".days"),
    ({"days": "all", "window": "9-12", "factor": 2}, BANDS0 + ".window"),
    ({"days": "all", "window": "09:00-12:00", "factor": 0}, BANDS0 + ".factor"),
    ({"days": "all", "window": "09:00-12:00", "factor": 2, "price": 1}, BANDS0 + ".price"),
])
def test_bad_band_names_its_path(band: dict, path: str):
    offer = {"name": "m", "price": {"input": 1, "output": 1}, "bands": [band]}
    with pytest.raises(ConfigError) as exc:
        load_config(_minimal(models=[offer]))
    assert _paths(exc) == [path]


def test_cache_and_package_fields_are_checked():
    offer = {"name": "m", "price": {"input": 1, "output": 1, "cached_input": -1}, "cache_ttl_s": -5}
    with pytest.raises(ConfigError) as exc:
        load_config(_minimal(models=[offer]))
    assert sorted(_paths(exc)) == [
        "regions[0].models[0].cache_ttl_s", "regions[0].models[0].price.cached_input"]
    voucher = {"id": "v", "region": "wuhan", "kind": "tokens", "amount": 5, "period": "year", "daily_cap": 0}
    with pytest.raises(ConfigError) as exc:
        load_config({**_minimal(), "vouchers": [voucher]})
    assert sorted(_paths(exc)) == ["vouchers[0].daily_cap", "vouchers[0].period"]


def test_peaks_scenario_loads_with_bands_cache_and_packages():
    config = load_config(SCENARIOS / "peaks" / "config.yaml")
    shanghai = config.region("shanghai")
    assert shanghai is not None and shanghai.models[0].bands and shanghai.models[0].price.cached_input == 0.1
    assert config.region("wuhan").models[0].price.cached_input == 1.8  # default: the input price
    assert {v.id: (v.period, v.daily_cap) for v in config.vouchers}["guiyang-credit-peaks"] == (None, 2.5)
