"""The trace events of DESIGN.md in a replay: what happened (the rules) and what a policy knows.

The *rules* hold whatever a policy knows: no request starts at a region inside one of its
``region_down`` windows, and a ``price_factor`` multiplies the list cost of every request
starting inside its window (``factor`` below, over every event). A policy *learns* an
event at its ``t`` (``learn``): from then on its chooser and planner see the region blocked
while it is down (``blocked``) and the offers' prices scaled while the factor holds
(``view``: the config as it stands at a time, known factors applied).

The hindsight bound must stay below every policy whatever the events: ``relaxed`` is the
config with every top-up added to its voucher from the start and every price cut
(factor < 1) applied all day; ``bound`` adds the outages and spikes (factor > 1) a policy
can escape only by going elsewhere, and per voucher (no package, no daily cap) its largest
cut, as the row of ``optimizer.bound_events`` (a cut takes only what is left at its time).
"""

from __future__ import annotations

from collections.abc import Sequence

from suanli.config import Config, Offer, Region
from suanli.optimizer import Job, Plan
from suanli.optimizer.bound_events import Cut, Window
from suanli.optimizer.hindsight import hindsight_bound
from suanli.router.simulate.trace import Event

__all__ = ["Shocks", "scaled"]


def scaled(offer: Offer, factor: float) -> Offer:
    """``offer`` with every price multiplied by ``factor`` (the offer itself when 1)."""
    if factor == 1.0:
        return offer
    price = offer.price
    update = {
        "input": price.input * factor,
        "output": price.output * factor,
        "train": price.train * factor,
        "cached_input": price.cached_input * factor,
    }
    return offer.model_copy(update={"price": price.model_copy(update=update)})


def _applies(event: Event, region: str, model: str) -> bool:
    return event.region == region and (event.model is None or event.model == model)


class Shocks:
    """The events of one replay, those the policy knows so far, and the config as it sees it."""

    def __init__(self, config: Config, events: Sequence[Event]) -> None:
        self.config = config
        self.events = tuple(events)
        self._prices = [e for e in self.events if e.kind == "price_factor"]
        self._known_down: list[Event] = []
        self._known_prices: list[Event] = []
        self._views: dict[tuple[int, ...], Config] = {}
        self._offers = {(r.id, o.name): o for r in config.regions for o in r.models}

    def learn(self, event: Event) -> None:
        """The policy now knows ``event`` (at its ``t``)."""
        if event.kind == "region_down":
            self._known_down.append(event)
        elif event.kind == "price_factor":
            self._known_prices.append(event)

    def changes(self) -> list[float]:
        """Epoch seconds at which what the policy knows stops holding (the known windows' ends)."""
        return sorted(e.until_s for e in (*self._known_down, *self._known_prices) if e.until_s < float("inf"))

    def blocked(self, epoch_s: float) -> frozenset[str]:
        """Regions the policy knows to be down at ``epoch_s``."""
        return frozenset(e.region for e in self._known_down if e.active(epoch_s) and e.region)

    def down(self, region: str, epoch_s: float) -> bool:
        """Whether ``region`` is known to be down at ``epoch_s``."""
        return any(e.region == region and e.active(epoch_s) for e in self._known_down)

    def factor(self, region: str, model: str, epoch_s: float) -> float:
        """The price factor the rules apply at ``region``/``model`` for a start at ``epoch_s``."""
        out = 1.0
        for e in self._prices:
            if e.active(epoch_s) and _applies(e, region, model):
                out *= e.factor
        return out

    def offer(self, region: str, model: str, epoch_s: float) -> Offer:
        """The offer a start at ``epoch_s`` is charged by: the config's, scaled by ``factor``."""
        return scaled(self._offers[(region, model)], self.factor(region, model, epoch_s))

    def view(self, epoch_s: float) -> Config:
        """The config as the policy sees it at ``epoch_s``: known price factors active then applied."""
        active = tuple(n for n, e in enumerate(self._known_prices) if e.active(epoch_s))
        if not active:
            return self.config
        cached = self._views.get(active)
        if cached is None:
            events = [self._known_prices[n] for n in active]
            cached = self._views[active] = _priced(self.config, events)
        return cached

    def windows(self) -> tuple[Window, ...]:
        """Every outage and price spike (factor > 1) of the day, for the bound."""
        out = []
        for e in self.events:
            if e.region and (e.kind == "region_down" or (e.kind == "price_factor" and e.factor > 1.0)):
                factor = e.factor if e.kind == "price_factor" else None
                out.append(Window(e.region, e.at_s, e.until_s, factor, e.model))
        return tuple(out)

    def bound(self, relaxed: Config, jobs: Sequence[Job], found: Plan) -> float:
        """The hindsight bound of ``jobs`` under ``relaxed`` with the day's outages and spikes."""
        return hindsight_bound(relaxed, jobs, found, by_minute=True, windows=self.windows(), cuts=self.cuts())

    def cuts(self) -> dict[str, Cut]:
        """Per voucher with no period nor daily cap, its largest cut (the first of equals)."""
        plain = {v.id for v in self.config.vouchers if v.period is None and v.daily_cap is None}
        deltas = [e for e in self.events if e.kind == "voucher_delta" and e.voucher in plain]
        out: dict[str, Cut] = {}
        for e in deltas:
            if e.amount < 0 and e.voucher and (e.voucher not in out or -e.amount > out[e.voucher].amount):
                ups = [o for o in deltas if o.voucher == e.voucher and o.amount > 0 and o.at_s >= e.at_s]
                later = sum(o.amount for o in ups)
                out[e.voucher] = Cut(e.voucher, e.at_s, -e.amount, later)
        return out

    def relaxed(self) -> Config:
        """The config for the hindsight bound (module docstring): top-ups and price cuts all day."""
        cuts = [e for e in self._prices if e.factor < 1.0]
        config = _priced(self.config, cuts) if cuts else self.config
        extra: dict[str, float] = {}
        for e in self.events:
            if e.kind == "voucher_delta" and e.amount > 0 and e.voucher:
                extra[e.voucher] = extra.get(e.voucher, 0.0) + e.amount
        if not extra:
            return config
        vouchers = tuple(
            v.model_copy(update={"amount": v.amount + extra[v.id]}) if v.id in extra else v
            for v in config.vouchers
        )
        return config.model_copy(update={"vouchers": vouchers})


def _priced(config: Config, events: Sequence[Event]) -> Config:
    # ``config`` with each offer's prices multiplied by the factors of ``events`` that apply to it
    def region(r: Region) -> Region:
        models = []
        for o in r.models:
            f = 1.0
            for e in events:
                if _applies(e, r.id, o.name):
                    f *= e.factor
            models.append(scaled(o, f))
        return r.model_copy(update={"models": tuple(models)})

    return config.model_copy(update={"regions": tuple(region(r) for r in config.regions)})
