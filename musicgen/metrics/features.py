"""Tokeniser-independent features of a piece (Yang & Lerch 2018 style), as per-piece count vectors.

A model's tokens say little across tokenisers (a pitch-string token is a whole onset, a REMI
note is four tokens, a BPE token anything), so samples are compared on the decoded music: the
``symusic.Score`` a tokeniser's ``decode`` returns, the same kind of object whatever the
tokeniser. ``piece_features`` turns one score into fixed-length count vectors (histograms); the
histogram of a set of pieces is the sum of its pieces' vectors, so per-piece vectors can be
stacked, summed and bootstrapped over pieces (``musicgen.metrics.bootstrap``).

Notes are those of every non-drum track. The histograms (``HISTOGRAMS`` names them and their
bins, for reports and plots):

- ``pitch`` (128): MIDI pitches 0..127 of all notes.
- ``pitch_class`` (12): pitch mod 12, C = 0.
- ``interval`` (25): the melodic interval between consecutive onsets of the melody, clipped to
  -12..+12 semitones (a leap of more than an octave counts as one octave). The melody is the
  highest note of each onset (the "skyline" rule: in a chorale or a harmonised tune the top
  voice carries the tune), and notes whose onsets fall on the same 32nd note (``ONSET_GRID``)
  form one onset, as in the pitch tokeniser: MIDI from scores or played by hand rarely starts
  a chord's notes on exactly the same tick.
- ``duration`` (11) and ``ioi`` (11): note durations and inter-onset intervals (between
  consecutive onsets as above, from the earliest note of one to that of the next, unrounded,
  so triplets stay triplets) in quarter notes, binned to the nearest note value
  on a log scale (``DURATION_VALUES``: 32nd, 16th, dotted 16th, 8th, dotted 8th, quarter,
  dotted quarter, half, dotted half, whole), plus ``>4`` for anything longer. Bin edges are the
  geometric means of neighbouring values (so 0.9 and 1.1 quarters both count as a quarter,
  triplets go to the nearest: 1/3 to 3/8, 2/3 to 3/4, 4/3 to 3/2), which leaves the few-tick
  differences of performed or re-quantised MIDI in one bin; the last edge is the geometric mean
  of 4 and 6 (a dotted whole).
- ``notes_per_bar`` (17): bars holding 0, 1, ..., 15 and 16 or more note onsets (chord notes
  each count). Bars follow the score's time signatures (a bar of n/d lasts 4 n / d quarters,
  counted from the time signature's time); before the first one, or without any, bars are 4/4.
  Every bar from the first to the one of the last onset counts, empty bars (rests) included.
  (``use_time_signatures=False``: 4/4 bars throughout.)

plus the scalar ``notes`` (the number of notes, a 1-element vector).

``overlap`` and ``kl`` compare two histograms; ``PitchHistogram`` (``music.py``) uses them too.
"""

from __future__ import annotations

import math

import numpy as np
import symusic

N_PITCHES = 128

#: Notes whose onsets round to the same multiple of this (in quarter notes: a 32nd) are one onset.
ONSET_GRID = 1 / 8

MAX_INTERVAL = 12

#: Canonical note values in quarter notes; a duration or IOI counts as the nearest on a log scale.
DURATION_VALUES = (1 / 8, 1 / 4, 3 / 8, 1 / 2, 3 / 4, 1.0, 3 / 2, 2.0, 3.0, 4.0)

#: Upper edges of the duration / IOI bins but the last (overflow) one: geometric means of neighbours.
DURATION_EDGES = tuple(math.sqrt(a * b) for a, b in zip(DURATION_VALUES, (*DURATION_VALUES[1:], 6.0)))

MAX_NOTES_PER_BAR = 16

_DURATION_LABELS = ("1/8", "1/4", "3/8", "1/2", "3/4", "1", "3/2", "2", "3", "4", ">4")

#: Histogram name -> its bin labels (the order of ``piece_features``' vectors).
HISTOGRAMS: dict[str, tuple[str, ...]] = {
    "pitch": tuple(str(p) for p in range(N_PITCHES)),
    "pitch_class": ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"),
    "interval": tuple(f"{i:+d}" if i else "0" for i in range(-MAX_INTERVAL, MAX_INTERVAL + 1)),
    "duration": _DURATION_LABELS,
    "ioi": _DURATION_LABELS,
    "notes_per_bar": (*(str(i) for i in range(MAX_NOTES_PER_BAR)), f"{MAX_NOTES_PER_BAR}+"),
}

#: Every key of ``piece_features``: the histograms, then the scalar note count.
FEATURES: tuple[str, ...] = (*HISTOGRAMS, "notes")


# ----------------------------------------------------------------------------- notes


def _tick_score(score: symusic.Score) -> symusic.Score:
    """The score in ticks (decoded scores are; quarter or second scores are converted)."""
    return score if isinstance(score, symusic.core.ScoreTick) else score.to("tick")


def _notes(score: symusic.Score) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Onset ticks, duration ticks and pitches of all non-drum notes of a tick score, sorted by
    (onset, pitch), and the ticks per quarter note."""
    parts = [t.notes.numpy() for t in score.tracks if not t.is_drum and len(t.notes)]
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, float(score.ticks_per_quarter)
    time = np.concatenate([p["time"] for p in parts]).astype(np.int64)
    duration = np.concatenate([p["duration"] for p in parts]).astype(np.int64)
    pitch = np.concatenate([p["pitch"] for p in parts]).astype(np.int64)  # symusic keeps pitch as int8
    order = np.lexsort((pitch, time))
    return time[order], duration[order], pitch[order], float(score.ticks_per_quarter)


def _onset_groups(time: np.ndarray, tpq: float) -> tuple[np.ndarray, np.ndarray]:
    """Onsets of sorted note ticks, notes on the same ``ONSET_GRID`` step (rounded) being one:
    the tick of each onset's earliest note and, per note, the index of its onset. The ticks
    are not rounded, so a triplet's IOIs stay a third of a beat each."""
    steps = np.rint(time / (tpq * ONSET_GRID)).astype(np.int64)
    _, first, index = np.unique(steps, return_index=True, return_inverse=True)
    return time[first], index.reshape(-1)


def _skyline(index: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """Per onset group, the position of its highest note (the first such note if pitches tie).

    Notes of one quantised onset need not be sorted by pitch (their ticks may differ), hence
    the maximum per group rather than the group's last note."""
    n_onsets = int(index.max()) + 1
    top = np.full(n_onsets, -1, dtype=np.int64)
    np.maximum.at(top, index, pitch)
    is_top = pitch == top[index]
    first = np.full(n_onsets, len(pitch), dtype=np.int64)
    np.minimum.at(first, index[is_top], np.flatnonzero(is_top))
    return first


def melody(score: symusic.Score) -> tuple[np.ndarray, np.ndarray]:
    """The melody by the skyline rule: per onset (notes within one 32nd note together), the
    highest note's pitch and its duration in quarter notes, ordered by onset."""
    time, duration, pitch, tpq = _notes(_tick_score(score))
    if not len(time):
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    _, index = _onset_groups(time, tpq)
    top = _skyline(index, pitch)
    return pitch[top], duration[top] / tpq


def duration_bins(quarters: np.ndarray) -> np.ndarray:
    """Bin index (0..10, see ``DURATION_VALUES``) of each duration or IOI in quarter notes."""
    return np.searchsorted(np.asarray(DURATION_EDGES), np.asarray(quarters, dtype=np.float64), side="right")


def _bar_index(time: np.ndarray, score: symusic.Score, tpq: float, use_time_signatures: bool) -> np.ndarray:
    """Bar number of each onset tick, bars following the score's time signatures (4/4 before
    the first, or without any, or with ``use_time_signatures=False``)."""
    changes = [(0, 4 * tpq)]  # (start tick, bar length in ticks)
    for ts in sorted(score.time_signatures, key=lambda ts: ts.time) if use_time_signatures else ():
        if ts.numerator <= 0 or ts.denominator <= 0:
            continue
        start, length = int(ts.time), 4 * tpq * ts.numerator / ts.denominator
        if start == changes[-1][0]:
            changes[-1] = (start, length)
        else:
            changes.append((start, length))
    bars = np.zeros(len(time), dtype=np.int64)
    first_bar = 0
    for k, (start, length) in enumerate(changes):
        end = changes[k + 1][0] if k + 1 < len(changes) else None
        inside = (time >= start) if end is None else (time >= start) & (time < end)
        bars[inside] = first_bar + np.floor((time[inside] - start) / length).astype(np.int64)
        if end is not None:
            first_bar += math.ceil((end - start) / length)
    return bars


# ----------------------------------------------------------------------------- features


def piece_features(score: symusic.Score, use_time_signatures: bool = True) -> dict[str, np.ndarray]:
    """The count vectors of one piece: every histogram of ``HISTOGRAMS`` (int64, the bins named
    there) and ``notes``, the number of notes as a 1-element vector. A score without notes
    gives zeros everywhere.

    ``use_time_signatures=False`` counts notes per 4/4 bar whatever the score says: the REMI
    tokenisers here drop time signatures (their bars are 4/4) and the pitch tokeniser decodes
    to 4/4, so a MIDI file's own features compare with decoded samples' only that way (the
    same pieces decoded by the tokeniser already agree).
    """
    score = _tick_score(score)
    time, duration, pitch, tpq = _notes(score)
    out: dict[str, np.ndarray] = {
        "pitch": np.bincount(pitch, minlength=N_PITCHES),
        "pitch_class": np.bincount(pitch % 12, minlength=12),
    }
    if len(time):
        onsets, index = _onset_groups(time, tpq)
        tops = pitch[_skyline(index, pitch)]
        intervals = np.clip(np.diff(tops), -MAX_INTERVAL, MAX_INTERVAL) + MAX_INTERVAL
        ioi = np.diff(onsets) / tpq
        per_bar = np.bincount(np.maximum(_bar_index(time, score, tpq, use_time_signatures), 0))  # bars 0..last onset's
    else:
        intervals = ioi = per_bar = np.zeros(0, dtype=np.int64)
    n_dur = len(DURATION_VALUES) + 1
    out["interval"] = np.bincount(intervals, minlength=2 * MAX_INTERVAL + 1)
    out["duration"] = np.bincount(duration_bins(duration / tpq), minlength=n_dur)
    out["ioi"] = np.bincount(duration_bins(ioi), minlength=n_dur)
    out["notes_per_bar"] = np.bincount(np.minimum(per_bar, MAX_NOTES_PER_BAR), minlength=MAX_NOTES_PER_BAR + 1)
    out["notes"] = np.array([len(time)], dtype=np.int64)
    return {k: out[k].astype(np.int64) for k in FEATURES}


# ----------------------------------------------------------------------------- comparisons


def _normalise(counts: np.ndarray) -> np.ndarray:
    """Counts divided by their sum along the last axis; NaN where the sum is 0 (no warning)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=-1, keepdims=True)
    return np.divide(counts, total, out=np.full(counts.shape, np.nan), where=total > 0)


def overlap(p: np.ndarray, q: np.ndarray) -> np.ndarray | float:
    """Overlapping area ``sum min(p, q)`` of two histograms, each normalised to sum 1 first:
    1 iff they are the same distribution, 0 iff they share no bin. Counts or probabilities
    along the last axis (broadcast, e.g. ``(B, K)`` against ``(K,)``); NaN for an empty one."""
    out = np.minimum(_normalise(p), _normalise(q)).sum(axis=-1)
    return float(out) if out.ndim == 0 else out


def kl(p: np.ndarray, q: np.ndarray, eps: float = 1e-6) -> np.ndarray | float:
    """KL(p || q) in nats of two histograms (counts or probabilities along the last axis,
    broadcast like ``overlap``), both normalised and smoothed as ``(x + eps) / (1 + K eps)``
    with K bins, so a bin where q is 0 costs a finite amount. With p the generated and q the
    reference histogram it is large when samples use what the reference (almost) never does,
    and forgiving when they cover only part of it; 0 iff they match. NaN for an empty one."""
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    p, q = _normalise(p), _normalise(q)
    k = p.shape[-1]
    p_s, q_s = (p + eps) / (1 + k * eps), (q + eps) / (1 + k * eps)
    out = (p_s * np.log(p_s / q_s)).sum(axis=-1)
    return float(out) if out.ndim == 0 else out


__all__ = [
    "DURATION_EDGES",
    "DURATION_VALUES",
    "FEATURES",
    "HISTOGRAMS",
    "ONSET_GRID",
    "duration_bins",
    "kl",
    "melody",
    "overlap",
    "piece_features",
]
