"""``python -m musicgen.bench.scale`` at tiny sizes (``quick=true``: 6 base files, factors 1 and 2):
the scaled corpus is new MIDI (other notes than the originals, which stay untouched), a rerun
reuses it, every stage of every factor reports positive times and sizes, and the verdicts follow
the numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import symusic

from musicgen.config import compose
from musicgen.experiments.speed import scale


def scale_cfg(base, tmp, *extra):
    return scale.with_quick(compose("scale", [
        "quick=true", f"base={base}", f"work_dir={tmp / 'work'}", f"out_dir={tmp / 'out'}", *extra,
    ]))


def note_table(path) -> np.ndarray:
    tracks = [t.notes.numpy() for t in symusic.Score(str(path)).tracks]
    fields = ("time", "duration", "pitch")
    return np.stack([np.concatenate([n[key] for n in tracks]) for key in fields]).astype(np.int64)


def snapshot(folder):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*.mid"))}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, real_midi_dir):
    base = real_midi_dir / "folk"
    tmp = tmp_path_factory.mktemp("scale")
    before = snapshot(base)
    cfg = scale_cfg(base, tmp)
    results = scale.run(cfg)
    return cfg, tmp, base, before, results


def test_quick_run_measures_every_stage_of_every_factor(quick_run):
    cfg, tmp, _, _, results = quick_run
    saved = json.loads((tmp / "out" / "scale.json").read_text())
    md = (tmp / "out" / "scale.md").read_text()
    assert saved["factors"] == [1, 2] and set(saved["by_factor"]) == {"1", "2"}
    files = {}
    for k in ("1", "2"):
        row = saved["by_factor"][k]
        for stage in scale.STAGES:
            st = row[stage]
            assert st["ok"], (k, stage, st.get("error"))
            assert st["seconds"] > 0 and st["wall_s"] >= st["seconds"], (k, stage)
            assert st["peak_rss_mb"] > 0 and st["peak_rss_mb"] >= st["baseline_rss_mb"] > 0, (k, stage)
        prep = row["prepare"]
        assert prep["files"] > 0 and prep["tokens"] > 0 and prep["cache_mb"] > 0
        assert prep["files_per_s"] > 0 and prep["tokens_per_s"] > 0 and prep["train_windows"] > 0
        assert row["serve"]["windows_per_s"] > 0 and row["serve"]["traced_peak_mb"] > 0
        assert row["serve"]["batches"] == cfg.serve.batches
        assert row["bpe"]["files"] > 0 and row["bpe"]["vocab_size"] > 362 and row["bpe"]["tokens_per_s"] > 0
        files[k] = prep["files"]
    assert files["2"] == 2 * files["1"] == 12  # every one of the 6 tunes got its variant
    assert saved["by_factor"]["2"]["prepare"]["tokens"] > saved["by_factor"]["1"]["prepare"]["tokens"]
    ratios = saved["by_factor"]["2"]["ratios"]
    for key in ("prepare_time_ratio", "bpe_time_ratio", "serve_windows_per_s_ratio", "prepare_rss_growth_vs_cache",
                "serve_traced_marginal_vs_cache"):
        assert ratios[key] is not None, key
    assert [v["goal"] for v in saved["verdicts"]] == ["time", "serve", "memory"]
    assert all(v["met"] in (True, False) for v in saved["verdicts"])
    for heading in ("## Time", "## Memory", "| 2× | 12 |", "Time linear or better", "Peak memory bounded"):
        assert heading in md, heading
    assert not (tmp / "work" / "cache" / "x2").exists()  # keep_caches=false


def test_scaled_corpus_is_new_music_and_the_originals_are_untouched(quick_run):
    _, tmp, base, before, _ = quick_run
    assert snapshot(base) == before  # same bytes, same mtimes
    corpus = tmp / "work" / "x2"
    originals = sorted((corpus / scale.ORIGINALS).rglob("*.mid"))
    variants = sorted((corpus / "v01").rglob("*.mid"))
    assert len(originals) == len(variants) == 6
    assert all(p.is_symlink() and p.resolve().is_relative_to(base) for p in originals)
    assert not any(p.is_symlink() for p in variants)
    for v in variants:
        o = note_table(base / v.relative_to(corpus / "v01"))
        n = note_table(v)
        assert o.shape == n.shape  # the same notes, elsewhere in pitch and time
        assert not np.array_equal(o[2], n[2]) and len(set((n[2] - o[2]).tolist())) == 1  # transposed
        assert not np.array_equal(o[:2], n[:2])  # and stretched
    tables = [note_table(p).tobytes() for p in originals + variants]
    assert len(set(tables)) == len(tables)


def test_a_rerun_reuses_the_corpora_and_other_settings_rebuild_them(quick_run):
    cfg, tmp, _, _, _ = quick_run
    variant = next((tmp / "work" / "variants" / "v01").rglob("*.mid"))
    mtime = variant.stat().st_mtime_ns
    again = scale.build_corpora(cfg, progress=False)
    assert again["pool_reused"] and all(c["reused"] for c in again["corpora"].values())
    assert variant.stat().st_mtime_ns == mtime
    other = scale.with_quick(compose("scale", [
        "quick=true", f"base={cfg.base}", f"work_dir={tmp / 'work-other'}", "build.stretches=[0.5]"]))
    rebuilt = scale.build_corpora(other, progress=False)
    assert not rebuilt["pool_reused"] and not any(c["reused"] for c in rebuilt["corpora"].values())


def test_variant_plan_is_distinct_and_stays_in_range():
    plan = scale.variant_plan(60, 100, (21, 109), 12, [1.25, 0.8], flip=False)
    assert len(plan) == len(set(plan)) == 2 * (12 + 9 + 1)  # down 12, up 9 (100 + 9 = 109), and 0
    assert all(60 + s >= 21 and 100 + s <= 109 and r != 1.0 for s, r in plan)
    assert plan[:3] == [(1, 1.25), (-1, 0.8), (2, 1.25)]
    assert scale.variant_plan(21, 109, (21, 109), 12, [1.5], flip=True) == [(0, 1.5)]
    with pytest.raises(ValueError, match="none may be 1"):
        scale.build_corpora(compose("scale", ["build.stretches=[1.0]"]))


def test_a_failing_stage_is_recorded_not_raised(monkeypatch):
    def boom(spec):
        raise RuntimeError("no such corpus")

    monkeypatch.setitem(scale.STAGE_FNS, "boom", boom)
    result = scale.run_stage("boom", {"factor": 3}, heartbeat_s=5, clock_start=0.0)
    assert result["ok"] is False and result["error"] == "RuntimeError: no such corpus" and result["peak_rss_mb"] > 0


def fake_results(prepare_s, bpe_s, wps, growth, cache):
    """Two factors; ``growth``: prepare's RSS growth (the other stages grow half as much as the cache)."""
    def row(k, i):
        ok = {"ok": True, "rss_growth_mb": 20 + cache[i] / 2}
        return {"factor": k, "corpus": {"files": 10 * k},
                "prepare": {**ok, "seconds": prepare_s[i], "files": 10 * k, "cache_mb": cache[i],
                            "rss_growth_mb": growth[i]},
                "serve": {**ok, "setup_s": 1.0 * k, "windows_per_s": wps[i], "traced_peak_mb": 1.0},
                "bpe": {**ok, "seconds": bpe_s[i]}}

    return {"factors": [1, 4], "by_factor": {"1": row(1, 0), "4": row(4, 1)}}


def test_verdicts_follow_the_numbers():
    goals = {"time_ratio": 1.0, "serve_ratio": 1.0, "memory_vs_cache": 1.0}
    good = scale.summarize(fake_results([10, 36], [5, 20], [100, 110], [50, 80], [10, 40]), goals)["verdicts"]
    assert [v["met"] for v in good] == [True, True, True]
    bad = scale.summarize(fake_results([10, 60], [5, 20], [100, 50], [50, 250], [10, 40]), goals)["verdicts"]
    assert [v["met"] for v in bad] == [False, False, False]
    assert "1.50 (prepare at 4×, 50% over it)" in bad[0]["line"]
    assert "worst 0.50 at 4×" in bad[1]["line"]
    assert "worst 6.67 (prepare rss growth at 4×: +200 MB for +30 MB of cache" in bad[2]["line"]
