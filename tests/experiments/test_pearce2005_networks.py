"""The Pearce (2005) benchmark's network rows: dynamic evaluation never uses a note before it is
predicted and starts every melody afresh; the combination with PPM*'s short-term model uses only
predictions made before each note; settings chosen one at a time on fink; the seed-aware rows; the
pre-registered contenders' one-sided test (its size on simulated data) and Holm's correction; and a
quick end-to-end run of the command on a few real melodies."""

import json
import math

import numpy as np
import pytest
import torch

from musicgen.errors import ConfigError
from musicgen.experiments import pearce2005 as bm
from musicgen.experiments import pearce2005 as nets  # the networks' rows, re-exported by the benchmark's package
from musicgen.experiments.pearce2005 import protocol

ALPHABET = [60, 62, 64, 65, 67]
PPM = {"escape": "c", "exclusion": True, "update_exclusion": False, "bias": 2, "tolerance": 0.03,
       "extra_stm": None}


@pytest.fixture(autouse=True)
def one_thread():
    """These tiny models step one short sequence at a time: one thread is many times faster than
    two on a busy machine (the benchmark's workers use one each too)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(kind: str = "transformer") -> torch.nn.Module:
    torch.manual_seed(0)
    spec = ({"kind": "lstm", "hidden_sizes": [16], "embedding_dim": 8, "dropout": 0.0} if kind == "lstm" else
            {"kind": "transformer", "n_layers": 1, "n_heads": 2, "d_model": 16, "d_ff": 32, "dropout": 0.0})
    return bm.build_model(spec)


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_dynamic_evaluation_never_sees_a_note_before_predicting_it(kind):
    model = tiny(kind)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    melody = [60, 62, 64, 62, 60, 67, 65, 64, 62, 60]
    out = nets.dynamic_log_dists(model, melody, ALPHABET, lr=0.5, steps=2)
    static = nets.dynamic_log_dists(model, melody, ALPHABET)
    assert out.shape == (len(melody), len(ALPHABET)) and np.allclose(np.exp(out).sum(1), 1.0)
    assert np.allclose(out[0], static[0])  # the first note: nothing predicted before it, no step yet
    assert not np.allclose(out[3:], static[3:], atol=1e-3)  # the steps change later predictions
    for t in (2, 5, 8):  # change note t: every note before it is predicted exactly as before
        changed = melody[:t] + [67 if melody[t] != 67 else 60] + melody[t + 1:]
        again = nets.dynamic_log_dists(model, changed, ALPHABET, lr=0.5, steps=2)
        assert np.array_equal(again[: t + 1], out[: t + 1])  # note t's own distribution too
        assert not np.allclose(again[t + 1:], out[t + 1:], atol=1e-6)
    # the caller's weights are untouched, so the next melody starts from them
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_dynamic_evaluation_is_reset_between_melodies_and_learns_within_one(tmp_path):
    model = tiny()
    a, b = [60, 62, 64, 65] * 4, [67, 65, 64, 62] * 4
    after_a = nets.dynamic_log_dists(model, a, ALPHABET, lr=0.3, steps=1)
    alone = nets.dynamic_log_dists(tiny(), b, ALPHABET, lr=0.3, steps=1)
    assert np.array_equal(nets.dynamic_log_dists(model, b, ALPHABET, lr=0.3, steps=1), alone)
    # learning from the melody so far: a phrase repeated six times is predicted better with the steps
    phrase = [60, 62, 64, 65] * 6
    col = np.arange(24), [ALPHABET.index(p) for p in phrase]
    gain = nets.dynamic_log_dists(model, phrase, ALPHABET, lr=0.03, steps=1)[col] - \
        nets.dynamic_log_dists(model, phrase, ALPHABET)[col]
    assert gain[12:].mean() > 0.1  # nats per note, on the last three repetitions
    assert not np.array_equal(after_a, nets.dynamic_log_dists(model, a, ALPHABET))
    # the fold protocol scores every melody from the fold's trained weights, whatever came before
    melodies = [a[:8], b[:8], a[::-1][:8]] * 2
    spec = {"kind": "transformer", "n_layers": 1, "n_heads": 2, "d_model": 16, "d_ff": 32, "dropout": 0.0}
    train = {"steps": 3, "batch_size": 4, "lr": 1e-3, "weight_decay": 0.0, "warmup": 0, "transpose": 0}
    variants = {"dyn": {"lr": 0.3, "steps": 1}}
    one = nets.fold_log_dists(melodies, spec, train, bm.Store(tmp_path / "x"), "t", 0, 0, 3, variants)["dyn"]
    few = nets.fold_log_dists(melodies, spec, train, bm.Store(tmp_path / "y"), "t", 0, 0, 3,
                              {"dyn": {**variants["dyn"], "limit": 1}})["dyn"]
    assert len(one) == 6 and len(few) == 3 and all(np.array_equal(one[i], few[i]) for i in few)


def test_the_combination_uses_only_predictions_made_before_each_note():
    model = tiny()
    melody = [60, 62, 64, 60, 62, 64, 65, 67, 65, 64]

    def combined(m):
        return nets.with_stm(nets.dynamic_log_dists(model, m, ALPHABET, lr=0.3, steps=1),
                             nets.stm_dists(m, ALPHABET, PPM), bias=2)

    out = combined(melody)
    assert np.allclose(np.exp(out).sum(1), 1.0)
    for t in (2, 5, 8):
        changed = melody[:t] + [67 if melody[t] != 67 else 60] + melody[t + 1:]
        assert np.allclose(combined(changed)[: t + 1], out[: t + 1], rtol=0, atol=1e-12)
    # by hand at one note: entropy-weighted mean of the two distributions (thesis Eq. 6.9)
    net, stm = np.exp(nets.dynamic_log_dists(model, melody, ALPHABET, lr=0.3, steps=1)[4]), \
        nets.stm_dists(melody, ALPHABET, PPM)[4]
    h = [-(p * np.log2(p)).sum() / math.log2(5) for p in (net, stm)]
    w = [x ** -2 for x in h]
    assert np.allclose(np.exp(out[4]), (w[0] * net + w[1] * stm) / sum(w))


def test_choose_settings_goes_one_setting_at_a_time_in_order():
    start = {"model": {"d": 1, "ff": 2}, "training": {"lr": 1.0}, "dynamic": {"lr": 0.0, "steps": 1}, "bias": 2}
    calls = []

    def score(s, group):  # best: d 3 (with ff 9), lr 0.5, dynamic lr 0.1, bias 1
        calls.append(group)
        return abs(s["model"]["d"] - 3) + abs(s["training"]["lr"] - 0.5) + abs(s["dynamic"]["lr"] - 0.1) + \
            abs(s["bias"] - 1) + (s["model"]["ff"] != 9)

    grid = {"model": [{"d": 1, "ff": 2}, {"d": 3, "ff": 9}], "training.lr": [1.0, 0.5], "dynamic.lr": [0.0, 0.1],
            "bias": [2, 1]}
    chosen, trace = nets.choose_settings(start, grid, score)
    assert chosen == {"model": {"d": 3, "ff": 9}, "training": {"lr": 0.5}, "dynamic": {"lr": 0.1, "steps": 1},
                      "bias": 1}
    assert calls == ["model", "model", "training", "training", "dynamic", "dynamic", "bias", "bias"]
    assert [t["chose"] for t in trace] == [{"d": 3, "ff": 9}, 0.5, 0.1, 1] and start["bias"] == 2
    with pytest.raises(Exception, match="must start with one of"):
        nets.choose_settings(start, {"optimizer.lr": [1]}, score)


def test_seed_aware_rows_average_seeds_and_pair_with_ppm(tmp_path):
    rng = np.random.default_rng(0)
    melodies = [list(rng.choice(ALPHABET, size=12)) for _ in range(9)] + [ALPHABET * 3] * 3
    melodies = [[int(p) for p in m] for m in melodies]
    spec = {"kind": "transformer", "n_layers": 1, "n_heads": 2, "d_model": 16, "d_ff": 32, "dropout": 0.0}
    train = {"steps": 5, "batch_size": 4, "lr": 3e-3, "weight_decay": 0.0, "warmup": 0, "transpose": 0}
    settings = {"dynamic": {"lr": 0.1, "steps": 1}, "bias": 2}
    names = nets.row_names("net", "training folds")
    rows = nets.seeded_rows(names, melodies, spec, train, settings, bm.Store(tmp_path), "t", seeds=[0, 1, 2],
                            fold_seed=0, k=3, ppm=PPM, n_boot=50)
    assert list(rows) == ["net, training folds only", "net, training folds, dynamic evaluation",
                          "net, training folds, dynamic evaluation + PPM* STM"]
    r = rows[names[0]]
    by_seed = np.array(r["melody_bits_by_seed"])
    assert by_seed.shape == (3, 12) and r["seeds"] == 3 and not np.allclose(by_seed[0], by_seed[1])
    assert r["per_melody"] == pytest.approx(by_seed.mean()) and r["melody_bits"] == pytest.approx(by_seed.mean(0))
    lo, hi = r["per_melody_interval"]
    assert lo < r["per_melody"] < hi
    # a single seed's figure is that seed's fold-by-fold cross-validation, as bm.summarise computes it
    one = nets.seeded_rows(names, melodies, spec, train, settings, bm.Store(tmp_path), "t", seeds=[1],
                           fold_seed=0, k=3, ppm=PPM, n_boot=50)[names[0]]
    assert one["melody_bits"] == pytest.approx(by_seed[1])
    # paired with the PPM* combined model, seed-aware: the mean of the per-seed differences
    ppm = {ds: bm.ppm_rows(melodies, PPM, None, ds, k=3, n_boot=20) for ds in ("chorales", "kinder")}
    holds = bm.reproduction(ppm, tolerance=10.0)
    paired = bm.paired_against_ppm({"net": {"kinder": r}}, ppm, holds, set(), n_boot=50)["net"]["kinder"]["combined"]
    diff = by_seed - np.array(ppm["kinder"]["combined"]["melody_bits"])[None]
    assert paired["value"] == pytest.approx(diff.mean()) and paired["low"] < paired["value"] < paired["high"]


def test_below_p_value_has_its_size_under_the_null_and_matches_the_interval():
    rng = np.random.default_rng(0)
    rejections = []
    for _ in range(400):  # 3 seeds x 30 melodies, the true mean exactly at the thesis's figure
        d = 2.4 + rng.normal(0, 0.05, size=(3, 1)) + rng.normal(0, 0.3, size=(1, 30)) + rng.normal(0, 0.1, (3, 30))
        rejections.append(nets.below_p_value(d, 2.4) < 0.05)
    assert 0.02 <= np.mean(rejections) <= 0.09
    d = 2.3 + rng.normal(0, 0.02, size=(3, 1)) + rng.normal(0, 0.3, size=(1, 60))
    p = nets.below_p_value(d, 2.4)
    iv = bm.seed_piece_interval(d - 2.4, np.ones(60), level=1 - 2 * p)
    assert iv["high"] == pytest.approx(0.0, abs=1e-6)  # the 1 - 2p interval's top touches the figure
    assert nets.below_p_value(d, 2.0) > 0.5 > p  # above the figure: no evidence of being below it


def test_contenders_are_tested_with_holm_and_unbuilt_ones_marked_not_run():
    rng = np.random.default_rng(1)
    good = 2.0 + rng.normal(0, 0.02, (3, 1)) + rng.normal(0, 0.3, (1, 40))
    bad = 2.5 + rng.normal(0, 0.02, (3, 1)) + rng.normal(0, 0.3, (1, 40))
    rows = {name: {"kinder": {"per_melody": float(b.mean()), "per_melody_interval": [0, 9],
                              "melody_bits": b.mean(0).tolist(), "melody_bits_by_seed": b.tolist()}}
            for name, b in (("good", good), ("bad", bad))}
    ppm = {"kinder": {"combined": {"melody_bits": (good.mean(0) + 0.1).tolist()}}}
    holds = {"combined": {"kinder": {"holds": True}}}
    contenders = {"kinder": {"a": {"row": "good", "thesis": 2.106}, "b": {"row": "bad", "thesis": 2.106},
                             "c": {"row": "rhythm, not built", "thesis": 1.953}}}
    tests = nets.contender_tests(contenders, rows, ppm, holds)
    a, b, c = tests
    assert a["below_thesis"] and not b["below_thesis"] and not c["run"]
    assert a["p_value"] < b["p_value"] and a["holm_p"] == pytest.approx(min(1.0, 2 * a["p_value"]))  # 2 run
    assert b["holm_p"] == pytest.approx(max(a["holm_p"], b["p_value"]))
    assert a["paired"]["combined"]["value"] == pytest.approx(-0.1) and a["paired"]["combined"]["high"] < 0
    lines = "\n".join(nets.contender_report(tests))
    assert "| kinder | c | rhythm, not built | not run |" in lines and lines.count("| yes |") == 1
    # the goals: met, missed and by how much, and the other rows below the thesis's figure
    rows["near"] = {"sees": "training folds; pre-training", "kinder": {"per_melody": 2.05}}
    goals = nets.report.goal_report(tests, rows)
    met, missed, unbuilt = goals[-3:]
    assert "**met**" in met and f"{2.106 - a['figure']:.3f} bits below" in met and "PPM* combined: -0.100" in met
    assert f"**missed**, by {b['figure'] - 2.106:.3f} bits" in missed
    assert "good 1.9" in missed and "(the a contender; may see: -)" in missed  # a contender on the same dataset
    assert "near 2.050 (may see: training folds; pre-training)" in missed
    assert "not run" in unbuilt
    b.update(figure=2.08, below_thesis=False)  # below the figure but not significantly
    assert "below it by 0.026 bits but not significantly" in nets.report.goal_report([b], rows)[-1]


def test_quick_benchmark_end_to_end(tmp_path):
    """``quick=true`` on the first 24 melodies of each dataset: PPM*, the n-gram, the Transformer's
    settings chosen on fink, its rows over two seeds, the contenders, the report."""
    data = tmp_path / "data" / "benchmarks"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    steps = [-2, -1, 1, 2]
    melodies = {name: [(64 + np.cumsum(rng.choice(steps, size=int(rng.integers(10, 20))))).tolist()
                       for _ in range(30)] for name in ("chorales", "kinder", "fink")}
    (data / "pearce2005.json").write_text(json.dumps(melodies))

    def rhythm(m):  # note features beside the melodies (pearce2005_rhythm.json), made up as the melodies are
        d = rng.choice([0.5, 1.0, 2.0], size=len(m)).tolist()
        onsets = np.concatenate([[0.0], np.cumsum(d)[:-1]])
        return {"pitch": m, "duration": d, "ioi": [None, *d[:-1]], "bar_position": (onsets % 4).tolist(),
                "fermata": [0] * (len(m) - 1) + [1], "key_sharps": [2] * len(m), "mode": ["major"] * len(m)}

    (data / "pearce2005_rhythm.json").write_text(json.dumps({n: list(map(rhythm, ms)) for n, ms in melodies.items()}))
    from musicgen.config import compose

    cfg = compose("benchmark", ["quick=true", f"paths.data_dir={tmp_path / 'data'}", f"output_dir={tmp_path / 'out'}"])
    result = bm.pearce2005(cfg)
    rows = result["neural"]["rows"]
    pitch = nets.row_names("transformer", "training folds")
    variants = ("rhythm of earlier notes", "rhythm of the current note", "rhythm of the current note, key and mode")
    rhythm_rows = {v: nets.row_names(f"transformer, {v}", "training folds") for v in variants}
    assert list(rows) == [*pitch, *(r for names in rhythm_rows.values() for r in names)]
    assert all(rows[r][ds]["seeds"] == 2 and rows[r][ds]["melodies"] == 24 for r in pitch
               for ds in ("chorales", "kinder"))
    assert rows["transformer, training folds only"]["sees"] == "training folds only"
    # the rhythm rows: the chorales only, each saying what it may see and which thesis figure it compares with
    for names in rhythm_rows.values():
        assert all(set(rows[r]) == {"sees", "thesis", "chorales"} and rows[r]["chorales"]["seeds"] == 2 for r in names)
    strict, like, key = (names[2] for names in rhythm_rows.values())
    assert rows[strict]["sees"] == "training folds; rhythm of earlier notes; learns from the test melody"
    assert rows[like]["sees"] == ("training folds; rhythm of earlier notes; rhythm of the current note; "
                                  "learns from the test melody")
    assert rows[key]["sees"].endswith("rhythm of the current note; key signature and mode; learns from the test melody")
    assert [rows[r]["thesis"] for r in (strict, like, key)] == [1.953, 1.953, 1.911]
    trace = result["neural"]["tuning"]["transformer"]["fold_only"]["trace"]
    assert [t["setting"] for t in trace] == ["training.transpose", "dynamic.lr", "bias"]
    rhythm_tuning = result["neural"]["tuning"]["transformer"]["rhythm"]
    assert list(rhythm_tuning) == ["earlier", "current", "key"]
    assert all([t["setting"] for t in r["trace"]] == ["bias"] for r in rhythm_tuning.values())
    assert rhythm_tuning["current"]["chosen"]["model"]["rhythm"]["current"] == ["bar_position", "duration", "ioi"]
    # the pre-registered rhythm contender is run (the like-for-like row), the strict one beside it
    tests = result["contenders"]["tests"]
    assert [t["run"] for t in tests] == [True, True, True, True, True]
    with_rhythm = tests[-1]
    assert with_rhythm["row"] == like and with_rhythm["thesis"] == 1.953 and "holm_p" in with_rhythm
    assert with_rhythm["beside"]["row"] == strict and with_rhythm["beside"]["run"]
    assert "holm_p" not in with_rhythm["beside"] and set(with_rhythm["beside"]["paired"]) == {"combined"}
    report = bm.report_markdown(result)
    row = "| training folds only | musicgen transformer, training folds only | contender (kinder, chorales) |"
    assert row in report
    assert "chosen on 20" in report and "not run" not in report
    assert (f"| training folds; rhythm of earlier notes; rhythm of the current note; learns from the test melody | "
            f"musicgen {like} | contender (chorales) |") in report
    line = next(x for x in report.splitlines() if f"musicgen {strict} |" in x)
    assert line.startswith("| training folds; rhythm of earlier notes; learns from the test melody |")
    assert "| exploratory |" in line and line.endswith("| - |")  # no kinder figure
    assert f"| chorales | with_rhythm: beside it (exploratory, not tested) | {strict} |" in report
    assert "thesis: multiple-viewpoint system, extended feature set with mode (Table 9.8) | published | 1.911" in report


def test_finished_folds_are_reused_only_for_the_same_settings_and_initial_weights(tmp_path, monkeypatch):
    melodies = [[60, 62, 64, 65, 67, 65, 64, 62]] * 6
    spec = {"kind": "transformer", "n_layers": 1, "n_heads": 2, "d_model": 16, "d_ff": 32, "dropout": 0.0}
    train = {"steps": 2, "batch_size": 2, "lr": 1e-3, "weight_decay": 0.0, "warmup": 0, "transpose": 0}
    store, variants = bm.Store(tmp_path), {"s": {}, "d": {"lr": 0.1, "steps": 1}}
    init = tiny().state_dict()
    first = nets.fold_log_dists(melodies, spec, train, store, "t", 0, 0, 3, variants, init=init)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(protocol, "fit", no_training)  # where fold_log_dists calls it
    again = nets.fold_log_dists(melodies, spec, train, store, "t", 0, 0, 3, variants, init=init)
    assert all(np.array_equal(first[v][i], again[v][i]) for v in variants for i in range(6))
    other = {k: v + 0.01 for k, v in init.items()}
    for changed in ({"init": other}, {"seed": 1}, {"variants": {"d": {"lr": 0.2, "steps": 1}}}):
        args = {"init": init, "seed": 0, "variants": variants, **changed}
        with pytest.raises(AssertionError, match="trained again"):
            nets.fold_log_dists(melodies, spec, train, store, "t", args["seed"], 0, 3, args["variants"],
                                init=args["init"])


def test_folds_trained_side_by_side_are_the_folds_one_process_trains(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    melodies = [[int(p) for p in rng.choice(ALPHABET, size=10)] for _ in range(9)]
    spec = {"kind": "transformer", "n_layers": 1, "n_heads": 2, "d_model": 16, "d_ff": 32, "dropout": 0.0}
    train = {"steps": 4, "batch_size": 2, "lr": 3e-3, "weight_decay": 0.0, "warmup": 0, "transpose": 0}
    variants = {"s": {}, "d": {"lr": 0.1, "steps": 1}}
    alone = nets.fold_log_dists(melodies, spec, train, bm.Store(tmp_path / "one"), "t", 1, 0, 3, variants)

    def no_training(*args, **kwargs):
        raise AssertionError("trained in the parent")

    monkeypatch.setattr(protocol, "fit", no_training)  # the workers train (spawned: they import their own)
    with protocol.fold_workers(2):
        side = nets.fold_log_dists(melodies, spec, train, bm.Store(tmp_path / "two"), "t", 1, 0, 3, variants)
    stored = [sorted(p.relative_to(tmp_path / d) for p in (tmp_path / d).rglob("*.npz")) for d in ("one", "two")]
    assert stored[0] == stored[1] and len(stored[0]) == 6  # 3 folds x 2 variants, under the same names
    for v in variants:
        assert sorted(side[v]) == list(range(9))
        assert all(np.allclose(alone[v][i], side[v][i], atol=1e-5) for i in range(9))


def test_kept_fold_weights_score_another_dynamic_setting_without_training_it_again(tmp_path, monkeypatch):
    melodies = [[60, 62, 64, 65, 67, 65, 64, 62]] * 3 + [[67, 65, 64, 62, 60, 62, 64, 65]] * 3
    spec = {"kind": "lstm", "hidden_sizes": [16], "embedding_dim": 8, "dropout": 0.0}
    train = {"steps": 3, "batch_size": 2, "lr": 1e-2, "weight_decay": 0.0, "warmup": 0, "transpose": 0}
    later = {"d": {"lr": 0.2, "steps": 1, "limit": 1}}
    fresh = nets.fold_log_dists(melodies, spec, train, bm.Store(tmp_path / "fresh"), "t", 0, 0, 3, later)
    store = bm.Store(tmp_path / "kept")
    nets.fold_log_dists(melodies, spec, train, store, "t", 0, 0, 3, {"d": {"lr": 0.1, "steps": 1, "limit": 1}},
                        keep_weights=True)
    assert len(list((tmp_path / "kept").rglob("*-weights.pt"))) == 3

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(protocol, "fit", no_training)
    again = nets.fold_log_dists(melodies, spec, train, store, "t", 0, 0, 3, later, keep_weights=True)
    assert sorted(again["d"]) == sorted(fresh["d"]) and len(fresh["d"]) == 3  # the first melody of each fold
    assert all(np.allclose(again["d"][i], fresh["d"][i], atol=1e-6) for i in fresh["d"])


def test_bf16_training_learns_and_is_stored_apart_from_fp32(tmp_path):
    melodies = [ALPHABET * 3] * 6 + [ALPHABET[::-1] * 3] * 6
    spec = {"kind": "transformer", "n_layers": 1, "n_heads": 2, "d_model": 32, "d_ff": 64, "dropout": 0.0}
    train = {"steps": 150, "batch_size": 4, "lr": 1e-2, "weight_decay": 0.0, "warmup": 0, "transpose": 0}
    store = bm.Store(tmp_path)
    fp32 = bm.neural_cross_validation(melodies, spec, train, store, "t", seed=0, k=3, n_boot=10)
    bf16 = bm.neural_cross_validation(melodies, spec, {**train, "precision": "bf16"}, store, "t", seed=0, k=3,
                                      n_boot=10)
    for r in (fp32, bf16):
        assert r["per_melody"] < 0.5 * math.log2(len(ALPHABET))  # both learn the two scales
    assert fp32["melody_bits"] != bf16["melody_bits"]  # trained otherwise, kept under another name
    assert len([d for d in tmp_path.iterdir() if d.is_dir()]) == 2
    assert bm.training_precision("fp32") == "fp32" and bm.training_precision("auto") in ("fp32", "bf16")
    with pytest.raises(ConfigError, match="precision='fp16'"):
        bm.training_precision("fp16")


def test_settings_chosen_with_workers_are_those_chosen_in_one_process(tmp_path):
    rng = np.random.default_rng(2)
    fink = [[int(p) for p in rng.choice(ALPHABET, size=10)] for _ in range(12)]
    spec = {"kind": "transformer", "n_layers": 1, "n_heads": 2, "d_model": 16, "d_ff": 32, "dropout": 0.0}
    train = {"steps": 4, "batch_size": 2, "lr": 3e-3, "weight_decay": 0.0, "warmup": 0, "transpose": 0}
    start = {"model": spec, "training": train, "dynamic": {"lr": 0.0, "steps": 1}, "bias": 2}
    grid = {"training.lr": [3e-3, 1e-2, 3e-2], "dynamic.lr": [0.0, 0.1, 0.3], "bias": [1, 2]}
    tune = {"folds": 3, "eval_melodies": 2}

    def chosen(store):
        return protocol.choose_settings(start, grid, lambda s, g: protocol.fink_score(s, g, fink, store, "t", tune,
                                                                                     0, 6, PPM))

    one = chosen(bm.Store(tmp_path / "one"))
    with protocol.fold_workers(2):
        two = chosen(bm.Store(tmp_path / "two"))
    assert one[0] == two[0]
    for a, b in zip(one[1], two[1]):
        assert a["setting"] == b["setting"] and a["chose"] == b["chose"]
        assert [s for _, s in a["scores"]] == pytest.approx([s for _, s in b["scores"]], abs=1e-6)
    assert len(list((tmp_path / "two").rglob("*-weights.pt"))) == 3  # the dynamic search's fold models, once


def test_the_networks_run_are_chosen_by_name(tmp_path):
    from musicgen.experiments.pearce2005 import rows

    models = {"lstm": {}, "transformer": {}}
    assert rows._networks({"models": models, "networks": ["transformer"]}) == ["transformer"]
    assert rows._networks({"models": models, "networks": None}) == ["lstm", "transformer"]
    with pytest.raises(ConfigError, match=r"networks=\['gru'\]"):
        rows._networks({"models": models, "networks": ["gru"]})
    from musicgen.config import compose

    assert list(compose("benchmark", []).networks) == ["transformer"]  # the contenders' network; the LSTM on request
