"""``musicgen ttq``: the race over seeds against the tuned peer. The statistics on constructed
curves and pieces (time to the target, the ratio's interval and its coverage, the pairing by
piece), and ``quick=true`` end to end (both pipelines for a few seconds per seed on the 12-tune
fixture), resumed without retraining. The end-to-end test needs the peer's packages:
transformers and accelerate (Hugging Face's Trainer)."""

import json
import math

import numpy as np
import pytest

from musicgen.config import compose
from musicgen.errors import ConfigError
from musicgen.experiments.speed.ttq import (
    check_seeds,
    goal_verdict,
    max_time,
    race_summary,
    ratio_interval,
    time_to_reach,
    unpaired_ratio_interval,
)


def test_time_to_reach_takes_the_first_point_at_or_below_and_interpolates():
    curve = [{"wall_s": 10.0, "step": 1, "v": 9.0}, {"wall_s": 20.0, "step": 2, "v": 7.0},
             {"wall_s": 30.0, "step": 3, "v": 5.0}, {"wall_s": 40.0, "step": 4, "v": 6.0}]
    hit = time_to_reach(curve, 6.0, key="v")
    assert hit["wall_s"] == 30.0 and hit["step"] == 3
    assert hit["interpolated_wall_s"] == pytest.approx(25.0)
    assert time_to_reach(curve, 9.0, key="v")["wall_s"] == 10.0  # reached at once: no interpolation
    assert time_to_reach(curve, 9.0, key="v")["interpolated_wall_s"] == 10.0
    assert time_to_reach(curve, 4.9, key="v") is None
    assert time_to_reach([], 1.0) is None


def test_max_time_formats_the_budget_for_lightning():
    assert max_time(600) == "00:00:10:00"
    assert max_time(5.2) == "00:00:00:06"
    assert max_time(90061) == "01:01:01:01"


def test_ratio_interval_covers_the_true_geometric_mean_ratio_at_three_seeds():
    # times to the target vary by seed, log-normally: the true ratio of geometric means is 0.6
    rng = np.random.default_rng(0)
    hits, n = 0, 2000
    for _ in range(n):
        ours = np.exp(rng.normal(math.log(300.0), 0.15, size=3))
        peer = np.exp(rng.normal(math.log(500.0), 0.10, size=3))
        iv = ratio_interval(list(ours / peer))
        assert iv["low"] < iv["value"] < iv["high"]
        hits += iv["low"] <= 0.6 <= iv["high"]
    assert 0.935 <= hits / n <= 0.965
    iv = ratio_interval([0.4, 0.5, 0.45])
    assert iv["value"] == pytest.approx(math.exp(np.mean(np.log([0.4, 0.5, 0.45]))))
    unreached = ratio_interval([0.4, None, 0.45])
    assert unreached["value"] is None and unreached["not_reached"] == 1


def test_unpaired_ratio_interval_covers_the_true_ratio_of_independent_seeds():
    # ours and the peer on other seeds (no pairing), log-normal times of unequal spread: true ratio 0.5
    rng = np.random.default_rng(2)
    hits, n = 0, 2000
    for _ in range(n):
        ours = np.exp(rng.normal(math.log(250.0), 0.2, size=3))
        peer = np.exp(rng.normal(math.log(500.0), 0.05, size=3))
        iv = unpaired_ratio_interval(list(ours), list(peer))
        hits += iv["low"] <= 0.5 <= iv["high"]
    assert 0.935 <= hits / n <= 0.975
    iv = unpaired_ratio_interval([200.0, 300.0], [400.0, 600.0])
    assert iv["value"] == pytest.approx(0.5)
    assert unpaired_ratio_interval([None, 300.0], [400.0])["value"] is None


def test_goal_verdict_needs_the_whole_interval():
    assert goal_verdict({"value": 0.4, "low": 0.35, "high": 0.48}, 0.5) == "met"
    assert goal_verdict({"value": 0.45, "low": 0.35, "high": 0.55}, 0.5) == "inconclusive"
    assert goal_verdict({"value": 0.7, "low": 0.6, "high": 0.8}, 0.5) == "missed"
    assert goal_verdict({"value": 0.4, "low": math.nan, "high": math.nan}, 0.5) == "inconclusive"  # one seed
    assert goal_verdict({"value": None, "low": None, "high": None}, 0.5) == "missed"


def _curve(times, values, key="nats_per_note"):
    return [{"wall_s": float(t), "step": 10 * (i + 1), key: float(v)} for i, (t, v) in enumerate(zip(times, values))]


def _record(seed, ours_curve, peer_curve, names, notes, ours_nll, peer_names, peer_nll):
    return {"seed": seed, "ours": {"curve": ours_curve}, "peer": {"curve": peer_curve, "curve_key": "nats_per_note"},
            "test": {"ours": {"names": names, "notes": notes, "nll": list(ours_nll)},
                     "peer": {"names": peer_names, "nll": list(peer_nll)}}}


def test_race_summary_pairs_seeds_and_pieces_on_constructed_curves():
    rng = np.random.default_rng(1)
    names = [f"p{i}" for i in range(40)]
    notes = rng.integers(20, 120, size=40)
    hardness = rng.gamma(2.0, 1.5, size=40)  # nats per note of each piece, shared by both sides: paired away
    records, expected = [], []
    for seed in range(3):
        times = np.arange(1, 11) * 30.0
        peer_vals = 5.0 - 0.2 * np.arange(10) - 0.05 * seed  # reaches its final at its last point
        target = peer_vals[-1]
        ours_vals = 4.8 - 0.4 * np.arange(10)  # crosses the target between two validations
        i = int(np.argmax(ours_vals <= target))
        t_ours = times[i - 1] + (ours_vals[i - 1] - target) / (ours_vals[i - 1] - ours_vals[i]) * 30.0
        expected.append(t_ours / times[-1])
        ours_nll = hardness * notes + rng.normal(0, 1.0, 40)
        peer_nll = (hardness + 0.3) * notes + rng.normal(0, 1.0, 40)
        # the peer scored one extra piece and lists them in another order: only shared pieces count
        order = rng.permutation(40)
        records.append(_record(seed, _curve(times, ours_vals), _curve(times, peer_vals), names, notes.tolist(),
                               ours_nll, [names[j] for j in order] + ["extra"], [*peer_nll[order], 99.0]))
    sm = race_summary(records, goal=0.5, budget_s=300.0, resolution=0.05)
    got = [s["ratio"] for s in sm["per_seed"]]
    assert got == pytest.approx(expected)
    assert sm["per_seed"][0]["target"] == pytest.approx(5.0 - 1.8)
    assert sm["ratio"]["value"] == pytest.approx(math.exp(np.mean(np.log(expected))))
    assert sm["goal"]["verdict"] == goal_verdict(sm["ratio"], 0.5)
    t = sm["test"]
    assert t["pieces"] == 40 and t["notes"] == int(notes.sum())
    ours_all = np.array([r["test"]["ours"]["nll"] for r in records])
    assert t["ours"]["value"] == pytest.approx(ours_all.sum() / (3 * notes.sum()))
    assert t["peer_minus_ours"]["value"] == pytest.approx(0.3, abs=0.01)
    assert t["peer_minus_ours"]["low"] < 0.3 < t["peer_minus_ours"]["high"]
    # paired by piece: the difference's interval is far narrower than either side's spread over pieces
    width = t["peer_minus_ours"]["high"] - t["peer_minus_ours"]["low"]
    assert width < 0.2 * (t["ours"]["high"] - t["ours"]["low"])
    # validation every 30 s of a 300 s budget: 10%, over the 5% asked
    assert sm["resolution"]["ours_max_gap_s"] == 30.0 and not sm["resolution"]["met"]


def test_race_summary_when_ours_never_reaches_the_target():
    times = [10.0, 20.0]
    rec = _record(0, _curve(times, [5.0, 4.9]), _curve(times, [4.5, 4.0]), ["a", "b"], [10, 20], [40.0, 80.0],
                  ["a", "b"], [41.0, 82.0])
    sm = race_summary([rec, {**rec, "seed": 1}], goal=0.5, budget_s=20.0, resolution=0.5)
    assert sm["per_seed"][0]["ours_reach"] is None and sm["ratio"]["value"] is None
    assert sm["goal"]["verdict"] == "missed" and sm["resolution"]["met"]
    assert sm["per_seed"][0]["peer_reach_ours_final"]["wall_s"] == 10.0


def test_second_reading_races_to_the_peers_best_value_when_it_overfits():
    """A peer whose validation NLL rises after its best point: the headline races to its last value
    (which it first reaches on the way down), the second reading to its best (where it bottoms)."""
    times = np.arange(1, 11) * 30.0
    peer_vals = [5.0, 4.0, 3.5, 3.2, 3.0, 3.1, 3.2, 3.3, 3.4, 3.5]  # best 3.0 at 150 s, last 3.5
    ours_vals = 5.5 - 0.3 * np.arange(10)  # 3.5 at 7/0.3*30 s, 3.0 at 2.5/0.3*30 s
    recs = [_record(seed, _curve(times, ours_vals), _curve(times, peer_vals), ["a"], [10], [30.0], ["a"], [31.0])
            for seed in (0, 1)]
    sm = race_summary(recs, goal=0.5, budget_s=300.0, resolution=0.1)
    s = sm["per_seed"][0]
    assert s["target"] == 3.5 and s["peer_reach"]["interpolated_wall_s"] == pytest.approx(90.0)
    assert s["ratio"] == pytest.approx((2.0 / 0.3 * 30 + 30) / 90.0)
    assert s["peer_best_val"] == 3.0 and s["peer_reach_best"]["interpolated_wall_s"] == pytest.approx(150.0)
    assert s["ratio_best"] == pytest.approx((2.5 / 0.3 * 30 + 30) / 150.0)
    assert sm["best"]["peer_rose"] == 2 and sm["best"]["ratio"]["value"] == pytest.approx(s["ratio_best"])
    # a peer that only improves: both readings agree
    rising = [_record(0, _curve(times, ours_vals), _curve(times, sorted(peer_vals, reverse=True)), ["a"], [10],
                      [30.0], ["a"], [31.0])]
    one = race_summary(rising, goal=0.5, budget_s=300.0, resolution=0.1)
    assert one["best"]["peer_rose"] == 0 and one["per_seed"][0]["ratio_best"] == one["per_seed"][0]["ratio"]


def test_seeds_are_checked():
    assert check_seeds([0, 1, 2]) == [0, 1, 2]
    with pytest.raises(ConfigError, match="each once"):
        check_seeds([0, 0])
    with pytest.raises(ConfigError, match="integer"):
        check_seeds(["a"])


def test_quick_ttq_end_to_end_and_resumed(tmp_path, real_midi_dir, monkeypatch):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from musicgen.experiments.speed import ttq

    out = tmp_path / "ttq"
    docs = tmp_path / "docs"
    docs.mkdir()
    overrides = ["quick=true", f"out_dir={out}", f"data.root={real_midi_dir / 'folk'}",
                 f"data.cache_dir={tmp_path / 'cache'}", "device=cpu", "publish=true", f"publish_dir={docs}"]
    res = ttq.run(compose("ttq", overrides), overrides)

    saved = json.loads((out / "ttq.json").read_text())
    md = (out / "ttq.md").read_text()
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (docs / "results" / "ttq.md").is_file() and (docs / "results" / "ttq" / "curves.png").is_file()
    assert saved["seeds"] == [0, 1] and [r["seed"] for r in saved["records"]] == [0, 1]
    sm = saved["summary"]
    assert sm["test"]["pieces"] >= 2
    for rec in saved["records"]:
        for name in ("ours", "peer"):
            run = rec[name]
            assert run["steps"] > 0 and 0 < run["wall_s"] < 3 * saved["budget_s"], name
            curve = run["curve"]
            assert curve and all(math.isfinite(p["nats_per_note"]) and p["nats_per_note"] > 0 for p in curve), name
            assert [p["wall_s"] for p in curve] == sorted(p["wall_s"] for p in curve), name
        assert rec["peer"]["training_arguments"]["learning_rate"] == 2e-3  # the tuned peer by default
        assert rec["peer"]["training_arguments"]["seed"] == rec["seed"]
        assert rec["test"]["ours"]["names"] and not rec["test"]["left_out"]  # every test file scored by both
        assert rec["test"]["ours"]["names"] == saved["records"][0]["test"]["ours"]["names"]  # one split
    # the two seeds trained different models
    assert saved["records"][0]["test"]["ours"]["nll"] != saved["records"][1]["test"]["ours"]["nll"]
    for s, rec in zip(sm["per_seed"], saved["records"], strict=True):
        assert s["target"] == rec["peer"]["curve"][-1]["nats_per_note"]
        hit = s["ours_reach"]
        assert hit is None or 0 < hit["interpolated_wall_s"] <= rec["ours"]["curve"][-1]["wall_s"]
    t = sm["test"]
    assert t["peer_minus_ours"]["value"] == pytest.approx(t["peer"]["value"] - t["ours"]["value"])
    assert math.isfinite(t["peer_minus_ours"]["low"]) and t["peer_minus_ours"]["low"] < t["peer_minus_ours"]["high"]
    assert "| seed |" in md and "peer - ours" in md and "![validation curves](curves.png)" in md

    # again: every seed's race is reused, nothing trains, the same summary
    def no_training(*a, **k):
        raise AssertionError("a finished seed was raced again")

    monkeypatch.setattr(ttq, "race_seed", no_training)
    again = ttq.run(compose("ttq", overrides), overrides)
    assert again["summary"]["test"] == res["summary"]["test"] and again["summary"]["ratio"] == res["summary"]["ratio"]
    # other settings over a finished seed are refused, not silently mixed
    with pytest.raises(ConfigError, match="other settings"):
        ttq.run(compose("ttq", [*overrides, "budget_s=7"]), [*overrides, "budget_s=7"])
