"""The leaderboard's verdicts on constructed differences with a known truth: supported,
contradicted, equivalent and inconclusive; the contrast's orientation; the p-value's calibration
under the null; Holm's step-down over a family."""

import numpy as np
import pytest

from musicgen.experiments.leaderboard.verdicts import contrast, judge, p_value


def simulated(true_effect, seed_sd=0.01, piece_sd=0.05, seeds=3, pieces=60, rng=None):
    """Per-seed, per-piece differences (denominator 1): a true effect, a seed effect shared by the
    seed's pieces, a piece effect shared by the seeds, and noise."""
    rng = rng or np.random.default_rng(0)
    seed_part = rng.normal(0, seed_sd, (seeds, 1))
    piece_part = rng.normal(0, piece_sd, (1, pieces))
    noise = rng.normal(0, piece_sd / 2, (seeds, pieces))
    return true_effect + seed_part + piece_part + noise


def claim(diffs, min_effect=0.05, margin=0.03):
    return {"diffs": diffs, "denom": np.ones(diffs.shape[1]), "min_effect": min_effect, "margin": margin}


@pytest.mark.parametrize(("truth", "expected"), [
    (0.30, "supported"),        # far above the smallest effect that matters
    (0.0, "equivalent"),        # no difference, the interval well inside the margin
    (-0.30, "contradicted"),    # the other way round
])
def test_verdicts_on_constructed_differences(truth, expected):
    (result,) = judge([claim(simulated(truth, piece_sd=0.02, pieces=200))])
    assert result["verdict"] == expected
    assert result["low"] <= result["effect"] <= result["high"]
    assert result["effect"] == pytest.approx(truth, abs=0.05)


def test_a_noisy_difference_near_the_smallest_effect_is_inconclusive():
    # the interval holds both the claimed effect and less than it, and reaches past the margin
    (result,) = judge([claim(simulated(0.05, seed_sd=0.05, piece_sd=0.3, pieces=20))])
    assert result["low"] < 0.05 < result["high"] and result["low"] < -0.03
    assert result["verdict"] == "inconclusive"


def test_a_difference_smaller_than_the_effect_but_wider_than_the_margin_is_contradicted_not_equivalent():
    (result,) = judge([claim(simulated(0.0, piece_sd=0.02, pieces=200), min_effect=0.05, margin=0.001)])
    assert result["high"] < 0.05 and result["verdict"] == "contradicted"


def test_contrast_orients_lower_is_better_and_takes_differences_of_differences():
    a, b, c = (np.full((2, 3), v) for v in (1.0, 2.0, 4.0))
    assert np.all(contrast({"a": a, "b": b}, {"a": 1, "b": -1}, "lower") == 1.0)  # A's NLL 1 below B's: +1
    assert np.all(contrast({"a": a, "b": b, "c": c}, {"c": 1, "b": -2, "a": 1}, "higher") == 1.0)  # (4-2)-(2-1)
    with pytest.raises(ValueError, match="same seeds and pieces"):
        contrast({"a": a, "b": np.ones((3, 3))}, {"a": 1, "b": -1}, "lower")


def test_the_p_value_is_calibrated_under_the_null():
    # the true effect equals the tested value: about 5% of p-values fall under 0.05
    rng = np.random.default_rng(1)
    ps = np.array([p_value(simulated(0.05, seed_sd=0.02, rng=rng), 1.0, 0.05) for _ in range(400)])
    assert 0.02 <= np.mean(ps < 0.05) <= 0.09
    assert 0.4 <= np.mean(ps < 0.5) <= 0.6
    far = p_value(simulated(0.5, piece_sd=0.02), 1.0, 0.05)
    assert far < 1e-3


def test_holm_keeps_a_borderline_claim_from_being_supported_in_a_family():
    rng = np.random.default_rng(3)
    # a claim supported on its own at 95%, but not at Holm's level among ten claims of no effect
    for _ in range(200):
        borderline = simulated(0.09, seed_sd=0.005, piece_sd=0.06, pieces=60, rng=rng)
        (alone,) = judge([claim(borderline)])
        if alone["verdict"] == "supported" and alone["p_value"] > 0.006:
            break
    else:
        pytest.fail("no borderline draw")
    family = judge([claim(borderline)] + [claim(simulated(0.0, piece_sd=0.3, rng=rng)) for _ in range(9)])
    assert family[0]["p_value"] == pytest.approx(alone["p_value"])
    assert family[0]["holm_p_value"] > 0.05 and family[0]["verdict"] == "inconclusive"
    assert family[0]["holm_low"] < alone["low"]  # read at Holm's stricter level


def test_claims_pair_pieces_by_name_and_refuse_different_pieces_in_one_line():
    """NLL per note is paired by piece name (restricted to ``pieces``, e.g. one corpus's test
    pieces); entries that scored different pieces cannot be paired: a one-line ``ConfigError``."""
    from omegaconf import OmegaConf

    from musicgen.errors import ConfigError
    from musicgen.experiments.leaderboard.board import claim_input

    def run(names, nll):
        names = np.array(names)
        return {"dir": "run", "pieces": {"likelihood/names": names, "likelihood/model_nll": np.array(nll, float),
                                         "likelihood/notes": np.array([10 + len(n) for n in names])}}

    claim = OmegaConf.create({"name": "genre", "contrast": {"alone": 1, "pooled": -1}, "metric": "nll_per_note",
                              "better": "lower", "min_effect": 0.05, "margin": 0.03, "pieces": "chorales/"})
    pooled = run(["folk/a", "chorales/b", "folk/c", "chorales/dd"], [1.0, 2.0, 3.0, 4.0])
    alone = run(["chorales/dd", "chorales/b"], [3.0, 1.5])  # another order
    data = claim_input({"alone": [alone, alone], "pooled": [pooled, pooled]}, claim)
    assert data["pieces"] == 2 and data["seeds"] == 2
    np.testing.assert_allclose(data["diffs"], [[0.5, 1.0], [0.5, 1.0]])  # pooled - alone, piece by piece
    np.testing.assert_array_equal(data["denom"], [20, 21])
    other = run(["chorales/b", "chorales/e"], [1.0, 1.0])
    with pytest.raises(ConfigError, match=r"claim genre: pooled and alone did not score the same chorales/ "
                                          r"test pieces \(2 and 2, 1 in common\)") as e:
        claim_input({"alone": [other, other], "pooled": [pooled, pooled]}, claim)
    assert "\n" not in str(e.value)
