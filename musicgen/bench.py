"""Performance benchmark: ``python -m musicgen.bench`` (``make bench``; conf/bench.yaml).

Our models against Hugging Face's ``LlamaForCausalLM`` of the same shape (the peer a user would
otherwise reach for), in one process. Contenders alternate (the first of each round rotates) and
every figure is a median over rounds, every comparison a ratio: absolute times on a shared
machine are noise. Rows:

1. training throughput (forward + backward + AdamW step) of the V7/V8 Transformer: ours eager
   and under ``torch.compile`` vs Llama, fp32 and bf16 autocast; the V6 LSTM in both objectives;
2. generation of ``new_tokens`` tokens per batch size, same sampling: ``generate()`` on ours
   (eager, and compiled with a kept KV cache) vs ``LlamaForCausalLM.generate``; ours with vs
   without the KV cache;
3. model FLOPs utilisation against the measured peak of the model's own GEMMs, timed alone in
   the same rounds as the training steps;
4. data: tokenisation files/s (cold, cached), windows/s the DataModule serves vs what the V6
   LSTM consumes, the DataModule's peak traced memory vs the size of its token cache.

Writes ``results.json`` (flat ``*_ratio`` keys at the top) and ``PERFORMANCE.md`` (machine,
targets met or missed by how much, and a ``torch.profiler`` top-ops table for every miss).

``OMP_WAIT_POLICY`` defaults to PASSIVE here (it must be set before torch loads OpenMP; an
explicit setting wins): with OpenMP's default spinning, on a 2-core machine shared with other
processes every parallel region waits for a descheduled sibling thread, and decoding went from
15 ms to 250 ms per token.
"""

from __future__ import annotations

import os
import sys

if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import contextlib  # noqa: E402
import copy  # noqa: E402
import gc  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from datetime import datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import hydra  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from musicgen.config import cpu_info, default_precision, pick_device, value_overrides  # noqa: E402
from musicgen.generation import SamplingConfig, generate  # noqa: E402
from musicgen.lit.optim import param_groups  # noqa: E402
from musicgen.midi_io import atomic_write_text  # noqa: E402
from musicgen.models import MelodyLSTM, MusicTransformer  # noqa: E402
from musicgen.tokenizers.base import BOS_ID, EOS_ID, PAD_ID  # noqa: E402

log = logging.getLogger(__name__)

Fn = Callable[[], Any]
STREAM_PASSES = 50  # copies of a weight-sized buffer per memory-bandwidth measurement


# ----------------------------------------------------------------------------- machine and timing
def set_threads(threads: int | None) -> int:
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def machine_info(device: torch.device) -> dict[str, Any]:
    model, flags = cpu_info()
    try:
        import transformers

        hf = transformers.__version__
    except ImportError:
        hf = None
    info = {
        "cpu": model or platform.processor() or platform.machine(),
        "cpu_flags": {f: f in flags for f in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")},
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": hf,
        "python": platform.python_version(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "default_precision": default_precision(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": datetime.now().isoformat(timespec="seconds"),
    }
    return info


class Clock:
    """Seconds one call takes (synchronising CUDA around it)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Fn) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise ``TimeoutError`` in this (main) thread after ``seconds``; a no-op where SIGALRM is missing."""
    usable = seconds and hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def _raise(signum, frame):
        raise TimeoutError(f"took longer than {seconds:.0f}s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def error_text(e: BaseException) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first[:300]}"


def alternate(
    contenders: dict[str, Fn],
    clock: Clock,
    warmup: int,
    reps: int | dict[str, int],
    warm_fns: dict[str, Fn] | None = None,
    timeouts: dict[str, float | None] | None = None,
) -> tuple[dict[str, list[float]], dict[str, float], dict[str, str]]:
    """Time contenders in alternating rounds.

    Each is first warmed up (``warmup`` untimed calls of ``warm_fns[name]`` or itself; the first
    call's time is kept as ``first``: it includes compiling). A contender whose warmup raises or
    outlives ``timeouts[name]`` is dropped, its error kept. Then rounds: every contender once
    (``reps[name]`` rounds for it), the first of each round rotating.
    Returns (times per contender, first-call seconds, errors).
    """
    warm_fns, timeouts = warm_fns or {}, timeouts or {}
    first: dict[str, float] = {}
    errors: dict[str, str] = {}
    for name, fn in contenders.items():
        try:
            with time_limit(timeouts.get(name)):
                for i in range(max(1, warmup)):
                    dt = clock(warm_fns.get(name, fn))
                    first.setdefault(name, dt)
        except Exception as e:  # a failed compile (or OOM) is a result too: keep it, go on
            log.warning("%s: warmup failed: %s", name, error_text(e))
            errors[name] = error_text(e)
    live = [n for n in contenders if n not in errors]
    reps_of = reps if isinstance(reps, dict) else {n: reps for n in live}
    times: dict[str, list[float]] = {n: [] for n in live}
    rounds = max((reps_of.get(n, 0) for n in live), default=0)
    for r in range(rounds):
        k = r % len(live)
        for n in live[k:] + live[:k]:
            if r < reps_of.get(n, 0):
                times[n].append(clock(contenders[n]))
        log.info("round %d/%d: %s", r + 1, rounds, ", ".join(f"{n} {times[n][-1]:.3f}s" for n in live if len(times[n]) > r))
    return times, first, errors


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def top_ops(fn: Fn, device: torch.device, steps: int, top: int) -> list[dict[str, Any]]:
    """torch.profiler over ``steps`` calls: the ``top`` ops by self time (device time on CUDA)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()

    def self_us(e) -> float:
        if device.type == "cuda":
            return float(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)))
        return float(e.self_cpu_time_total)

    total = sum(self_us(e) for e in events) or 1.0
    rows = sorted(events, key=self_us, reverse=True)[:top]
    return [
        {"op": e.key, "ms_per_call": self_us(e) / 1e3 / steps, "share": self_us(e) / total, "calls": e.count / steps}
        for e in rows
    ]


# ----------------------------------------------------------------------------- models
def llama_missing() -> str | None:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return "transformers is not installed (pip install -e '.[bench]')"
    return None


def build_llama(ours: MusicTransformer):
    """``LlamaForCausalLM`` of exactly our shape: dims, vocabulary, tied embeddings, no biases,
    RMSNorm eps, RoPE base, dropout, SDPA attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    c = ours.config
    kw = dict(
        vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_ff, num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads, num_key_value_heads=c.n_heads, hidden_act="silu",
        max_position_embeddings=c.max_seq_len, rms_norm_eps=c.norm_eps, tie_word_embeddings=True,
        attention_bias=False, mlp_bias=False, attention_dropout=c.dropout,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, attn_implementation="sdpa",
    )
    if "rope_parameters" in inspect.signature(LlamaConfig.__init__).parameters:  # transformers >= 5
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": c.rope_base}
    else:
        kw["rope_theta"] = c.rope_base
    model = LlamaForCausalLM(LlamaConfig(**kw))
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"Llama attention is {model.config._attn_implementation!r}, not sdpa")
    return model


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())  # tied weights count once


def train_flops_per_token(net: MusicTransformer, seq_len: int) -> float:
    """6N (forward + backward through every weight, the tied head included) + attention's
    12 * layers * d_model * T (PaLM / nanoGPT convention)."""
    c = net.config
    return 6 * n_params(net) + 12 * c.n_layers * c.d_model * seq_len


def gemm_set(c, m: int, dtype: torch.dtype, device: torch.device) -> tuple[Fn, float]:
    """The GEMMs of one training step at this model's shapes (per linear: forward x W^T, input
    grad dY W, weight grad dY^T x; qkv, proj, w13, w2 per layer, and the head), as a callable
    and its FLOPs: timed alone, they are the measured matrix-product peak."""
    d, ff = c.d_model, c.d_ff
    shapes = [(d, 3 * d, c.n_layers), (d, d, c.n_layers), (d, 2 * ff, c.n_layers), (ff, d, c.n_layers), (d, c.vocab_size, 1)]
    g = torch.Generator(device=device).manual_seed(0)

    def randn(*size):
        return torch.randn(*size, generator=g, device=device, dtype=dtype)

    # each layer its own tensors, as in the model (one shared set would stay in cache and flatter the peak)
    mats = [(randn(m, i), randn(o, i), randn(m, o)) for i, o, n in shapes for _ in range(n)]
    flops = sum(3 * 2 * m * i * o * n for i, o, n in shapes)

    def run() -> None:
        for x, w, dy in mats:
            F.linear(x, w)
            dy @ w
            dy.t() @ x

    return run, float(flops)


def train_step(net, forward, x, y, device, precision: str, tcfg, compile_: bool) -> Fn:
    """One optimiser step: forward (autocast for bf16), cross-entropy in fp32, backward, AdamW."""
    fused = True if tcfg.fused_adamw else None
    opt = torch.optim.AdamW(param_groups(net, tcfg.weight_decay), lr=tcfg.lr, betas=(0.9, 0.95), fused=fused)
    bf16 = precision == "bf16"

    def loss_fn(x, y):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = forward(x)
        return F.cross_entropy(logits.flatten(0, -2).float(), y.flatten())

    fn = torch.compile(loss_fn) if compile_ else loss_fn

    def step() -> None:
        loss = fn(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


# ----------------------------------------------------------------------------- 1 + 3: training, MFU
def bench_train(cfg: DictConfig, device: torch.device, clock: Clock, llama_why: str | None) -> dict[str, Any]:
    tc, mc = cfg.train, OmegaConf.to_container(cfg.model)
    B, T = tc.batch_size, tc.seq_len
    out: dict[str, Any] = {"batch_size": B, "seq_len": T, "by_precision": {}}
    for p in tc.precisions:
        log.info("training, %s: B %d x T %d", p, B, T)
        torch.manual_seed(cfg.seed)
        x = torch.randint(0, mc["vocab_size"], (B, T), device=device)
        y = torch.randint(0, mc["vocab_size"], (B, T), device=device)
        nets, steps, timeouts = {}, {}, {}
        for name, compile_ in [("ours", False), ("ours_compiled", True)]:
            if compile_ and not tc.compile:
                continue
            torch.manual_seed(cfg.seed)
            net = nets[name] = MusicTransformer(**mc).to(device).train()
            steps[name] = train_step(net, net, x, y, device, p, tc, compile_)
            timeouts[name] = tc.compile_timeout_s if compile_ else None
        if llama_why is None:
            for name, compile_ in [("llama", False), ("llama_compiled", True)]:
                if compile_ and not tc.compile_llama:
                    continue
                torch.manual_seed(cfg.seed)
                net = nets[name] = build_llama(nets["ours"]).to(device).train()
                steps[name] = train_step(net, lambda x, net=net: net(input_ids=x, use_cache=False).logits, x, y, device, p, tc, compile_)
                timeouts[name] = tc.compile_timeout_s if compile_ else None
        contenders = dict(steps)
        flops = train_flops_per_token(nets["ours"], T) * B * T
        if tc.mfu:
            dtype = torch.bfloat16 if p == "bf16" else torch.float32
            contenders["gemm_peak"], gemm_flops = gemm_set(nets["ours"].config, B * T, dtype, device)
        times, first, errors = alternate(contenders, clock, tc.warmup, tc.reps, timeouts=timeouts)
        res: dict[str, Any] = {"errors": errors, "model_flops_per_step": flops, "contenders": {},
                               "gemm_flops_per_step": gemm_flops if tc.mfu else None}
        peak = gemm_flops / median(times["gemm_peak"]) if "gemm_peak" in times else None
        res["gemm_peak_tflops"] = peak / 1e12 if peak else None
        for name in steps:
            if name not in times:
                continue
            s = median(times[name])
            res["contenders"][name] = {
                "tokens_per_s": B * T / s,
                "step_s": s,
                "steps_s": times[name],
                "first_step_s": first.get(name),
                "mfu": flops / s / peak if peak else None,
                "params": n_params(nets[name]),
            }
        # kept while the models exist, for profiling the misses at the end of this precision
        res["_steps"] = {n: steps[n] for n in steps if n in times}
        out["by_precision"][p] = res
        profile_train_misses(cfg, device, out, p)
        res.pop("_steps")
        del nets, steps, contenders
        gc.collect()
    return out


def decoders(contenders: dict[str, Any]) -> dict[str, Any]:
    """Our KV-cache decoders (the no-cache row is a different comparison)."""
    return {k: v for k, v in contenders.items() if k != "ours_nocache"}


def best_ours(contenders: dict[str, Any], key: str) -> tuple[str, dict] | tuple[None, None]:
    """Our fastest variant (compiled when it worked and was faster)."""
    ours = {n: c for n, c in contenders.items() if n.startswith("ours")}
    if not ours:
        return None, None
    name = max(ours, key=lambda n: ours[n][key])
    return name, ours[name]


def profile_train_misses(cfg: DictConfig, device: torch.device, out: dict, p: str) -> None:
    """Profile one training step of our best variant and of Llama when a target of this
    precision is missed (ours vs Llama; for bf16 also MFU and bf16 vs fp32)."""
    if not cfg.profile.enabled:
        return
    res, tg = out["by_precision"][p], cfg.targets
    c = res["contenders"]
    name, ours = best_ours(c, "tokens_per_s")
    if ours is None:
        return
    missed = "llama" in c and ours["tokens_per_s"] / c["llama"]["tokens_per_s"] < tg.train_vs_llama
    if p == "bf16":
        missed |= ours["mfu"] is not None and ours["mfu"] < tg.mfu_bf16
        fp32 = out["by_precision"].get("fp32", {}).get("contenders", {})
        if fp32:
            missed |= ours["tokens_per_s"] / best_ours(fp32, "tokens_per_s")[1]["tokens_per_s"] < tg.train_bf16_vs_fp32
    if not missed:
        return
    res["profiles"] = {}
    for n in [name, "llama"]:
        if n in res["_steps"]:
            log.info("profiling a training step: %s, %s", n, p)
            res["profiles"][n] = top_ops(res["_steps"][n], device, 1, cfg.profile.top)


def bench_lstm(cfg: DictConfig, device: torch.device, clock: Clock) -> dict[str, Any]:
    lc = cfg.lstm
    B, T = lc.batch_size, lc.seq_len
    net_kw = dict(vocab_size=lc.vocab_size, hidden_sizes=list(lc.hidden_sizes), input_mode="embedding",
                  embedding_dim=lc.embedding_dim, dropout=lc.dropout, context_len=T)
    out: dict[str, Any] = {"batch_size": B, "seq_len": T, "by_precision": {}}
    for p in cfg.train.precisions:
        torch.manual_seed(cfg.seed)
        x = torch.randint(0, lc.vocab_size, (B, T), device=device)
        steps, per_step = {}, {}
        for obj in lc.objectives:
            net = MelodyLSTM(**net_kw).to(device).train()
            if obj == "seq2one":
                y, fwd, per_step[obj] = x[:, -1].clone(), (lambda x, net=net: net(x, last_only=True)), B
            else:
                y, fwd, per_step[obj] = x.clone(), net, B * T
            steps[obj] = train_step(net, fwd, x, y, device, p, cfg.train, False)
        times, _, errors = alternate(steps, clock, lc.warmup, lc.reps)
        out["by_precision"][p] = {
            "errors": errors,
            "objectives": {
                o: {"targets_per_s": per_step[o] / median(t), "windows_per_s": B / median(t), "step_s": median(t)}
                for o, t in times.items()
            },
        }
    return out


# ----------------------------------------------------------------------------- 2: generation
def generation_dtype(name: str) -> torch.dtype:
    if name == "default":
        return torch.bfloat16 if default_precision().startswith("bf16") else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


def llama_generate(llama, prompt: torch.Tensor, n: int, sc: SamplingConfig) -> torch.Tensor:
    with torch.inference_mode():
        return llama.generate(
            input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
            temperature=sc.temperature, top_k=sc.top_k, top_p=sc.top_p,
            max_new_tokens=n, min_new_tokens=n,  # never stops at EOS: exactly n tokens, as ours
            pad_token_id=PAD_ID, eos_token_id=EOS_ID,
        )


def checked(fn: Callable[[int], torch.Tensor], B: int, n: int) -> Fn:
    """A warmup call that also checks the contender really produced n new tokens per row."""

    def run() -> None:
        out = fn(n)
        if tuple(out.shape) != (B, 1 + n):
            raise RuntimeError(f"generated shape {tuple(out.shape)}, expected {(B, 1 + n)}")

    return run


def bench_generate(cfg: DictConfig, device: torch.device, clock: Clock, llama_why: str | None) -> dict[str, Any]:
    gc_ = cfg.generate
    dtype = generation_dtype(gc_.dtype)
    sc = SamplingConfig(**OmegaConf.to_container(gc_.sampling))
    torch.manual_seed(cfg.seed)
    ours = MusicTransformer(**OmegaConf.to_container(cfg.model)).to(device=device, dtype=dtype).eval()
    llama = build_llama(ours).to(device=device, dtype=dtype).eval() if llama_why is None else None
    compiled, with_ = None, gc_.compile_with.get(device.type, {}) or {}
    if gc_.compile:
        kept = copy.deepcopy(ours)  # its own copy: this one keeps a KV cache between calls
        # static shapes: one graph per batch size (a dynamic batch dimension decoded 2x slower)
        compiled = torch.compile(kept, mode=with_.get("mode"), dynamic=False)
        inductor_patch = dict(with_.get("inductor") or {})

    def run_compiled(prompt, n):
        import torch._inductor.config as inductor_config

        with inductor_config.patch(inductor_patch):  # read while compiling (first call per batch size)
            return generate(compiled, prompt, n, sc)

    llama_fp32 = None
    if llama is not None and gc_.llama_fp32 and dtype != torch.float32:  # HF's default dtype, for reference
        llama_fp32 = build_llama(ours).to(device=device).eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in ours.parameters())
    src = torch.empty(weight_bytes // 2, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)

    def stream() -> None:  # many passes: a single one is over in ms, too brief to see the machine's load
        for _ in range(STREAM_PASSES):
            dst.copy_(src)

    N = gc_.new_tokens
    out: dict[str, Any] = {"new_tokens": N, "dtype": str(dtype).removeprefix("torch."), "sampling": dict(gc_.sampling),
                           "by_batch": {}}
    for B in gc_.batch_sizes:
        log.info("generation: batch %d, %d new tokens, %s", B, N, dtype)
        prompt = torch.full((B, 1), BOS_ID, dtype=torch.long, device=device)
        fns: dict[str, Callable[[int], torch.Tensor]] = {"ours": lambda n, p=prompt: generate(ours, p, n, sc)}
        if compiled is not None:
            kept.setup_cache(B, kept.context_len)  # kept: compile guards on the cache buffers
            fns["ours_compiled"] = lambda n, p=prompt: run_compiled(p, n)
        if llama is not None:
            fns["llama"] = lambda n, p=prompt: llama_generate(llama, p, n, sc)
        if llama is not None and llama_fp32 is not None:
            fns["llama_fp32"] = lambda n, p=prompt: llama_generate(llama_fp32, p, n, sc)
        reps = {n: gc_.reps for n in fns}
        if gc_.nocache and B == 1:
            fns["ours_nocache"] = lambda n, p=prompt: generate(ours, p, n, sc, use_cache=False)
            reps["ours_nocache"] = gc_.nocache_reps
        timeouts = {"ours_compiled": cfg.train.compile_timeout_s}
        contenders = {k: (lambda f=f: f(N)) for k, f in fns.items()}
        warm = {k: checked(f, B, gc_.warmup_tokens) for k, f in fns.items()}
        contenders["weights_stream"] = stream
        reps["weights_stream"] = gc_.reps
        times, first, errors = alternate(contenders, clock, 1, reps, warm_fns=warm, timeouts=timeouts)
        res: dict[str, Any] = {"errors": errors, "contenders": {}}
        if "weights_stream" in times:
            gbps = 2 * STREAM_PASSES * weight_bytes / median(times.pop("weights_stream")) / 1e9  # read + write
            # decoding reads every weight once per step: the fastest any decoder can go at this batch
            res["floor"] = {"weights_mb": weight_bytes / 2**20, "stream_gb_per_s": gbps,
                            "tokens_per_s": B / (weight_bytes / (gbps * 1e9))}
        for name, t in times.items():
            res["contenders"][name] = {"tokens_per_s": B * N / median(t), "run_s": median(t), "runs_s": t,
                                       "first_call_s": first.get(name)}
        c = res["contenders"]
        name, best = best_ours(decoders(c), "tokens_per_s")
        if (cfg.profile.enabled and B == 1 and best and "llama" in c
                and best["tokens_per_s"] / c["llama"]["tokens_per_s"] < cfg.targets.generate_b1_vs_llama):
            n_prof = min(32, N)
            res["profiles"] = {}
            for k in [name, "llama"]:
                log.info("profiling generation: %s, %d tokens", k, n_prof)
                res["profiles"][k] = top_ops(lambda k=k: fns[k](n_prof), device, 1, cfg.profile.top)
                for row in res["profiles"][k]:  # per generated token, not per call
                    row["ms_per_call"] /= n_prof
                    row["calls"] /= n_prof
        out["by_batch"][str(B)] = res
    if compiled is not None:
        kept.clear_cache()
    return out


# ----------------------------------------------------------------------------- 4: data
def bench_data(cfg: DictConfig, clock: Clock) -> dict[str, Any]:
    from musicgen.data import MidiDataModule

    dc = cfg.data
    data_dir = Path(cfg.paths.data_dir)
    if dc.root is None and not (data_dir / dc.corpus / "manifest.json").exists():
        return {"skipped": f"{data_dir / dc.corpus} is not prepared (make data)"}
    tokenizer = hydra.utils.instantiate(cfg.tokenizer)
    out: dict[str, Any] = {"tokenizer": type(tokenizer).__name__}
    with tempfile.TemporaryDirectory(prefix="musicgen-bench-") as tmp:
        common = dict(
            root=dc.root, corpora=[dc.corpus], data_dir=str(data_dir), cache_dir=tmp, max_files=dc.files,
            seed=cfg.seed, augment=dict(dc.augment), encode_workers=dc.encode_workers, progress=False,
        )

        def datamodule(kind: str):
            return MidiDataModule(tokenizer, **common, **dict(dc[kind]))

        dm = datamodule("lstm")
        cold = clock(dm.setup)
        meta = dm.cache.meta
        n_files = sum(s["files"] for s in meta["splits"].values()) + len(meta["skipped"])
        cached = clock(datamodule("lstm").setup)
        cache_bytes = sum(f.stat().st_size for f in Path(dm.cache.path).iterdir() if f.is_file())
        out["tokenize"] = {
            "files": n_files,
            "docs": sum(s["docs"] for s in meta["splits"].values()),
            "tokens": sum(s["tokens"] for s in meta["splits"].values()),
            "cold_s": cold, "cached_s": cached,
            "cold_files_per_s": n_files / cold, "cached_files_per_s": n_files / cached,
            "encode_workers": dc.encode_workers, "augment": dict(dc.augment),
        }

        def serve(kind: str) -> dict[str, Any]:
            d = datamodule(kind)
            d.setup()
            n_batches = n_windows = 0
            t0 = time.perf_counter()
            for x, _ in d.train_dataloader():
                n_batches += 1
                n_windows += x.size(0)
                if n_batches >= dc.max_batches or time.perf_counter() - t0 > dc.max_seconds:
                    break
            dt = time.perf_counter() - t0
            return {"windows_per_s": n_windows / dt, "tokens_per_s": n_windows * d.seq_len / dt, "windows": n_windows,
                    "dataset_windows": len(d.datasets["train"]), **dict(dc[kind])}

        out["serve"] = {kind: serve(kind) for kind in ("lstm", "transformer")}
        # peak traced (Python + numpy) memory of a DataModule loading the cache and serving batches;
        # the memory-mapped token arrays are file pages, not heap
        tracemalloc.start()
        try:
            serve("lstm")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        out["memory"] = {"peak_traced_mb": peak / 2**20, "cache_mb": cache_bytes / 2**20,
                         "peak_vs_cache_ratio": peak / max(cache_bytes, 1)}
    return out


# ----------------------------------------------------------------------------- targets, report
def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(cfg: DictConfig, r: dict[str, Any]) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    """Flat ``*_ratio`` / ``mfu_*`` keys, and the targets with met / missed."""
    flat: dict[str, float | None] = {}
    rows: list[dict[str, Any]] = []
    tg = cfg.targets
    train = r.get("train", {}).get("by_precision", {})
    best: dict[str, Any] = {}
    for p, res in train.items():
        c = res["contenders"]
        name, ours = best_ours(c, "tokens_per_s")
        if ours is None:
            continue
        best[p] = (name, ours)
        llama = c.get("llama", {}).get("tokens_per_s")
        flat[f"train_{p}_vs_llama_ratio"] = ratio(ours["tokens_per_s"], llama)
        flat[f"train_{p}_eager_vs_llama_ratio"] = ratio(c.get("ours", {}).get("tokens_per_s"), llama)
        flat[f"train_{p}_compiled_vs_eager_ratio"] = ratio(c.get("ours_compiled", {}).get("tokens_per_s"), c.get("ours", {}).get("tokens_per_s"))
        if "llama_compiled" in c:
            flat[f"train_{p}_vs_llama_compiled_ratio"] = ratio(ours["tokens_per_s"], c["llama_compiled"]["tokens_per_s"])
        gemm_s = res["gemm_flops_per_step"] / (res["gemm_peak_tflops"] * 1e12) if res.get("gemm_peak_tflops") else None
        # the most any model could gain on Llama if everything but its GEMMs took no time
        flat[f"train_{p}_ceiling_vs_llama_ratio"] = ratio(c["llama"]["step_s"], gemm_s) if "llama" in c and gemm_s else None
        flat[f"mfu_{p}"] = ours["mfu"]
        flat[f"mfu_{p}_llama"] = c.get("llama", {}).get("mfu")
        if llama:
            rows.append(dict(key=f"train_{p}_vs_llama_ratio", what=f"Training {p}: ours / Llama tokens/s", goal=tg.train_vs_llama,
                             value=flat[f"train_{p}_vs_llama_ratio"], unit="x",
                             detail=f"{name} {ours['tokens_per_s']:.0f} vs Llama {llama:.0f} tok/s"
                             + (f"; GEMM-bound ceiling {flat[f'train_{p}_ceiling_vs_llama_ratio']:.2f}x"
                                if flat[f"train_{p}_ceiling_vs_llama_ratio"] else ""), profile=f"train/{p}"))
    if "bf16" in best and "fp32" in best:
        flat["train_bf16_vs_fp32_ratio"] = best["bf16"][1]["tokens_per_s"] / best["fp32"][1]["tokens_per_s"]
        bf16_fast = default_precision().startswith("bf16")
        rows.append(dict(key="train_bf16_vs_fp32_ratio", what="Training: default precision (bf16-mixed) / fp32, ours",
                         goal=tg.train_bf16_vs_fp32 if bf16_fast else None, value=flat["train_bf16_vs_fp32_ratio"], unit="x",
                         detail=f"{best['bf16'][1]['tokens_per_s']:.0f} vs {best['fp32'][1]['tokens_per_s']:.0f} tok/s"
                         + ("" if bf16_fast else "; no target: this machine does not do bf16 fast"), profile="train/bf16"))
    for p in ("bf16", "fp32"):
        if p in best and best[p][1]["mfu"] is not None:
            rows.append(dict(key=f"mfu_{p}", what=f"MFU {p} training, ours, of the measured GEMM peak",
                             goal=tg.mfu_bf16 if p == "bf16" else None, value=best[p][1]["mfu"], unit="%",
                             detail=f"peak {train[p]['gemm_peak_tflops']:.3g} TFLOP/s at the model's shapes; "
                             f"Llama {flat.get(f'mfu_{p}_llama') or 0:.0%}", profile=f"train/{p}"))
    for B, res in r.get("generate", {}).get("by_batch", {}).items():
        c = res["contenders"]
        name, ours = best_ours(decoders(c), "tokens_per_s")
        llama = c.get("llama", {}).get("tokens_per_s")
        if ours is None:
            continue
        dtype = r["generate"]["dtype"]
        flat[f"generate_b{B}_vs_llama_ratio"] = ratio(ours["tokens_per_s"], llama)
        flat[f"generate_b{B}_eager_vs_llama_ratio"] = ratio(c.get("ours", {}).get("tokens_per_s"), llama)
        floor = res.get("floor", {}).get("tokens_per_s")
        flat[f"generate_b{B}_ceiling_vs_llama_ratio"] = ratio(floor, llama)
        if "llama_fp32" in c:
            flat[f"generate_b{B}_vs_llama_fp32_ratio"] = ratio(ours["tokens_per_s"], c["llama_fp32"]["tokens_per_s"])
        if llama:
            extra = f"; memory-bandwidth ceiling {floor / llama:.2f}x" if floor else ""
            if "llama_fp32" in c:
                extra += f"; vs Llama in fp32 (HF's default dtype) {flat[f'generate_b{B}_vs_llama_fp32_ratio']:.2f}x"
            rows.append(dict(key=f"generate_b{B}_vs_llama_ratio", what=f"Generation batch {B}, {dtype}: ours / Llama generate tokens/s",
                             goal=tg.generate_b1_vs_llama if B == "1" else None, value=flat[f"generate_b{B}_vs_llama_ratio"],
                             unit="x", detail=f"{name} {ours['tokens_per_s']:.1f} vs Llama {llama:.1f} tok/s" + extra,
                             profile=f"generate/{B}"))
        if "ours_nocache" in c and "ours" in c:
            nocache = c["ours_nocache"]["tokens_per_s"]
            flat["cache_vs_nocache_ratio"] = c["ours"]["tokens_per_s"] / nocache
            flat["cache_best_vs_nocache_ratio"] = ours["tokens_per_s"] / nocache
            rows.append(dict(key="cache_vs_nocache_ratio", what=f"Generation batch {B}, {dtype}: ours with / without KV cache",
                             goal=tg.cache_vs_nocache, value=flat["cache_vs_nocache_ratio"], unit="x",
                             detail=f"{c['ours']['tokens_per_s']:.1f} vs {nocache:.1f} tok/s, eager both; "
                             f"{name} with the cache {flat['cache_best_vs_nocache_ratio']:.2f}x"))
    data = r.get("data", {})
    lstm = r.get("lstm", {}).get("by_precision", {})
    consume = max((res["objectives"]["seq2one"]["windows_per_s"] for res in lstm.values() if "seq2one" in res["objectives"]), default=None)
    if "serve" in data:
        served = data["serve"]["lstm"]["windows_per_s"]
        flat["lstm_windows_vs_consumption_ratio"] = ratio(served, consume)
        flat["transformer_windows_vs_consumption_ratio"] = None
        tr = best.get("bf16") or best.get("fp32")
        if tr:
            flat["transformer_windows_vs_consumption_ratio"] = data["serve"]["transformer"]["windows_per_s"] / (
                tr[1]["tokens_per_s"] / r["train"]["seq_len"])
        if consume:
            rows.append(dict(key="lstm_windows_vs_consumption_ratio", what="Data: LSTM stride-1 windows served / V6 LSTM consumes",
                             goal=tg.lstm_windows_vs_consumption, value=flat["lstm_windows_vs_consumption_ratio"], unit="x",
                             detail=f"{served:.0f} vs {consume:.0f} windows/s"))
        flat["data_peak_memory_vs_cache_ratio"] = data["memory"]["peak_vs_cache_ratio"]
    for row in rows:
        v, g = row["value"], row["goal"]
        row["met"] = None if g is None or v is None else v >= g
        row["margin"] = None if g is None or v is None else v / g - 1
    return flat, rows


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    return f"{v:.1%}" if unit == "%" else f"{v:.2f}x"


def profile_table(rows: list[dict[str, Any]], per: str) -> list[str]:
    lines = [f"| op | ms {per} | share of self time | calls {per} |", "|---|---:|---:|---:|"]
    for r in rows:
        op = r["op"].replace("|", "/")
        op = op if len(op) <= 70 else op[:67] + "..."
        lines.append(f"| `{op}` | {r['ms_per_call']:.2f} | {r['share']:.1%} | {r['calls']:.1f} |")
    return lines


def render_markdown(cfg: DictConfig, r: dict[str, Any]) -> str:
    m = r["machine"]
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in m["cpu_flags"].items())
    load = f"{m['load_average_start'][0]:.1f} -> {m['load_average_end'][0]:.1f}" if m.get("load_average_start") else "n/a"
    L = [
        "# Performance",
        "",
        f"`python -m musicgen.bench` ({m['date']}, {r['elapsed_s'] / 60:.1f} min in all). Ratios are medians of alternating runs in one "
        "process; absolute figures hold for this machine at this moment only.",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU | {m['cpu']} ({m['cores']} cores) |",
        f"| flags | {flags} |",
        f"| device | {m['device']}{' (' + m['gpu'] + ')' if m['gpu'] else ''}; default precision {m['default_precision']} |",
        f"| threads | {m['threads']} (torch.set_num_threads, every contender); OMP_WAIT_POLICY={m['omp_wait_policy']} |",
        f"| software | torch {m['torch']}, transformers {m['transformers']}, Python {m['python']} |",
        f"| load average (1 min) | {load} (other processes share the cores) |",
        "",
        "## Targets",
        "",
        "| target | goal | measured | status | detail |",
        "|---|---:|---:|---|---|",
    ]
    for row in r["targets"]:
        goal = "-" if row["goal"] is None else ("≥ " + fmt(row["goal"], row["unit"]))
        if row["met"] is None:
            status = "(no target)"
        elif row["met"]:
            status = f"**met** (+{row['margin']:.0%})"
        else:
            status = f"**missed** by {-row['margin']:.0%}"
        L.append(f"| {row['what']} | {goal} | {fmt(row['value'], row['unit'])} | {status} | {row['detail']} |")
    tr = r.get("train")
    if tr:
        mc = cfg.model
        L += ["", f"## Training: B {tr['batch_size']} x T {tr['seq_len']}, vocabulary {mc.vocab_size}, "
              f"{mc.n_layers}L/{mc.n_heads}H/{mc.d_model}d/{mc.d_ff}ff, dropout {mc.dropout}, AdamW"
              f"{' (fused)' if cfg.train.fused_adamw else ''}", "",
              "| precision | contender | tokens/s | step (median) | MFU | first step (compile) | params |",
              "|---|---|---:|---:|---:|---:|---:|"]
        for p, res in tr["by_precision"].items():
            for n, c in res["contenders"].items():
                mfu = f"{c['mfu']:.1%}" if c["mfu"] is not None else "n/a"
                L.append(f"| {p} | {n} | {c['tokens_per_s']:.0f} | {c['step_s'] * 1e3:.0f} ms | {mfu} | {c['first_step_s']:.2f} s | {c['params'] / 1e6:.2f}M |")
            if res.get("gemm_peak_tflops"):
                L.append(f"| {p} | GEMM peak (model's GEMMs alone) | | | | | {res['gemm_peak_tflops']:.3g} TFLOP/s |")
            for n, e in res["errors"].items():
                L.append(f"| {p} | {n} | failed | | | | `{e}` |")
    ls = r.get("lstm")
    if ls:
        L += ["", f"## V6 LSTM: B {ls['batch_size']} x T {ls['seq_len']}, vocabulary {cfg.lstm.vocab_size}, "
              f"{list(cfg.lstm.hidden_sizes)}, embedding {cfg.lstm.embedding_dim}, dropout {cfg.lstm.dropout}", "",
              "| precision | objective | targets/s | windows/s | step |", "|---|---|---:|---:|---:|"]
        for p, res in ls["by_precision"].items():
            for o, c in res["objectives"].items():
                L.append(f"| {p} | {o} | {c['targets_per_s']:.0f} | {c['windows_per_s']:.0f} | {c['step_s'] * 1e3:.0f} ms |")
    g = r.get("generate")
    if g:
        s = g["sampling"]
        L += ["", f"## Generation: {g['new_tokens']} new tokens after BOS, {g['dtype']} weights, temperature {s['temperature']}, "
              f"top-k {s['top_k']}, top-p {s['top_p']}", "",
              "| batch | contender | tokens/s | run (median) | first call (compile) |", "|---:|---|---:|---:|---:|"]
        for B, res in g["by_batch"].items():
            for n, c in res["contenders"].items():
                L.append(f"| {B} | {n} | {c['tokens_per_s']:.1f} | {c['run_s']:.2f} s | {c['first_call_s']:.2f} s |")
            if res.get("floor"):
                f = res["floor"]
                L.append(f"| {B} | memory-bandwidth ceiling (reading {f['weights_mb']:.0f} MB of weights per step at "
                         f"{f['stream_gb_per_s']:.1f} GB/s) | {f['tokens_per_s']:.1f} | | |")
            for n, e in res["errors"].items():
                L.append(f"| {B} | {n} | failed | | `{e}` |")
    d = r.get("data")
    if d:
        L += ["", "## Data", ""]
        if "skipped" in d:
            L.append(f"Skipped: {d['skipped']}.")
        else:
            t, mem = d["tokenize"], d["memory"]
            L += [f"Tokeniser {d['tokenizer']} on {t['files']} files ({t['docs']} documents with "
                  f"{t['augment']['copies']} transposed copies per training file, {t['tokens']} tokens), "
                  f"{t['encode_workers']} encode workers.", "",
                  "| row | measured |", "|---|---:|",
                  f"| tokenise, cold (scan + encode + write the cache) | {t['cold_files_per_s']:.1f} files/s ({t['cold_s']:.1f} s) |",
                  f"| tokenise, cached (load the cache) | {t['cached_files_per_s']:.0f} files/s ({t['cached_s'] * 1e3:.0f} ms) |"]
            for kind, sv in d["serve"].items():
                L.append(f"| windows served, {kind} ({sv['mode']}, {sv['seq_len']} tokens, stride {sv['stride']}, batch "
                         f"{sv['batch_size']}) | {sv['windows_per_s']:.0f} windows/s ({sv['tokens_per_s'] / 1e6:.1f}M tokens/s) |")
            L.append(f"| DataModule peak traced memory / token cache size | {mem['peak_traced_mb']:.1f} MB / {mem['cache_mb']:.1f} MB |")
    profs = []
    for p, res in (tr or {}).get("by_precision", {}).items():
        for n, rows in res.get("profiles", {}).items():
            profs.append((f"train/{p}: {n}, one training step", "per step", rows))
    for B, res in (g or {}).get("by_batch", {}).items():
        for n, rows in res.get("profiles", {}).items():
            profs.append((f"generate/{B}: {n}, per generated token", "per token", rows))
    if profs:
        L += ["", "## Why the misses: torch.profiler, top ops by self time", ""]
        for title, per, rows in profs:
            L += [f"### {title}", ""] + profile_table(rows, per) + [""]
    if r.get("notes"):
        L += ["", "## Notes", ""] + [f"- {n}" for n in r["notes"]]
    return "\n".join(L) + "\n"


def notes(cfg: DictConfig, r: dict[str, Any]) -> list[str]:
    n = [
        "Contenders alternate within one process (the first of each round rotates); each figure is the median of "
        f"{cfg.train.reps} training steps / {cfg.generate.reps} generations after warmup.",
        "Llama: `LlamaForCausalLM` with our dims, tied embeddings, no biases, the same RMSNorm eps and RoPE base, "
        "`attn_implementation='sdpa'`; dropout 0 on both (HF Llama has attention dropout only). Same batch, "
        "optimiser (AdamW, same groups), loss (cross-entropy in fp32) and thread count.",
        "bf16 = bf16 autocast over fp32 weights and optimiser (Lightning's bf16-mixed). Compiled = `torch.compile` "
        "of forward + loss (AOTAutograd compiles the backward), the optimiser step eager; the first step includes "
        "compiling.",
        "MFU = model FLOPs (6N per token + 12 x layers x d_model x T for attention) / step time / the measured peak: "
        "the model's own GEMMs (forward, input and weight gradients of every linear layer) timed alone, in the same "
        "rounds as the training steps.",
        "Generation: ours = `musicgen.generation.generate` (static KV cache, one forward per token); compiled = the same "
        "on `torch.compile(model)` whose KV cache the caller keeps between calls; Llama = `generate(do_sample=True, "
        "min_new_tokens=max_new_tokens)` with its dynamic cache (min_new_tokens adds one EOS-masking logits "
        "processor to its loop). No-cache = ours re-encoding the whole sequence each step.",
        "The LSTM's consumption is its fastest seq2one training rate (windows/s, either precision); the served rate "
        "is one process (num_workers 0) iterating the shuffled train loader.",
    ]
    return n


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
    t0 = time.perf_counter()
    device = pick_device(cfg.device)
    set_threads(cfg.threads)
    if device.type == "cpu":
        import torch._inductor.config as inductor_config

        inductor_config.cpp.enable_kernel_profile = True  # named kernels in the profiles of compiled code
    clock = Clock(device)
    llama_why = llama_missing()
    settings = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                for k in cfg if k not in ("paths", "quick_overrides", "hydra")}
    settings["data_dir"] = cfg.paths.data_dir  # (paths.output_dir only resolves under @hydra.main)
    r: dict[str, Any] = {"machine": machine_info(device), "settings": settings}
    if llama_why:
        log.warning("Llama rows skipped: %s", llama_why)
        r["llama_skipped"] = llama_why
    sections = set(cfg.sections)
    if "train" in sections:
        r["train"] = bench_train(cfg, device, clock, llama_why)
        r["lstm"] = bench_lstm(cfg, device, clock)
    if "generate" in sections:
        r["generate"] = bench_generate(cfg, device, clock, llama_why)
    if "data" in sections:
        r["data"] = bench_data(cfg, clock)
    r["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    r["elapsed_s"] = time.perf_counter() - t0
    flat, rows = summarize(cfg, r)
    r["targets"] = rows
    r["notes"] = notes(cfg, r)
    result = {**flat, **r}
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.json", json.dumps(result, indent=1, default=str) + "\n")
    atomic_write_text(out_dir / "PERFORMANCE.md", render_markdown(cfg, result))
    log.info("wrote %s and %s", out_dir / "results.json", out_dir / "PERFORMANCE.md")
    for row in rows:
        log.info("%-60s %s (goal %s)", row["what"], fmt(row["value"], row["unit"]), fmt(row["goal"], row["unit"]))
    return result


@hydra.main(config_path="../conf", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    run(cfg, HydraConfig.get().overrides.task)


if __name__ == "__main__":
    main()
