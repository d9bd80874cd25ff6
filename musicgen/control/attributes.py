"""Musical attributes of a piece, read from its notes and file: key (Krumhansl-Schmuckler), metre,
tempo, style (the source collection) and note density. These make the conditioning labels; what
reads a sample's attributes back is ``musicgen.control.readers``. Leaf module: knows symusic,
nothing of models."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import symusic

from musicgen.errors import ConfigError

ATTRIBUTES = ("key", "metre", "tempo", "style", "density")

NULL = "none"

TONICS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

#: other spellings accepted on input
TONIC_ALIASES = {"Db": "C#", "D#": "Eb", "Gb": "F#", "G#": "Ab", "A#": "Bb", "Cb": "B", "Fb": "E",
                 "E#": "F", "B#": "C"}

MODES = ("major", "minor")

#: where a piece's key attribute comes from (``file_key``)
KEY_SOURCES = ("signature", "notes")

KEYS = tuple(f"{t}_{m}" for m in MODES for t in TONICS)

METRES = ("4/4", "3/4", "6/8", "2/4", "9/8", "other")

TEMPO_EDGES = (70, 90, 110, 130, 160)  # quarter notes per minute

DENSITY_EDGES = (2, 4, 6, 8, 12, 16, 24)  # notes per bar

#: Krumhansl & Kessler (1982) key profiles, tonic first.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])

MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

COPY_SUFFIX = re.compile(r"@([+-]\d+)$")

def _bins(edges: Sequence[int]) -> tuple[str, ...]:
    return (f"<{edges[0]}", *(f"{a}-{b}" for a, b in zip(edges, edges[1:])), f"{edges[-1]}+")

TEMPOS = _bins(TEMPO_EDGES)

DENSITIES = _bins(DENSITY_EDGES)

def _bin(value: float, edges: Sequence[int]) -> str:
    return _bins(edges)[int(np.searchsorted(edges, value, side="right"))]

def pitch_class_histogram(score: symusic.Score) -> np.ndarray:
    """(12,) total duration (ticks) of the non-drum notes of each pitch class."""
    hist = np.zeros(12)
    for t in score.tracks:
        if t.is_drum or not len(t.notes):
            continue
        n = t.notes.numpy()
        np.add.at(hist, n["pitch"] % 12, np.maximum(n["duration"], 1))
    return hist

def key_correlations(hist: np.ndarray) -> np.ndarray:
    """(24,) Pearson correlation of ``hist`` with each key's profile, in ``KEYS`` order."""
    out = np.zeros(24)
    if hist.sum() <= 0 or np.all(hist == hist[0]):
        return out
    for m, profile in enumerate((MAJOR_PROFILE, MINOR_PROFILE)):
        for tonic in range(12):
            out[12 * m + tonic] = np.corrcoef(hist, np.roll(profile, tonic))[0, 1]
    return out

def estimate_key(score: symusic.Score) -> str:
    """Krumhansl-Schmuckler key of a score's notes (duration-weighted): ``"D_major"``."""
    return KEYS[int(np.argmax(key_correlations(pitch_class_histogram(score))))]

def signature_key(sharps: int, minor: bool, hist: np.ndarray | None = None) -> str:
    """The key of a signature (``sharps`` < 0: flats). Marked minor: the relative minor. Marked
    major: the major key, unless ``hist`` is given and correlates better with the relative minor."""
    major = (7 * sharps) % 12
    if minor:
        return f"{TONICS[(major + 9) % 12]}_minor"
    if hist is not None:
        corr = key_correlations(hist)
        if corr[12 + (major + 9) % 12] > corr[major]:
            return f"{TONICS[(major + 9) % 12]}_minor"
    return f"{TONICS[major]}_major"

def key_signature_sharps(key: str) -> int:
    """Sharps (> 0) or flats (< 0) of a key's signature, in -5..6 (``"D_major"`` -> 2)."""
    tonic, mode = key.split("_")
    major = TONICS.index(tonic) if mode == "major" else (TONICS.index(tonic) + 3) % 12
    sharps = (major * 7) % 12  # 7 is its own inverse mod 12
    return sharps - 12 if sharps > 6 else sharps

def transpose_key(key: str, shift: int) -> str:
    tonic, mode = key.split("_")
    return f"{TONICS[(TONICS.index(tonic) + shift) % 12]}_{mode}"

def file_key(score: symusic.Score, source: str = "signature") -> str:
    """The key attribute of a score. ``source="signature"``: from its first key signature where
    present, else estimated; ``"notes"``: always estimated from the notes (``estimate_key``). The
    labeller: adherence is read by another estimator (``musicgen.control.readers.key_of``)."""
    if source not in KEY_SOURCES:
        raise ConfigError(f"conditioning.key_source={source!r}: choose from {list(KEY_SOURCES)}")
    hist = pitch_class_histogram(score)
    if source == "signature" and len(score.key_signatures):
        ks = score.key_signatures[0]
        return signature_key(int(ks.key), int(ks.tonality) == 1, hist)
    return KEYS[int(np.argmax(key_correlations(hist)))]

def metre_of(score: symusic.Score) -> str:
    if not len(score.time_signatures):
        return "4/4"
    ts = score.time_signatures[0]
    name = f"{ts.numerator}/{ts.denominator}"
    return name if name in METRES else "other"

def tempo_of(score: symusic.Score) -> str:
    qpm = float(score.tempos[0].qpm) if len(score.tempos) else 120.0
    return _bin(qpm, TEMPO_EDGES)

def density_of(score: symusic.Score) -> str:
    """Bin of notes per bar (bars of the first time signature, counted to the last note's end)."""
    score = score.to("tick") if not isinstance(score, symusic.core.ScoreTick) else score
    num, den = (score.time_signatures[0].numerator, score.time_signatures[0].denominator) \
        if len(score.time_signatures) else (4, 4)
    bar = max(1, score.ticks_per_quarter * 4 * num // den)
    notes = sum(len(t.notes) for t in score.tracks if not t.is_drum)
    end = max((t.end() for t in score.tracks if not t.is_drum and len(t.notes)), default=0)
    return _bin(notes / max(1, math.ceil(end / bar)), DENSITY_EDGES)

def style_of(name: str) -> str:
    """The style of a document name (``folk/oneills1850/0001-0050/0003.mid`` -> oneills1850)."""
    parts = COPY_SUFFIX.sub("", name).split("/")
    if parts[0] in ("chorales", "maestro"):
        return parts[0]
    return parts[1] if len(parts) > 2 else parts[0]

def extract_attributes(score: symusic.Score, name: str = "", key_source: str = "signature") -> dict[str, str]:
    """Every attribute of one piece (``name``: its document name, for the style; a transposed copy's
    ``@+k`` suffix moves the key; ``key_source``: see ``file_key``)."""
    m = COPY_SUFFIX.search(name)
    key = file_key(score, key_source)
    return {
        "key": transpose_key(key, int(m.group(1))) if m else key,
        "metre": metre_of(score),
        "tempo": tempo_of(score),
        "style": style_of(name),
        "density": density_of(score),
    }
