"""Likelihood of token sequences under a network: every token after BOS scored once, within the
context the model trained on (``scoring_plan``; validation follows the same plan), and the
figures built from per-piece totals (perplexity, nats per token and per note). The paired difference
of two runs on the same pieces is ``musicgen.metrics.statistics.paired_difference``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from musicgen.constants import IGNORE_INDEX, PAD_ID
from musicgen.metrics.bootstrap import figure, ratio


def scoring_plan(doc_len: int, context_len: int) -> list[tuple[int, int, int]]:
    """How one document ``BOS ... EOS`` of ``doc_len`` tokens is scored, every token after BOS once.

    Windows ``(start, end, first_scored)``: the input is ``doc[start:end-1]`` (at most
    ``context_len`` tokens), the targets ``doc[start+1:end]``, and only targets at positions
    ``>= first_scored`` count. A document that fits one context (``doc_len - 1 <= context_len``)
    is one window. A longer one: the first window scores all its ``context_len`` targets, each
    later one is a full window ending ``context_len // 2`` targets further (fewer at the end of the
    document) and scores only those, so every scored token has at least half a window of context.
    Evaluation (``doc_nll``) and validation (``ScoringWindows``) both follow this plan.
    """
    if context_len < 1:
        raise ValueError(f"context_len={context_len} must be >= 1")
    if doc_len < 2:
        return []
    if doc_len - 1 <= context_len:
        return [(0, doc_len, 1)]
    step = max(1, context_len // 2)
    plan, scored = [], 1  # position 0 (BOS) is never a target
    while scored < doc_len:
        end = min(doc_len, scored + (context_len if scored == 1 else step))  # score [scored, end)
        plan.append((max(0, end - 1 - context_len), end, scored))
        scored = end
    return plan


def _batches(items: list, key: Callable, batch_size: int):
    items = sorted(items, key=key)
    for b in range(0, len(items), batch_size):
        yield items[b : b + batch_size]

@torch.inference_mode()
def doc_nll(net: nn.Module, docs: Sequence[np.ndarray], context_len: int, batch_size: int = 32,
            n_out: int | None = None, n_context: int = 0, repeat_context: bool = False) -> np.ndarray:
    """Total NLL (nats) of each document ``BOS ... EOS`` under a causal model, every token after
    BOS predicted once, windows as ``scoring_plan`` lays them out (what validation does too).
    ``n_out``: the distribution over the first ``n_out`` ids only (the tokeniser's ids, without an
    infilling run's sentinels or a conditioned run's attribute tokens). ``n_context``: the tokens
    after BOS that are context, not scored (a conditioned run's attribute prefix); with
    ``repeat_context`` (a run trained with ``conditioning.every_window``) a later window that
    starts past them reads them in place of its first ``n_context`` tokens (``PrefixScoringWindows``)."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    out = np.zeros(len(docs))
    windows = [(i, *w) for i, d in enumerate(docs) for w in scoring_plan(len(d), context_len)]
    for batch in _batches(windows, key=lambda w: w[2] - w[1], batch_size=batch_size):
        T = max(end - 1 - start for _, start, end, _ in batch)
        x = torch.full((len(batch), T), PAD_ID, dtype=torch.long)
        y = torch.full((len(batch), T), IGNORE_INDEX, dtype=torch.long)
        for row, (i, start, end, first) in enumerate(batch):
            d = torch.tensor(np.asarray(docs[i][start:end], dtype=np.int64))  # a copy: docs are the caller's
            if repeat_context and start > n_context:  # the prefix in place of the first context tokens
                d[:n_context] = torch.as_tensor(np.asarray(docs[i][1 : 1 + n_context], dtype=np.int64))
            x[row, : len(d) - 1] = d[:-1]
            keep = first - start - 1  # targets before this were scored by an earlier window
            y[row, keep : len(d) - 1] = d[keep + 1 :]
            y[row, : max(0, n_context - start)] = IGNORE_INDEX  # targets start + 1 .. n_context
        logits = net(x.to(device))[..., :n_out].float()  # (B, T, V)
        nll = F.cross_entropy(logits.transpose(1, 2), y.to(device), ignore_index=IGNORE_INDEX, reduction="none")
        np.add.at(out, [w[0] for w in batch], nll.sum(dim=1).cpu().numpy())
    net.train(was_training)
    return out

@torch.inference_mode()
def seq2one_nll(net: nn.Module, docs: Sequence[np.ndarray], context_len: int, batch_size: int = 256,
                n_out: int | None = None, n_context: int = 0) -> np.ndarray:
    """Total NLL of each document under a seq2one model, scored as it trained: each token after
    BOS (and after the ``n_context`` tokens that follow it) predicted from the last output over the
    (up to ``context_len``) tokens before it; ``n_out`` as in ``doc_nll``."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    out = np.zeros(len(docs))
    by_length = defaultdict(list)  # one batch shape per context length
    for i, d in enumerate(docs):
        for t in range(1 + n_context, len(d)):
            by_length[min(t, context_len)].append((i, t))
    for n, targets in by_length.items():
        for b in range(0, len(targets), batch_size):
            chunk = targets[b : b + batch_size]
            x = torch.as_tensor(np.stack([np.asarray(docs[i][t - n : t], dtype=np.int64) for i, t in chunk]))
            y = torch.as_tensor([int(docs[i][t]) for i, t in chunk])
            logits = net(x.to(device), last_only=True)[..., :n_out].float()  # (B, V)
            nll = F.cross_entropy(logits, y.to(device), reduction="none")
            np.add.at(out, [i for i, _ in chunk], nll.cpu().numpy())
    net.train(was_training)
    return out

def likelihood_metrics(nll: np.ndarray, tokens: Sequence[int], notes: Sequence[int], n_boot: int = 1000,
                       seed: int = 0) -> dict[str, Any]:
    """Token perplexity, nats per token and per note over documents, from each document's NLL,
    scored tokens (all but BOS) and source notes, each figure with its interval over documents."""
    stats = np.column_stack([nll, tokens, notes]).astype(np.float64)
    out = {
        "perplexity": figure(stats, lambda m: np.exp(m[:, 0] / m[:, 1]), n_boot, seed),
        "nll_per_token": figure(stats, ratio(0, 1), n_boot, seed),
        "nll_per_note": figure(stats, ratio(0, 2), n_boot, seed),
    }
    out.update(pieces=len(stats), tokens=int(stats[:, 1].sum()), notes=int(stats[:, 2].sum()))
    return out
