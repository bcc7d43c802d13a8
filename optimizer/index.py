"""Per-config lookup tables for the request path, built once and cached on the config.

The chooser must decide in microseconds, so everything that depends only on the config
(which regions serve a model for a class, their per-token prices, their vouchers, the
off-peak windows) is worked out here once. Times become epoch seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from threading import Lock
from zoneinfo import ZoneInfo

from suanli.config import Capability, Config, Offer, Region, Voucher, WorkClass, Zone
from suanli.optimizer.tariff import factor_at

__all__ = ["Candidate", "ConfigIndex", "VoucherInfo", "capable", "index_for"]

_INF = float("inf")


@dataclass(frozen=True, slots=True)
class VoucherInfo:
    """A voucher with its validity in epoch seconds."""

    voucher: Voucher
    id: str
    kind: str
    rate: float
    from_s: float
    to_s: float


@dataclass(frozen=True, slots=True)
class Candidate:
    """A region that may serve one (model, class, origin, capability) kind of request.

    ``yuan_in``/``yuan_out`` are list yuan per *reference* token at the configured
    ratio (training prices input only); ``window`` is the off-peak window in minutes of
    the local day, or None.
    """

    region: Region
    offer: Offer
    region_id: str
    ratio: float
    yuan_in: float
    yuan_out: float
    window: tuple[int, int] | None
    discount: float
    latency_ms: float
    vouchers: tuple[VoucherInfo, ...]
    rpm: float
    tpm: float
    uses_capacity: bool
    timed: bool = False  # the price changes with the time (off_peak or bands): ``ConfigIndex.factor``
    yuan_cached: float = 0.0  # list yuan per reference input token on a prompt-cache hit

    def off_peak(self, minute_of_day: int) -> bool:
        """Whether a start at this local minute gets the off-peak price."""
        window = self.window
        if window is None:
            return False
        begin, end = window
        if begin == end:
            return True
        if begin < end:
            return begin <= minute_of_day < end
        return minute_of_day >= begin or minute_of_day < end


def _voucher_info(voucher: Voucher) -> VoucherInfo:
    return VoucherInfo(
        voucher=voucher,
        id=voucher.id,
        kind=voucher.kind,
        rate=voucher.rate or 0.0,
        from_s=voucher.valid_from.timestamp() if voucher.valid_from else -_INF,
        to_s=voucher.expires.timestamp() if voucher.expires else _INF,
    )


def capable(region: Region, capability: Capability) -> bool:
    """Whether ``region`` serves ``capability`` (the rule the chooser's candidates follow)."""
    if capability in region.capabilities:
        return True
    # A chat platform serves the legacy completions endpoint too.
    return capability == "completions" and "chat" in region.capabilities


class ConfigIndex:
    """Candidates per request kind, and local-time helpers, for one config."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.tz = ZoneInfo(config.timezone)
        self.slo_ms = config.classes.interactive.latency_slo_ms
        self.vouchers = {v.id: _voucher_info(v) for v in config.vouchers}
        self._candidates: dict[tuple[str, str, str, str, bool], tuple[Candidate, ...]] = {}
        self._lock = Lock()
        self._minutes: dict[int, int] = {}  # clock minute -> local minute of the day
        self._local: dict[int, tuple[int, int]] = {}  # clock minute -> (local weekday, minute of the day)

    def minute_of_day(self, epoch_s: float) -> int:
        """Local minute of the day (0..1439) at ``epoch_s``."""
        # Offsets change on whole minutes: one time-zone lookup per clock minute.
        clock_minute = int(epoch_s // 60)
        found = self._minutes.get(clock_minute)
        if found is None:
            # the offset of this instant (a naive time would be read as local wall time,
            # wrong for the hours around a daylight-saving change)
            offset = datetime.fromtimestamp(clock_minute * 60, UTC).astimezone(self.tz).utcoffset()
            local_s = clock_minute * 60 + (offset.total_seconds() if offset is not None else 0.0)
            found = int(local_s // 60) % 1440
            if len(self._minutes) > 8192:
                self._minutes.clear()
            self._minutes[clock_minute] = found
        return found

    def local_time(self, epoch_s: float) -> tuple[int, int]:
        """Local ``(weekday, minute of the day)`` at ``epoch_s`` (0 = Monday; 0..1439)."""
        clock_minute = int(epoch_s // 60)
        found = self._local.get(clock_minute)
        if found is None:
            local = datetime.fromtimestamp(clock_minute * 60, UTC).astimezone(self.tz)
            found = (local.weekday(), local.hour * 60 + local.minute)
            if len(self._local) > 8192:
                self._local.clear()
            self._local[clock_minute] = found
        return found

    def factor(self, offer: Offer, epoch_s: float) -> float:
        """The offer's time-of-use factor for a start at ``epoch_s`` (``payment.price_factor``)."""
        if offer.off_peak is None and not offer.bands:
            return 1.0
        weekday, minute = self.local_time(epoch_s)
        return factor_at(offer, weekday, minute)

    def candidates(
        self,
        model: str,
        work_class: WorkClass,
        origin: Zone,
        capability: Capability = "chat",
        *,
        prior_latency: bool = True,
    ) -> tuple[Candidate, ...]:
        """Regions serving ``model`` for this class and capability.

        With ``prior_latency`` interactive candidates are those whose prior
        ``ttft_ms + rtt_ms[origin]`` meets the SLO; a caller holding measured latencies
        passes False and applies the rule itself.
        """
        key = (model, work_class, origin, capability, prior_latency)
        found = self._candidates.get(key)
        if found is None:
            found = self._build(model, work_class, origin, capability, prior_latency)
            with self._lock:
                self._candidates[key] = found
        return found

    def _build(
        self, model: str, work_class: WorkClass, origin: Zone, capability: Capability, prior_latency: bool
    ) -> tuple[Candidate, ...]:
        needed: Capability = "fine_tuning" if work_class == "training" else capability
        out: list[Candidate] = []
        for region in self.config.regions:
            offer = region.offer(model)
            if offer is None or not capable(region, needed):
                continue
            latency = region.latency_ms(origin)
            if work_class == "interactive" and prior_latency and latency > self.slo_ms:
                continue
            out.append(self._candidate(region, offer, model, work_class, latency))
        return tuple(out)

    def _candidate(
        self, region: Region, offer: Offer, model: str, work_class: WorkClass, latency: float
    ) -> Candidate:
        ratio = offer.token_ratio
        training = work_class == "training"
        yuan_in = (offer.price.train if training else offer.price.input) * ratio / 1e6
        yuan_out = 0.0 if training else offer.price.output * ratio / 1e6
        vouchers = tuple(
            self.vouchers[v.id]
            for v in self.config.vouchers
            if v.region == region.id
            and (v.models is None or model in v.models)
            and (v.classes is None or work_class in v.classes)
        )
        return Candidate(
            region=region,
            offer=offer,
            region_id=region.id,
            ratio=ratio,
            yuan_in=yuan_in,
            yuan_out=yuan_out,
            window=offer.off_peak.minutes() if offer.off_peak else None,
            discount=offer.off_peak.discount if offer.off_peak else 0.0,
            latency_ms=latency,
            vouchers=vouchers,
            rpm=float(region.limits.rpm) if region.limits.rpm else _INF,
            tpm=float(region.limits.tpm) if region.limits.tpm else _INF,
            uses_capacity=not training,
            timed=offer.off_peak is not None or bool(offer.bands),
            yuan_cached=yuan_in if training else offer.price.cached_input * ratio / 1e6,
        )


_CACHE: dict[int, ConfigIndex] = {}
_CACHE_LOCK = Lock()


def index_for(config: Config) -> ConfigIndex:
    """The cached index of ``config`` (keyed on identity: configs are immutable)."""
    found = _CACHE.get(id(config))
    if found is not None and found.config is config:
        return found
    built = ConfigIndex(config)
    with _CACHE_LOCK:
        if len(_CACHE) > 64:
            _CACHE.clear()
        _CACHE[id(config)] = built
    return built
