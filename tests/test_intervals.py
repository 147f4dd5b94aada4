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
