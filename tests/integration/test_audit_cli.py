"""``suanli audit`` and ``/admin/usage.csv``: traffic through HTTP, then verify and export."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from suanli.router.ops.cli import main
from tests.backends import sql
from tests.harness import running_proxy, small_config
from tests.integration.test_keys import MASTER, MESSAGES, client, new_key


def _serve_some_traffic(tmp_path: Path, ledger_opts: dict) -> tuple[Path, str]:
    """Six requests, two keys, some paid by the wuhan voucher; the config file the CLI reads."""
    config = small_config(tmp_path, **ledger_opts)
    with running_proxy(config, master_key=MASTER) as proxy:
        made = new_key(proxy, name="claims-team", allowed_regions=["wuhan"])
        for key in (MASTER, made["key"]):
            for _ in range(3):
                client(proxy, key).chat.completions.create(model="deepseek-flash", messages=MESSAGES,
                                                           max_tokens=4)
    return _cli_config(tmp_path, config.ledger.url), made["id"]


def _ledger_url(config_path: Path) -> str:
    return yaml.safe_load(config_path.read_text())["ledger"]["url"]


def _cli_config(tmp_path: Path, ledger_url: str) -> Path:
    """A config file for the CLI: what matters is its ledger."""
    path = tmp_path / "suanli.yaml"
    path.write_text(yaml.safe_dump({
        "ledger": {"url": ledger_url},
        "regions": [{"id": "wuhan", "zone": "east", "provider": "sim",
                     "models": [{"name": "deepseek-flash", "price": {"input": 1.8, "output": 7.2}}]}],
    }))
    return path


def test_editing_one_row_in_the_database_is_caught(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                   ledger_opts: dict):
    config_path, _ = _serve_some_traffic(tmp_path, ledger_opts)
    assert main(["audit", "verify", "--config", str(config_path)]) == 0
    assert "OK, 6 rows verify" in capsys.readouterr().out
    sql(_ledger_url(config_path), "UPDATE usage SET cost_yuan = cost_yuan / 2 WHERE id = 4")  # a smaller bill
    assert main(["audit", "verify", "--config", str(config_path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["problem"], report["row_id"]) == (False, "changed", 4)
    assert main(["audit", "export", "--config", str(config_path)]) == 1
    assert "does not verify" in capsys.readouterr().err


def test_export_writes_the_vouchers_rows_and_the_chain_head(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                            ledger_opts: dict):
    config_path, key_id = _serve_some_traffic(tmp_path, ledger_opts)
    out = tmp_path / "claim.csv"
    assert main(["audit", "export", "--config", str(config_path), "--voucher", "wuhan-tokens",
                 "--from", "2020-01-01", "--to", "2099-12-31", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    url = _ledger_url(config_path)
    ((head_id, head_hash),) = sql(url, "SELECT id, hash FROM usage ORDER BY id DESC LIMIT 1")
    paid = sql(url, "SELECT id, voucher_yuan, tokens, key_id FROM usage WHERE voucher_id = 'wuhan-tokens'"
                    " ORDER BY id")
    assert lines[1].startswith(f"# chain head: row {head_id} hash {head_hash} (6 rows verified;")
    assert lines[1].endswith(f"suanli audit verify --head {head_id}:{head_hash})")
    assert main(["audit", "verify", "--config", str(config_path), "--head", f"{head_id}:{head_hash}"]) == 0
    assert main(["audit", "verify", "--config", str(config_path), "--head", f"{head_id}:{'0' * 64}"]) == 1
    assert "anchored hash" in capsys.readouterr().out
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    assert paid and [int(r["row_id"]) for r in rows] == [p[0] for p in paid]
    assert [float(r["voucher_yuan"]) for r in rows] == [p[1] for p in paid]
    assert [int(r["tokens"]) for r in rows] == [p[2] for p in paid]
    assert {r["key"] for r in rows} <= {"master", key_id}
    assert all(r["key_name"] == "claims-team" for r in rows if r["key"] == key_id)
    assert all(r["region"] == "wuhan" and r["voucher"] == "wuhan-tokens" for r in rows)
    # A window that holds nothing exports only the header.
    assert main(["audit", "export", "--config", str(config_path), "--from", "2020-01-01",
                 "--to", "2020-01-02"]) == 0
    assert capsys.readouterr().out.splitlines()[2].startswith("time,request_id,key")
    assert main(["audit", "export", "--config", str(config_path), "--from", "last week"]) == 2
    capsys.readouterr()
    # suanli report reads the same ledger, on either backend.
    assert main(["report", "--config", str(config_path), "--since", "2020-01-01", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["totals"]["requests"] == 6
    assert {e["key"]: e["requests"] for e in report["by"]["key"]} == {"master": 3, key_id: 3}


def test_usage_csv_over_http_needs_the_master_key_and_matches_the_cli(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture,
                                                                      ledger_opts: dict):
    import urllib.error
    import urllib.request

    config = small_config(tmp_path, **ledger_opts)
    with running_proxy(config, master_key=MASTER) as proxy:
        for _ in range(3):
            client(proxy, MASTER).chat.completions.create(model="wuhan/deepseek-flash", messages=MESSAGES,
                                                          max_tokens=4)
        url = f"http://127.0.0.1:{proxy.port}/admin/usage.csv?voucher=wuhan-tokens&from=2020-01-01&to=2099-01-01"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 401
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {MASTER}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/csv")
            over_http = response.read().decode()
        bad = urllib.request.Request(url.replace("2020-01-01", "someday"),
                                     headers={"Authorization": f"Bearer {MASTER}"})
        with pytest.raises(urllib.error.HTTPError) as wrong:
            urllib.request.urlopen(bad, timeout=10)
        assert wrong.value.code == 400
    assert len([line for line in over_http.splitlines() if not line.startswith("#")]) == 1 + 3
    path = _cli_config(tmp_path, config.ledger.url)
    assert main(["audit", "export", "--config", str(path), "--voucher", "wuhan-tokens",
                 "--from", "2020-01-01", "--to", "2099-01-01"]) == 0
    assert capsys.readouterr().out == over_http
