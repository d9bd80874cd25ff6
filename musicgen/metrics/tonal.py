"""Tonal figures of one piece that do not change when the piece is transposed.

The absolute pitch-class histogram of a set of pieces mixes two things: whether each piece
keeps to a scale, and which keys the pieces are in. A model trained on transposed copies of
its pieces spreads its samples over all keys, so its pooled pitch classes differ from those of
the (untransposed) real pieces even when every sample is perfectly tonal. The figures here are
properties of each piece on its own, so transposing a piece leaves them unchanged:

- ``scale_consistency``: the largest share of the piece's notes that lie in one of the 24
  major or (natural) minor scales, as MusPy defines it (``muspy.scale_consistency``, after
  Mogren 2016): notes counted once each, drum tracks left out.
- ``pitch_in_scale``: the share of notes in the scale of the piece's estimated key
  (``musicgen.control.attributes.estimate_key``: duration-weighted Krumhansl-Schmuckler; a
  minor key's scale is the natural minor, as above), so at most ``scale_consistency``.
- ``key_clarity``: the best of the 24 key-profile correlations
  (``musicgen.control.attributes.key_correlations``; 1 = the durations follow a key profile
  exactly, near 0 = no key stands out).
- ``tonic_pitch_classes``: the note-count pitch-class histogram (as ``features``'
  ``pitch_class``) rotated so bin 0 is the estimated tonic: bin 7 is the fifth whatever the
  key. Pooled over pieces it compares tonal vocabularies without comparing keys.
- ``pitch_class_entropy``: the Shannon entropy (bits) of the normalised note-count pitch-class
  histogram, as ``muspy.pitch_class_entropy`` (0 = one pitch class, log2 12 = all equally).

A piece without notes has no value for the shares, clarity and entropy (NaN).
"""

from __future__ import annotations

import math

import numpy as np
import symusic

from musicgen.control.attributes import KEYS, TONICS, key_correlations, pitch_class_histogram

MAJOR_SCALE = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], dtype=bool)
MINOR_SCALE = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0], dtype=bool)  # natural minor

#: (24, 12) scale masks in ``KEYS`` order: C major .. B major, C minor .. B minor.
SCALES = np.stack([np.roll(s, root) for s in (MAJOR_SCALE, MINOR_SCALE) for root in range(12)])

#: Bin labels of the tonic-relative histogram: scale degrees in semitones above the tonic.
TONIC_DEGREES = ("1", "b2", "2", "b3", "3", "4", "#4", "5", "b6", "6", "b7", "7")


def note_pitch_classes(score: symusic.Score) -> np.ndarray:
    """(12,) how many non-drum notes the score has in each pitch class (C = 0)."""
    hist = np.zeros(12)
    for track in score.tracks:
        if track.is_drum or not len(track.notes):
            continue
        hist += np.bincount(track.notes.numpy()["pitch"].astype(np.int64) % 12, minlength=12)
    return hist


def scale_shares(counts: np.ndarray) -> np.ndarray:
    """(24,) share of the notes (``counts``: per pitch class) in each scale of ``SCALES``."""
    total = counts.sum()
    return SCALES @ counts / total if total > 0 else np.full(len(SCALES), math.nan)


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy in bits of a count histogram (NaN if empty)."""
    total = counts.sum()
    if total <= 0:
        return math.nan
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def tonal_features(score: symusic.Score) -> dict:
    """The tonal figures of one score (see the module docstring) and its estimated ``key``."""
    counts = note_pitch_classes(score)
    correlations = key_correlations(pitch_class_histogram(score))
    best = int(np.argmax(correlations))  # the same choice as estimate_key
    tonic = TONICS.index(KEYS[best].split("_")[0])
    shares = scale_shares(counts)
    empty = counts.sum() <= 0
    return {
        "key": KEYS[best],
        "scale_consistency": float(shares.max()) if not empty else math.nan,
        "pitch_in_scale": float(shares[best]),
        "key_clarity": float(correlations[best]) if not empty else math.nan,
        "tonic_pitch_classes": np.roll(counts, -tonic),
        "pitch_class_entropy": entropy_bits(counts),
    }
