"""A sim's own balance prices a request with the same time-of-use band as the ledger: on a banded
day reconciliation finds no drift, and the platform's cash moved by the band's price."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.harness import running_proxy
from tests.integration.test_reconcile import MASTER, MESSAGES, call, checks, reconcile_config

# the band holds all day, every day: whatever the clock, each request is priced at twice the list
ALL_DAY = [{"days": "all", "window": "00:00-00:00", "factor": 2.0}]


def test_a_banded_day_reconciles_with_the_sims_balance(tmp_path: Path):
    config = reconcile_config(tmp_path)
    data = config.model_dump(mode="json", exclude_none=True, by_alias=True)
    for region in data["regions"]:
        if region["id"] == "qingyang":
            for offer in region["models"]:
                offer.pop("off_peak", None)
                offer["bands"] = ALL_DAY
    from suanli.config import load_config

    with running_proxy(load_config(data), master_key=MASTER) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key=MASTER, max_retries=0)
        call(f"http://127.0.0.1:{proxy.port}/admin/reconcile", "POST")
        before = checks(proxy)["qingyang"]["units"]["cash_yuan"]["platform"]
        spent = 0.0
        for i in range(12):
            raw = client.chat.completions.with_raw_response.create(
                model="qingyang/deepseek-flash", messages=MESSAGES, max_tokens=5 + i,
                extra_headers={"X-Suanli-Class": "batch"},
            )
            usage = raw.parse().usage
            spent += 2.0 * (usage.prompt_tokens * 1.4 + usage.completion_tokens * 5.6) / 1e6
        status, body = call(f"http://127.0.0.1:{proxy.port}/admin/reconcile", "POST")
        assert status == 200
        check = {c["region"]: c for c in body["data"]}["qingyang"]
        assert check["state"] == "ok", check
        cash = check["units"]["cash_yuan"]
        assert abs(cash["drift"]) < 1e-6, cash
        # the platform itself charged the band's price: twice the list
        assert before - cash["platform"] == pytest.approx(spent, abs=1e-6)  # the endpoint rounds
