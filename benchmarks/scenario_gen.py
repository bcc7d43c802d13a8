"""Random replay scenarios, drawn whole from a seed: the families the optimizer must not be fitted to.

    .venv/bin/python benchmarks/scenario_gen.py OUT_DIR --seed 7 [--requests 4000] [--no-shocks]

Writes ``OUT_DIR/{config.yaml,trace.jsonl}`` (DESIGN.md's config and ``suanli/v1`` trace).
The same seed always gives the same files. Every scenario draws, independently:

- the day: start hour (midnight, early morning, office hours or any hour), arrival shape
  (office day, flat, evening peak), 24 hours of traffic;
- 4-9 regions east and west with their latencies, limits, models (2-4 of a catalog),
  prices, token ratios and off-peak windows; sometimes a capacity shortfall in the east,
  and a region offering much of the catalog with little capacity;
- the interactive SLO: admitting only the nearest regions, or most of them;
- the work: model mix, token sizes, origins (east share), batch share (some days
  batch-heavy with short deadlines), 0-6 fine-tuning jobs with short or long deadlines;
- 3-20 vouchers of every kind (tokens, credit, discount), model and class restrictions,
  validity windows anywhere in the day: all day, opening late, short (expiring hours after
  the start), mid-day only, ending at some hour; sized against the day's demand;
- 0-4 shocks of DESIGN.md: a region down for hours, a voucher cut or top-up, a price spike;
- the tariffs of DESIGN.md's "Payment semantics" (``draw_tariffs``, its own random stream so the
  draws above stay as they were): DeepSeek-style weekday peak bands (x2 on a halved base, some
  windows crossing midnight), prompt-cache prices with conversations whose follow-ups repeat
  their prefix (``session``/``cached``), packages resetting each day/week/month, daily caps.

``benchmarks/optimizer.py --random N`` replays seeds 0..N-1 under greedy, optimizer and
hindsight and prints the distribution of cash/bound.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from datetime import datetime, timedelta
from pathlib import Path

import yaml

__all__ = ["TARIFFS", "draw_tariffs", "generate", "write_scenario"]

_DAY_S = 86400.0
_TZ = "+08:00"

# name -> (input, output) yuan per million reference tokens at list price; train price
_MODELS = {
    "deepseek-v3": (2.0, 8.0, 14.0),
    "qwen-plus": (0.8, 2.0, 9.0),
    "glm-4-plus": (1.2, 4.0, 12.0),
    "moonshot-v1": (1.0, 3.0, 10.0),
}
_EAST = ["shanghai", "wuhu", "wuhan", "hangzhou", "nanjing", "hefei"]
_WEST = ["chongqing", "guiyang", "qingyang", "zhongwei", "helinger", "lanzhou"]
_OFF_PEAK = ["00:30-08:30", "22:00-06:00", "01:00-07:00", "23:00-08:00"]

# arrival shapes: weight per local hour
_SHAPES = {
    "office": [0.15] * 7
    + [0.6, 1.2, 1.6, 1.7, 1.5, 1.0, 1.4, 1.6, 1.6, 1.5, 1.2, 0.8, 0.5, 0.4, 0.3, 0.2, 0.15],
    "flat": [1.0] * 24,
    "evening": [0.3] * 7 + [0.5] * 5 + [0.8] * 6 + [1.5, 2.0, 2.2, 1.8, 1.0, 0.5],
}


def _iso(epoch: datetime) -> str:
    return epoch.isoformat()


def _regions(rng: random.Random, models: list[str]) -> list[dict]:
    n_east = rng.randint(2, 4)
    n_west = rng.randint(2, 5)
    shortfall = rng.random() < 0.35  # the east cannot carry its interactive traffic at peak
    out = []
    for zone, names, count in (("east", _EAST, n_east), ("west", _WEST, n_west)):
        for name in rng.sample(names, count):
            near, far = (rng.randint(5, 20), rng.randint(35, 50))
            rtt = {"east": near, "west": far} if zone == "east" else {"east": far, "west": near}
            if zone == "east":
                ttft = rng.randint(220, 270)
                rpm, tpm = rng.randint(40, 120), rng.randint(12, 40) * 1000
                if shortfall:
                    rpm, tpm = int(rpm * 0.5), int(tpm * 0.5)
            else:
                ttft = rng.randint(280, 460)
                rpm, tpm = rng.randint(200, 500), rng.randint(25, 80) * 1000
            cheap = 1.0 if zone == "east" else rng.uniform(0.7, 0.9)
            fine_tuning = zone == "west" and rng.random() < 0.5
            offered = rng.sample(models, rng.randint(1, len(models)))
            offers = []
            for model in sorted(offered, key=models.index):
                base_in, base_out, base_train = _MODELS[model]
                f = cheap * rng.uniform(0.85, 1.15)
                offer: dict = {
                    "name": model,
                    "price": {"input": round(base_in * f, 2), "output": round(base_out * f, 2)},
                }
                if fine_tuning:
                    offer["price"]["train"] = round(base_train * rng.uniform(0.8, 1.2), 1)
                if rng.random() < 0.25:
                    offer["token_ratio"] = rng.choice([0.9, 1.1, 1.2, 1.3])
                if zone == "west" and rng.random() < 0.5:
                    offer["off_peak"] = {"window": rng.choice(_OFF_PEAK), "discount": rng.choice([0.3, 0.5])}
                offers.append(offer)
            caps = ["chat", "embeddings", "batch"] + (["fine_tuning"] if fine_tuning else [])
            out.append(
                {
                    "id": name,
                    "zone": zone,
                    "provider": "sim",
                    "rtt_ms": rtt,
                    "ttft_ms": ttft,
                    "limits": {"rpm": rpm, "tpm": tpm},
                    "capabilities": caps,
                    "models": offers,
                }
            )
    if rng.random() < 0.3:
        # a region much weaker than its share of the catalog: every model, little room
        weak = rng.choice(out)
        weak["limits"] = {"rpm": rng.randint(10, 25), "tpm": rng.randint(3, 8) * 1000}
        have = {o["name"] for o in weak["models"]}
        for model in models:
            if model not in have:
                base_in, base_out, _ = _MODELS[model]
                f = rng.uniform(0.6, 0.8)
                price = {"input": round(base_in * f, 2), "output": round(base_out * f, 2)}
                weak["models"].append({"name": model, "price": price})
    for model in models:  # every model somewhere
        if not any(o["name"] == model for r in out for o in r["models"]):
            base_in, base_out, _ = _MODELS[model]
            rng.choice(out)["models"].append({"name": model, "price": {"input": base_in, "output": base_out}})
    if not any("fine_tuning" in r["capabilities"] for r in out):
        west = next(r for r in out if r["zone"] == "west")
        west["capabilities"].append("fine_tuning")
    for region in out:  # every offer of a fine-tuning region has a training price
        if "fine_tuning" in region["capabilities"]:
            for offer in region["models"]:
                if "train" not in offer["price"]:
                    offer["price"]["train"] = round(_MODELS[offer["name"]][2] * rng.uniform(0.8, 1.2), 1)
    return out


def _slo(rng: random.Random, regions: list[dict], models: list[str]) -> int:
    # Every (origin, model) has at least one region within the SLO; then few or many more.
    def latency(region: dict, origin: str) -> float:
        return region["ttft_ms"] + region["rtt_ms"][origin]

    need = 0.0
    for origin in ("east", "west"):
        for model in models:
            serving = [latency(r, origin) for r in regions if any(o["name"] == model for o in r["models"])]
            if serving:
                need = max(need, min(serving))
    every = sorted(latency(r, "east") for r in regions)
    if rng.random() < 0.5:
        return int(math.ceil(need)) + rng.randint(0, 15)  # few regions qualify
    return int(max(need, every[min(len(every) - 1, rng.randint(len(every) // 2, len(every) - 1))])) + 5


def _requests(
    rng: random.Random, start: datetime, models: list[str], trainable: list[str], n: int, hours: int
) -> tuple[list[dict], dict]:
    shape = _SHAPES[rng.choice(list(_SHAPES))]
    weights = [rng.uniform(0.2, 1.0) for _ in models]
    east_share = rng.choice([1.0, 0.8, 0.6])
    batch_share = rng.choice([0.1, 0.2, 0.35, 0.5])
    short_deadlines = rng.random() < 0.35
    size_in, size_out = rng.uniform(500, 2000), rng.uniform(100, 500)
    # hour weights seen from the start hour
    hour_w = [shape[(start.hour + h) % 24] for h in range(hours)]
    total = sum(hour_w)
    rows: list[dict] = []
    for _ in range(n):
        h = rng.choices(range(hours), weights=hour_w)[0]
        t = round(h * 3600 + rng.uniform(0, 3600), 3)
        model = rng.choices(models, weights=weights)[0]
        origin = "east" if rng.random() < east_share else "west"
        row: dict = {"t": t, "model": model}
        if rng.random() < batch_share:
            row.update(
                {
                    "class": "batch",
                    "origin": origin,
                    "input": int(rng.lognormvariate(math.log(size_in * 1.5), 0.5)),
                    "output": int(rng.lognormvariate(math.log(size_out * 1.5), 0.5)),
                }
            )
            if short_deadlines:
                row["deadline_s"] = rng.choice([1800, 3600, 7200, 14400])
            elif rng.random() < 0.5:
                row["deadline_s"] = 86400
        else:
            row.update(
                {
                    "class": "interactive",
                    "origin": origin,
                    "input": max(1, int(rng.lognormvariate(math.log(size_in), 0.6))),
                    "output": max(1, int(rng.lognormvariate(math.log(size_out), 0.6))),
                }
            )
        rows.append(row)
    n_train = rng.choice([0, 1, 2, 3, 4, 6])
    train_short = rng.random() < 0.4
    for _ in range(n_train):
        rows.append(
            {
                "t": round(rng.uniform(0, max(hours - 1, 0.5) * 3600), 3),
                "model": rng.choice(trainable),
                "class": "training",
                "origin": "east",
                "input": rng.randint(2, 20) * 100000,
                "output": 0,
                "deadline_s": rng.choice([3600, 7200, 21600]) if train_short else rng.choice([86400, 172800]),
            }
        )
    rows.sort(key=lambda r: r["t"])
    traits = {
        "shape": [k for k, v in _SHAPES.items() if v == shape][0],
        "east_share": east_share,
        "batch_share": batch_share,
        "short_deadlines": short_deadlines,
        "training": n_train,
        "weight_sum": total,
    }
    return rows, traits


def _window(rng: random.Random, start: datetime) -> tuple[datetime, datetime, str]:
    # a validity window anywhere in the day
    kind = rng.choice(["all", "all", "late", "short", "midday", "ends"])
    long_ago, far = start - timedelta(days=15), start + timedelta(days=30)
    hour = timedelta(hours=1)
    if kind == "late":
        return start + rng.randint(6, 20) * hour, far, kind
    if kind == "short":
        return long_ago, start + rng.randint(1, 6) * hour, kind
    if kind == "midday":
        opens = start + rng.randint(3, 16) * hour
        return opens, opens + rng.randint(2, 7) * hour, kind
    if kind == "ends":
        return long_ago, start + rng.randint(8, 23) * hour, kind
    return long_ago, far, kind


def _vouchers(rng: random.Random, start: datetime, regions: list[dict], rows: list[dict]) -> list[dict]:
    # Sized against the day: a voucher may cover a small or a large part of its region's
    # share of the demand, so some run dry and some are hard to use up.
    tokens_day = sum(r["input"] + r["output"] for r in rows if r["class"] != "training")
    cash_day = tokens_day * 3.0 / 1e6  # yuan, roughly, at list prices
    per_region = tokens_day / max(len(regions), 1)
    out = []
    for n in range(rng.randint(3, 20)):
        region = rng.choice(regions)
        kind = rng.choice(["tokens", "tokens", "credit", "discount"])
        opens, expires, window = _window(rng, start)
        share = rng.choice([0.05, 0.15, 0.3, 0.6, 1.0])
        voucher: dict = {"id": f"{region['id']}-{kind}-{n}", "region": region["id"], "kind": kind}
        if kind == "tokens":
            voucher["amount"] = int(per_region * share) + 1000
        elif kind == "credit":
            voucher["amount"] = round(cash_day / len(regions) * share + 0.5, 2)
        else:
            voucher["amount"] = round(cash_day / len(regions) * share + 0.5, 2)
            voucher["rate"] = rng.choice([0.2, 0.3, 0.5, 0.7])
        if rng.random() < 0.3:
            voucher["models"] = [rng.choice(region["models"])["name"]]
        restriction = rng.random()
        if restriction < 0.15:
            voucher["classes"] = ["batch"]
        elif restriction < 0.25:
            voucher["classes"] = ["interactive"]
        elif restriction < 0.35 and "fine_tuning" in region["capabilities"]:
            voucher["classes"] = ["training"]
            voucher["kind"] = "tokens"
            voucher.pop("rate", None)
            voucher["id"] = f"{region['id']}-train-{n}"
            voucher["amount"] = rng.randint(5, 25) * 100000
        voucher["valid_from"] = _iso(opens)
        voucher["expires"] = _iso(expires)
        out.append(voucher)
    return out


def _shocks(rng: random.Random, regions: list[dict], vouchers: list[dict], hours: int) -> list[dict]:
    events = []
    for _ in range(rng.choice([0, 0, 1, 2, 3, 4])):
        t = float(rng.randint(1, max(hours - 2, 1)) * 3600 + rng.choice([0, 1800]))
        kind = rng.choice(["region_down", "voucher_delta", "price_factor"])
        if kind == "region_down":
            region = rng.choice(regions)["id"]
            events.append({"t": t, "event": kind, "region": region, "until": t + rng.randint(1, 5) * 3600})
        elif kind == "voucher_delta" and vouchers:
            voucher = rng.choice(vouchers)
            sign = -1 if rng.random() < 0.6 else 1
            amount = voucher["amount"] * rng.choice([0.3, 0.5, 1.0]) * sign
            amount = int(amount) if voucher["kind"] == "tokens" else round(amount, 2)
            events.append({"t": t, "event": kind, "voucher": voucher["id"], "amount": amount})
        else:
            region = rng.choice(regions)
            event = {"t": t, "event": "price_factor", "region": region["id"]}
            if rng.random() < 0.5:
                event["model"] = rng.choice(region["models"])["name"]
            event["factor"] = rng.choice([0.5, 1.5, 2.0, 3.0])
            event["until"] = t + rng.randint(1, 6) * 3600
            events.append(event)
    return events


TARIFFS = ("bands", "sessions", "packages")
_PEAKS = [{"days": "weekdays", "window": "09:00-12:00", "factor": 2.0},
          {"days": "weekdays", "window": "14:00-18:00", "factor": 2.0}]


def _peak_bands(rng: random.Random, regions: list[dict]) -> None:
    # DeepSeek's rule on some regions: the list price at peak, half of it off-peak; a few night bands
    for region in regions:
        if rng.random() < 0.5:
            continue
        for offer in region["models"]:
            if "off_peak" in offer or rng.random() < 0.3:
                continue
            price = offer["price"]
            price["input"], price["output"] = round(price["input"] / 2, 3), round(price["output"] / 2, 3)
            bands = [dict(b) for b in _PEAKS]
            if rng.random() < 0.3:
                bands.append({"days": rng.choice(["weekends", ["fri", "sat"]]), "window": "22:00-06:00",
                              "factor": rng.choice([0.6, 0.8])})
            offer["bands"] = bands


def _conversations(rng: random.Random, regions: list[dict], rows: list[dict]) -> list[dict]:
    # cache prices on some offers; a share of interactive requests open conversations whose
    # follow-ups, minutes apart, repeat the prompt so far as their cached prefix
    ttl = rng.choice([300, 600])
    for region in regions:
        for offer in region["models"]:
            if rng.random() < 0.6:
                price = offer["price"]
                price["cached_input"] = round(price["input"] * rng.choice([0.1, 0.2, 0.4]), 4)
                offer["cache_ttl_s"] = ttl
    out = list(rows)
    share = rng.choice([0.1, 0.2, 0.4])
    for n, row in enumerate(rows):
        if row["class"] != "interactive" or rng.random() >= share:
            continue
        row["session"], row["cached"] = f"s{n}", 0
        t, prefix = row["t"], row["input"] + row["output"]
        for _ in range(rng.randint(1, 5)):
            t = round(t + rng.uniform(20, 1.5 * ttl), 3)
            fresh = max(1, int(rng.lognormvariate(math.log(200), 0.5)))
            follow = {**row, "t": t, "input": prefix + fresh, "cached": prefix,
                      "output": max(1, int(rng.lognormvariate(math.log(max(row["output"], 2)), 0.4)))}
            out.append(follow)
            prefix += fresh + follow["output"]
    return out


def _packages(rng: random.Random, vouchers: list[dict]) -> None:
    # some vouchers hold their amount afresh each day/week/month; some pay at most so much a day
    # (the first three: one monthly package, one daily package, one daily cap)
    for n, voucher in enumerate(vouchers):
        draw = rng.random() if n >= 3 else (0.0, 0.1, 0.3)[n]
        if draw < 0.25:
            period = ("month", "day")[n] if n < 2 else rng.choice(["day", "day", "week", "month"])
            voucher["period"] = period
            if period == "day":  # a day's worth: a fraction of the whole
                amount = voucher["amount"] * rng.choice([0.3, 0.5])
                voucher["amount"] = int(amount) if voucher["kind"] == "tokens" else round(amount, 2)
        elif draw < 0.4:
            cap = voucher["amount"] * rng.choice([0.1, 0.25, 0.5])
            tokens = voucher["kind"] == "tokens"
            voucher["daily_cap"] = max(int(cap), 1) if tokens else round(max(cap, 0.01), 2)


def draw_tariffs(
    rng: random.Random, regions: list[dict], vouchers: list[dict], rows: list[dict], kinds: set[str]
) -> list[dict]:
    """Add the tariffs ``kinds`` (of ``TARIFFS``) to a drawn scenario; the requests (with follow-ups)."""
    if "bands" in kinds:
        _peak_bands(rng, regions)
    if "sessions" in kinds:
        rows = _conversations(rng, regions, rows)
        rows.sort(key=lambda r: r["t"])
    if "packages" in kinds:
        _packages(rng, vouchers)
    return rows


def generate(
    seed: int,
    *,
    requests: int | None = None,
    shocks: bool = True,
    hours: int = 24,
    tariffs: set[str] | None = None,
) -> tuple[dict, dict, list[dict]]:
    """The scenario of ``seed``: (config as a dict, trace header, trace lines: requests and events).

    ``hours`` shortens the day (tests replay a few hours; windows and shocks stay as drawn).
    ``tariffs`` forces those of ``TARIFFS``; None draws each with even odds.
    """
    rng = random.Random(f"suanli-scenario-{seed}")
    start_hour = rng.choice([0, 0, 6, 8, 12, rng.randint(0, 23)])
    start = datetime.fromisoformat(f"2026-12-01T{start_hour:02d}:00:00{_TZ}")
    models = rng.sample(list(_MODELS), rng.randint(2, 4))
    regions = _regions(rng, models)
    slo = _slo(rng, regions, models)
    n = requests if requests is not None else rng.randint(2000, 5000)
    trainable = sorted(
        {o["name"] for r in regions if "fine_tuning" in r["capabilities"] for o in r["models"]}
    )
    rows, _ = _requests(rng, start, models, trainable, n, hours)
    vouchers = _vouchers(rng, start, regions, rows)
    events = _shocks(rng, regions, vouchers, hours) if shocks else []
    tariff_rng = random.Random(f"suanli-tariffs-{seed}")  # its own stream: the draws above stay put
    if tariffs is None:
        tariffs = {kind for kind in TARIFFS if tariff_rng.random() < 0.5}
    rows = draw_tariffs(tariff_rng, regions, vouchers, rows, tariffs)
    config = {
        "timezone": "Asia/Shanghai",
        "origin": "east",
        "classes": {"interactive": {"latency_slo_ms": slo}, "batch": {"deadline_s": 86400}},
        "regions": regions,
        "vouchers": vouchers,
    }
    header = {"trace": "suanli/v1", "start": _iso(start)}
    # events go before requests of the same t (they apply before any request starting then)
    lines = sorted(rows + events, key=lambda r: (r["t"], "event" not in r))
    return config, header, lines


def write_scenario(
    out_dir: Path,
    seed: int,
    *,
    requests: int | None = None,
    shocks: bool = True,
    hours: int = 24,
    tariffs: set[str] | None = None,
) -> Path:
    """Write the scenario of ``seed`` to ``out_dir`` (config.yaml, trace.jsonl); the directory."""
    config, header, lines = generate(seed, requests=requests, shocks=shocks, hours=hours, tariffs=tariffs)
    out_dir.mkdir(parents=True, exist_ok=True)
    head = f"# suanli random scenario, seed {seed} (benchmarks/scenario_gen.py)\n"
    (out_dir / "config.yaml").write_text(head + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    body = [json.dumps(header)] + [json.dumps(line) for line in lines]
    (out_dir / "trace.jsonl").write_text("\n".join(body) + "\n", encoding="utf-8")
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--requests", type=int, default=None, help="requests (default: drawn, 2000-5000)")
    parser.add_argument("--no-shocks", action="store_true", help="no trace events")
    parser.add_argument("--hours", type=int, default=24, help="hours of traffic (default 24)")
    args = parser.parse_args()
    out = write_scenario(
        args.out_dir, args.seed, requests=args.requests, shocks=not args.no_shocks, hours=args.hours
    )
    print(out)


if __name__ == "__main__":
    main()
