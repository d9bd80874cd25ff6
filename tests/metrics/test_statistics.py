"""The statistics module: coverage of its intervals on simulated data with a known true difference
(paired pieces; three training seeds on shared pieces), with the naive methods it replaces shown
to fail the same checks; TOST, the verdict rule, Holm and Wilson against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from musicgen.metrics.bootstrap import bootstrap_ci, ratio
from musicgen.metrics.statistics import (
    VERDICTS,
    holm,
    paired_difference,
    seed_piece_interval,
    t_over_seeds,
    tost,
    verdict,
    welch_difference,
    wilson,
)

SIMS = 400
TRUE = 0.03  # the true difference, nats per note


def _notes(rng: np.random.Generator, size) -> np.ndarray:
    """Notes per piece, skewed like real tunes: 20 plus a geometric tail (mean about 70)."""
    return 20 + rng.geometric(1 / 50, size=size)


def _covered(intervals: list[dict[str, float]], truth: float = TRUE) -> float:
    return float(np.mean([f["low"] <= truth <= f["high"] for f in intervals]))


# ----------------------------------------------------------------------------- paired pieces


def _paired_runs(rng: np.random.Generator, pieces: int = 200):
    """Two runs' total NLL per piece: a shared difficulty per piece (much larger than the runs'
    difference), a per-piece difference around TRUE per note, and per-note noise."""
    n = _notes(rng, pieces).astype(float)
    difficulty = rng.gamma(4.0, 0.5, pieces)  # nats per note
    effect = TRUE + rng.normal(0, 0.08, pieces)  # the runs' difference on this piece, per note
    b = n * difficulty + rng.normal(0, 1, pieces) * np.sqrt(n) * 0.3
    a = b + n * effect + rng.normal(0, 1, pieces) * np.sqrt(n) * 0.3
    return a, b, n


def test_paired_difference_value_pairing_and_seed():
    a, b, n = _paired_runs(np.random.default_rng(1))
    d = paired_difference(a, b, n, n_boot=1000, seed=3)
    assert set(d) == {"value", "low", "high"}
    assert math.isclose(d["value"], (a - b).sum() / n.sum())
    assert d["low"] < d["value"] < d["high"]
    assert paired_difference(a, b, n, n_boot=1000, seed=3) == d
    assert paired_difference(a, b, n, n_boot=1000, seed=4) != d
    # pairing: the shared difficulty cancels, so the interval of the difference is far narrower
    # than that of either run's own NLL per note
    _, lo_a, hi_a = bootstrap_ci(np.column_stack([a, n]), ratio(0, 1), n_boot=1000)
    assert d["high"] - d["low"] < 0.2 * (hi_a - lo_a)
    # swapping the runs mirrors the figure
    r = paired_difference(b, a, n, n_boot=1000, seed=3)
    assert math.isclose(r["value"], -d["value"])
    assert np.allclose([r["low"], r["high"]], [-d["high"], -d["low"]], atol=0.15 * (d["high"] - d["low"]))
    # on this near-symmetric case BCa agrees with the plain percentile interval of bootstrap.py
    _, lo, hi = bootstrap_ci(np.column_stack([a - b, n]), ratio(0, 1), n_boot=4000)
    assert np.allclose([d["low"], d["high"]], [lo, hi], atol=0.15 * (hi - lo))
    # a wider level gives a wider interval
    w = paired_difference(a, b, n, n_boot=1000, seed=3, level=0.99)
    assert w["low"] < d["low"] and w["high"] > d["high"]


def test_paired_difference_edge_cases():
    nan = paired_difference([1.0, 2.0], [0.5, 0.5], [10, 20], n_boot=0)
    assert nan["value"] == pytest.approx(2.0 / 30) and math.isnan(nan["low"]) and math.isnan(nan["high"])
    one = paired_difference([3.0], [1.0], [4])
    assert one["value"] == 0.5 and math.isnan(one["low"])
    # every piece the same per-note difference: nothing to vary
    assert paired_difference([2.0, 4.0, 6.0], [0.0, 0.0, 0.0], [1, 2, 3]) == {"value": 2.0, "low": 2.0, "high": 2.0}
    with pytest.raises(ValueError, match="same pieces"):
        paired_difference([1.0, 2.0], [1.0], [1, 1])
    with pytest.raises(ValueError, match="level"):
        paired_difference([1.0, 2.0], [1.0, 1.0], [1, 1], level=95)


def test_paired_bootstrap_covers_the_true_difference():
    """400 simulated pairs of runs on 200 pieces: the 95% interval holds the true difference in
    92.5-97.5% of them. An unpaired interval (each run's pieces redrawn on their own) carries the
    shared difficulty into the difference and covers nearly always: the window catches that too."""
    rng = np.random.default_rng(2024)
    runs = [_paired_runs(rng) for _ in range(SIMS)]
    paired = [paired_difference(a, b, n, n_boot=500, seed=i) for i, (a, b, n) in enumerate(runs)]
    assert 0.925 <= _covered(paired) <= 0.975
    unpaired = []
    for a, b, n in runs:
        ia, ib = rng.integers(0, len(n), (2, 500, len(n)))
        diffs = a[ia].sum(1) / n[ia].sum(1) - b[ib].sum(1) / n[ib].sum(1)
        lo, hi = np.percentile(diffs, [2.5, 97.5])
        unpaired.append({"low": lo, "high": hi})
    assert _covered(unpaired) > 0.99
    # and the paired interval is the narrower by far
    width = np.mean([f["high"] - f["low"] for f in paired])
    assert width < 0.3 * np.mean([f["high"] - f["low"] for f in unpaired])


# ----------------------------------------------------------------------------- seeds and pieces


def _seeded_runs(rng: np.random.Generator, seed_sd: float, piece_sd: float, seeds: int = 3, pieces: int = 200):
    """Per-piece differences (total nats) of A minus B for each training seed, all seeds scored on
    the same pieces: a per-seed effect, a per-piece effect shared by the seeds, and per-note noise
    for each seed and piece. True difference TRUE per note."""
    n = _notes(rng, pieces).astype(float)
    per_note = TRUE + rng.normal(0, seed_sd, (seeds, 1)) + rng.normal(0, piece_sd, (1, pieces))
    return n * per_note + rng.normal(0, 0.3, (seeds, pieces)) * np.sqrt(n), n


REGIMES = {  # seed sd, piece sd (per note): their parts of the error are about seed sd / sqrt(3), piece sd * 0.087
    "seeds differ most": (0.02, 0.05),
    "both alike": (0.0075, 0.05),
    "pieces differ most": (0.0, 0.1),
}


@pytest.mark.parametrize("regime", REGIMES)
def test_three_seeds_t_interval_covers(regime):
    """3 seeds x 200 shared pieces, 400 simulations: the t interval covers the true difference in
    92.5-97.5% of them, whether the seeds or the pieces make most of the spread."""
    rng = np.random.default_rng(7)
    sims = [_seeded_runs(rng, *REGIMES[regime]) for _ in range(SIMS)]
    assert 0.925 <= _covered([seed_piece_interval(d, n) for d, n in sims]) <= 0.975


def test_naive_intervals_under_cover_at_three_seeds():
    """What the t interval replaces fails the same check: a bootstrap over 3 seeds (10 distinct
    redraws) is far too narrow; averaging the seeds per piece and bootstrapping pieces (the seed
    spread vanishes) too; and a t interval over the per-seed estimates alone misses the pieces."""
    rng = np.random.default_rng(8)
    sims = [_seeded_runs(rng, *REGIMES["seeds differ most"]) for _ in range(SIMS)]
    boot = [seed_piece_interval(d, n, method="bootstrap", n_boot=500, seed=i) for i, (d, n) in enumerate(sims)]
    assert _covered(boot) < 0.85
    averaged = [seed_piece_interval(d.mean(axis=0, keepdims=True), n, n_boot=500, seed=i)
                for i, (d, n) in enumerate(sims[:100])]  # one row: the piece bootstrap
    assert _covered(averaged) < 0.75

    sims = [_seeded_runs(rng, *REGIMES["pieces differ most"]) for _ in range(SIMS)]
    seeds_only = []
    for d, n in sims:
        per_seed = d.sum(1) / n.sum()
        half = stats.t.ppf(0.975, 2) * per_seed.std(ddof=1) / math.sqrt(3)
        seeds_only.append({"low": per_seed.mean() - half, "high": per_seed.mean() + half})
    assert _covered(seeds_only) < 0.85


def test_seed_bootstrap_with_many_seeds():
    """With 30 seeds the redraw of seeds and pieces is usable (it leans wide, never narrow)."""
    rng = np.random.default_rng(9)
    sims = [_seeded_runs(rng, 0.01, 0.05, seeds=30, pieces=100) for _ in range(200)]
    boot = [seed_piece_interval(d, n, method="bootstrap", n_boot=500, seed=i) for i, (d, n) in enumerate(sims)]
    assert 0.92 <= _covered(boot) <= 0.995
    t = [seed_piece_interval(d, n) for d, n in sims]
    assert 0.9 <= _covered(t) <= 0.99


def test_seed_piece_interval_hand_cases():
    n = np.array([25.0, 25.0, 25.0, 25.0])
    # no piece effect and no noise: the t interval over the three per-seed estimates, df = 2
    per_seed = np.array([0.01, 0.03, 0.05])
    d = per_seed[:, None] * n[None, :]
    f = seed_piece_interval(d, n)
    half = stats.t.ppf(0.975, 2) * per_seed.std(ddof=1) / math.sqrt(3)
    assert f["value"] == pytest.approx(0.03)
    assert (f["low"], f["high"]) == pytest.approx((0.03 - half, 0.03 + half))
    # the same (P,) denominators given per seed give the same figure
    assert seed_piece_interval(d, np.tile(n, (3, 1))) == f
    # one seed: the paired piece bootstrap
    one = seed_piece_interval(d[:1] + np.array([[1.0, -1.0, 2.0, 0.0]]), n, n_boot=200, seed=1)
    assert one == paired_difference(d[0] + np.array([1.0, -1.0, 2.0, 0.0]), np.zeros(4), n, n_boot=200, seed=1)
    with pytest.raises(ValueError, match="method"):
        seed_piece_interval(d, n, method="jackknife")
    with pytest.raises(ValueError, match="seeds, pieces"):
        seed_piece_interval(d[0], n)


# ----------------------------------------------------------------------------- equivalence, verdicts


def test_tost_samples_match_two_one_sided_t_tests():
    x = np.array([0.002, -0.001, 0.004, 0.001, 0.0])
    margin = 0.01
    res = tost(x, margin)
    se = x.std(ddof=1) / math.sqrt(len(x))
    p_low = stats.t.sf((x.mean() + margin) / se, len(x) - 1)  # H0: mean <= -margin
    p_high = stats.t.cdf((x.mean() - margin) / se, len(x) - 1)  # H0: mean >= margin
    assert res["p_value"] == pytest.approx(max(p_low, p_high))
    assert res["equivalent"] and res["p_value"] < 0.05
    half = stats.t.ppf(0.95, len(x) - 1) * se  # the 90% interval
    assert (res["low"], res["high"]) == pytest.approx((x.mean() - half, x.mean() + half))
    # centred on zero but too spread to rule out the margin: not equivalent
    wide = tost(np.array([-0.02, 0.02, -0.01, 0.01]), margin)
    assert not wide["equivalent"] and wide["p_value"] > 0.05
    # a clear difference beyond the margin
    assert not tost(x + 0.03, margin)["equivalent"]


def test_tost_interval_inclusion():
    assert tost({"value": 0.001, "low": -0.004, "high": 0.006}, 0.01)["equivalent"]
    assert not tost({"value": 0.004, "low": -0.004, "high": 0.012}, 0.01)["equivalent"]
    assert not tost({"value": 0.0, "low": -0.01, "high": 0.0}, 0.01)["equivalent"]  # the margin itself is out
    assert math.isnan(tost({"low": -0.004, "high": 0.006}, 0.01)["p_value"])
    with pytest.raises(ValueError, match="margin"):
        tost({"low": 0.0, "high": 0.0}, 0.0)


@pytest.mark.parametrize(("low", "high", "expected"), [
    (0.012, 0.03, "supported"),        # the whole interval at or above the claimed 0.01
    (0.01, 0.02, "supported"),         # "at least": the bound itself counts
    (-0.004, 0.004, "equivalent"),     # inside the margin of 0.005
    (-0.03, -0.01, "contradicted"),    # B is better
    (0.0, 0.008, "contradicted"),      # better, but by less than claimed, and not negligibly
    (-0.002, 0.02, "inconclusive"),    # holds the claim and less than it
    (math.nan, math.nan, "inconclusive"),
])
def test_verdict_rules(low, high, expected):
    assert verdict({"value": 0.0, "low": low, "high": high}, min_effect=0.01, margin=0.005) == expected
    assert expected in VERDICTS


def test_verdict_order_and_errors():
    # a claim of any improvement (min_effect 0) that holds, though within the margin: supported first
    assert verdict({"low": 0.001, "high": 0.004}, min_effect=0.0, margin=0.005) == "supported"
    assert verdict({"low": -0.001, "high": 0.004}, min_effect=0.0, margin=0.005) == "equivalent"
    with pytest.raises(ValueError, match="margin"):
        verdict({"low": 0.0, "high": 1.0}, 0.0, margin=-1)
    with pytest.raises(ValueError, match="low"):
        verdict({"low": 1.0, "high": 0.0}, 0.0, margin=1)


# ----------------------------------------------------------------------------- Holm, Wilson


def test_holm_against_hand_computed():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    res = holm([0.01, 0.04, 0.03, 0.005])
    assert res["adjusted"] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert res["reject"] == [True, False, False, True]
    assert holm([0.5, 0.6])["adjusted"] == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.01, 0.04, 0.03, 0.005], alpha=0.025)["reject"] == [False, False, False, True]
    assert holm([]) == {"adjusted": [], "reject": []}
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, 1.5])


def _wilson_closed_form(k: int, n: int, level: float) -> tuple[float, float]:
    z = stats.norm.ppf((1 + level) / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_wilson_against_closed_form_and_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    for n in (1, 7, 40, 240):
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            for level in (0.9, 0.95, 0.99):
                lo, hi = wilson(k, n, level)
                assert (lo, hi) == pytest.approx(_wilson_closed_form(k, n, level), abs=1e-12)
                assert (lo, hi) == pytest.approx(proportion_confint(k, n, alpha=1 - level, method="wilson"), abs=1e-12)
                assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="k <= n"):
        wilson(5, 4)
    # the experiments read it from here
    from musicgen.experiments import control

    assert control.wilson is wilson


def test_wilson_covers_a_known_rate():
    """2,000 simulated counts of 40 trials at rate 0.1: the 95% interval covers the rate in
    93-97.5% of them (Wilson keeps its coverage near the edges, where the normal one does not)."""
    rng = np.random.default_rng(3)
    ks = rng.binomial(40, 0.1, 2000)
    covered = np.mean([lo <= 0.1 <= hi for lo, hi in (wilson(int(k), 40) for k in ks)])
    assert 0.93 <= covered <= 0.975
    p = ks / 40
    normal = np.abs(p - 0.1) <= 1.96 * np.sqrt(p * (1 - p) / 40)
    assert normal.mean() < 0.93


def test_t_over_seeds_covers_the_true_mean_at_three_seeds():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(SIMS):
        iv = t_over_seeds(rng.normal(2.0, 0.3, size=3))
        hits += iv["low"] <= 2.0 <= iv["high"]
    assert 0.925 <= hits / SIMS <= 0.975
    assert np.isnan(t_over_seeds([1.0])["low"])


@pytest.mark.parametrize("spread_b", [0.3, 0.9])
def test_welch_difference_covers_the_true_difference_at_three_seeds_a_side(spread_b):
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(SIMS):
        iv = welch_difference(rng.normal(2.0, 0.3, size=3), rng.normal(2.0 - TRUE * 10, spread_b, size=3))
        assert iv["low"] < iv["value"] < iv["high"]
        hits += iv["low"] <= TRUE * 10 <= iv["high"]
    assert 0.925 <= hits / SIMS <= 0.975
    assert welch_difference([1.0, 2.0], [0.5])["value"] == 1.0 and np.isnan(welch_difference([1.0, 2.0], [0.5])["low"])
