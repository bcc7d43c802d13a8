"""Token ratios learned from the usage upstreams report: a running estimate per offer.

An offer's configured ``token_ratio`` (its model's tokens per reference token) is a
prior. Each served request is a sample: the reference tokens we counted for its input
and the input tokens the upstream reports in its own model's tokens. The estimate is the
ratio of the two sums, each decayed by half every ``half_life`` samples, so a long prompt
weighs more than a ten-token one (whose count the chat template dominates) and a changed
upstream tokenizer is followed. An offer's estimate is published only once it has
``min_samples`` samples; until then the configured ratio stands.

Pure: no I/O, no clock. Not thread-safe: one caller at a time; ``learned()`` returns a
mapping that is replaced, never changed, so other threads may read it freely.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["RatioEstimator"]

Key = tuple[str, str]  # (region id, public model name)


@dataclass(slots=True)
class _Sums:
    reference: float = 0.0  # decayed reference tokens
    reported: float = 0.0  # decayed model tokens the upstream reported
    samples: int = 0


class RatioEstimator:
    """Running token-ratio estimates per (region, model); see the module docstring."""

    def __init__(
        self,
        *,
        min_samples: int = 20,
        half_life: float = 1000.0,
        tolerance: float = 0.02,
        bounds: tuple[float, float] = (0.05, 20.0),
    ) -> None:
        self.min_samples = min_samples
        self._decay = 0.5 ** (1.0 / half_life)
        self._tolerance = tolerance  # relative change that republishes an estimate
        self._bounds = bounds  # a sample whose own ratio falls outside is a glitch, not a tokenizer
        self._sums: dict[Key, _Sums] = {}
        self._published: Mapping[Key, float] = {}

    def observe(self, key: Key, *, reference_tokens: float, reported_tokens: float) -> bool:
        """Add one sample; True when the published estimate of ``key`` appeared or moved."""
        if reference_tokens <= 0 or reported_tokens <= 0:
            return False
        low, high = self._bounds
        if not low <= reported_tokens / reference_tokens <= high:
            return False
        sums = self._sums.get(key)
        if sums is None:
            sums = self._sums[key] = _Sums()
        sums.reference = sums.reference * self._decay + reference_tokens
        sums.reported = sums.reported * self._decay + reported_tokens
        sums.samples += 1
        if sums.samples < self.min_samples:
            return False
        estimate = sums.reported / sums.reference
        old = self._published.get(key)
        if old is not None and abs(estimate - old) <= self._tolerance * old:
            return False
        self._published = {**self._published, key: estimate}
        return True

    def ratio(self, key: Key) -> float | None:
        """The current estimate of ``key`` (published or not), None without samples."""
        sums = self._sums.get(key)
        return sums.reported / sums.reference if sums is not None and sums.reference > 0 else None

    def samples(self, key: Key) -> int:
        """How many samples ``key`` has had."""
        sums = self._sums.get(key)
        return sums.samples if sums is not None else 0

    def learned(self) -> Mapping[Key, float]:
        """(region, model) -> published ratio, for offers with enough samples."""
        return self._published
