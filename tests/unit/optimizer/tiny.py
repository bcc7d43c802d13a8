"""Tiny hand-made scenarios whose optimum is known, for the optimizer's tests."""

from __future__ import annotations

import json
from typing import Any

from suanli.config import Config, load_config

__all__ = ["START", "make_config", "make_trace", "region"]

START = "2026-12-01T00:00:00+08:00"


def region(rid: str, zone: str, *, price: float = 1.0, ratio: float = 1.0, **extra: Any) -> dict[str, Any]:
    """A region serving model ``m`` at ``price`` yuan per million tokens, in and out."""
    offer: dict[str, Any] = {"name": "m", "price": {"input": price, "output": price, "train": price}}
    if ratio != 1.0:
        offer["token_ratio"] = ratio
    if "off_peak" in extra:
        offer["off_peak"] = extra.pop("off_peak")
    near, far = (10, 40) if zone == "east" else (40, 10)
    out = {
        "id": rid,
        "zone": zone,
        "provider": "sim",
        "rtt_ms": {zone: near, "west" if zone == "east" else "east": far},
        "ttft_ms": 200 if zone == "east" else 400,
        "models": [offer],
        "capabilities": ["chat", "batch", "fine_tuning"],
    }
    out.update(extra)
    return out


def make_config(regions: list[dict[str, Any]], vouchers: list[dict[str, Any]] = (), **extra: Any) -> Config:
    """A config: SLO 300 ms (east regions meet it from the east, west ones do not)."""
    body: dict[str, Any] = {
        "timezone": "Asia/Shanghai",
        "classes": {"interactive": {"latency_slo_ms": 300}, "batch": {"deadline_s": 86400}},
        "regions": regions,
        "vouchers": list(vouchers),
    }
    body.update(extra)
    return load_config(body)


def make_trace(requests: list[dict[str, Any]]) -> list[str]:
    """Trace lines: the header, then ``requests`` (defaults: model m, origin east)."""
    lines = [json.dumps({"trace": "suanli/v1", "start": START})]
    for r in requests:
        lines.append(json.dumps({"model": "m", "origin": "east", "class": "interactive", **r}))
    return lines
