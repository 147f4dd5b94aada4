"""The bootstrap interval code against hand-computable cases."""

from __future__ import annotations

import numpy as np
import pytest

from prunefit.evaluation.intervals import bootstrap_interval, mean_of_groups


def test_two_prompts_one_seed_matches_the_exact_bootstrap_distribution():
    # resampling [0, 1] twice: mean 0 w.p. 1/4, 0.5 w.p. 1/2, 1 w.p. 1/4 -> 95% percentile interval [0, 1]
    iv = bootstrap_interval([np.array([0.0, 1.0])], n_boot=4000, seed=1)
    assert (iv.estimate, iv.low, iv.high) == (0.5, 0.0, 1.0)
    # and the central 40% interval is the atom at 0.5
    mid = bootstrap_interval([np.array([0.0, 1.0])], n_boot=4000, level=0.4, seed=1)
    assert (mid.low, mid.high) == (0.5, 0.5)


def test_constant_data_has_a_degenerate_interval_and_seeds_weigh_equally():
    iv = bootstrap_interval([np.ones(5), np.ones(50)], n_boot=200)
    assert (iv.low, iv.high, iv.n_groups) == (1.0, 1.0, 2)
    assert mean_of_groups([np.zeros(10), np.ones(2)]) == 0.5


def test_seed_level_variation_widens_the_interval():
    one = bootstrap_interval([np.r_[np.zeros(50), np.ones(50)]], n_boot=2000)
    spread = bootstrap_interval([np.zeros(100), np.ones(100), np.r_[np.zeros(50), np.ones(50)]], n_boot=2000)
    assert one.low == pytest.approx(0.4, abs=0.03) and one.high == pytest.approx(0.6, abs=0.03)
    assert spread.high - spread.low > one.high - one.low


def test_paired_groups_are_resampled_with_one_index_draw():
    a = np.arange(10.0)
    iv = bootstrap_interval([(a, a.copy())], statistic=lambda gs: float(max(np.abs(x - y).max() for x, y in gs)),
                            n_boot=100)
    assert (iv.low, iv.high) == (0.0, 0.0)  # rows stay paired


def test_centred_interval_keeps_the_spread_around_a_biased_statistic():
    # statistic = max of the resample: the draws never exceed the data's max, the percentile interval of a
    # sample [0, 1, 2] sits below or at 2; the centred interval is the same width placed around the estimate
    data = [np.array([0.0, 1.0, 2.0])]
    pct = bootstrap_interval(data, statistic=lambda gs: float(gs[0].max()), n_boot=4000, seed=3)
    cen = bootstrap_interval(data, statistic=lambda gs: float(gs[0].max()), n_boot=4000, seed=3, method="centred")
    # P(max = 2) = 1 - (2/3)^3 = 19/27 > 0.5: the median draw is 2 = the estimate; P(max = 0) = 1/27 > 2.5%
    assert (pct.low, pct.high) == (cen.low, cen.high) == (0.0, 2.0)
    wide = [np.arange(10.0)]
    biased = lambda gs: float(gs[0].mean()) + (0.0 if gs[0] is wide[0] else 3.0)  # noqa: E731  (resamples +3)
    p2 = bootstrap_interval(wide, statistic=biased, n_boot=2000, seed=3)
    c2 = bootstrap_interval(wide, statistic=biased, n_boot=2000, seed=3, method="centred")
    assert p2.low > p2.estimate  # the percentile interval misses the estimate
    assert c2.low <= c2.estimate <= c2.high and c2.high - c2.low == pytest.approx(p2.high - p2.low)
