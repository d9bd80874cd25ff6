"""A learned critic: a classifier two-sample test between real pieces and a model's samples.

A classifier is trained to tell the pieces of one set (real test pieces) from those of another
(a model's samples); its held-out AUC says how well it can: 0.5 means it cannot tell them apart,
1 that it always can. The AUC is the out-of-fold one of a stratified k-fold cross-validation
(every piece scored by a classifier that never saw it), with DeLong's 95% interval over pieces.
Two sets of real pieces give the floor: what the critic reaches on pieces from one distribution.

- **Tokeniser-independent**: the critic reads decoded notes (``symusic.Score``), never token ids.
- **Length-matched**: the two sets are paired at random and both pieces of a pair are cut to the
  shorter one's note count (``first_notes``), so the sets have the same length distribution and
  the critic cannot win on length alone (``match_lengths``).
- **Transposition-fair**: the features are those of ``musicgen.metrics.features`` and ``tonal``
  that do not change when a piece is transposed (the models train on transposed copies), so
  the key a sample is in is not a tell.

Features of a piece (``critic_features``): its normalised tonic-relative pitch-class, interval,
duration, inter-onset-interval and notes-per-bar histograms; the tonal figures (scale
consistency, share in the estimated key's scale, key clarity, pitch-class entropy); melodic
statistics (pitch range and spread, mean absolute interval, shares of repeated notes and steps);
and n-gram statistics of the melody's intervals and of its durations (the share of repeated
2-, 4- and 8-grams, as ``ngram_repetition``). The classifier is an L2-regularised logistic
regression on standardised features, fitted by Newton's method (``Critic``): plain and stable on
a few dozen pieces per side, where a flexible model would only overfit.

``Critic.logit`` also scores new pieces (high = more like the first, real set): the DPO
objective's stand-in for listeners (``musicgen.training.dpo``).
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
import symusic

from musicgen.metrics.features import melody, piece_features
from musicgen.metrics.samples import first_notes, note_count
from musicgen.metrics.tonal import tonal_features

#: The histograms a critic reads, each normalised to sum 1 (tonic-relative pitch classes are added).
CRITIC_HISTOGRAMS = ("interval", "duration", "ioi", "notes_per_bar")

#: n of the melodic n-gram repetition shares (intervals, durations).
CRITIC_NGRAMS = (2, 4, 8)

TONAL = ("scale_consistency", "pitch_in_scale", "key_clarity", "pitch_class_entropy")


def _share(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts)


def _repeated_share(symbols: np.ndarray, n: int) -> float:
    """The share of the sequence's n-grams that occurred earlier in it (0 without any n-gram)."""
    if len(symbols) < n:
        return 0.0
    grams = np.lib.stride_tricks.sliding_window_view(np.asarray(symbols), n)
    unique = len(np.unique(grams, axis=0))
    return 1.0 - unique / len(grams)


def critic_features(score: symusic.Score) -> np.ndarray:
    """The critic's feature vector of one decoded piece (see the module docstring); zeros where a
    figure is undefined (a piece without notes, or without intervals)."""
    feats = piece_features(score)
    tonal = tonal_features(score)
    parts = [_share(tonal["tonic_pitch_classes"]), *(_share(feats[h]) for h in CRITIC_HISTOGRAMS)]
    figures = [0.0 if np.isnan(tonal[name]) else tonal[name] for name in TONAL]
    pitch, duration = melody(score)
    intervals = np.diff(pitch)
    durations = np.rint(np.log2(np.maximum(duration, 1 / 64)) * 4).astype(np.int64)  # quarter-octave log bins
    figures += [
        (pitch.max() - pitch.min()) / 12 if len(pitch) else 0.0,
        pitch.std() / 12 if len(pitch) else 0.0,
        np.abs(intervals).mean() / 12 if len(intervals) else 0.0,
        (intervals == 0).mean() if len(intervals) else 0.0,
        (np.abs(intervals) <= 2).mean() if len(intervals) else 0.0,
    ]
    figures += [_repeated_share(intervals, n) for n in CRITIC_NGRAMS]
    figures += [_repeated_share(durations, n) for n in CRITIC_NGRAMS]
    return np.concatenate([*parts, np.asarray(figures, dtype=np.float64)])


def feature_matrix(scores: Sequence[symusic.Score]) -> np.ndarray:
    """``(P, F)``: ``critic_features`` of each piece."""
    rows = [critic_features(s) for s in scores]
    return np.stack(rows) if rows else np.zeros((0, len(critic_features(symusic.Score()))))


def match_lengths(a: Sequence[symusic.Score], b: Sequence[symusic.Score],
                  rng: np.random.Generator) -> tuple[list[symusic.Score], list[symusic.Score]]:
    """``min(len(a), len(b))`` random pairs of a piece of ``a`` and one of ``b``, both cut to the
    shorter one's note count (``first_notes``): two sets with the same length distribution."""
    n = min(len(a), len(b))
    ia, ib = rng.permutation(len(a))[:n], rng.permutation(len(b))[:n]
    out_a, out_b = [], []
    for i, j in zip(ia, ib):
        k = min(note_count(a[i]), note_count(b[j]))
        out_a.append(first_notes(a[i], k))
        out_b.append(first_notes(b[j], k))
    return out_a, out_b


# ----------------------------------------------------------------------------- the classifier


class Critic:
    """L2-regularised logistic regression on standardised features: label 1 for the first set
    (``fit(x_pos, x_neg)``), so ``logit`` is high for pieces like the first set's.

    ``l2``: the penalty ``l2 / 2 * |w|^2`` on the weights (not the intercept), added to the
    summed negative log-likelihood; fitted by Newton's method (the problem is strictly convex)."""

    def __init__(self, l2: float = 1.0, iterations: int = 50) -> None:
        if not l2 > 0:
            raise ValueError(f"l2 must be > 0, got {l2}")
        self.l2, self.iterations = l2, iterations
        self.mean = self.scale = self.w = None

    def fit(self, x_pos: np.ndarray, x_neg: np.ndarray) -> Critic:
        x = np.concatenate([x_pos, x_neg]).astype(np.float64)
        y = np.concatenate([np.ones(len(x_pos)), np.zeros(len(x_neg))])
        if not len(x_pos) or not len(x_neg):
            raise ValueError(f"a critic needs pieces of both sets, got {len(x_pos)} and {len(x_neg)}")
        self.mean = x.mean(axis=0)
        self.scale = x.std(axis=0)
        self.scale[self.scale < 1e-12] = 1.0  # a constant feature stays 0
        z = np.column_stack([np.ones(len(x)), (x - self.mean) / self.scale])  # (P, 1 + F)
        w = np.zeros(z.shape[1])
        penalty = np.full(z.shape[1], self.l2)
        penalty[0] = 0.0  # the intercept is not shrunk
        for _ in range(self.iterations):
            p = 1 / (1 + np.exp(-(z @ w)))
            grad = z.T @ (p - y) + penalty * w
            hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-8:
                break
        self.w = w
        return self

    def logit(self, x: np.ndarray) -> np.ndarray:
        """``(P,)`` log-odds that each feature row belongs to the first set."""
        if self.w is None:
            raise RuntimeError("Critic.logit before fit")
        return self.w[0] + ((np.asarray(x, dtype=np.float64) - self.mean) / self.scale) @ self.w[1:]


def _psi(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """``(m, n)``: 1 where a score of ``pos`` exceeds one of ``neg``, a half where they tie."""
    pos, neg = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    return (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """The probability that a score of ``pos`` exceeds one of ``neg`` (ties count a half)."""
    return float(_psi(pos, neg).mean())


def delong_variance(pos: np.ndarray, neg: np.ndarray) -> float:
    """DeLong's variance of the AUC of ``pos`` against ``neg`` (NaN with fewer than 2 on a side)."""
    psi = _psi(pos, neg)
    m, n = psi.shape
    if m < 2 or n < 2:
        return float("nan")
    return float(psi.mean(axis=1).var(ddof=1) / m + psi.mean(axis=0).var(ddof=1) / n)


def _interval(value: float, var: float, level: float = 0.95) -> tuple[float, float]:
    if not np.isfinite(var):
        return float("nan"), float("nan")
    half = NormalDist().inv_cdf((1 + level) / 2) * float(np.sqrt(var))
    return max(0.0, value - half), min(1.0, value + half)


def critic_auc(x_pos: np.ndarray, x_neg: np.ndarray, repeats: int = 5, seed: int = 0,
               l2: float = 1.0, level: float = 0.95) -> dict[str, float]:
    """The held-out AUC of a critic telling feature rows ``x_pos`` from ``x_neg``: ``{"value",
    "low", "high", "pieces"}`` (``pieces``: the smaller set's size).

    Repeated 2-fold cross-fitting: each set is halved at random, a ``Critic`` trained on one half
    of each scores the other halves, and the other way round; ``repeats`` such splits give
    ``2 * repeats`` held-out AUCs, and the value is their mean. The interval is normal with the
    mean of their DeLong variances: given its critic, a fold's AUC has DeLong's variance, and the
    variance of a mean of correlated estimates is at most the mean of their variances, so the
    interval keeps (at least) its level; when the two sets come from one distribution every
    critic's true AUC is 0.5. (The folds' AUCs are strongly correlated, because the two critics
    of a split learn from each other's test pieces: an interval that treats them as independent,
    or DeLong's on the pooled out-of-fold scores of k folds, covers 0.5 far too rarely.) NaN with
    fewer than 4 rows on a side."""
    pieces = min(len(x_pos), len(x_neg))
    nan = float("nan")
    if pieces < 4:
        return {"value": nan, "low": nan, "high": nan, "pieces": pieces}
    rng = np.random.default_rng(seed)
    aucs, variances = [], []
    for _ in range(repeats):
        half_pos = rng.permutation(len(x_pos)) % 2
        half_neg = rng.permutation(len(x_neg)) % 2
        for f in (0, 1):
            critic = Critic(l2).fit(x_pos[half_pos != f], x_neg[half_neg != f])
            s_pos, s_neg = critic.logit(x_pos[half_pos == f]), critic.logit(x_neg[half_neg == f])
            aucs.append(auc(s_pos, s_neg))
            variances.append(delong_variance(s_pos, s_neg))
    value = float(np.mean(aucs))
    low, high = _interval(value, float(np.mean(variances)), level)
    return {"value": value, "low": low, "high": high, "pieces": pieces}


def critic_test(real: Sequence[symusic.Score], other: Sequence[symusic.Score], repeats: int = 5,
                seed: int = 0) -> dict[str, float]:
    """The classifier two-sample test of decoded pieces: ``real`` against ``other``, paired and
    cut to matched lengths (``match_lengths``), as ``critic_auc``."""
    a, b = match_lengths(real, other, np.random.default_rng(seed))
    return critic_auc(feature_matrix(a), feature_matrix(b), repeats, seed)


def fit_critic(real: Sequence[symusic.Score], other: Sequence[symusic.Score], seed: int = 0,
               l2: float = 1.0) -> Critic:
    """A ``Critic`` trained on all of ``real`` (label 1) against ``other``, lengths matched."""
    a, b = match_lengths(real, other, np.random.default_rng(seed))
    return Critic(l2).fit(feature_matrix(a), feature_matrix(b))


def read_alike(scores: Sequence[symusic.Score]) -> list[symusic.Score]:
    """What the critic reads of each of ``scores`` when it compares them: each cut to the shortest
    one's note count (``first_notes``), so that length alone decides nothing."""
    k = min(note_count(s) for s in scores)
    return [first_notes(s, k) for s in scores]


def critic_scores(critic: Critic, scores: Sequence[symusic.Score]) -> np.ndarray:
    """The critic's logit of each of ``scores`` as it reads them (``read_alike``): higher for the
    pieces it finds more real."""
    return critic.logit(feature_matrix(read_alike(scores)))


def prefer(critic: Critic, first: symusic.Score, second: symusic.Score) -> float:
    """The critic's logit of ``first`` minus that of ``second`` (``critic_scores``): > 0 when it
    finds ``first`` the more real."""
    s = critic_scores(critic, [first, second])
    return float(s[0] - s[1])


def best_and_worst(critic: Critic, scores: Sequence[symusic.Score]) -> tuple[int, int] | None:
    """The indices of the piece the critic finds the most real and the one it finds the least
    real among ``scores`` (``critic_scores``); None when it finds them all alike."""
    s = critic_scores(critic, scores)
    if s.max() == s.min():
        return None
    return int(np.argmax(s)), int(np.argmin(s))


__all__ = ["Critic", "auc", "best_and_worst", "critic_auc", "critic_features", "critic_scores", "critic_test",
           "delong_variance", "feature_matrix", "fit_critic", "match_lengths", "prefer", "read_alike"]
