"""Lines a platform's batch API ran pay with the region's voucher where it applies, as live requests do."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import openai
import pytest

from suanli.router.core.clocks import VirtualClock
from tests.harness import running_proxy, small_config
from tests.integration.test_platform_batches import BATCH_API, _batch, _batch_cost, _parts, _until
from tests.integration.workload_helpers import TEN_AM, batch_file, jsonl

pytestmark = pytest.mark.timeout(90)


def test_platform_batch_lines_pay_with_the_regions_discount_voucher(tmp_path: Path):
    # A 30% discount voucher at qingyang: a line run here would pay 0.7x the list price, the
    # platform batch 0.5x: every line goes to the platform, and the voucher pays 30% there too.
    base = small_config(tmp_path)
    regions: list[dict[str, Any]] = [r.model_dump(exclude_none=True) for r in base.regions]
    next(r for r in regions if r["id"] == "qingyang")["batch_api"] = BATCH_API
    discount = {"id": "qingyang-off", "region": "qingyang", "kind": "discount", "rate": 0.3, "amount": 1.0,
                "valid_from": "2026-01-01T00:00:00+08:00", "expires": "2028-01-01T00:00:00+08:00"}
    config = small_config(tmp_path, regions=regions, vouchers=[discount])
    clock = VirtualClock(TEN_AM, speed=0)
    with running_proxy(config, clock=clock) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0)
        batch = _batch(client, batch_file(tmp_path, 12))
        done = _until(client, batch.id, "completed")
        output = jsonl(client.files.content(done.output_file_id).text)
        usage = proxy.call(lambda r: r.ledger.usage())
        left = {v.id: v.balance for v in proxy.call(lambda r: r.ledger.vouchers())}
        parts = _parts(proxy)
    assert sorted(o["custom_id"] for o in output) == sorted(f"req-{i}" for i in range(12))
    assert Counter(u.request_id for u in usage) == Counter(f"{batch.id}-{i}" for i in range(12))
    assert {u.region for u in usage} == {"qingyang"} and len(parts) == 1
    # billed at the batch price; the voucher pays 30% of each line, the rest is cash
    assert sum(u.cost_yuan for u in usage) == pytest.approx(_batch_cost(config, usage), rel=1e-9)
    assert {u.voucher_id for u in usage} == {"qingyang-off"}
    for u in usage:
        assert u.voucher_yuan == pytest.approx(0.3 * u.cost_yuan, rel=1e-9)
        assert u.cash_yuan == pytest.approx(0.7 * u.cost_yuan, rel=1e-9)
    assert 1.0 - left["qingyang-off"] == pytest.approx(sum(u.voucher_yuan for u in usage), rel=1e-9)
