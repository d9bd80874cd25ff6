"""Evaluation logic behind ``python -m musicgen.evaluate`` and the sample-metrics callback.

Every figure has a reference: the model's numbers sit beside a smoothed n-gram model on the
same tokens and beside the same sample metrics computed on real validation pieces.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from musicgen.constants import BOS_ID, EOS_ID, IGNORE_INDEX, PAD_ID
from musicgen.generation import SamplingConfig, filter_logits, generate
from musicgen.metrics import (
    CompressionRatio,
    NgramLM,
    NgramRepetition,
    NLLPerNote,
    Perplexity,
    PitchHistogram,
    SyntaxErrorRate,
    pitch_counts,
)
from musicgen.tokenizers.base import MusicTokenizer

REPETITION_NS = (2, 4, 8, 16)


@torch.inference_mode()
def doc_nll(net: nn.Module, docs: Sequence[np.ndarray], context_len: int, batch_size: int = 32) -> np.ndarray:
    """Total NLL (nats) of each document ``BOS ... EOS``, every token after BOS predicted.

    Documents that fit one context are scored in padded batches (causal models: right padding
    never changes earlier positions); longer ones with overlapping windows that score each
    token once, with at least half a window of context.
    """
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    out = np.zeros(len(docs))
    short = [i for i, d in enumerate(docs) if len(d) - 1 <= context_len]
    short.sort(key=lambda i: len(docs[i]))
    for b in range(0, len(short), batch_size):
        idx = short[b : b + batch_size]
        T = max(len(docs[i]) for i in idx) - 1
        x = torch.full((len(idx), T), PAD_ID, dtype=torch.long)
        y = torch.full((len(idx), T), IGNORE_INDEX, dtype=torch.long)
        for row, i in enumerate(idx):
            d = torch.as_tensor(np.asarray(docs[i], dtype=np.int64))
            x[row, : len(d) - 1] = d[:-1]
            y[row, : len(d) - 1] = d[1:]
        logits = net(x.to(device)).float()  # (B, T, V)
        nll = F.cross_entropy(logits.transpose(1, 2), y.to(device), ignore_index=IGNORE_INDEX, reduction="none")
        out[idx] = nll.sum(dim=1).cpu().numpy()
    step = max(1, context_len // 2)
    for i, d in enumerate(docs):
        if len(d) - 1 <= context_len:
            continue
        d = torch.as_tensor(np.asarray(d, dtype=np.int64), device=device)
        n, total, scored = len(d), 0.0, 1  # position 0 (BOS) is never predicted
        while scored < n:
            end = min(n, scored + (context_len if scored == 1 else step))  # score [scored, end)
            start = max(0, end - 1 - context_len)  # input d[start:end-1], at most context_len
            logits = net(d[None, start : end - 1]).float()[0]  # (T, V) predicts start+1..end-1
            nll = F.cross_entropy(logits, d[start + 1 : end], reduction="none")
            total += float(nll[scored - start - 1 :].sum())
            scored = end
        out[i] = total
    net.train(was_training)
    return out


def likelihood_metrics(nll: np.ndarray, docs: Sequence[np.ndarray], notes: Sequence[int]) -> dict[str, float]:
    """Token perplexity and nats per note over documents (BOS not predicted)."""
    ppl, per_note = Perplexity(), NLLPerNote()
    n_tokens = sum(len(d) - 1 for d in docs)
    ppl.update_nll(float(nll.sum()), n_tokens)
    per_note.update(float(nll.sum()), int(sum(notes)))
    return {
        "perplexity": float(ppl.compute()),
        "nll_per_token": float(nll.sum() / n_tokens),
        "nll_per_note": float(per_note.compute()),
        "tokens": int(n_tokens),
        "notes": int(sum(notes)),
        "pieces": len(docs),
    }


def body(ids: Sequence[int]) -> list[int]:
    """The ids of a piece without BOS/EOS/PAD (what repetition and syntax metrics look at)."""
    return [int(t) for t in ids if t not in (BOS_ID, EOS_ID, PAD_ID)]


def score_pitches(tokenizer: MusicTokenizer, ids: Sequence[int]) -> list[int]:
    return [n.pitch for t in tokenizer.decode(list(ids)).tracks for n in t.notes]


def reference_range(reference_hist: torch.Tensor) -> tuple[int, int]:
    """The lowest and highest pitch of the reference (training) pieces: ``out_of_range_pitch_share``
    counts notes outside it (the tokeniser's own range would admit everything it can decode)."""
    used = torch.nonzero(torch.as_tensor(reference_hist) > 0).flatten()
    return int(used.min()), int(used.max())


def sample_metrics(
    tokenizer: MusicTokenizer, pieces: Sequence[Sequence[int]], reference_hist: torch.Tensor
) -> dict[str, Any]:
    """Repetition, compression, pitch-histogram and syntax metrics of a set of pieces.

    The metrics describe these pieces only: they never synchronise across processes, so one DDP
    rank can call this alone (the sample-metrics callback does, on rank 0).
    """
    seqs = [body(p) for p in pieces]
    out: dict[str, Any] = {}
    local = {"sync_on_compute": False}
    for n in REPETITION_NS:
        rep, comp = NgramRepetition(n, **local), CompressionRatio(n, **local)
        rep.update(seqs)
        comp.update(seqs)
        out[f"ngram_repetition_{n}"] = float(rep.compute())
        out[f"compression_ratio_{n}"] = float(comp.compute())
    hist = PitchHistogram(reference_hist, pitch_range=reference_range(reference_hist), **local)
    syntax = SyntaxErrorRate(**local)
    pitches_all = []
    for s in seqs:
        pitches = score_pitches(tokenizer, s)
        pitches_all += pitches
        syntax.update(tokenizer.syntax_errors(s), max(1, len(s)))
    if pitches_all:
        hist.update(torch.tensor(pitches_all))
        h = hist.compute()
        out.update(pitch_hist_kl=float(h["kl"]), pitch_hist_overlap=float(h["overlap"]),
                   out_of_range_pitch_share=float(h["out_of_range"]))
    else:
        out.update(pitch_hist_kl=math.nan, pitch_hist_overlap=0.0, out_of_range_pitch_share=math.nan)
    out["syntax_error_rate"] = float(syntax.compute())
    out["pitch_counts"] = pitch_counts(pitches_all).tolist() if pitches_all else [0] * 128
    out["notes_per_piece"] = len(pitches_all) / max(1, len(seqs))
    out["sampled_pieces"] = len(seqs)
    return out


def reference_histogram(tokenizer: MusicTokenizer, docs: Sequence[np.ndarray], max_docs: int = 500) -> torch.Tensor:
    """Pitch counts of (up to ``max_docs`` evenly spread) training documents."""
    step = max(1, len(docs) // max_docs)
    pitches = [p for d in docs[::step] for p in score_pitches(tokenizer, body(d))]
    return pitch_counts(pitches)


def sample_ngram(lm: NgramLM, length: int, sampling: SamplingConfig, rng: np.random.Generator) -> list[int]:
    """``length`` tokens from the n-gram after BOS, decoded by the same rules as the model's
    samples (temperature, top-k, top-p; greedy: the most likely token), so the two compare."""
    out = [lm.bos_id]
    for _ in range(length):
        logits = torch.from_numpy(np.log(lm.prob_dist(out)))[None]  # (1, V)
        if sampling.greedy:
            out.append(int(logits.argmax()))
            continue
        p = filter_logits(logits, sampling).softmax(dim=-1)[0].double().numpy()
        out.append(int(rng.choice(lm.vocab_size, p=p / p.sum())))
    return out[1:]


def ngram_baseline(train_docs: Sequence[np.ndarray], vocab_size: int, order: int) -> NgramLM:
    return NgramLM(order=order, vocab_size=vocab_size).fit([np.asarray(d) for d in train_docs])


def evaluate_run(run, cache, cfg, sampling: SamplingConfig, device: torch.device) -> dict[str, Any]:
    """The evaluation report of a loaded run on ``cfg.split`` of its token cache: likelihood of
    the model and of a smoothed n-gram on the same pieces, and the same sample metrics for model
    samples, n-gram samples and the real pieces. ``cfg``: the ``evaluate`` config."""
    t0 = time.perf_counter()
    tok, net = run.tokenizer, run.net.to(device)
    split, train = cache.splits[cfg.split], cache.splits["train"]
    docs = [split.doc(i) for i in range(split.n_docs)][: cfg.max_pieces or None]
    train_docs = [train.doc(i) for i in range(train.n_docs)]
    notes = [tok.count_notes(d[1:-1].tolist()) for d in docs]

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
    ngram_ids = [sample_ngram(ngram, cfg.max_new_tokens, sampling, rng) for _ in range(cfg.num_samples)]
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
    return result
