"""Smoke test of ``python -m musicgen.bench`` at tiny sizes (``quick=true``): every section runs
and both outputs are written. The Llama rows need the bench extra (transformers). The compiled
Llama contenders are checked with torch.compile's ``eager`` backend (Dynamo traces, Inductor does
not compile: seconds, not minutes); the real compile is the slow test at the end."""

import json
import time

import pytest
import torch

from musicgen.config import compose
from musicgen.experiments import speed as bench
from musicgen.experiments.speed import decoding as bench_generate_module

LLAMA_COMPILED = ("train.compile_llama=true", "generate.compile_llama=true")


def quick_cfg(tmp_path, real_midi_dir, *extra):
    return compose("bench", [
        "quick=true", f"out_dir={tmp_path / 'bench'}", f"data.root={real_midi_dir / 'folk'}", "device=cpu", *extra,
    ])


def test_quick_bench_without_llama_writes_json_and_table(tmp_path, real_midi_dir, monkeypatch):
    monkeypatch.setattr(bench, "llama_missing", lambda: "transformers is not installed (test)")
    (tmp_path / "docs").mkdir()
    res = bench.run(quick_cfg(tmp_path, real_midi_dir, "publish=true", f"publish_dir={tmp_path / 'docs'}"))
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
    assert set(res["generate"]["by_batch"]["1"]["contenders"]) == {"ours", "ours_nocache", "ours_int8"}
    b1 = res["generate"]["by_batch"]["1"]
    assert 0 < b1["floor_int8"]["weights_mb"] < b1["floor"]["weights_mb"]  # int8 linears read fewer bytes
    assert saved["generate_b1_int8_vs_ours_ratio"] > 0 and saved["generate_b1_int8_ceiling_share"] > 0
    ceiling = {row["key"]: row for row in saved["targets"]}["generate_b1_ceiling_share"]
    assert ceiling["goal"] == 0.6 and ceiling["value"] == pytest.approx(
        b1["contenders"]["ours"]["tokens_per_s"] / b1["floor"]["tokens_per_s"])
    assert "ceiling with int8 linears" in md and "a sum's" in md
    assert b1["floor"]["read_gb_per_s"] > 0 and b1["floor"]["read_tokens_per_s"] > 0
    data = res["data"]
    assert data["tokenize"]["files"] == 12 and data["tokenize"]["cold_files_per_s"] > 0
    assert data["serve"]["lstm"]["windows_per_s"] > 0 and data["serve"]["transformer"]["windows_per_s"] > 0
    assert data["memory"]["cache_mb"] > 0
    for heading in ("| CPU |", "| flags |", "| threads |", "## Targets", "## Training", "## V6 LSTM", "## Generation",
                    "## Data"):
        assert heading in md, heading
    assert "Training: default precision (bf16-mixed) / fp32" in md
    page = (tmp_path / "docs" / "results" / "performance.md").read_text()  # publish=true: the docs' copy
    assert page.startswith("# Performance\n") and "Written by" in page and md.split("\n", 1)[1] in page
    assert "publish" not in saved["settings"]  # results.json as without publishing


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
    assert {t["key"] for t in missed} >= {"train_fp32_vs_llama_best_ratio", "generate_b1_vs_llama_best_ratio"}
    assert "llama_compiled" not in fp32 and res["train_fp32_vs_llama_compiled_ratio"] is None  # quick: no compile
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


def dynamo_only(calls: list, backend="eager"):
    """torch.compile with another backend (Dynamo still traces the model), recording what it was asked."""
    real_compile = torch.compile

    def fake(fn, **kwargs):
        calls.append((fn, kwargs))
        return real_compile(fn, **{**kwargs, "mode": None, "backend": backend})

    return fake


def test_llama_compiled_contenders_are_wired_and_reported(tmp_path, real_midi_dir, monkeypatch):
    pytest.importorskip("transformers")
    calls, generated = [], []
    monkeypatch.setattr(torch, "compile", dynamo_only(calls))
    real_llama_generate = bench_generate_module.llama_generate

    def recording_llama_generate(llama, prompt, new_tokens, sampling, static_cache_len=None):
        import torch._inductor.config as inductor_config

        generated.append((static_cache_len, inductor_config.freezing))
        return real_llama_generate(llama, prompt, new_tokens, sampling, static_cache_len)

    monkeypatch.setattr(bench_generate_module, "llama_generate", recording_llama_generate)
    # impossible targets: every Llama row is a miss and profiles ours and the Llama it was judged against
    typed = [*LLAMA_COMPILED, "train.precisions=[fp32]", "targets.train_vs_llama=1000",
             "targets.generate_b1_vs_llama=1000"]
    cfg = quick_cfg(tmp_path, real_midi_dir, "sections=[train,generate]", "generate.nocache=false", *typed)
    res = bench.run(cfg, typed)  # typed: wins over quick_overrides' compile_llama=false
    saved = json.loads((tmp_path / "bench" / "results.json").read_text())
    md = (tmp_path / "bench" / "PERFORMANCE.md").read_text()

    # compiled: Llama's training loss (forward + loss) and its generation forward, with our mode, static shapes
    llama_forwards = [kwargs for fn, kwargs in calls
                      if type(getattr(fn, "__self__", None)).__name__ == "LlamaForCausalLM"]
    assert llama_forwards == [{"mode": None, "dynamic": False}]  # compile_with.cpu: mode null
    assert len(calls) == 2  # and Llama's training step function (forward + loss)
    # the compiled Llama generates with a static cache sized for the timed run, under our inductor settings
    static = [(length, freezing) for length, freezing in generated if length is not None]
    assert static and set(static) == {(1 + bench.with_quick(cfg, typed).generate.new_tokens, True)}
    assert any(length is None for length, _ in generated)  # eager Llama: its dynamic cache
    assert saved["generate"]["llama_compiled_with"]["cache_implementation"] == "static"
    assert saved["generate"]["llama_compiled_with"]["inductor"] == {"freezing": True}

    targets = {row["key"]: row for row in saved["targets"]}
    for precision, result in res["train"]["by_precision"].items():
        timed = result["contenders"]
        assert {"ours", "llama", "llama_compiled"} <= set(timed) and not result["errors"], result["errors"]
        key, ours = f"train_{precision}", timed["ours"]["tokens_per_s"]
        assert saved[f"{key}_vs_llama_ratio"] == pytest.approx(ours / timed["llama"]["tokens_per_s"])
        assert saved[f"{key}_vs_llama_compiled_ratio"] == pytest.approx(ours / timed["llama_compiled"]["tokens_per_s"])
        faster = max(("llama", "llama_compiled"), key=lambda name: timed[name]["tokens_per_s"])
        assert saved[f"{key}_vs_llama_best_ratio"] == pytest.approx(ours / timed[faster]["tokens_per_s"])
        row = targets[f"{key}_vs_llama_best_ratio"]
        assert row["value"] == saved[f"{key}_vs_llama_best_ratio"] and row["met"] is False
        assert f"vs {faster} " in row["detail"] and "vs Llama eager" in row["detail"]
        assert set(result["profiles"]) == {"ours", faster}
    for batch in ("1", "2"):
        result = res["generate"]["by_batch"][batch]
        timed = result["contenders"]
        assert {"ours", "llama", "llama_compiled"} <= set(timed) and not result["errors"], result["errors"]
        key, ours = f"generate_b{batch}", timed["ours"]["tokens_per_s"]
        assert saved[f"{key}_vs_llama_compiled_ratio"] == pytest.approx(ours / timed["llama_compiled"]["tokens_per_s"])
        faster = max(("llama", "llama_compiled"), key=lambda name: timed[name]["tokens_per_s"])
        assert saved[f"{key}_vs_llama_best_ratio"] == pytest.approx(ours / timed[faster]["tokens_per_s"])
        assert targets[f"{key}_vs_llama_best_ratio"]["goal"] == (1000 if batch == "1" else None)
    assert set(res["generate"]["by_batch"]["1"]["profiles"]) >= {"ours"}
    assert len(res["generate"]["by_batch"]["1"]["profiles"]) == 2  # ours and the faster Llama
    assert "| fp32 | llama_compiled |" in md and "| 1 | llama_compiled |" in md and "| 2 | llama_compiled |" in md
    assert "ours / the faster Llama (eager or compiled)" in md and "Llama compiled: mode `None`" in md


def test_a_llama_compile_past_its_timeout_is_recorded_not_raised(tmp_path, real_midi_dir, monkeypatch):
    pytest.importorskip("transformers")

    def slow_backend(gm, example_inputs):
        time.sleep(5)
        return gm.forward

    monkeypatch.setattr(torch, "compile", dynamo_only([], backend=slow_backend))
    typed = [*LLAMA_COMPILED, "train.compile_timeout_s=0.3", "train.precisions=[fp32]", "generate.batch_sizes=[1]"]
    res = bench.run(quick_cfg(tmp_path, real_midi_dir, "sections=[train,generate]", *typed), typed)
    train, gen = res["train"]["by_precision"]["fp32"], res["generate"]["by_batch"]["1"]
    for result in (train, gen):
        assert "TimeoutError" in result["errors"]["llama_compiled"]
        assert "llama_compiled" not in result["contenders"] and "llama" in result["contenders"]
    # no compiled Llama, so the targets fall back to the eager one
    assert res["train_fp32_vs_llama_compiled_ratio"] is None and res["generate_b1_vs_llama_compiled_ratio"] is None
    assert res["train_fp32_vs_llama_best_ratio"] == res["train_fp32_vs_llama_ratio"] > 0
    assert res["generate_b1_vs_llama_best_ratio"] == res["generate_b1_vs_llama_ratio"] > 0
    md = (tmp_path / "bench" / "PERFORMANCE.md").read_text()
    assert "| fp32 | llama_compiled | failed |" in md and "| 1 | llama_compiled | failed |" in md


@pytest.mark.slow
def test_quick_bench_compiles_llama_for_real(tmp_path, real_midi_dir):
    """Inductor for real, with CPU's settings (freezing): HF's model compiles, for training and
    for static-cache generation, and no recompile waits for the timed runs."""
    pytest.importorskip("transformers")
    typed = [*LLAMA_COMPILED, "train.precisions=[fp32]", "generate.batch_sizes=[1]", "generate.new_tokens=16",
             "generate.reps=2"]
    res = bench.run(quick_cfg(tmp_path, real_midi_dir, "sections=[train,generate]", *typed), typed)
    train, gen = res["train"]["by_precision"]["fp32"], res["generate"]["by_batch"]["1"]
    assert not train["errors"] and not gen["errors"], (train["errors"], gen["errors"])
    assert res["train_fp32_vs_llama_compiled_ratio"] > 0 and res["generate_b1_vs_llama_compiled_ratio"] > 0
    compiled = gen["contenders"]["llama_compiled"]
    # the warmup (2 tokens) compiled both graphs; timed runs of 16 tokens reuse them: far under the compile
    assert max(compiled["runs_s"]) < compiled["first_call_s"] / 5


def test_time_limit_names_a_timeout_that_code_inside_rewrapped():
    """torch.compile's tracing turns an exception raised inside it into its own error type: an alarm
    that fired still surfaces as TimeoutError."""
    from musicgen.experiments.speed.harness import time_limit

    def wrapping():
        try:
            time.sleep(5)
        except TimeoutError as error:
            raise RuntimeError("wrapped by the library") from error

    with pytest.raises(TimeoutError, match="surfaced as RuntimeError"), time_limit(0.2):
        wrapping()
    with pytest.raises(ValueError), time_limit(5):  # an error of its own, no alarm: unchanged
        raise ValueError("not a timeout")


def test_generation_targets_judge_our_own_weights_and_report_int8_beside_them():
    from musicgen.experiments.speed.report import summarize

    def timed(tokens_per_s):
        return {"tokens_per_s": tokens_per_s}

    by_batch = {batch: {"contenders": {"ours": timed(10.0 * k), "ours_compiled": timed(20.0 * k),
                                       "ours_int8": timed(30.0 * k), "llama": timed(5.0 * k)},
                        "floor": {"tokens_per_s": 40.0 * k}, "floor_int8": {"tokens_per_s": 80.0 * k}}
                for batch, k in (("1", 1), ("8", 4))}
    flat, rows = summarize(compose("bench"), {"generate": {"dtype": "bfloat16", "by_batch": by_batch}})
    rows = {row["key"]: row for row in rows}
    # int8 is faster but not "ours" for the targets: they are judged on the model's own weights
    assert flat["generate_b1_vs_llama_best_ratio"] == 4.0 and rows["generate_b1_vs_llama_best_ratio"]["met"]
    assert flat["generate_b1_ceiling_share"] == 0.5 and rows["generate_b1_ceiling_share"]["met"] is False
    assert rows["generate_b8_ceiling_share"]["met"] is None  # the 60% goal is for batch 1
    for batch in ("1", "8"):
        assert flat[f"generate_b{batch}_compiled_vs_eager_ratio"] == 2.0
        assert rows[f"generate_b{batch}_compiled_vs_eager_ratio"]["met"]
        assert flat[f"generate_b{batch}_int8_vs_ours_ratio"] == 1.5
        assert flat[f"generate_b{batch}_int8_vs_llama_best_ratio"] == 6.0
        assert flat[f"generate_b{batch}_int8_ceiling_share"] == 0.375
        assert rows[f"generate_b{batch}_int8_vs_ours_ratio"]["met"] is None  # a reference, no goal
