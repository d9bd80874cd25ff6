"""Smoke test of ``python -m musicgen.bench`` at tiny sizes (``quick=true``): every section runs
and both outputs are written. The Llama rows need the bench extra (transformers)."""

import json
import time

import pytest
import torch

from musicgen import bench
from musicgen.config import compose


def quick_cfg(tmp_path, real_midi_dir, *extra):
    return compose("bench", [
        "quick=true", f"out_dir={tmp_path / 'bench'}", f"data.root={real_midi_dir / 'folk'}", "device=cpu", *extra,
    ])


def test_quick_bench_without_llama_writes_json_and_table(tmp_path, real_midi_dir, monkeypatch):
    monkeypatch.setattr(bench, "llama_missing", lambda: "transformers is not installed (test)")
    res = bench.run(quick_cfg(tmp_path, real_midi_dir))
    out = tmp_path / "bench"
    saved = json.loads((out / "results.json").read_text())
    md = (out / "PERFORMANCE.md").read_text()
    assert saved["llama_skipped"].startswith("transformers is not installed")
    for key in ("train_bf16_vs_fp32_ratio", "mfu_bf16", "mfu_fp32", "cache_vs_nocache_ratio",
                "lstm_windows_vs_consumption_ratio", "data_peak_memory_vs_cache_ratio"):
        assert saved[key] is not None and saved[key] > 0, key
    assert saved["train_fp32_vs_llama_ratio"] is None  # no peer, no ratio
    train = res["train"]["by_precision"]
    assert set(train) == {"fp32", "bf16"} and set(train["fp32"]["contenders"]) == {"ours"}
    assert train["fp32"]["gemm_peak_tflops"] > 0
    assert set(res["lstm"]["by_precision"]["fp32"]["objectives"]) == {"seq2one", "causal"}
    assert set(res["generate"]["by_batch"]["1"]["contenders"]) == {"ours", "ours_nocache"}
    data = res["data"]
    assert data["tokenize"]["files"] == 12 and data["tokenize"]["cold_files_per_s"] > 0
    assert data["serve"]["lstm"]["windows_per_s"] > 0 and data["serve"]["transformer"]["windows_per_s"] > 0
    assert data["memory"]["cache_mb"] > 0
    for heading in ("| CPU |", "| flags |", "| threads |", "## Targets", "## Training", "## V6 LSTM", "## Generation",
                    "## Data"):
        assert heading in md, heading
    assert "Training: default precision (bf16-mixed) / fp32" in md


def test_quick_bench_with_llama_matches_shapes_and_profiles_misses(tmp_path, real_midi_dir):
    pytest.importorskip("transformers")
    # impossible targets: every row is a miss, so every profile path runs
    res = bench.run(quick_cfg(tmp_path, real_midi_dir, "sections=[train,generate]", "generate.nocache=false",
                              "targets.train_vs_llama=1000", "targets.generate_b1_vs_llama=1000"))
    fp32 = res["train"]["by_precision"]["fp32"]["contenders"]
    assert fp32["ours"]["params"] == fp32["llama"]["params"]  # same shape, tied embeddings
    assert res["train_fp32_vs_llama_ratio"] > 0 and res["generate_b1_vs_llama_ratio"] > 0
    assert res["train"]["by_precision"]["fp32"]["profiles"]["llama"]
    assert res["generate"]["by_batch"]["1"]["profiles"]["ours"]
    missed = [t for t in res["targets"] if t["met"] is False]
    assert {t["key"] for t in missed} >= {"train_fp32_vs_llama_ratio", "generate_b1_vs_llama_ratio"}
    md = (tmp_path / "bench" / "PERFORMANCE.md").read_text()
    assert "**missed**" in md and "## Why the misses" in md


def test_time_limit_abandons_a_slow_warmup():
    clock = bench.Clock(torch.device("cpu"))
    times, first, errors = bench.alternate(
        {"slow": lambda: time.sleep(5), "fast": lambda: None}, clock, warmup=1, reps=2, timeouts={"slow": 0.2}
    )
    assert errors["slow"].startswith("TimeoutError") and set(times) == {"fast"} and len(times["fast"]) == 2


def test_command_line_wins_over_quick_overrides(tmp_path, real_midi_dir):
    typed = ["quick=true", "train.reps=3", "generate.new_tokens=5"]
    cfg = bench.with_quick(quick_cfg(tmp_path, real_midi_dir, *typed[1:]), typed)
    assert cfg.train.reps == 3 and cfg.generate.new_tokens == 5
    assert cfg.model.d_model == 32 and cfg.train.compile is False  # the rest of quick still applies
