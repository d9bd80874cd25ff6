"""How much of an evaluated split is a variant of a training piece, and what that does to the figures.

The split keeps variants of one tune on one side (``musicgen.data.split``, at
``similarity.SPLIT_THRESHOLD``), but a looser variant (an ornamented reel, a regional version of a
ballad) can still sit in training with its sibling under test, and it makes the test NLL
optimistic. ``leakage`` finds, for each evaluated piece, its most similar training piece at the
looser ``similarity.LEAKAGE_THRESHOLD`` (so the share is not zero by construction), and reports
the share of leaked pieces (with its Wilson interval), NLL per note on the clean pieces beside the
whole split, and the real pieces' copying (interval 8- and 16-grams found in training) on all
pieces and on the clean ones. Everything is computed on the pieces as the cache holds them,
decoded by the run's tokeniser, against the untransposed training pieces (intervals make a
transposed copy add nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from musicgen.metrics.bootstrap import figure, mean_of, ratio
from musicgen.metrics.copying import CopyIndex, interval_symbols
from musicgen.metrics.likelihood import likelihood_metrics
from musicgen.metrics.samples import body
from musicgen.metrics.similarity import LEAKAGE_THRESHOLD, nearest, score_contour, signature
from musicgen.metrics.statistics import wilson


def leakage(
    tokenizer,
    train,
    split,
    originals: Sequence[int] | np.ndarray,
    nll: np.ndarray,
    tokens: np.ndarray,
    notes: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    threshold: float = LEAKAGE_THRESHOLD,
) -> dict[str, Any]:
    """The leakage figures of the evaluated pieces ``split.doc(i) for i in originals`` (``train``
    and ``split``: ``SplitTokens`` of one token cache; ``nll``, ``tokens``, ``notes``: per evaluated
    piece, in the order of ``originals``, as ``likelihood_metrics`` takes them).

    Returns ``threshold``; ``pieces``; ``leaked`` (pieces with a training piece at least
    ``threshold`` similar); ``leaked_share`` ``{"value", "low", "high"}`` (Wilson 95%);
    ``clean_pieces``; ``max_similarity`` (per piece, the similarity of its nearest training piece,
    a list); ``nearest_train`` (per piece, that training piece's name or None);
    ``likelihood`` ``{"all": ..., "clean": ...}`` (``likelihood_metrics`` of each subset; ``clean``
    is None without clean pieces); ``copying`` ``{"all": ..., "clean": ...}``, each
    ``{"copied_8gram_share_interval", "copied_16gram_share_interval", "longest_copied_run_interval"}``
    figures with intervals over pieces.
    """
    originals = np.asarray(originals, dtype=np.int64)
    nll, tokens, notes = (np.asarray(a) for a in (nll, tokens, notes))
    if not len(originals) == len(nll) == len(tokens) == len(notes):
        raise ValueError(f"leakage: {len(originals)} pieces but {len(nll)} NLLs, {len(tokens)} token counts "
                         f"and {len(notes)} note counts")
    train_idx = train.originals()
    train_scores = [tokenizer.decode(body(train.doc(i))) for i in train_idx]
    scores = [tokenizer.decode(body(split.doc(i))) for i in originals]
    best, which = nearest([signature(score_contour(s)) for s in scores],
                          [signature(score_contour(s)) for s in train_scores])
    leaked = best >= threshold
    clean = ~leaked
    k, n = int(leaked.sum()), len(leaked)
    low, high = wilson(k, n)

    index = CopyIndex([interval_symbols(s) for s in train_scores])
    copies = index.stats_many(interval_symbols(s) for s in scores)

    def copying(rows: np.ndarray) -> dict[str, dict[str, float]]:
        return {"copied_8gram_share_interval": figure(rows, ratio(0, 1), n_boot, seed),
                "copied_16gram_share_interval": figure(rows, ratio(2, 3), n_boot, seed),
                "longest_copied_run_interval": figure(rows, mean_of(4), n_boot, seed)}

    return {
        "threshold": threshold,
        "pieces": n,
        "leaked": k,
        "leaked_share": {"value": k / n if n else float("nan"), "low": low, "high": high},
        "clean_pieces": n - k,
        "max_similarity": [round(float(b), 4) for b in best],
        "nearest_train": [str(train.names[train_idx[w]]) if w >= 0 else None for w in which],
        "likelihood": {
            "all": likelihood_metrics(nll, tokens, notes, n_boot, seed),
            "clean": likelihood_metrics(nll[clean], tokens[clean], notes[clean], n_boot, seed) if clean.any() else None,
        },
        "copying": {"all": copying(copies), "clean": copying(copies[clean])},
    }


__all__ = ["leakage"]
