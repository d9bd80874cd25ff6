"""Row 2: generation of ``new_tokens`` tokens per batch size, same sampling: ``generate()`` on ours
(eager, and compiled with a kept KV cache) vs ``LlamaForCausalLM.generate`` (eager with its dynamic
cache, and compiled with a static cache: the same torch.compile mode and inductor settings as
ours); ours with vs without the KV cache; ours with weight-only int8 linears (``quantize=int8``,
compiled when ours is: a reference row with its own ceiling, not a contender for the Llama
targets); and the memory-bandwidth ceiling (every weight read once per step)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from musicgen.checkpoint.hf import build_llama
from musicgen.constants import BOS_ID
from musicgen.experiments.speed.harness import INT8, Clock, Fn, alternate, best_ours, decoders, median, top_ops
from musicgen.experiments.speed.llama import compile_llama_forward, fastest_llama, llama_generate
from musicgen.generation import SamplingConfig, generate
from musicgen.models import MusicTransformer
from musicgen.runtime import default_precision

log = logging.getLogger(__name__)

STREAM_PASSES = 50  # copies of a weight-sized buffer per memory-bandwidth measurement


def generation_dtype(name: str) -> torch.dtype:
    if name == "default":
        return torch.bfloat16 if default_precision().startswith("bf16") else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


def checked(fn: Callable[[int], torch.Tensor], batch_size: int, new_tokens: int) -> Fn:
    """A warmup call that also checks the contender really produced ``new_tokens`` tokens per row."""

    def run() -> None:
        out = fn(new_tokens)
        if tuple(out.shape) != (batch_size, 1 + new_tokens):
            raise RuntimeError(f"generated shape {tuple(out.shape)}, expected {(batch_size, 1 + new_tokens)}")

    return run


def bench_generate(cfg: DictConfig, device: torch.device, clock: Clock, llama_why: str | None) -> dict[str, Any]:
    gen_cfg = cfg.generate
    dtype = generation_dtype(gen_cfg.dtype)
    sampling = SamplingConfig(**OmegaConf.to_container(gen_cfg.sampling))
    torch.manual_seed(cfg.seed)
    ours = MusicTransformer(**OmegaConf.to_container(cfg.model)).to(device=device, dtype=dtype).eval()
    llama = build_llama(ours).to(device=device, dtype=dtype).eval() if llama_why is None else None
    compile_with = gen_cfg.compile_with.get(device.type, {}) or {}
    mode, inductor_patch = compile_with.get("mode"), dict(compile_with.get("inductor") or {})
    compiled = None
    if gen_cfg.compile:
        kept = copy.deepcopy(ours)  # its own copy: this one keeps a KV cache between calls
        # static shapes: one graph per batch size (a dynamic batch dimension decoded 2x slower)
        compiled = torch.compile(kept, mode=mode, dynamic=False)
    # Llama compiled: its own copy, the same mode and inductor settings as ours. Inductor's freezing
    # (CPU) works with HF's model: its weights become constants, the static cache stays an input.
    llama_compiled = None
    if llama is not None and gen_cfg.compile_llama:
        llama_compiled = compile_llama_forward(copy.deepcopy(llama), mode)
    int8 = int8_run = None
    if gen_cfg.int8:
        from musicgen.generation.quantize import quantize_int8

        int8 = quantize_int8(copy.deepcopy(ours), compute_dtype="auto")  # its own copy: it keeps a KV cache
        int8_run = torch.compile(int8, mode=mode, dynamic=False) if gen_cfg.compile else int8
    new_tokens = gen_cfg.new_tokens
    static_cache_len = 1 + new_tokens  # BOS + the timed run's tokens: warmup and timed runs share it

    def compiling(fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        import torch._inductor.config as inductor_config

        with inductor_config.patch(inductor_patch):  # read while compiling (first call per batch size)
            return fn()

    llama_fp32 = None
    if llama is not None and gen_cfg.llama_fp32 and dtype != torch.float32:  # HF's default dtype, for reference
        llama_fp32 = build_llama(ours).to(device=device).eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in ours.parameters())
    src = torch.empty(weight_bytes // 2, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)

    def stream() -> None:  # many passes: a single one is over in ms, too brief to see the machine's load
        for _ in range(STREAM_PASSES):
            dst.copy_(src)

    # what a decoder does with its weights: read them. An fp32 sum over the same bytes (a bf16 sum
    # into fp32 is compute-bound on a CPU: it measured 0.8 GB/s against a copy's 12)
    flat = torch.empty(weight_bytes // 4, dtype=torch.float32, device=device).normal_()

    def read() -> None:
        for _ in range(STREAM_PASSES):
            flat.sum()

    out: dict[str, Any] = {"new_tokens": new_tokens, "dtype": str(dtype).removeprefix("torch."),
                           "sampling": dict(gen_cfg.sampling), "by_batch": {}}
    with_ = {"mode": mode, "inductor": inductor_patch, "dynamic": False}  # what the compiled contenders ran with
    if compiled is not None:
        out["compiled_with"] = with_
    if llama_compiled is not None:
        out["llama_compiled_with"] = {**with_, "forward": "model.forward = torch.compile(model.forward, ...)",
                                      "cache_implementation": "static", "max_cache_len": static_cache_len}
    for batch_size in gen_cfg.batch_sizes:
        log.info("generation: batch %d, %d new tokens, %s", batch_size, new_tokens, dtype)
        prompt = torch.full((batch_size, 1), BOS_ID, dtype=torch.long, device=device)
        fns: dict[str, Callable[[int], torch.Tensor]] = {}  # new tokens -> the generated ids
        fns["ours"] = lambda tokens, prompt=prompt: generate(ours, prompt, tokens, sampling)
        if compiled is not None:
            kept.setup_cache(batch_size, kept.context_len)  # kept: compile guards on the cache buffers
            fns["ours_compiled"] = lambda tokens, prompt=prompt: compiling(
                lambda: generate(compiled, prompt, tokens, sampling))
        if int8 is not None:
            int8.setup_cache(batch_size, int8.context_len)
            fns[INT8] = lambda tokens, prompt=prompt: compiling(lambda: generate(int8_run, prompt, tokens, sampling))
        if llama is not None:
            fns["llama"] = lambda tokens, prompt=prompt: llama_generate(llama, prompt, tokens, sampling)
        if llama_compiled is not None:
            fns["llama_compiled"] = lambda tokens, prompt=prompt: compiling(
                lambda: llama_generate(llama_compiled, prompt, tokens, sampling, static_cache_len))
        if llama is not None and llama_fp32 is not None:
            fns["llama_fp32"] = lambda tokens, prompt=prompt: llama_generate(llama_fp32, prompt, tokens, sampling)
        reps = {name: gen_cfg.reps for name in fns}
        if gen_cfg.nocache and batch_size == 1:
            fns["ours_nocache"] = lambda tokens, prompt=prompt: generate(
                ours, prompt, tokens, sampling, use_cache=False)
            reps["ours_nocache"] = gen_cfg.nocache_reps
        # a compile that fails or takes longer is recorded in errors, and the contender dropped
        timeouts = {name: cfg.train.compile_timeout_s for name in ("ours_compiled", "llama_compiled", INT8)}
        contenders = {name: (lambda fn=fn: fn(new_tokens)) for name, fn in fns.items()}
        warm = {name: checked(fn, batch_size, gen_cfg.warmup_tokens) for name, fn in fns.items()}
        contenders["weights_stream"], contenders["weights_read"] = stream, read
        reps["weights_stream"] = reps["weights_read"] = gen_cfg.reps
        times, first, errors = alternate(contenders, clock, 1, reps, warm_fns=warm, timeouts=timeouts)
        result: dict[str, Any] = {"errors": errors, "contenders": {}}
        if "weights_stream" in times:
            gbps = 2 * STREAM_PASSES * weight_bytes / median(times.pop("weights_stream")) / 1e9  # read + write
            # decoding reads every weight once per step: the fastest any decoder can go at this batch
            result["floor"] = {"weights_mb": weight_bytes / 2**20, "stream_gb_per_s": gbps,
                               "tokens_per_s": batch_size / (weight_bytes / (gbps * 1e9))}
            if "weights_read" in times:  # the same bound from reading alone (a sum), beside the copy
                read_gbps = STREAM_PASSES * weight_bytes / median(times.pop("weights_read")) / 1e9
                result["floor"].update(read_gb_per_s=read_gbps, read_tokens_per_s=batch_size * read_gbps * 1e9
                                       / weight_bytes)
            if int8 is not None:  # the int8 decoder reads its int8 matrices, their scales and the exact embedding
                q_bytes = int8_weight_bytes(int8)
                result["floor_int8"] = {"weights_mb": q_bytes / 2**20, "stream_gb_per_s": gbps,
                                        "tokens_per_s": batch_size / (q_bytes / (gbps * 1e9))}
        for name, run_times in times.items():
            result["contenders"][name] = {"tokens_per_s": batch_size * new_tokens / median(run_times),
                                          "run_s": median(run_times), "runs_s": run_times,
                                          "first_call_s": first.get(name)}
        timed = result["contenders"]
        best_name, best = best_ours(decoders(timed), "tokens_per_s")
        llama_name, peer = fastest_llama(timed, "tokens_per_s")  # the target is judged against the faster
        if (cfg.profile.enabled and batch_size == 1 and best and peer
                and best["tokens_per_s"] / peer["tokens_per_s"] < cfg.targets.generate_b1_vs_llama):
            profiled_tokens = min(32, new_tokens)
            result["profiles"] = {}
            for name in [best_name, llama_name]:
                log.info("profiling generation: %s, %d tokens", name, profiled_tokens)
                rows = top_ops(partial(fns[name], profiled_tokens), device, 1, cfg.profile.top)
                for row in rows:  # per generated token, not per call
                    row["ms_per_call"] /= profiled_tokens
                    row["calls"] /= profiled_tokens
                result["profiles"][name] = rows
        out["by_batch"][str(batch_size)] = result
    if compiled is not None:
        kept.clear_cache()
    if int8 is not None:
        int8.clear_cache()
    return out


def int8_weight_bytes(model: torch.nn.Module) -> int:
    """Bytes a quantized model reads per decoding step: its parameters (the exact embedding, the
    norms) and its int8 linears' weights and scales (not the KV cache or the RoPE tables)."""
    from musicgen.generation.quantize import Int8Linear

    q = sum(b.numel() * b.element_size() for m in model.modules() if isinstance(m, Int8Linear) for b in m.buffers())
    return q + sum(p.numel() * p.element_size() for p in model.parameters())
