"""Rows 1 and 3: training throughput (ours eager and compiled vs Llama eager and compiled, fp32 and
bf16 autocast; the V6 LSTM in both objectives) and model FLOPs utilisation against the measured peak of the
model's own GEMMs, timed alone in the same rounds as the training steps."""

from __future__ import annotations

import gc
import logging
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from musicgen.checkpoint.hf import build_llama
from musicgen.experiments.speed.harness import Clock, Fn, alternate, best_ours, median, top_ops
from musicgen.experiments.speed.llama import fastest_llama, param_count
from musicgen.models import MelodyLSTM, MusicTransformer, TransformerConfig
from musicgen.training.optim import param_groups

log = logging.getLogger(__name__)


def gemm_set(shape: TransformerConfig, rows: int, dtype: torch.dtype, device: torch.device) -> tuple[Fn, float]:
    """The GEMMs of one training step at this model's shapes (per linear: forward x W^T, input
    grad dY W, weight grad dY^T x; qkv, proj, w13, w2 per layer, and the head) for ``rows``
    tokens, as a callable and its FLOPs: timed alone, they are the measured matrix-product peak."""
    d_model, d_ff, n_layers = shape.d_model, shape.d_ff, shape.n_layers
    linears = [  # (in features, out features, how many)
        (d_model, 3 * d_model, n_layers), (d_model, d_model, n_layers), (d_model, 2 * d_ff, n_layers),
        (d_ff, d_model, n_layers), (d_model, shape.vocab_size, 1),
    ]
    generator = torch.Generator(device=device).manual_seed(0)

    def randn(*size):
        return torch.randn(*size, generator=generator, device=device, dtype=dtype)

    # each layer its own tensors, as in the model (one shared set would stay in cache and flatter the peak)
    mats = [(randn(rows, fan_in), randn(fan_out, fan_in), randn(rows, fan_out))
            for fan_in, fan_out, count in linears for _ in range(count)]
    flops = sum(3 * 2 * rows * fan_in * fan_out * count for fan_in, fan_out, count in linears)

    def run() -> None:
        for x, weight, grad_out in mats:
            F.linear(x, weight)
            grad_out @ weight
            grad_out.t() @ x

    return run, float(flops)


def train_step(net, forward, x, y, device, precision: str, train_cfg, compile_: bool) -> Fn:
    """One optimiser step: forward (autocast for bf16), cross-entropy in fp32, backward, AdamW."""
    fused = True if train_cfg.fused_adamw else None
    opt = torch.optim.AdamW(param_groups(net, train_cfg.weight_decay), lr=train_cfg.lr, betas=(0.9, 0.95), fused=fused)
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


def bench_train(cfg: DictConfig, device: torch.device, clock: Clock, llama_why: str | None) -> dict[str, Any]:
    train_cfg, model_kwargs = cfg.train, OmegaConf.to_container(cfg.model)
    batch_size, seq_len = train_cfg.batch_size, train_cfg.seq_len
    tokens = batch_size * seq_len
    out: dict[str, Any] = {"batch_size": batch_size, "seq_len": seq_len, "by_precision": {}}
    for precision in train_cfg.precisions:
        log.info("training, %s: B %d x T %d", precision, batch_size, seq_len)
        torch.manual_seed(cfg.seed)
        x = torch.randint(0, model_kwargs["vocab_size"], (batch_size, seq_len), device=device)
        y = torch.randint(0, model_kwargs["vocab_size"], (batch_size, seq_len), device=device)
        nets, steps, timeouts = {}, {}, {}
        for name, compile_ in [("ours", False), ("ours_compiled", True)]:
            if compile_ and not train_cfg.compile:
                continue
            torch.manual_seed(cfg.seed)
            net = nets[name] = MusicTransformer(**model_kwargs).to(device).train()
            steps[name] = train_step(net, net, x, y, device, precision, train_cfg, compile_)
            timeouts[name] = train_cfg.compile_timeout_s if compile_ else None
        if llama_why is None:
            for name, compile_ in [("llama", False), ("llama_compiled", True)]:
                if compile_ and not train_cfg.compile_llama:
                    continue
                torch.manual_seed(cfg.seed)
                net = nets[name] = build_llama(nets["ours"]).to(device).train()

                def forward(x, net=net):
                    return net(input_ids=x, use_cache=False).logits

                steps[name] = train_step(net, forward, x, y, device, precision, train_cfg, compile_)
                timeouts[name] = train_cfg.compile_timeout_s if compile_ else None
        contenders = dict(steps)
        flops = nets["ours"].flops_per_token(seq_len) * tokens
        if train_cfg.mfu:
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            contenders["gemm_peak"], gemm_flops = gemm_set(nets["ours"].config, tokens, dtype, device)
        times, first, errors = alternate(contenders, clock, train_cfg.warmup, train_cfg.reps, timeouts=timeouts)
        result: dict[str, Any] = {"errors": errors, "model_flops_per_step": flops, "contenders": {},
                                  "gemm_flops_per_step": gemm_flops if train_cfg.mfu else None}
        peak = gemm_flops / median(times["gemm_peak"]) if "gemm_peak" in times else None
        result["gemm_peak_tflops"] = peak / 1e12 if peak else None
        for name in steps:
            if name not in times:
                continue
            step_s = median(times[name])
            result["contenders"][name] = {
                "tokens_per_s": tokens / step_s,
                "step_s": step_s,
                "steps_s": times[name],
                "first_step_s": first.get(name),
                "mfu": flops / step_s / peak if peak else None,
                "params": param_count(nets[name]),
            }
        # kept while the models exist, for profiling the misses at the end of this precision
        result["_steps"] = {name: steps[name] for name in steps if name in times}
        out["by_precision"][precision] = result
        profile_train_misses(cfg, device, out, precision)
        result.pop("_steps")
        del nets, steps, contenders
        gc.collect()
    return out


def profile_train_misses(cfg: DictConfig, device: torch.device, out: dict, precision: str) -> None:
    """Profile one training step of our best variant and of the Llama it was judged against (the
    faster of eager and compiled) when a target of this precision is missed (ours vs that Llama;
    for bf16 also MFU and bf16 vs fp32)."""
    if not cfg.profile.enabled:
        return
    result, targets = out["by_precision"][precision], cfg.targets
    contenders = result["contenders"]
    name, ours = best_ours(contenders, "tokens_per_s")
    if ours is None:
        return
    tokens_per_s = ours["tokens_per_s"]
    llama_name, llama = fastest_llama(contenders, "tokens_per_s")
    missed = llama is not None and tokens_per_s / llama["tokens_per_s"] < targets.train_vs_llama
    if precision == "bf16":
        missed |= ours["mfu"] is not None and ours["mfu"] < targets.mfu_bf16
        fp32 = out["by_precision"].get("fp32", {}).get("contenders", {})
        if fp32:
            missed |= tokens_per_s / best_ours(fp32, "tokens_per_s")[1]["tokens_per_s"] < targets.train_bf16_vs_fp32
    if not missed:
        return
    result["profiles"] = {}
    for contender in [name, llama_name]:
        if contender in result["_steps"]:
            log.info("profiling a training step: %s, %s", contender, precision)
            result["profiles"][contender] = top_ops(result["_steps"][contender], device, 1, cfg.profile.top)


def bench_lstm(cfg: DictConfig, device: torch.device, clock: Clock) -> dict[str, Any]:
    lstm_cfg = cfg.lstm
    batch_size, seq_len = lstm_cfg.batch_size, lstm_cfg.seq_len
    net_kwargs = dict(vocab_size=lstm_cfg.vocab_size, hidden_sizes=list(lstm_cfg.hidden_sizes), input_mode="embedding",
                      embedding_dim=lstm_cfg.embedding_dim, dropout=lstm_cfg.dropout, context_len=seq_len)
    out: dict[str, Any] = {"batch_size": batch_size, "seq_len": seq_len, "by_precision": {}}
    for precision in cfg.train.precisions:
        torch.manual_seed(cfg.seed)
        x = torch.randint(0, lstm_cfg.vocab_size, (batch_size, seq_len), device=device)
        steps, targets_per_step = {}, {}
        for objective in lstm_cfg.objectives:
            net = MelodyLSTM(**net_kwargs).to(device).train()
            if objective == "seq2one":
                y, forward = x[:, -1].clone(), (lambda x, net=net: net(x, last_only=True))
                targets_per_step[objective] = batch_size
            else:
                y, forward = x.clone(), net
                targets_per_step[objective] = batch_size * seq_len
            steps[objective] = train_step(net, forward, x, y, device, precision, cfg.train, False)
        times, _, errors = alternate(steps, clock, lstm_cfg.warmup, lstm_cfg.reps)
        out["by_precision"][precision] = {
            "errors": errors,
            "objectives": {
                objective: {"targets_per_s": targets_per_step[objective] / median(step_times),
                            "windows_per_s": batch_size / median(step_times), "step_s": median(step_times)}
                for objective, step_times in times.items()
            },
        }
    return out
