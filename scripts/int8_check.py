"""Weight-only int8 decoding against the model it came from: speed and NLL per note.

For each dtype asked for (``fp32``: what ``python -m musicgen.generate`` decodes in, the weights
as trained; ``bf16``: the model cast to bf16, the bench's default on CPUs with AVX-512 BF16/AMX),
in one process:

- NLL per note (and per token) on the run's test split (its untransposed pieces, the first
  ``--pieces``), scored as ``musicgen.evaluate`` does (``doc_nll`` within the trained window,
  ``likelihood_metrics`` with 95% bootstrap intervals over pieces), of the base model and of
  ``quantize_int8`` of it; and the paired difference int8 minus base of the harness's figure,
  ``sum(nll_int8 - nll_base) / sum(notes)``, its interval from redrawing the same pieces for
  both (the goal: at most 0.01 nats/note). The scoring runs whole windows (many rows per matmul:
  dequantize-in-matmul), decoding one row per step (the int8 kernel): the openings of the first
  ``--decode-pieces`` pieces are also scored token by token through the KV cache, and the
  difference of the two NLLs per token is reported for every model (how far the scored NLL is
  from the decoding path's);
- batch-1 decoding speed: ``--tokens`` new tokens from BOS through ``musicgen.generation.generate``
  (KV cache, the trained window with its default overflow, sampling's defaults, no grammar
  mask, never stopping at EOS), ``--reps`` timed runs per contender after one warm-up run,
  the contenders alternating run by run so that a change in the machine's load hits them alike;
  eager, and with ``--compile`` also ``torch.compile``d with a kept KV cache (as the bench does).

Writes a JSON (``--out``, default ``<run>/int8_check.json``) and prints a markdown table. The
load average before and after is recorded: speeds from a loaded machine are not speeds.

    python scripts/int8_check.py --run outputs/demo/v7 [--tokens 256] [--reps 3] [--pieces 100] [--compile]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from musicgen.checkpoint import load_run, load_run_cache  # noqa: E402
from musicgen.constants import BOS_ID  # noqa: E402
from musicgen.generation import NextTokenLogits, SamplingConfig, generate  # noqa: E402
from musicgen.generation.quantize import KERNEL, kernel_runs_on, quantize_int8  # noqa: E402
from musicgen.metrics.likelihood import doc_nll, likelihood_metrics  # noqa: E402
from musicgen.metrics.statistics import paired_difference  # noqa: E402

log = logging.getLogger("int8_check")

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
GOAL_NATS_PER_NOTE = 0.01


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a Transformer run directory (or .ckpt)")
    p.add_argument("--tokens", type=int, default=256, help="new tokens per timed decoding run")
    p.add_argument("--reps", type=int, default=3, help="timed runs per contender")
    p.add_argument("--pieces", type=int, default=100, help="test pieces scored (0: all)")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma-separated, of: fp32 bf16")
    p.add_argument("--compile", action="store_true", help="time torch.compile'd decoding too")
    p.add_argument("--no-head", action="store_true", help="keep the output head in float")
    p.add_argument("--decode-pieces", type=int, default=5,
                   help="pieces whose opening is also scored token by token through the KV cache (0: none)")
    p.add_argument("--split", default="test")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap redraws")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-speed", action="store_true", help="NLL only")
    p.add_argument("--skip-nll", action="store_true", help="speed only")
    p.add_argument("--out", default=None, help="JSON path (default <run dir>/int8_check.json)")
    args = p.parse_args(argv)
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in args.dtypes if d not in DTYPES]
    if bad or not args.dtypes:
        p.error(f"--dtypes: {bad or 'none'}; choose among {', '.join(DTYPES)}")
    if args.tokens < 1 or args.reps < 1:
        p.error("--tokens and --reps must be >= 1")
    return args


def measure_nll(models: dict[str, torch.nn.Module], run, args, context: int) -> dict[str, Any]:
    cache = load_run_cache(run)
    split = cache.splits[args.split]
    originals = split.originals()[: args.pieces or None]
    docs = [split.doc(i) for i in originals]
    notes = split.notes[originals]
    tokens = np.array([len(d) - 1 for d in docs])
    n_out = run.infill_vocab.base if run.infill_vocab is not None else None
    per_piece, out = {}, {}
    for name, net in models.items():
        t0 = time.perf_counter()
        per_piece[name] = doc_nll(net, docs, context, n_out=n_out)
        out[name] = likelihood_metrics(per_piece[name], tokens, notes, args.bootstrap, args.seed)
        out[name]["seconds"] = round(time.perf_counter() - t0, 2)
        log.info("NLL %s: %.4f nats/note (%d pieces)", name, out[name]["nll_per_note"]["value"], len(docs))
    for dt in args.dtypes:
        base, q = per_piece[f"{dt}/base"], per_piece[f"{dt}/int8"]
        out[f"{dt}/int8_minus_base"] = {
            "nll_per_note": paired_difference(q, base, notes, args.bootstrap, args.seed),
            "nll_per_token": paired_difference(q, base, tokens, args.bootstrap, args.seed),
            "pieces_worse": int((q > base).sum()), "pieces": len(docs),
        }
    if "fp32/int8_fp32_matmul" in per_piece:
        base, q = per_piece["fp32/base"], per_piece["fp32/int8_fp32_matmul"]
        out["fp32/int8_fp32_matmul_minus_base"] = {
            "nll_per_note": paired_difference(q, base, notes, args.bootstrap, args.seed),
            "nll_per_token": paired_difference(q, base, tokens, args.bootstrap, args.seed),
            "pieces_worse": int((q > base).sum()), "pieces": len(docs),
        }
    checked = {} if not args.decode_pieces else decode_path_check(models, docs[: args.decode_pieces], context, n_out)
    return {"split": args.split, "pieces": len(docs), "notes": int(notes.sum()), "tokens": int(tokens.sum()),
            "context": context, "models": out, "decoding_path": checked}


@torch.inference_mode()
def decode_path_check(models: dict[str, torch.nn.Module], docs, context: int, n_out: int | None) -> dict[str, Any]:
    """NLL per token of the opening (up to ``context`` tokens) of each of ``docs`` scored two ways:
    one full forward (what ``doc_nll`` does: many rows, so dequantize-in-matmul) and token by token
    through the KV cache as decoding does (a row per step: the int8 kernel, in bf16). Their
    difference says how far the scored NLL is from that of the decoding path."""
    out = {}
    for name, net in models.items():
        full_nll = step_nll = 0.0
        tokens = 0
        for doc in docs:
            x = torch.as_tensor(np.asarray(doc[:context], dtype=np.int64))[None]  # (1, L)
            L = x.size(1)
            if L < 2:
                continue
            logp = net(x)[0, :-1, :n_out].float().log_softmax(-1)  # (L-1, V)
            full_nll -= float(logp.gather(1, x[0, 1:, None]).sum())
            decoder = NextTokenLogits(net, 1, use_cache=True, context_len=context)
            try:
                for n in range(1, L):
                    step = decoder.next_logits(x[:, :n])[0, :n_out].float().log_softmax(-1)
                    step_nll -= float(step[x[0, n]])
            finally:
                decoder.close()
            tokens += L - 1
        out[name] = {"tokens": tokens, "nll_per_token_full_forward": full_nll / tokens,
                     "nll_per_token_decoding": step_nll / tokens,
                     "decoding_minus_full_forward": (step_nll - full_nll) / tokens}
        log.info("decoding path %s: %+.5f nats/token vs the full forward (%d tokens)", name,
                 out[name]["decoding_minus_full_forward"], tokens)
    return out


def measure_speed(models: dict[str, torch.nn.Module], args, context: int) -> dict[str, Any]:
    sampling = SamplingConfig()  # the defaults: temperature 0.8, top-k 50, top-p 0.95
    prompt = torch.full((1, 1), BOS_ID, dtype=torch.long)
    contenders = {}
    for name, net in models.items():
        contenders[f"{name}/eager"] = net
        if args.compile:
            kept = copy.deepcopy(net)
            kept.setup_cache(1, context)  # kept between calls: compile guards on the buffers
            contenders[f"{name}/compiled"] = torch.compile(kept, dynamic=False)

    def decode(net, seed: int) -> float:
        gen = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        out = generate(net, prompt, args.tokens, sampling, generator=gen, context_len=context)
        seconds = time.perf_counter() - t0
        if out.shape != (1, 1 + args.tokens):
            raise RuntimeError(f"generated shape {tuple(out.shape)}")
        return seconds

    first = {}
    for name, net in contenders.items():  # warm-up: compiles the compiled ones (every shape decoding meets)
        first[name] = decode(net, args.seed)
        log.info("warm-up %s: %.2f s", name, first[name])
    runs: dict[str, list[float]] = {name: [] for name in contenders}
    for rep in range(args.reps):
        order = list(contenders) if rep % 2 == 0 else list(reversed(contenders))  # alternate, both ways
        for name in order:
            runs[name].append(decode(contenders[name], args.seed + 1 + rep))
    out: dict[str, Any] = {}
    for name, times in runs.items():
        med = statistics.median(times)
        out[name] = {"tokens_per_s": args.tokens / med, "run_s": med, "runs_s": times, "first_call_s": first[name]}
    for dt in args.dtypes:
        for mode in ("eager", "compiled") if args.compile else ("eager",):
            base, q = out[f"{dt}/base/{mode}"], out[f"{dt}/int8/{mode}"]
            q["speedup_vs_base"] = q["tokens_per_s"] / base["tokens_per_s"]
    return {"new_tokens": args.tokens, "batch_size": 1, "reps": args.reps, "context": context,
            "sampling": "SamplingConfig() defaults, no grammar mask", "contenders": out}


def matmul_dtype(net: torch.nn.Module) -> str:
    """The dtype the linears' matmuls run in."""
    linear = net.layers[0].attn.qkv
    dtype = getattr(linear, "compute_dtype", None) or linear.weight.dtype
    if dtype == torch.int8:  # an Int8Linear computing in the activations' dtype
        dtype = net.tok_emb.weight.dtype
    return str(dtype).removeprefix("torch.")


def weight_mb(net: torch.nn.Module) -> float:
    seen, total = set(), 0
    for t in [*net.parameters(), *net.buffers()]:
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total / 2**20


def fmt(fig: dict[str, float] | None, digits: int = 4) -> str:
    if not fig:
        return ""
    if np.isnan(fig["low"]):
        return f"{fig['value']:.{digits}f}"
    return f"{fig['value']:.{digits}f} [{fig['low']:.{digits}f}, {fig['high']:.{digits}f}]"


def markdown(report: dict[str, Any]) -> str:
    nll = report.get("nll", {}).get("models", {})
    speed = report.get("speed", {}).get("contenders", {})
    modes = sorted({k.rsplit("/", 1)[1] for k in speed}, key=["eager", "compiled"].index) or ["eager"]
    head = ["model", "weights", "matmuls", "MB", "NLL/note [95%]", *(f"tokens/s {m}" for m in modes),
            "int8 - base NLL/note [95%, paired]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for dt in report["settings"]["dtypes"]:
        kinds = ["base", "int8"] + (["int8_fp32_matmul"] if f"{dt}/int8_fp32_matmul" in report["matmul_dtype"] else [])
        for kind in kinds:
            key = f"{dt}/{kind}"
            mb = report["weights_mb"].get(key)
            row = [dt, kind.split("_")[0], report["matmul_dtype"][key], "" if mb is None else f"{mb:.1f}",
                   fmt(nll.get(key, {}).get("nll_per_note"))]
            for m in modes:
                s = speed.get(f"{key}/{m}")
                row.append("" if s is None else f"{s['tokens_per_s']:.1f}"
                           + (f" ({s['speedup_vs_base']:.2f}x)" if "speedup_vs_base" in s else ""))
            diff = nll.get(f"{key}_minus_base", {}).get("nll_per_note") if kind != "base" else None
            row.append(fmt(diff) if diff else "")
            lines.append("| " + " | ".join(row) + " |")
    checked = report.get("nll", {}).get("decoding_path") or {}
    if checked:
        tokens = next(iter(checked.values()))["tokens"]
        lines.append(f"\nNLL per token, token by token through the KV cache minus one full forward ({tokens} tokens): "
                     + ", ".join(f"{k} {v['decoding_minus_full_forward']:+.5f}" for k, v in checked.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    load_before = os.getloadavg()
    run = load_run(args.run, map_location="cpu")
    context, context_desc = run.context(None)
    fp32 = run.net.float().eval()
    head = not args.no_head
    models: dict[str, torch.nn.Module] = {}
    for dt in args.dtypes:
        models[f"{dt}/base"] = copy.deepcopy(fp32).to(DTYPES[dt])
        # quantized from the fp32 weights (the scales then follow the dtype, the int8 weights stay);
        # fp32: as generate quantizes its fp32 model (compute_dtype="auto": bf16 matmuls where that is fast)
        matmul = "auto" if dt == "fp32" else DTYPES[dt]
        models[f"{dt}/int8"] = quantize_int8(copy.deepcopy(fp32), head=head, compute_dtype=matmul).to(DTYPES[dt])
    nll_only = {}
    if "fp32" in args.dtypes and models["fp32/int8"].layers[0].attn.qkv.compute_dtype is not None:
        # the int8 weights alone, fp32 matmuls: separates their error from that of the bf16 matmuls
        nll_only["fp32/int8_fp32_matmul"] = quantize_int8(copy.deepcopy(fp32), head=head)
    report: dict[str, Any] = {
        "run": str(run.ckpt_path), "version": run.metadata.get("version"),
        "model": {k: v for k, v in run.metadata["model"].items() if k != "_target_"},
        "settings": {"dtypes": args.dtypes, "tokens": args.tokens, "reps": args.reps, "pieces": args.pieces,
                     "compile": args.compile, "head_quantized": not args.no_head, "context": context_desc,
                     "bootstrap": args.bootstrap, "seed": args.seed},
        "int8_matmul": KERNEL if kernel_runs_on("cpu") else "dequantize-in-matmul (kernel unavailable)",
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                        "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "weights_mb": {name: weight_mb(net) for name, net in models.items()},
        "matmul_dtype": {name: matmul_dtype(net) for name, net in {**models, **nll_only}.items()},
        "goal_nats_per_note": GOAL_NATS_PER_NOTE,
    }
    if not args.skip_nll:
        report["nll"] = measure_nll({**models, **nll_only}, run, args, context)
    if not args.skip_speed:
        report["speed"] = measure_speed(models, args, context)
    report["environment"]["loadavg_before"] = load_before
    report["environment"]["loadavg_after"] = os.getloadavg()
    out = Path(args.out) if args.out else run.run_dir / "int8_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    table = markdown(report)
    print(table)
    print(f"\nload average before/after: {load_before[0]:.1f} / {report['environment']['loadavg_after'][0]:.1f} "
          f"on {os.cpu_count()} CPUs, {torch.get_num_threads()} threads; written: {out}")
    report["table"] = table
    return report


if __name__ == "__main__":
    main()
