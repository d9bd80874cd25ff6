"""Performance benchmark: ``musicgen bench`` (``make bench``; conf/bench.yaml).

Our models against Hugging Face's ``LlamaForCausalLM`` of the same shape (the peer a user would
otherwise reach for), in one process. Contenders alternate (the first of each round rotates) and
every figure is a median over rounds, every comparison a ratio: absolute times on a shared
machine are noise. Rows:

1. training throughput (forward + backward + AdamW step) of the V7/V8 Transformer: ours eager
   and under ``torch.compile`` vs Llama eager and under ``torch.compile``, fp32 and bf16
   autocast; the V6 LSTM in both objectives;
2. generation of ``new_tokens`` tokens per batch size, same sampling: ``generate()`` on ours
   (eager, and compiled with a kept KV cache) vs ``LlamaForCausalLM.generate`` (eager with its
   dynamic cache, and compiled with a static cache: the same mode and inductor settings as ours);
   ours with vs without the KV cache;
3. model FLOPs utilisation (``MusicTransformer.flops_per_token``) against the measured peak of the
   model's own GEMMs, timed alone in the same rounds as the training steps;
4. data: tokenisation files/s (cold, cached), windows/s the DataModule serves vs what the V6
   LSTM consumes, the DataModule's peak traced memory vs the size of its token cache.

Writes ``results.json`` (flat ``*_ratio`` keys at the top) and ``PERFORMANCE.md`` (machine,
targets met or missed by how much, and a ``torch.profiler`` top-ops table for every miss);
``publish=true`` also writes the table into the docs site (``docs/results/performance.md``). Ours
is reported against each Llama (``*_vs_llama_ratio``: eager, ``*_vs_llama_compiled_ratio``);
the targets are judged against the faster of the two (``*_vs_llama_best_ratio``).

Modules: ``env`` (OMP_WAIT_POLICY, imported first: it must precede torch), ``harness`` (clock,
alternating rounds, medians, profiler, machine), ``llama`` (the peer), ``train_step``, ``decoding``,
``data`` (the workloads), ``report`` (targets, notes, Markdown); ``run`` here ties them together.
"""

from __future__ import annotations

from musicgen.experiments.speed.env import OMP_WAIT_POLICY

# isort: split
import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from musicgen.checkpoint.hf import build_llama, llama_missing
from musicgen.config import value_overrides
from musicgen.experiments.speed.data import bench_data
from musicgen.experiments.speed.decoding import bench_generate
from musicgen.experiments.speed.harness import (
    Clock,
    alternate,
    load_average,
    machine_info,
    median,
    set_threads,
    top_ops,
)
from musicgen.experiments.speed.report import fmt, notes, render_markdown, summarize
from musicgen.experiments.speed.train_step import bench_lstm, bench_train
from musicgen.fs import atomic_write_text
from musicgen.publish import publish, results_dir
from musicgen.runtime import pick_device

__all__ = [
    "OMP_WAIT_POLICY", "Clock", "alternate", "bench_data", "bench_generate", "bench_lstm", "bench_train", "build_llama",
    "llama_missing", "median", "render_markdown", "run", "summarize", "top_ops", "with_quick",
]

log = logging.getLogger(__name__)


def with_quick(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """``quick=true``: ``quick_overrides`` merged, then the command line's ``overrides`` again, so
    what the user typed wins (``quick=true train.reps=3`` runs 3 repetitions)."""
    if not cfg.quick:
        return cfg
    cfg = OmegaConf.merge(cfg, cfg.quick_overrides)
    for key, value in value_overrides(overrides):
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def run(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Run the benchmark; writes results.json and PERFORMANCE.md to ``cfg.out_dir``; returns the
    results. ``overrides``: the command line's, which win over ``quick_overrides``."""
    cfg = with_quick(cfg, overrides)
    if cfg.publish:
        results_dir(cfg.publish_dir)  # a missing docs directory fails before the work
    start = time.perf_counter()
    device = pick_device(cfg.device)
    set_threads(cfg.threads)
    if device.type == "cpu":
        import torch._inductor.config as inductor_config

        inductor_config.cpp.enable_kernel_profile = True  # named kernels in the profiles of compiled code
    clock = Clock(device)
    llama_why = llama_missing()  # looked up here, in the package: tests replace it
    settings = {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
                for key in cfg if key not in ("paths", "quick_overrides", "hydra", "publish", "publish_dir")}
    settings["data_dir"] = cfg.paths.data_dir  # (paths.output_dir only resolves under @hydra.main)
    results: dict[str, Any] = {"machine": machine_info(device), "settings": settings}
    if llama_why:
        log.warning("Llama rows skipped: %s", llama_why)
        results["llama_skipped"] = llama_why
    sections = set(cfg.sections)
    if "train" in sections:
        results["train"] = bench_train(cfg, device, clock, llama_why)
        results["lstm"] = bench_lstm(cfg, device, clock)
    if "generate" in sections:
        results["generate"] = bench_generate(cfg, device, clock, llama_why)
    if "data" in sections:
        results["data"] = bench_data(cfg, clock)
    results["machine"]["load_average_end"] = load_average()
    results["elapsed_s"] = time.perf_counter() - start
    flat, rows = summarize(cfg, results)
    results["targets"] = rows
    results["notes"] = notes(cfg, results)
    result = {**flat, **results}
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.json", json.dumps(result, indent=1, default=str) + "\n")
    atomic_write_text(out_dir / "PERFORMANCE.md", render_markdown(cfg, result))
    log.info("wrote %s and %s", out_dir / "results.json", out_dir / "PERFORMANCE.md")
    if cfg.publish:
        log.info("published to %s", publish("performance", render_markdown(cfg, result), docs_dir=cfg.publish_dir))
    for row in rows:
        log.info("%-60s %s (goal %s)", row["what"], fmt(row["value"], row["unit"]), fmt(row["goal"], row["unit"]))
    return result
