"""The results, summarised: flat ``*_ratio`` / ``mfu_*`` keys, the targets met or missed by how
much, the notes on method, and ``PERFORMANCE.md``."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from musicgen.experiments.speed.harness import INT8, best_ours, decoders
from musicgen.experiments.speed.llama import fastest_llama
from musicgen.runtime import default_precision


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def vs_each_llama(flat: dict[str, float | None], key: str) -> str:
    """"; vs Llama eager 1.59x, compiled 1.31x": ours against each Llama contender that ran."""
    each = [(what, flat.get(f"{key}_vs_{suffix}_ratio")) for what, suffix in
            (("eager", "llama"), ("compiled", "llama_compiled"))]
    shown = ", ".join(f"{what} {value:.2f}x" for what, value in each if value is not None)
    return f"; vs Llama {shown}" if shown else ""


# ----------------------------------------------------------------------------- targets
def read_share(result: dict[str, Any], ours: dict[str, Any]) -> str:
    """The share of the ceiling from reading alone (the weights read at a sum's speed), where measured."""
    read = result.get("floor", {}).get("read_tokens_per_s")
    return f"; {ours['tokens_per_s'] / read:.0%} of {read:.1f} tok/s reading them as a sum does" if read else ""


def summarize(cfg: DictConfig, results: dict[str, Any]) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    """Flat ``*_ratio`` / ``mfu_*`` keys, and the targets with met / missed."""
    flat: dict[str, float | None] = {}
    rows: list[dict[str, Any]] = []
    targets = cfg.targets
    train = results.get("train", {}).get("by_precision", {})
    best: dict[str, Any] = {}
    for precision, result in train.items():
        timed = result["contenders"]
        name, ours = best_ours(timed, "tokens_per_s")
        if ours is None:
            continue
        best[precision] = (name, ours)
        key = f"train_{precision}"
        llama = timed.get("llama", {}).get("tokens_per_s")
        llama_compiled = timed.get("llama_compiled", {}).get("tokens_per_s")
        eager = timed.get("ours", {}).get("tokens_per_s")
        flat[f"{key}_vs_llama_ratio"] = ratio(ours["tokens_per_s"], llama)
        flat[f"{key}_eager_vs_llama_ratio"] = ratio(eager, llama)
        flat[f"{key}_compiled_vs_eager_ratio"] = ratio(timed.get("ours_compiled", {}).get("tokens_per_s"), eager)
        flat[f"{key}_vs_llama_compiled_ratio"] = ratio(ours["tokens_per_s"], llama_compiled)
        flat[f"{key}_eager_vs_llama_compiled_ratio"] = ratio(eager, llama_compiled)
        flat[f"{key}_llama_compiled_vs_eager_ratio"] = ratio(llama_compiled, llama)
        peer_name, peer = fastest_llama(timed, "tokens_per_s")  # the target is judged against the faster Llama
        flat[f"{key}_vs_llama_best_ratio"] = ratio(ours["tokens_per_s"], peer and peer["tokens_per_s"])
        peak_tflops = result.get("gemm_peak_tflops")
        gemm_s = result["gemm_flops_per_step"] / (peak_tflops * 1e12) if peak_tflops else None
        # the most any model could gain on Llama if everything but its GEMMs took no time
        ceiling = ratio(timed["llama"]["step_s"], gemm_s) if "llama" in timed and gemm_s else None
        flat[f"{key}_ceiling_vs_llama_ratio"] = ceiling
        flat[f"mfu_{precision}"] = ours["mfu"]
        flat[f"mfu_{precision}_llama"] = timed.get("llama", {}).get("mfu")
        flat[f"mfu_{precision}_llama_compiled"] = timed.get("llama_compiled", {}).get("mfu")
        if peer:
            peer_ceiling = ratio(peer["step_s"], gemm_s) if gemm_s else None
            rows.append(dict(key=f"{key}_vs_llama_best_ratio",
                             what=f"Training {precision}: ours / the faster Llama (eager or compiled) tokens/s",
                             goal=targets.train_vs_llama, value=flat[f"{key}_vs_llama_best_ratio"], unit="x",
                             detail=f"{name} {ours['tokens_per_s']:.0f} vs {peer_name} {peer['tokens_per_s']:.0f} tok/s"
                             + vs_each_llama(flat, key)
                             + (f"; GEMM-bound ceiling {peer_ceiling:.2f}x" if peer_ceiling else ""),
                             profile=f"train/{precision}"))
    if "bf16" in best and "fp32" in best:
        bf16, fp32 = best["bf16"][1]["tokens_per_s"], best["fp32"][1]["tokens_per_s"]
        flat["train_bf16_vs_fp32_ratio"] = bf16 / fp32
        bf16_fast = default_precision().startswith("bf16")
        rows.append(dict(key="train_bf16_vs_fp32_ratio", what="Training: default precision (bf16-mixed) / fp32, ours",
                         goal=targets.train_bf16_vs_fp32 if bf16_fast else None, value=flat["train_bf16_vs_fp32_ratio"],
                         unit="x", detail=f"{bf16:.0f} vs {fp32:.0f} tok/s"
                         + ("" if bf16_fast else "; no target: this machine does not do bf16 fast"),
                         profile="train/bf16"))
    for precision in ("bf16", "fp32"):
        if precision in best and best[precision][1]["mfu"] is not None:
            compiled_mfu = flat.get(f"mfu_{precision}_llama_compiled")
            rows.append(dict(key=f"mfu_{precision}", what=f"MFU {precision} training, ours, of the measured GEMM peak",
                             goal=targets.mfu_bf16 if precision == "bf16" else None, value=best[precision][1]["mfu"],
                             unit="%", detail=f"peak {train[precision]['gemm_peak_tflops']:.3g} TFLOP/s at the model's "
                             f"shapes; Llama {flat.get(f'mfu_{precision}_llama') or 0:.0%}"
                             + (f", Llama compiled {compiled_mfu:.0%}" if compiled_mfu else ""),
                             profile=f"train/{precision}"))
    for batch, result in results.get("generate", {}).get("by_batch", {}).items():
        timed = result["contenders"]
        name, ours = best_ours(decoders(timed), "tokens_per_s")
        llama = timed.get("llama", {}).get("tokens_per_s")
        if ours is None:
            continue
        key, dtype = f"generate_b{batch}", results["generate"]["dtype"]
        llama_compiled = timed.get("llama_compiled", {}).get("tokens_per_s")
        flat[f"{key}_vs_llama_ratio"] = ratio(ours["tokens_per_s"], llama)
        flat[f"{key}_eager_vs_llama_ratio"] = ratio(timed.get("ours", {}).get("tokens_per_s"), llama)
        flat[f"{key}_vs_llama_compiled_ratio"] = ratio(ours["tokens_per_s"], llama_compiled)
        flat[f"{key}_eager_vs_llama_compiled_ratio"] = ratio(timed.get("ours", {}).get("tokens_per_s"), llama_compiled)
        flat[f"{key}_llama_compiled_vs_eager_ratio"] = ratio(llama_compiled, llama)
        peer_name, peer = fastest_llama(timed, "tokens_per_s")  # the target is judged against the faster Llama
        flat[f"{key}_vs_llama_best_ratio"] = ratio(ours["tokens_per_s"], peer and peer["tokens_per_s"])
        floor = result.get("floor", {}).get("tokens_per_s")
        flat[f"{key}_ceiling_vs_llama_ratio"] = ratio(floor, llama)
        if "llama_fp32" in timed:
            flat[f"{key}_vs_llama_fp32_ratio"] = ratio(ours["tokens_per_s"], timed["llama_fp32"]["tokens_per_s"])
        if peer:
            extra = vs_each_llama(flat, key)
            extra += f"; memory-bandwidth ceiling {floor / peer['tokens_per_s']:.2f}x" if floor else ""
            if "llama_fp32" in timed:
                extra += f"; vs Llama in fp32 (HF's default dtype) {flat[f'{key}_vs_llama_fp32_ratio']:.2f}x"
            rows.append(dict(key=f"{key}_vs_llama_best_ratio",
                             what=f"Generation batch {batch}, {dtype}: ours / the faster Llama (eager or compiled) "
                             "generate tokens/s",
                             goal=targets.generate_b1_vs_llama if batch == "1" else None,
                             value=flat[f"{key}_vs_llama_best_ratio"], unit="x",
                             detail=f"{name} {ours['tokens_per_s']:.1f} vs {peer_name} {peer['tokens_per_s']:.1f} "
                             "tok/s" + extra,
                             profile=f"generate/{batch}"))
        if floor:
            flat[f"{key}_ceiling_share"] = ours["tokens_per_s"] / floor
            rows.append(dict(key=f"{key}_ceiling_share",
                             what=f"Generation batch {batch}, {dtype}: ours / the memory-bandwidth ceiling tokens/s",
                             goal=targets.generate_b1_ceiling_share if batch == "1" else None,
                             value=flat[f"{key}_ceiling_share"], unit="%",
                             detail=f"{name} {ours['tokens_per_s']:.1f} vs {floor:.1f} tok/s (every weight read once "
                             "per step at the measured copy bandwidth)" + read_share(result, ours),
                             profile=f"generate/{batch}"))
        if "ours_compiled" in timed and "ours" in timed:
            flat[f"{key}_compiled_vs_eager_ratio"] = ratio(timed["ours_compiled"]["tokens_per_s"],
                                                           timed["ours"]["tokens_per_s"])
            rows.append(dict(key=f"{key}_compiled_vs_eager_ratio",
                             what=f"Generation batch {batch}, {dtype}: ours compiled / eager tokens/s",
                             goal=targets.generate_compiled_vs_eager, value=flat[f"{key}_compiled_vs_eager_ratio"],
                             unit="x", detail=f"{timed['ours_compiled']['tokens_per_s']:.1f} vs "
                             f"{timed['ours']['tokens_per_s']:.1f} tok/s"))
        int8 = timed.get(INT8, {}).get("tokens_per_s")
        if int8:  # a reference row: int8 weights are another model (their NLL change: PERFORMANCE.md)
            flat[f"{key}_int8_vs_ours_ratio"] = int8 / ours["tokens_per_s"]
            flat[f"{key}_int8_vs_llama_best_ratio"] = ratio(int8, peer and peer["tokens_per_s"])
            q_floor = result.get("floor_int8", {}).get("tokens_per_s")
            flat[f"{key}_int8_ceiling_share"] = ratio(int8, q_floor)
            rows.append(dict(key=f"{key}_int8_vs_ours_ratio",
                             what=f"Generation batch {batch}: ours with int8 linears / ours ({dtype}) tokens/s",
                             goal=None, value=flat[f"{key}_int8_vs_ours_ratio"], unit="x",
                             detail=f"{int8:.1f} vs {name} {ours['tokens_per_s']:.1f} tok/s"
                             + (f"; {flat[f'{key}_int8_vs_llama_best_ratio']:.2f}x {peer_name}" if peer else "")
                             + (f"; {flat[f'{key}_int8_ceiling_share']:.0%} of its own ceiling ({q_floor:.1f} tok/s)"
                                if q_floor else "")))
        if "ours_nocache" in timed and "ours" in timed:
            nocache = timed["ours_nocache"]["tokens_per_s"]
            flat["cache_vs_nocache_ratio"] = timed["ours"]["tokens_per_s"] / nocache
            flat["cache_best_vs_nocache_ratio"] = ours["tokens_per_s"] / nocache
            rows.append(dict(key="cache_vs_nocache_ratio",
                             what=f"Generation batch {batch}, {dtype}: ours with / without KV cache",
                             goal=targets.cache_vs_nocache, value=flat["cache_vs_nocache_ratio"], unit="x",
                             detail=f"{timed['ours']['tokens_per_s']:.1f} vs {nocache:.1f} tok/s, eager both; "
                             f"{name} with the cache {flat['cache_best_vs_nocache_ratio']:.2f}x"))
    data = results.get("data", {})
    lstm = results.get("lstm", {}).get("by_precision", {})
    consume = max((result["objectives"]["seq2one"]["windows_per_s"] for result in lstm.values()
                   if "seq2one" in result["objectives"]), default=None)
    if "serve" in data:
        served = data["serve"]["lstm"]["windows_per_s"]
        flat["lstm_windows_vs_consumption_ratio"] = ratio(served, consume)
        flat["transformer_windows_vs_consumption_ratio"] = None
        transformer = best.get("bf16") or best.get("fp32")
        if transformer:
            flat["transformer_windows_vs_consumption_ratio"] = data["serve"]["transformer"]["windows_per_s"] / (
                transformer[1]["tokens_per_s"] / results["train"]["seq_len"])
        if consume:
            rows.append(dict(key="lstm_windows_vs_consumption_ratio",
                             what="Data: LSTM stride-1 windows served / V6 LSTM consumes",
                             goal=targets.lstm_windows_vs_consumption, value=flat["lstm_windows_vs_consumption_ratio"],
                             unit="x", detail=f"{served:.0f} vs {consume:.0f} windows/s"))
        flat["data_peak_memory_vs_cache_ratio"] = data["memory"]["peak_vs_cache_ratio"]
    for row in rows:
        value, goal = row["value"], row["goal"]
        row["met"] = None if goal is None or value is None else value >= goal
        row["margin"] = None if goal is None or value is None else value / goal - 1
    return flat, rows


def notes(cfg: DictConfig, results: dict[str, Any]) -> list[str]:
    return [
        "Contenders alternate within one process (the first of each round rotates); each figure is the median of "
        f"{cfg.train.reps} training steps / {cfg.generate.reps} generations after warmup.",
        "Llama: `LlamaForCausalLM` with our dims, tied embeddings, no biases, the same RMSNorm eps and RoPE base, "
        "`attn_implementation='sdpa'`; dropout 0 on both (HF Llama has attention dropout only). Same batch, "
        "optimiser (AdamW, same groups), loss (cross-entropy in fp32) and thread count.",
        "bf16 = bf16 autocast over fp32 weights and optimiser (Lightning's bf16-mixed). Compiled (ours and Llama "
        "alike) = `torch.compile` of forward + loss (AOTAutograd compiles the backward), the optimiser step eager; "
        "the first step includes compiling.",
        "Every Llama target is judged against the faster Llama contender, eager (HF's default) or compiled; ours "
        "against each is in the detail and in results.json (`*_vs_llama_ratio`: eager, `*_vs_llama_compiled_ratio`, "
        "`*_vs_llama_best_ratio`: the faster). A missed target profiles ours and that Llama.",
        "MFU = model FLOPs (6N per token + 12 x layers x d_model x T for attention) / step time / the measured peak: "
        "the model's own GEMMs (forward, input and weight gradients of every linear layer) timed alone, in the same "
        "rounds as the training steps.",
        "Generation: ours = `musicgen.generation.generate` (static KV cache, one forward per token); compiled = the "
        "same on `torch.compile(model)` whose KV cache the caller keeps between calls; Llama = "
        "`generate(do_sample=True, min_new_tokens=max_new_tokens)` with its dynamic cache (min_new_tokens adds one "
        "EOS-masking logits processor to its loop); Llama compiled = HF's documented recipe, "
        "`model.forward = torch.compile(model.forward)` with the same mode and inductor settings as ours "
        "(`generate.compile_with`), static shapes, and `generate(cache_implementation='static')` sized once for "
        "every call (HF's own automatic compile off, so the settings are ours). No-cache = ours re-encoding the "
        "whole sequence each step.",
        "The LSTM's consumption is its fastest seq2one training rate (windows/s, either precision); the served rate "
        "is one process (num_workers 0) iterating the shuffled train loader.",
    ]


# ----------------------------------------------------------------------------- PERFORMANCE.md
def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1%}" if unit == "%" else f"{value:.2f}x"


def profile_table(rows: list[dict[str, Any]], per: str) -> list[str]:
    lines = [f"| op | ms {per} | share of self time | calls {per} |", "|---|---:|---:|---:|"]
    for row in rows:
        op = row["op"].replace("|", "/")
        op = op if len(op) <= 70 else op[:67] + "..."
        lines.append(f"| `{op}` | {row['ms_per_call']:.2f} | {row['share']:.1%} | {row['calls']:.1f} |")
    return lines


def render_markdown(cfg: DictConfig, results: dict[str, Any]) -> str:
    machine = results["machine"]
    flags = ", ".join(f"{flag} {'yes' if present else 'no'}" for flag, present in machine["cpu_flags"].items())
    load = (f"{machine['load_average_start'][0]:.1f} -> {machine['load_average_end'][0]:.1f}"
            if machine.get("load_average_start") else "n/a")
    gpu = f" ({machine['gpu']})" if machine["gpu"] else ""
    lines = [
        "# Performance",
        "",
        f"`musicgen bench` ({machine['date']}, {results['elapsed_s'] / 60:.1f} min in all). Ratios are "
        "medians of alternating runs in one process; absolute figures hold for this machine at this moment only.",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU | {machine['cpu']} ({machine['cores']} cores) |",
        f"| flags | {flags} |",
        f"| device | {machine['device']}{gpu}; default precision {machine['default_precision']} |",
        f"| threads | {machine['threads']} (torch.set_num_threads, every contender); "
        f"OMP_WAIT_POLICY={machine['omp_wait_policy']} |",
        f"| software | torch {machine['torch']}, transformers {machine['transformers']}, Python {machine['python']} |",
        f"| load average (1 min) | {load} (other processes share the cores) |",
        "",
        "## Targets",
        "",
        "| target | goal | measured | status | detail |",
        "|---|---:|---:|---|---|",
    ]
    for row in results["targets"]:
        goal = "-" if row["goal"] is None else ("≥ " + fmt(row["goal"], row["unit"]))
        if row["met"] is None:
            status = "(no target)"
        elif row["met"]:
            status = f"**met** (+{row['margin']:.0%})"
        else:
            status = f"**missed** by {-row['margin']:.0%}"
        lines.append(f"| {row['what']} | {goal} | {fmt(row['value'], row['unit'])} | {status} | {row['detail']} |")
    train = results.get("train")
    if train:
        model = cfg.model
        lines += ["", f"## Training: B {train['batch_size']} x T {train['seq_len']}, vocabulary {model.vocab_size}, "
                  f"{model.n_layers}L/{model.n_heads}H/{model.d_model}d/{model.d_ff}ff, dropout {model.dropout}, AdamW"
                  f"{' (fused)' if cfg.train.fused_adamw else ''}", "",
                  "| precision | contender | tokens/s | step (median) | MFU | first step (compile) | params |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for precision, result in train["by_precision"].items():
            for name, timed in result["contenders"].items():
                mfu = f"{timed['mfu']:.1%}" if timed["mfu"] is not None else "n/a"
                lines.append(f"| {precision} | {name} | {timed['tokens_per_s']:.0f} | {timed['step_s'] * 1e3:.0f} ms "
                             f"| {mfu} | {timed['first_step_s']:.2f} s | {timed['params'] / 1e6:.2f}M |")
            if result.get("gemm_peak_tflops"):
                lines.append(f"| {precision} | GEMM peak (model's GEMMs alone) | | | | "
                             f"| {result['gemm_peak_tflops']:.3g} TFLOP/s |")
            for name, error in result["errors"].items():
                lines.append(f"| {precision} | {name} | failed | | | | `{error}` |")
    lstm = results.get("lstm")
    if lstm:
        lstm_cfg = cfg.lstm
        lines += ["", f"## V6 LSTM: B {lstm['batch_size']} x T {lstm['seq_len']}, vocabulary {lstm_cfg.vocab_size}, "
                  f"{list(lstm_cfg.hidden_sizes)}, embedding {lstm_cfg.embedding_dim}, dropout {lstm_cfg.dropout}", "",
                  "| precision | objective | targets/s | windows/s | step |", "|---|---|---:|---:|---:|"]
        for precision, result in lstm["by_precision"].items():
            for objective, timed in result["objectives"].items():
                lines.append(f"| {precision} | {objective} | {timed['targets_per_s']:.0f} "
                             f"| {timed['windows_per_s']:.0f} | {timed['step_s'] * 1e3:.0f} ms |")
    gen = results.get("generate")
    if gen:
        sampling = gen["sampling"]
        lines += ["", f"## Generation: {gen['new_tokens']} new tokens after BOS, {gen['dtype']} weights, temperature "
                  f"{sampling['temperature']}, top-k {sampling['top_k']}, top-p {sampling['top_p']}", ""]
        for name in ("compiled_with", "llama_compiled_with"):
            if gen.get(name):
                settings = ", ".join(f"{key} `{value}`" for key, value in gen[name].items())
                lines += [f"{'Llama compiled' if name.startswith('llama') else 'Ours compiled'}: {settings}.", ""]
        lines += ["| batch | contender | tokens/s | run (median) | first call (compile) |", "|---:|---|---:|---:|---:|"]
        for batch, result in gen["by_batch"].items():
            for name, timed in result["contenders"].items():
                lines.append(f"| {batch} | {name} | {timed['tokens_per_s']:.1f} | {timed['run_s']:.2f} s "
                             f"| {timed['first_call_s']:.2f} s |")
            for name, what in (("floor", "memory-bandwidth ceiling"), ("floor_int8", "its ceiling with int8 linears")):
                if result.get(name):
                    floor = result[name]
                    lines.append(f"| {batch} | {what} (reading {floor['weights_mb']:.0f} MB of weights per step at "
                                 f"{floor['stream_gb_per_s']:.1f} GB/s, a copy's) | {floor['tokens_per_s']:.1f} | | |")
            if result.get("floor", {}).get("read_tokens_per_s"):
                floor = result["floor"]
                lines.append(f"| {batch} | the same read at {floor['read_gb_per_s']:.1f} GB/s, a sum's | "
                             f"{floor['read_tokens_per_s']:.1f} | | |")
            for name, error in result["errors"].items():
                lines.append(f"| {batch} | {name} | failed | | `{error}` |")
    data = results.get("data")
    if data:
        lines += ["", "## Data", ""]
        if "skipped" in data:
            lines.append(f"Skipped: {data['skipped']}.")
        else:
            tok, mem = data["tokenize"], data["memory"]
            lines += [f"Tokeniser {data['tokenizer']} on {tok['files']} files ({tok['docs']} documents with "
                      f"{tok['augment']['copies']} transposed copies per training file, {tok['tokens']} tokens), "
                      f"{tok['encode_workers']} encode workers.", "",
                      "| row | measured |", "|---|---:|",
                      f"| tokenise, cold (scan + encode + write the cache) | {tok['cold_files_per_s']:.1f} files/s "
                      f"({tok['cold_s']:.1f} s) |",
                      f"| tokenise, cached (load the cache) | {tok['cached_files_per_s']:.0f} files/s "
                      f"({tok['cached_s'] * 1e3:.0f} ms) |"]
            for kind, served in data["serve"].items():
                lines.append(f"| windows served, {kind} ({served['mode']}, {served['seq_len']} tokens, stride "
                             f"{served['stride']}, batch {served['batch_size']}) "
                             f"| {served['windows_per_s']:.0f} windows/s "
                             f"({served['tokens_per_s'] / 1e6:.1f}M tokens/s) |")
            lines.append(f"| DataModule peak traced memory / token cache size | {mem['peak_traced_mb']:.1f} MB / "
                         f"{mem['cache_mb']:.1f} MB |")
    profiles = []
    for precision, result in (train or {}).get("by_precision", {}).items():
        for name, rows in result.get("profiles", {}).items():
            profiles.append((f"train/{precision}: {name}, one training step", "per step", rows))
    for batch, result in (gen or {}).get("by_batch", {}).items():
        for name, rows in result.get("profiles", {}).items():
            profiles.append((f"generate/{batch}: {name}, per generated token", "per token", rows))
    if profiles:
        lines += ["", "## Why the misses: torch.profiler, top ops by self time", ""]
        for title, per, rows in profiles:
            lines += [f"### {title}", ""] + profile_table(rows, per) + [""]
    if results.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in results["notes"]]
    return "\n".join(lines) + "\n"
