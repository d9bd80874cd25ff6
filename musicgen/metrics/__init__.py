"""Evaluation metrics (``torchmetrics.Metric`` subclasses, exact under DDP) and n-gram baselines,
plus the per-piece building blocks of the sample evaluation (plain numpy):

- ``features``: tokeniser-independent count vectors of a decoded score (pitch, pitch class,
  melodic interval, duration, inter-onset interval, notes per bar) and ``overlap`` / ``kl``;
- ``copying``: how much of a sample occurs in the training pieces (``CopyIndex``);
- ``bootstrap``: percentile-bootstrap intervals over pieces of figures built from per-piece
  statistics (``bootstrap_ci`` with ``ratio``, ``mean_of``, ``overlap_with``, ``kl_from``);
- ``tonal``, ``similarity`` (near-duplicate tunes), ``critic`` (a classifier two-sample test),
  ``ppm`` (PPM*), ``statistics`` (paired and seed-aware intervals, TOST, Holm, Wilson).

Metrics take plain tensors / lists of token ids or MIDI pitches; decoding tokens into
pitches, notes or grammar errors is the caller's job (the tokeniser's).
"""

from musicgen.metrics.bootstrap import bootstrap_ci, kl_from, mean_of, overlap_with, ratio
from musicgen.metrics.copying import CopyIndex, melody_symbols
from musicgen.metrics.features import FEATURES, HISTOGRAMS, kl, overlap, piece_features
from musicgen.metrics.music import (
    CompressionRatio,
    NgramRepetition,
    NLLPerNote,
    Perplexity,
    PitchHistogram,
    SyntaxErrorRate,
    ngram_stats,
    pitch_counts,
)
from musicgen.metrics.ngram import NgramLM, UnigramLM

__all__ = [
    "FEATURES",
    "HISTOGRAMS",
    "CompressionRatio",
    "CopyIndex",
    "NLLPerNote",
    "NgramLM",
    "NgramRepetition",
    "Perplexity",
    "PitchHistogram",
    "SyntaxErrorRate",
    "UnigramLM",
    "bootstrap_ci",
    "kl",
    "kl_from",
    "mean_of",
    "melody_symbols",
    "ngram_stats",
    "overlap",
    "overlap_with",
    "piece_features",
    "pitch_counts",
    "ratio",
]
