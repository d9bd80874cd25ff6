"""Bootstrap confidence intervals over pieces for figures built from per-piece statistics.

Every sample figure of the evaluation is a function of the pieces' per-piece statistics
vectors summed over the set: repetition is ``sum repeated / sum total`` n-grams, a histogram
distance compares the summed count vectors (normalised) with a reference, a mean per piece is
a column's sum over the number of pieces. So a set of P pieces is a ``(P, K)`` array, one row
per piece, and the figure's uncertainty is that of the pieces drawn: ``bootstrap_ci`` redraws
P pieces with replacement ``n_boot`` times and takes the percentile interval of the figure
over the redraws (pieces, not tokens or notes, are the independent units: notes of one piece
are not independent draws).

A statistic takes ``(B, K)`` rows and returns ``(B,)`` values. Each row it gets is the MEAN
over the (re)drawn pieces, i.e. the sum divided by P: a ratio of sums, a normalised histogram
and anything scale-free are the same for sum and mean, and a mean per piece is then just a
column (``mean_of``). Ready-made statistics: ``ratio``, ``mean_of``, ``overlap_with``, ``kl_from``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from musicgen.metrics.features import kl, overlap

Statistic = Callable[[np.ndarray], np.ndarray]
Columns = int | slice | Sequence[int] | np.ndarray | None


def bootstrap_ci(
    stats: np.ndarray,
    statistic: Statistic,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(value, low, high)``: the statistic on all pieces and its percentile-bootstrap interval.

    ``stats``: ``(P, K)`` per-piece statistics (a 1-D array is one column). The redraws are
    one ``(n_boot, P)`` matrix of piece indices (``numpy.random.default_rng(seed)``, so the
    same seed and pieces give the same interval); each redraw's mean row is
    ``counts @ stats / P`` with ``counts`` how often each piece was drawn. ``low`` and
    ``high`` are the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the redraws'
    values (NumPy's linear interpolation). Redraws whose value is NaN (e.g. only pieces
    with a zero denominator drawn) are left out of the quantiles.

    With no pieces the value is NaN; with one piece there is nothing to redraw, so the
    interval is ``(nan, nan)``, as it is when every redraw is NaN. No warnings either way.

    Mind histogram distances (``overlap_with``, ``kl_from``): a redraw holds only about 63% of
    the distinct pieces, so its histogram is noisier than the set's and its distance to a
    reference worse. Their intervals therefore sit on the worse side of the value (they may
    exclude it, e.g. a set against its own pooled histogram: value 1, interval below 1). The
    shift is alike for sets of the same size, so compare sets of equal numbers of pieces;
    ratios and means have no such bias.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim == 1:
        stats = stats[:, None]
    if stats.ndim != 2:
        raise ValueError(f"stats must be (pieces, K), got shape {stats.shape}")
    n = stats.shape[0]
    if n == 0:
        return math.nan, math.nan, math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(np.asarray(statistic(stats.mean(axis=0, keepdims=True))).reshape(-1)[0])
        if n == 1:
            return value, math.nan, math.nan
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, n, size=(n_boot, n))
        counts = np.bincount((draws + n * np.arange(n_boot)[:, None]).reshape(-1), minlength=n_boot * n)
        means = counts.reshape(n_boot, n).astype(np.float64) @ stats / n  # (n_boot, K)
        values = np.asarray(statistic(means), dtype=np.float64).reshape(-1)
    if values.shape != (n_boot,):
        raise ValueError(f"statistic must map (B, K) rows to (B,) values, got shape {values.shape}")
    values = values[~np.isnan(values)]
    if not len(values):
        return value, math.nan, math.nan
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return value, float(low), float(high)


# ----------------------------------------------------------------------------- statistics


def _columns(rows: np.ndarray, cols: Columns) -> np.ndarray:
    return rows if cols is None else rows[:, cols]


def ratio(num_col: int, den_col: int) -> Statistic:
    """``sum of column num / sum of column den`` over the pieces (a micro-average, e.g.
    repeated / total n-grams); NaN where the denominator is 0."""

    def statistic(rows: np.ndarray) -> np.ndarray:
        num, den = rows[:, num_col], rows[:, den_col]
        return np.divide(num, den, out=np.full(num.shape, np.nan), where=den != 0)

    return statistic


def mean_of(col: int) -> Statistic:
    """The mean per piece of one column (e.g. notes per piece, longest copied run)."""

    def statistic(rows: np.ndarray) -> np.ndarray:
        return rows[:, col]

    return statistic


def overlap_with(reference: np.ndarray, cols: Columns = None) -> Statistic:
    """Overlap (``features.overlap``: 1 = same distribution) of the pieces' summed histogram,
    ``cols`` of the rows (all by default), with ``reference`` (counts or probabilities)."""
    ref = np.asarray(reference, dtype=np.float64)

    def statistic(rows: np.ndarray) -> np.ndarray:
        return np.asarray(overlap(_columns(rows, cols), ref)).reshape(-1)

    return statistic


def kl_from(reference: np.ndarray, eps: float = 1e-6, cols: Columns = None) -> Statistic:
    """KL(pieces' summed histogram || ``reference``) in nats, smoothed with ``eps`` as in
    ``features.kl`` (the direction of ``PitchHistogram``: generated against reference)."""
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    ref = np.asarray(reference, dtype=np.float64)

    def statistic(rows: np.ndarray) -> np.ndarray:
        return np.asarray(kl(_columns(rows, cols), ref, eps)).reshape(-1)

    return statistic


__all__ = ["bootstrap_ci", "kl_from", "mean_of", "overlap_with", "ratio"]


def figure(stats: np.ndarray, statistic, n_boot: int, seed: int) -> dict[str, float]:
    if n_boot == 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            value = float(np.asarray(statistic(stats.mean(axis=0, keepdims=True))).reshape(-1)[0]) if len(stats) \
                else math.nan
        return {"value": value, "low": math.nan, "high": math.nan}
    value, low, high = bootstrap_ci(stats, statistic, n_boot=n_boot, seed=seed)
    return {"value": value, "low": low, "high": high}
