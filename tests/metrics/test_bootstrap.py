"""Percentile-bootstrap intervals over pieces: hand-computed small cases, agreement with a plain
loop over redraws, coverage on simulated data, edge cases, and real tunes' features."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from musicgen.metrics.bootstrap import bootstrap_ci, kl_from, mean_of, overlap_with, ratio
from musicgen.metrics.features import HISTOGRAMS, kl, overlap, piece_features
from musicgen.midi_io import read_score


def test_two_pieces_hand_computed():
    """Two pieces: a redraw is (0, 0), (1, 1) or mixed with chances 1/4, 1/4, 1/2, so the ratio of
    sums over redraws is 1/2, 3/4 or 4/6 and the 95% interval runs from 1/2 to 3/4."""
    stats = np.array([[1, 2], [3, 4]])
    value, low, high = bootstrap_ci(stats, ratio(0, 1), n_boot=4000)
    assert math.isclose(value, 4 / 6)
    assert (low, high) == (0.5, 0.75)
    # the mean of a column: (1 + 3) / 2 with redraw values 1, 3 or 2
    assert bootstrap_ci(stats, mean_of(0), n_boot=4000) == (2.0, 1.0, 3.0)


def test_matches_a_plain_loop_over_redraws():
    rng = np.random.default_rng(5)
    stats = rng.integers(0, 30, size=(37, 3)).astype(float)
    stats[:, 1] += 30  # denominators
    n_boot, seed = 500, 11
    draws = np.random.default_rng(seed).integers(0, len(stats), size=(n_boot, len(stats)))
    loop = [stats[d, 0].sum() / stats[d, 1].sum() for d in draws]
    value, low, high = bootstrap_ci(stats, ratio(0, 1), n_boot=n_boot, seed=seed)
    assert math.isclose(value, stats[:, 0].sum() / stats[:, 1].sum())
    assert np.allclose([low, high], np.percentile(loop, [2.5, 97.5]), rtol=1e-12)
    # and for the mean of a column, at another level
    loop = [stats[d, 2].mean() for d in draws]
    _, low, high = bootstrap_ci(stats, mean_of(2), n_boot=n_boot, seed=seed, level=0.8)
    assert np.allclose([low, high], np.percentile(loop, [10, 90]), rtol=1e-12)


def test_seed_level_and_width():
    rng = np.random.default_rng(0)
    stats = rng.normal(10, 2, size=(50, 1))
    a = bootstrap_ci(stats, mean_of(0), seed=3)
    assert bootstrap_ci(stats, mean_of(0), seed=3) == a
    assert bootstrap_ci(stats, mean_of(0), seed=4) != a
    _, lo50, hi50 = bootstrap_ci(stats, mean_of(0), level=0.5)
    _, lo95, hi95 = bootstrap_ci(stats, mean_of(0), level=0.95)
    assert lo95 < lo50 < a[0] < hi50 < hi95
    # the interval of a mean is about +- 1.96 standard errors
    se = stats[:, 0].std(ddof=1) / math.sqrt(len(stats))
    assert math.isclose(hi95 - lo95, 2 * 1.96 * se, rel_tol=0.15)
    # 1-D input is one column
    assert bootstrap_ci(stats[:, 0], mean_of(0), seed=3) == a


def test_coverage_on_simulated_pieces():
    """Pieces with a true repetition rate of 0.3 and random lengths: the 95% interval of the
    ratio of sums holds the truth in about 95% of repeated experiments."""
    rng = np.random.default_rng(1)
    hits, trials = 0, 200
    for t in range(trials):
        totals = rng.integers(20, 200, size=40)
        repeated = rng.binomial(totals, 0.3)
        _, low, high = bootstrap_ci(np.stack([repeated, totals], axis=1), ratio(0, 1), n_boot=400, seed=t)
        hits += low <= 0.3 <= high
    assert 0.88 <= hits / trials <= 0.99, hits


def test_no_piece_one_piece_and_zero_denominators_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, low, high = bootstrap_ci(np.zeros((0, 2)), ratio(0, 1))
        assert math.isnan(value) and math.isnan(low) and math.isnan(high)
        value, low, high = bootstrap_ci(np.array([[3, 4]]), ratio(0, 1))
        assert value == 0.75 and math.isnan(low) and math.isnan(high)
        value, low, high = bootstrap_ci(np.zeros((5, 2)), ratio(0, 1))  # no n-gram at all
        assert math.isnan(value) and math.isnan(low) and math.isnan(high)
        # one piece with a zero denominator: redraws of only that piece are left out
        value, low, high = bootstrap_ci(np.array([[1, 2], [0, 0]]), ratio(0, 1))
        assert (value, low, high) == (0.5, 0.5, 0.5)
        value, low, high = bootstrap_ci(np.zeros((3, 4)), overlap_with(np.ones(4)))  # empty histograms
        assert math.isnan(value) and math.isnan(low)


def test_validation():
    stats = np.ones((3, 2))
    for kwargs in ({"n_boot": 0}, {"level": 1.0}, {"level": 0.0}):
        with pytest.raises(ValueError):
            bootstrap_ci(stats, ratio(0, 1), **kwargs)
    with pytest.raises(ValueError):
        bootstrap_ci(np.ones((2, 2, 2)), ratio(0, 1))
    with pytest.raises(ValueError, match="statistic"):
        bootstrap_ci(stats, lambda rows: rows)  # (B, K), not (B,)
    with pytest.raises(ValueError):
        kl_from(np.ones(2), eps=0)


def test_histogram_statistics_hand_computed():
    ref = np.array([1.0, 0.0, 1.0])
    stats = np.array([[2, 0, 0, 9], [1, 1, 0, 9]])  # last column is not part of the histogram
    # summed histogram 3 1 0 -> .75 .25 0 against .5 0 .5
    value, low, high = bootstrap_ci(stats, overlap_with(ref, cols=slice(0, 3)), n_boot=2000)
    assert math.isclose(value, 0.5)
    # redraws: (0, 0) -> 1 0 0, overlap .5; (1, 1) -> .5 .5 0, overlap .5; mixed .5
    assert math.isclose(low, 0.5) and math.isclose(high, 0.5)
    value, _, _ = bootstrap_ci(stats, kl_from(ref, eps=1e-3, cols=[0, 1, 2]))
    assert math.isclose(value, kl(np.array([3, 1, 0]), ref, 1e-3))
    value, low, high = bootstrap_ci(stats, kl_from(ref, eps=1e-3, cols=slice(0, 3)), n_boot=2000)
    kls = sorted(kl(h, ref, 1e-3) for h in ([1, 0, 0], [1, 1, 0]))
    assert math.isclose(low, kls[0]) and math.isclose(high, kls[1])
    assert low <= value <= high


def test_real_tunes_pitch_overlap_interval(folk_midi_files):
    """Pitch histograms of real folk tunes against the pooled histogram of all of them."""
    rows = np.stack([piece_features(read_score(p))["pitch"] for p in folk_midi_files])
    assert rows.shape == (len(folk_midi_files), len(HISTOGRAMS["pitch"]))
    ref = rows.sum(axis=0)
    value, low, high = bootstrap_ci(rows, overlap_with(ref))
    assert value == pytest.approx(1.0)  # the set against its own pooled histogram
    # redraws of a dozen tunes differ from the pool: a redraw holds about 63% of the tunes, so
    # its histogram is noisier and the percentile interval of a distance lies below the value
    assert 0.6 < low < high < value
    half = rows[: len(rows) // 2]
    value, low, high = bootstrap_ci(half, overlap_with(ref))
    assert math.isclose(value, overlap(half.sum(axis=0), ref)) and low <= value <= high < 1.0
    value, low, high = bootstrap_ci(half, kl_from(ref))
    assert 0 < low <= value <= high
