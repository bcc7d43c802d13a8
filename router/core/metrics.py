"""Prometheus metrics: cheap per-request counters, rendered in the text format on scrape.

The request path only bumps plain dict counters (a few microseconds, no lock: one event
loop); ``prometheus_client`` is imported when ``/metrics`` is scraped, and builds the
metric families from those counters plus gauges read at scrape time (balances, health).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from suanli.router.core.results import Routing

__all__ = ["LATENCY_BUCKETS_S", "MetricsBook", "render_metrics"]

# Upper bounds in seconds; +Inf is implicit. Spans a fast TTFT to a long batch completion.
LATENCY_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class _Histogram:
    """Bucket counts and a sum, as Prometheus wants them (cumulated on render)."""

    __slots__ = ("counts", "total_s")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.total_s = 0.0

    def observe(self, value_s: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS_S, value_s)] += 1
        self.total_s += value_s

    def buckets(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


class MetricsBook:
    """What this process served since it started; one instance per Router."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, str], int] = defaultdict(
            int
        )  # (region, model, class, status)
        self.tokens: dict[tuple[str, str, str], int] = defaultdict(int)  # (region, class, direction)
        self.cash_yuan: dict[str, float] = defaultdict(float)  # region -> yuan paid in cash
        self.cost_yuan: dict[str, float] = defaultdict(float)  # region -> yuan at the price charged
        self.voucher_yuan: dict[str, float] = defaultdict(float)  # voucher id -> yuan it covered
        self.voucher_units: dict[str, float] = defaultdict(float)  # voucher id -> tokens or yuan drawn
        self.failovers: dict[str, int] = defaultdict(int)  # region that served after a failed attempt
        self.failures: dict[tuple[str, str], int] = defaultdict(int)  # (region, status) -> upstream failures
        self.latency: dict[str, _Histogram] = defaultdict(_Histogram)  # region -> whole request
        self.ttft: dict[str, _Histogram] = defaultdict(_Histogram)  # region -> time to first token
        # region -> [chat requests, prompt-cache hits, prompt tokens, cached tokens, yuan the hits saved]
        self.cache: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0, 0, 0.0])

    def settled(self, routing: Routing, *, latency_s: float, ttft_s: float | None, status: int = 200) -> None:
        """Count one settled request (called by the Router once per request)."""
        region, work_class = routing.region, routing.work_class
        self.requests[(region, routing.model, work_class, str(status))] += 1
        self.tokens[(region, work_class, "prompt")] += routing.prompt_tokens
        self.tokens[(region, work_class, "completion")] += routing.completion_tokens
        self.cash_yuan[region] += routing.cash_yuan
        self.cost_yuan[region] += routing.cost_yuan
        if routing.voucher is not None:
            self.voucher_yuan[routing.voucher] += routing.voucher_yuan
            self.voucher_units[routing.voucher] += routing.voucher_units
        if routing.attempts > 1:
            self.failovers[region] += 1
        if routing.prompt_tokens:
            cache = self.cache[region]
            cache[0] += 1
            cache[1] += 1 if routing.cached_tokens else 0
            cache[2] += routing.prompt_tokens
            cache[3] += routing.cached_tokens
            cache[4] += routing.cache_saved_yuan
        self.latency[region].observe(latency_s)
        if ttft_s is not None:
            self.ttft[region].observe(ttft_s)

    def cache_report(self) -> dict:
        """Prompt-cache hits and what they saved, per region and in all (the status document's ``cache``)."""
        regions = {}
        for region, (requests, hits, prompt, cached, saved) in sorted(self.cache.items()):
            regions[region] = {
                "requests": int(requests),
                "hits": int(hits),
                "hit_rate": round(hits / requests, 4) if requests else 0.0,
                "cached_token_share": round(cached / prompt, 4) if prompt else 0.0,
                "saved_yuan": round(saved, 9),
            }
        requests = sum(v[0] for v in self.cache.values())
        hits = sum(v[1] for v in self.cache.values())
        return {
            "hit_rate": round(hits / requests, 4) if requests else 0.0,
            "saved_yuan": round(sum(v[4] for v in self.cache.values()), 9),
            "regions": regions,
        }

    def failed(self, region: str, status: int | None) -> None:
        """Count one failed upstream attempt."""
        self.failures[(region, str(status or 0))] += 1


def render_metrics(book: MetricsBook, *, vouchers: Iterable[dict], regions: dict[str, dict]) -> bytes:
    """The Prometheus text exposition of ``book`` plus gauges of balances and region health.

    ``vouchers`` are ``Router.voucher_report()`` rows; ``regions`` maps region id -> its
    status entry (``status.region_entries``).
    """
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(book, list(vouchers), regions))
    return generate_latest(registry)


class _Collector:
    def __init__(self, book: MetricsBook, vouchers: list[dict], regions: dict[str, dict]) -> None:
        self.book, self.vouchers, self.regions = book, vouchers, regions

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        b = self.book
        family = CounterMetricFamily(
            "suanli_requests",
            "Requests settled, by serving region, model, class and status",
            labels=["region", "model", "class", "status"],
        )
        for labels, value in sorted(b.requests.items()):
            family.add_metric(list(labels), value)
        yield family
        family = CounterMetricFamily(
            "suanli_tokens", "Tokens billed (serving model's tokens)", labels=["region", "class", "direction"]
        )
        for labels, value in sorted(b.tokens.items()):
            family.add_metric(list(labels), value)
        yield family
        yield _by_one(CounterMetricFamily, "suanli_cash_yuan", "Yuan paid in cash", "region", b.cash_yuan)
        yield _by_one(
            CounterMetricFamily,
            "suanli_cost_yuan",
            "Yuan at the price charged, before vouchers",
            "region",
            b.cost_yuan,
        )
        yield _by_one(
            CounterMetricFamily,
            "suanli_voucher_spent_yuan",
            "Yuan of cost covered by each voucher",
            "voucher",
            b.voucher_yuan,
        )
        yield _by_one(
            CounterMetricFamily,
            "suanli_voucher_spent_units",
            "Units drawn from each voucher (tokens for token vouchers, else yuan)",
            "voucher",
            b.voucher_units,
        )
        yield _by_one(
            CounterMetricFamily,
            "suanli_failovers",
            "Requests served after another region failed",
            "region",
            b.failovers,
        )
        family = CounterMetricFamily(
            "suanli_upstream_failures", "Failed upstream attempts", labels=["region", "status"]
        )
        for labels, value in sorted(b.failures.items()):
            family.add_metric(list(labels), value)
        yield family
        for name, doc, hists in (
            ("suanli_request_latency_seconds", "Whole request latency as the router saw it", b.latency),
            ("suanli_ttft_seconds", "Time to the first byte of the upstream's answer", b.ttft),
        ):
            family = HistogramMetricFamily(name, doc, labels=["region"])
            for region, hist in sorted(hists.items()):
                family.add_metric([region], hist.buckets(), hist.total_s)
            yield family
        yield from self._gauges()

    def _gauges(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        balance = GaugeMetricFamily(
            "suanli_voucher_available",
            "Voucher units not yet spent or held (tokens or yuan)",
            labels=["voucher", "region", "kind"],
        )
        used = GaugeMetricFamily(
            "suanli_voucher_used_ratio", "Share of the voucher spent", labels=["voucher"]
        )
        for row in self.vouchers:
            balance.add_metric([row["id"], row["region"], row["kind"]], row["available"])
            used.add_metric([row["id"]], row["spent"] / row["amount"] if row["amount"] else 0.0)
        yield balance
        yield used
        up = GaugeMetricFamily(
            "suanli_region_up",
            "1 when the region takes traffic, 0 when ejected or cooling",
            labels=["region", "zone"],
        )
        ejections = CounterMetricFamily(
            "suanli_region_ejections", "Times the region was ejected", labels=["region"]
        )
        in_flight = GaugeMetricFamily(
            "suanli_in_flight", "Requests in flight at the region", labels=["region"]
        )
        for region_id, entry in sorted(self.regions.items()):
            health = entry["health"]
            up.add_metric([region_id, entry["zone"]], 1.0 if health["state"] == "ok" else 0.0)
            ejections.add_metric([region_id], health["ejections"] or 0)
            if entry["in_flight"] is not None:
                in_flight.add_metric([region_id], entry["in_flight"])
        yield up
        yield ejections
        yield in_flight


def _by_one(kind: Any, name: str, doc: str, label: str, values: dict[str, float]) -> Any:
    family = kind(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family
