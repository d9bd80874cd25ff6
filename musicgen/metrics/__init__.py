"""Evaluation metrics (``torchmetrics.Metric`` subclasses, exact under DDP) and n-gram baselines.

Metrics take plain tensors / lists of token ids or MIDI pitches; decoding tokens into
pitches, notes or grammar errors is the caller's job (the tokeniser's).
"""

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
    "CompressionRatio",
    "NLLPerNote",
    "NgramLM",
    "NgramRepetition",
    "Perplexity",
    "PitchHistogram",
    "SyntaxErrorRate",
    "UnigramLM",
    "ngram_stats",
    "pitch_counts",
]
