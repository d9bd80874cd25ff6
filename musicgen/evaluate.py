"""Evaluation entry point: ``python -m musicgen.evaluate ckpt_path=<run dir or .ckpt>``.

Writes ``evaluation.json`` (sections ``model``, ``ngram_baseline``, ``validation_pieces``),
``evaluation.md`` and PNG plots into the run directory.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from musicgen.checkpoint import load_run, load_run_cache
from musicgen.config import pick_device
from musicgen.evaluation import (
    REPETITION_NS,
    doc_nll,
    likelihood_metrics,
    ngram_baseline,
    reference_histogram,
    sample_metrics,
)
from musicgen.generation import SamplingConfig, generate
from musicgen.metrics import plot_pitch_histograms
from musicgen.midi_io import atomic_write_text
from musicgen.plots import save_figure
from musicgen.tokenizers.base import BOS_ID

log = logging.getLogger(__name__)

TABLE_KEYS = (
    "perplexity", "nll_per_note", "ngram_repetition_4", "compression_ratio_4",
    "pitch_hist_kl", "pitch_hist_overlap", "syntax_error_rate",
)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    sampling = SamplingConfig(**cfg.sampling)
    device = pick_device(cfg.device)
    run = load_run(cfg.ckpt_path, map_location=device)
    tok, net = run.tokenizer, run.net.to(device)
    out_dir = Path(cfg.output_dir) if cfg.output_dir else run.run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = load_run_cache(run)
    if cfg.split not in cache.splits or cache.splits[cfg.split].n_docs == 0:
        raise ValueError(f"split={cfg.split} has no pieces in {cache.path}; use split=val or set data.test_frac")
    split, train = cache.splits[cfg.split], cache.splits["train"]
    docs = [split.doc(i) for i in range(split.n_docs)][: cfg.max_pieces or None]
    train_docs = [train.doc(i) for i in range(train.n_docs)]
    notes = [tok.count_notes(d[1:-1].tolist()) for d in docs]
    t0 = time.perf_counter()

    # likelihood: model vs smoothed n-gram on the same tokens
    context = int(getattr(net, "context_len", run.metadata.get("seq_len", 256)))
    model_row = likelihood_metrics(doc_nll(net, docs, context), docs, notes)
    ngram = ngram_baseline(train_docs, tok.vocab_size, cfg.ngram_order)
    ngram_row = likelihood_metrics(np.array([ngram.nll(d) for d in docs]), docs, notes)
    ngram_row["order"] = cfg.ngram_order

    # samples: model vs n-gram vs real pieces, with the same sample metrics
    ref_hist = reference_histogram(tok, train_docs)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    prompt = torch.full((cfg.num_samples, 1), BOS_ID, dtype=torch.long, device=device)
    t_gen = time.perf_counter()
    ids = generate(net, prompt, cfg.max_new_tokens, sampling, generator=gen)[:, 1:].tolist()
    gen_seconds = time.perf_counter() - t_gen
    model_row.update(sample_metrics(tok, ids, ref_hist))
    model_row["generation_tokens_per_second"] = cfg.num_samples * cfg.max_new_tokens / gen_seconds
    rng = np.random.default_rng(cfg.seed)
    ngram_ids = [ngram.sample(cfg.max_new_tokens, rng) for _ in range(cfg.num_samples)]
    ngram_row.update(sample_metrics(tok, ngram_ids, ref_hist))
    real_row = sample_metrics(tok, [d[1:-1][: cfg.max_new_tokens].tolist() for d in docs], ref_hist)

    result = {
        "ckpt_path": str(run.ckpt_path),
        "version": run.metadata.get("version"),
        "split": cfg.split,
        "settings": {"num_samples": cfg.num_samples, "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed,
                     "sampling": OmegaConf.to_container(cfg.sampling), "ngram_order": cfg.ngram_order},
        "model": model_row,
        "ngram_baseline": ngram_row,
        "validation_pieces": real_row,
        "reference_pitch_counts": ref_hist.tolist(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_text(out_dir / "evaluation.json", json.dumps(result, indent=1))
    write_plots(result, out_dir)
    atomic_write_text(out_dir / "evaluation.md", report_markdown(result))
    log.info("evaluation written to %s", out_dir)
    result["output_dir"] = str(out_dir)
    return result


def write_plots(result: dict[str, Any], out_dir: Path) -> None:
    ref = torch.tensor(result["reference_pitch_counts"])
    fig = plot_pitch_histograms(torch.tensor(result["model"]["pitch_counts"]), ref,
                                title=f"{result['version']}: generated vs training pitches")
    save_figure(fig, out_dir / "pitch_histogram.png")
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    for name, row in (("model samples", result["model"]), ("n-gram samples", result["ngram_baseline"]),
                      (f"real {result['split']} pieces", result["validation_pieces"])):
        if "ngram_repetition_2" in row:
            ax.plot(REPETITION_NS, [row[f"ngram_repetition_{n}"] for n in REPETITION_NS], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(REPETITION_NS, [str(n) for n in REPETITION_NS])
    ax.set_xlabel("n")
    ax.set_ylabel("share of repeated n-grams")
    ax.set_title("repetition by n")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out_dir / "repetition.png")


def report_markdown(result: dict[str, Any]) -> str:
    rows = [("model", result["model"]), (f"n-gram (order {result['ngram_baseline']['order']})", result["ngram_baseline"]),
            (f"real {result['split']} pieces", result["validation_pieces"])]

    def cell(row, k):
        v = row.get(k)
        return "-" if v is None else f"{v:.3f}"

    lines = [
        f"# Evaluation of {result['version']}",
        "",
        f"Checkpoint `{result['ckpt_path']}`, {result['model']['pieces']} {result['split']} pieces scored, "
        f"{result['settings']['num_samples']} samples of {result['settings']['max_new_tokens']} tokens.",
        "",
        "| | " + " | ".join(TABLE_KEYS) + " |",
        "|---|" + "---|" * len(TABLE_KEYS),
    ]
    lines += [f"| {name} | " + " | ".join(cell(row, k) for k in TABLE_KEYS) + " |" for name, row in rows]
    beat = result["model"]["nll_per_note"] < result["ngram_baseline"]["nll_per_note"]
    lines += [
        "",
        f"NLL per note: model {result['model']['nll_per_note']:.3f} vs n-gram {result['ngram_baseline']['nll_per_note']:.3f} "
        f"nats ({'the model beats the baseline' if beat else 'the model does NOT beat the baseline'}).",
        "Token perplexity compares models on the same tokeniser only; nats per note compare across tokenisations.",
        "",
        "![pitch histogram](pitch_histogram.png) ![repetition](repetition.png)",
        "",
    ]
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    result = evaluate(cfg)
    print(report_markdown(result))
    print(f"report: {result['output_dir']}/evaluation.md")


if __name__ == "__main__":
    main()
