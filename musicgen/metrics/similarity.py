"""Near-duplicate melodies: variants of one tune, found whatever their key.

Folk collections hold the same tune many times over: in two collections, under two titles,
with an ornament added, a repeat written out, a cadence changed. An exact match (the split's
``content_key``) finds none of these; this module finds them by their shared melodic figures.

Signature. A piece's melody (``features.melody``: the highest note per onset) becomes its
*contour*: the successive pitch intervals in semitones after merging repeated notes (a note
repeated, or split into two, is one note). Intervals make the signature transposition-invariant
(a training tune replayed in another key is the same tune); merging repeats makes a rhythmic
variant (a half note sung as two quarters on one syllable) the same figure. The signature is
the *set* of the contour's ``NGRAM``-grams (figures of ``NGRAM + 1`` distinct successive notes),
so a repeat written out or left as a repeat sign adds nothing, and an ornament or a changed
note disturbs only the few figures that span it. The exact intervals, not their signs, are
kept: a sign contour (up/down) of a folk tune is shared by countless unrelated tunes.
``NGRAM = 5`` was chosen on the exported folk corpus: shorter figures (3, 4) are common to
unrelated tunes of one style, longer ones (6) miss ornamented variants without removing the
remaining false matches, which are short formulaic tunes (see below).

Similarity. ``|A & B| / max(|A | B|, MIN_UNION)``: the Jaccard index of the two figure sets,
except that the union counts as at least ``MIN_UNION`` figures. Children's chants and short
pentatonic tunes have a handful of distinct figures, and two of them share half by chance; the
floor means two pieces must share at least ``threshold * MIN_UNION`` figures (8 at the split's
threshold) to count as near-duplicates. It is a function of the two pieces alone (no corpus
weighting), so adding pieces never changes the similarity of two others.

Thresholds, chosen on pairs of the exported folk corpus checked by hand (listed, with the
verdicts, in ``tests/metrics/test_similarity.py``): every pair checked at or above
``SPLIT_THRESHOLD`` (0.4) is one tune (variants across Essen collections, O'Neill's vs Ryan's
reels, tunes that carry two texts); between 0.25 and 0.4 variants (ornamented reels, a ballad
in two regional versions) mix with unrelated tunes sharing a formula, so the split, which
should merge only what is one tune, uses 0.4, and the evaluation's leakage check, which should
rather over- than under-count, uses ``LEAKAGE_THRESHOLD`` (0.25).

Search. All pairs above a threshold by a sparse product of the piece-by-figure incidence
matrix with its transpose (the inverted index done by scipy): exact, and about a second for
13,000 folk tunes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import symusic
from scipy import sparse

from musicgen.metrics.features import melody

#: Intervals per figure (a figure is NGRAM + 1 distinct successive notes).
NGRAM = 5
#: The union of two figure sets counts as at least this many figures.
MIN_UNION = 20
#: Pieces at least this similar are kept on one side of the split (one tune).
SPLIT_THRESHOLD = 0.4
#: The evaluation counts a test piece as leaked if a training piece is at least this similar.
LEAKAGE_THRESHOLD = 0.25

_MAX_STEP = 63  # intervals are clipped to +-63 semitones, each coded in 7 bits
_ROWS_PER_BLOCK = 2048  # rows of the sparse product per block (bounds its memory)


def contour(pitches: Sequence[int] | np.ndarray) -> np.ndarray:
    """Successive intervals (semitones, int64) of a pitch sequence with repeated notes merged."""
    p = np.asarray(pitches, dtype=np.int64)
    if len(p) == 0:
        return np.zeros(0, dtype=np.int64)
    p = p[np.r_[True, p[1:] != p[:-1]]]
    return np.diff(p)


def score_contour(score: symusic.Score) -> np.ndarray:
    """The ``contour`` of a score's melody (``features.melody``)."""
    return contour(melody(score)[0])


def signature(intervals: Sequence[int] | np.ndarray, n: int = NGRAM) -> np.ndarray:
    """The set of ``n``-grams of a contour, each coded as one int64, sorted and unique."""
    if not 1 <= n <= 9:
        raise ValueError(f"n={n} must be in 1..9 (an n-gram is coded in 7 bits per interval)")
    d = np.clip(np.asarray(intervals, dtype=np.int64), -_MAX_STEP, _MAX_STEP) + _MAX_STEP + 1
    if len(d) < n:
        return np.zeros(0, dtype=np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(d, n)
    codes = np.zeros(len(windows), dtype=np.int64)
    for k in range(n):
        codes = codes * 128 + windows[:, k]
    return np.unique(codes)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """``|a & b| / max(|a | b|, MIN_UNION)`` of two signatures (see the module docstring)."""
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / max(len(a) + len(b) - inter, MIN_UNION)


def _incidence(signatures: Sequence[np.ndarray], vocab: dict[int, int]) -> sparse.csr_matrix:
    """Piece-by-figure 0/1 matrix; figures missing from ``vocab`` are added to it."""
    cols: list[int] = []
    for sig in signatures:
        cols += [vocab.setdefault(int(c), len(vocab)) for c in sig]
    rows = np.repeat(np.arange(len(signatures)), [len(s) for s in signatures])
    data = np.ones(len(cols), dtype=np.float32)  # counts below 2**24: exact in float32
    return sparse.csr_matrix((data, (rows, np.array(cols, dtype=np.int64))), shape=(len(signatures), len(vocab)))


def _similar_blocks(queries: Sequence[np.ndarray], references: Sequence[np.ndarray]):
    """Yield ``(query rows, reference columns, similarities)`` of every pair sharing a figure."""
    vocab: dict[int, int] = {}
    ref = _incidence(references, vocab)
    qry = _incidence(queries, vocab)
    ref = sparse.csr_matrix((ref.data, ref.indices, ref.indptr), shape=(ref.shape[0], len(vocab)))
    ref_t = ref.T.tocsr()
    q_size = np.array([len(s) for s in queries], dtype=np.float64)
    r_size = np.array([len(s) for s in references], dtype=np.float64)
    for start in range(0, len(queries), _ROWS_PER_BLOCK):
        inter = (qry[start : start + _ROWS_PER_BLOCK] @ ref_t).tocoo()
        rows = inter.row.astype(np.int64) + start
        cols = inter.col.astype(np.int64)
        union = q_size[rows] + r_size[cols] - inter.data
        yield rows, cols, inter.data / np.maximum(union, MIN_UNION)


def near_duplicate_pairs(signatures: Sequence[np.ndarray], threshold: float) -> list[tuple[int, int, float]]:
    """Every pair ``(i, j, similarity)``, ``i < j``, at least ``threshold`` similar, sorted."""
    _check_threshold(threshold)
    out = []
    for rows, cols, sim in _similar_blocks(signatures, signatures):
        keep = (rows < cols) & (sim >= threshold)
        out += zip(rows[keep].tolist(), cols[keep].tolist(), sim[keep].tolist())
    return sorted(out)


def nearest(queries: Sequence[np.ndarray], references: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the similarity of its most similar reference and that reference's index
    (0.0 and -1 where no reference shares a figure with it)."""
    best = np.zeros(len(queries))
    which = np.full(len(queries), -1, dtype=np.int64)
    if not len(queries) or not len(references):
        return best, which
    for rows, cols, sim in _similar_blocks(queries, references):
        if not len(rows):  # no query of this block shares a figure with any reference
            continue
        order = np.lexsort((-sim, rows))  # per row, the most similar first
        rows, cols, sim = rows[order], cols[order], sim[order]
        first = np.r_[True, rows[1:] != rows[:-1]]
        best[rows[first]], which[rows[first]] = sim[first], cols[first]
    return best, which


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"a near-duplicate threshold must be in (0, 1], got {threshold}")


__all__ = [
    "LEAKAGE_THRESHOLD", "MIN_UNION", "NGRAM", "SPLIT_THRESHOLD", "contour", "near_duplicate_pairs", "nearest",
    "score_contour", "signature", "similarity",
]
