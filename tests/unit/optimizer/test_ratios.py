"""The running token-ratio estimator: published only with enough samples, token-weighted."""

from __future__ import annotations

import random

from suanli.optimizer.ratios import RatioEstimator

KEY = ("qingyang", "deepseek-flash")


def test_estimate_is_published_only_after_min_samples():
    est = RatioEstimator(min_samples=5)
    moved = [est.observe(KEY, reference_tokens=100, reported_tokens=130) for _ in range(5)]
    assert moved == [False, False, False, False, True]
    assert est.learned() == {KEY: 1.3}
    assert est.samples(KEY) == 5


def test_estimate_converges_on_the_true_ratio_despite_rounding_noise():
    rng = random.Random(7)
    est = RatioEstimator(min_samples=20)
    for _ in range(400):
        reference = rng.randint(5, 3000)
        # Upstream counts: its tokenizer's ratio, plus a few template tokens either way.
        reported = round(reference * 1.6) + rng.randint(-3, 3)
        est.observe(KEY, reference_tokens=reference, reported_tokens=reported)
    assert abs(est.learned()[KEY] - 1.6) < 0.01


def test_long_prompts_weigh_more_than_short_ones():
    est = RatioEstimator(min_samples=2, half_life=float("inf"))
    est.observe(KEY, reference_tokens=10, reported_tokens=30)  # template overhead: ratio 3 on 10 tokens
    est.observe(KEY, reference_tokens=10_000, reported_tokens=12_000)
    assert abs(est.learned()[KEY] - 12_030 / 10_010) < 1e-12


def test_small_moves_do_not_republish_but_a_changed_tokenizer_does():
    est = RatioEstimator(min_samples=3, half_life=10)
    for _ in range(3):
        est.observe(KEY, reference_tokens=1000, reported_tokens=1000)
    before = est.learned()
    assert not est.observe(KEY, reference_tokens=1000, reported_tokens=1010)
    assert est.learned() is before
    moved = [est.observe(KEY, reference_tokens=1000, reported_tokens=2000) for _ in range(30)]
    assert any(moved)
    assert est.learned()[KEY] > 1.8
    assert before == {KEY: 1.0}  # published mappings are replaced, never changed


def test_glitches_are_not_samples():
    est = RatioEstimator(min_samples=1)
    assert not est.observe(KEY, reference_tokens=0, reported_tokens=50)
    assert not est.observe(KEY, reference_tokens=100, reported_tokens=0)
    assert not est.observe(KEY, reference_tokens=100, reported_tokens=100_000)
    assert est.samples(KEY) == 0 and est.ratio(KEY) is None
