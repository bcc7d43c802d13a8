"""Shared pieces of the batch and fine-tuning tests: a config with a cheap night in the west, polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from suanli.config import Config
from suanli.router.core.router import Router
from tests.harness import ProxyThread, small_config

SHANGHAI = ZoneInfo("Asia/Shanghai")
TEN_AM = datetime(2026, 12, 1, 10, 0, tzinfo=SHANGHAI)


def night_config(
    tmp_path: Path,
    *,
    qingyang_rpm: int | None = None,
    vouchers: bool = False,
    extra_vouchers: list[dict] = (),
    **overrides: Any,
) -> Config:
    """small_config with an off-peak night (00:30-08:30, -50%) and fine-tuning at qingyang; no vouchers."""
    base = small_config(tmp_path)
    regions: list[dict[str, Any]] = [r.model_dump(exclude_none=True) for r in base.regions]
    west = next(r for r in regions if r["id"] == "qingyang")
    west["models"] = [
        {
            "name": "deepseek-flash",
            "price": {"input": 1.4, "output": 5.6, "train": 14.0},
            "off_peak": {"window": "00:30-08:30", "discount": 0.5},
        }
    ]
    west["capabilities"] = ["chat", "completions", "embeddings", "batch", "fine_tuning"]
    if qingyang_rpm is not None:
        west["limits"] = {"rpm": qingyang_rpm}
    kept = [v.model_dump(mode="json", exclude_none=True) for v in base.vouchers] if vouchers else []
    return small_config(tmp_path, regions=regions, vouchers=kept + list(extra_vouchers), **overrides)


def without_live_limits(proxy: ProxyThread) -> None:
    """Lift the Router's real-time rpm/tpm limiter: on a manual virtual clock no real minute passes
    between virtual ones, while the batch planner already keeps each virtual minute within the limits."""
    from suanli.config import Limits
    from suanli.router.core.limits import RequestLimits

    def lift(router: Router) -> None:
        router.limits = RequestLimits(
            [r.model_copy(update={"limits": Limits()}) for r in router.config.regions]
        )

    proxy.call(lift)


def batch_file(tmp_path: Path, count: int, *, extra: list[dict] | None = None) -> Path:
    """A batch input file of ``count`` chat requests (custom ids ``req-0``...) plus ``extra`` lines."""
    lines = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "deepseek-flash",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": f"第{i}个问题：西部算力为什么便宜？"}],
            },
        }
        for i in range(count)
    ]
    path = tmp_path / "input.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines + (extra or [])) + b"\n")
    return path


def wait_for(check: Callable[[], Any], *, timeout_s: float = 20.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def jsonl(text: str) -> list[dict]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]
