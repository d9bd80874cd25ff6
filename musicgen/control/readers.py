"""Readers that did not make the conditioning labels: what ``musicgen control`` reads a sample's key
and metre with, so a hit is the notes agreeing with the request rather than the labeller agreeing
with itself or a token being copied. Leaf module: knows symusic, nothing of models.

- ``key_of``: the correlation key finder (Krumhansl-Schmuckler's method) with Temperley-Kostka-Payne
  key profiles, where the labeller (``estimate_key``, or the key signature) uses Krumhansl-Kessler's.
- ``metre_from_notes``: the bar and beat pattern the onsets fit best (a metrical model of onset
  chances, matched at every phase of the onset grid), never the file's time-signature events.
- Tempo stays ``musicgen.control.attributes.tempo_of``: the tempo the MIDI file plays at is the
  score's tempo event, so reading the event is reading the attribute.
"""

from __future__ import annotations

import numpy as np
import symusic

from musicgen.control.attributes import KEYS, METRES, pitch_class_histogram

#: Temperley's key profiles from the Kostka-Payne harmony textbook's excerpts (Temperley 2007,
#: "Music and Probability"), tonic first, as music21 ships them
#: (``music21.analysis.discrete.TemperleyKostkaPayne.getWeights``, music21 9).
TKP_MAJOR = np.array([0.748, 0.060, 0.488, 0.082, 0.670, 0.460, 0.096, 0.715, 0.104, 0.366, 0.057, 0.400])

TKP_MINOR = np.array([0.712, 0.084, 0.474, 0.618, 0.049, 0.460, 0.105, 0.747, 0.404, 0.067, 0.133, 0.330])

#: Grid of the onset reader: sixteenth notes (every metre of ``METRES`` has its beats on it).
STEPS_PER_QUARTER = 4

#: The metres ``metre_from_notes`` chooses among (``METRES`` without ``other``), each as the grid
#: positions (sixteenths) of its bar's metrical levels, strongest first: the downbeat, the middle
#: of a 4/4 bar, the beats (quarters; dotted quarters in x/8), the eighths and the sixteenths.
METRE_LEVELS: dict[str, tuple[int, ...]] = {
    "4/4": (16, 8, 4, 2, 1),
    "2/4": (8, 8, 4, 2, 1),
    "3/4": (12, 12, 4, 2, 1),
    "6/8": (12, 12, 6, 2, 1),
    "9/8": (18, 18, 6, 2, 1),
}

#: The chance of an onset at a position of each level (downbeat, half bar, beat, eighth, sixteenth):
#: the metrical model's only parameters, tuned once by hand on every fourth tune of data/folk from
#: the first, then frozen (scripts/reader_ceiling.py reports the reader on the other tunes).
ONSET_CHANCE = np.array([0.95, 0.9, 0.8, 0.4, 0.05])

assert set(METRE_LEVELS) == set(METRES) - {"other"}


def _levels() -> dict[str, np.ndarray]:
    """Metre -> (bar,) level index (0 downbeat .. 4 sixteenth) of each grid position of its bar."""
    out = {}
    for metre, steps in METRE_LEVELS.items():
        pos = np.arange(steps[0])
        level = np.full(steps[0], len(steps) - 1)
        for k in range(len(steps) - 1, -1, -1):
            level[pos % steps[k] == 0] = k
        out[metre] = level
    return out


LEVELS = _levels()


def _notes(score: symusic.Score) -> tuple[np.ndarray, np.ndarray, int]:
    """Onsets and durations (ticks) of the non-drum notes, and the ticks per quarter."""
    score = score if isinstance(score, symusic.core.ScoreTick) else score.to("tick")
    parts = [t.notes.numpy() for t in score.tracks if not t.is_drum and len(t.notes)]
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), score.ticks_per_quarter
    onsets = np.concatenate([p["time"] for p in parts]).astype(np.int64)
    durations = np.concatenate([p["duration"] for p in parts]).astype(np.int64)
    return onsets, durations, score.ticks_per_quarter


def key_of(score: symusic.Score) -> str:
    """The key of a score's notes by the Temperley-Kostka-Payne profiles (``"D_major"``): the best
    Pearson correlation of the duration-weighted pitch-class histogram with the 24 rotated profiles.
    No notes (or every pitch class alike): ``KEYS[0]``."""
    hist = pitch_class_histogram(score)
    if hist.sum() <= 0 or np.all(hist == hist[0]):
        return KEYS[0]
    corr = [np.corrcoef(hist, np.roll(profile, tonic))[0, 1]
            for profile in (TKP_MAJOR, TKP_MINOR) for tonic in range(12)]
    return KEYS[int(np.argmax(corr))]


def metre_scores(score: symusic.Score) -> dict[str, float]:
    """Log-likelihood per grid position of the notes' onsets under each metre of ``METRE_LEVELS``
    (at its best phase): the onsets on a sixteenth grid from the first to the last, each position
    an onset or not with the chance ``ONSET_CHANCE`` gives its level. Time signatures and bar lines
    are not read. No notes: every metre 0."""
    onsets, _, tpq = _notes(score)
    out = dict.fromkeys(METRE_LEVELS, 0.0)
    if not len(onsets):
        return out
    pos = np.unique(np.rint(onsets * STEPS_PER_QUARTER / tpq).astype(np.int64))
    grid = np.zeros(pos[-1] - pos[0] + 1)
    grid[pos - pos[0]] = 1.0
    hit, miss = np.log(ONSET_CHANCE), np.log1p(-ONSET_CHANCE)
    for metre, level in LEVELS.items():
        bar = len(level)
        t = np.arange(len(grid))
        best = -np.inf
        for phase in range(bar):
            lv = level[(t + phase) % bar]
            best = max(best, float(np.sum(np.where(grid > 0, hit[lv], miss[lv]))))
        out[metre] = best / len(grid)
    return out


def metre_from_notes(score: symusic.Score) -> str:
    """The metre of ``METRE_LEVELS`` under which the onsets are likeliest (``metre_scores``); ties go
    to the first in ``METRE_LEVELS`` order."""
    scores = metre_scores(score)
    return max(scores, key=lambda m: scores[m])
