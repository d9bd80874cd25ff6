"""Pitch-string tokeniser of versions V1-V5: one token per onset, no timing.

A single note becomes its name with sharps only and middle C = C4 = MIDI 60 ("C4", "F#3").
Several notes starting together become one chord token: their pitch classes in music21's
normal order, joined by dots ("0.4.7", "7.11.2"), the way ``str(n) for n in chord.normalOrder``
wrote them in the original scripts. Durations, rests and velocities are dropped, so a
sequence is just the succession of onsets.

Onsets are compared after rounding to a grid of ``1 / onsets_per_quarter`` quarter notes (a
32nd note by default): MIDI exported from a score or played by hand rarely starts a chord's
notes on exactly the same tick, and the original pipeline (music21's chordify of quantised
parts) saw such notes as one chord. Two notes of the same pitch at one onset (doubled parts)
count once; two different pitches that share a pitch class (an octave) still form a chord
("0"), as music21 did.

The vocabulary is learned from the training split (``train``): the special tokens at ids
0..3, then every string seen at least ``min_count`` times, notes ordered by pitch then chords
ordered by their pitch classes, so the same files always give the same ids. Strings not in
the vocabulary encode as UNK. The token cache trains it on the transposed copies of the
training files as well as on the originals (``learns_from_copies``): a transposed chord or
note is another string, and the model trains on the copies too, so a vocabulary learned from
the originals alone would turn a share of its training targets into UNK.

Decoding places one event per step of ``step_ticks`` (an eighth note at the default 480
ticks per quarter, the 0.5 offset increment of the original scripts), each lasting one step.
A chord is voiced upwards from octave 4: its first normal-order pitch class in octave 4 and
each following one at the next higher matching pitch, so "7.11.2" becomes G4 B4 D5; a
one-class chord (octaves, "0") becomes C4 C5. Every token string so reads back unchanged.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import symusic

from musicgen import midi_io
from musicgen.fs import atomic_write_text
from musicgen.tokenizers.base import BadMidiError, MusicTokenizer

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("PAD", "BOS", "EOS", "UNK")
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_NOTE_RE = re.compile(r"^([A-G]#?)(-?\d+)$")


def pitch_name(pitch: int) -> str:
    """MIDI pitch -> name with sharps, middle C (60) = "C4"."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def name_pitch(name: str) -> int:
    """Inverse of ``pitch_name``; raises ``ValueError`` for anything else."""
    m = _NOTE_RE.match(name)
    if m is None or m.group(1) not in NOTE_NAMES:
        raise ValueError(f"not a note name: {name!r}")
    pitch = NOTE_NAMES.index(m.group(1)) + 12 * (int(m.group(2)) + 1)
    if not 0 <= pitch <= 127:
        raise ValueError(f"note {name!r} is outside MIDI pitches 0..127")
    return pitch


@functools.lru_cache(maxsize=4096)
def normal_order(pc_mask: int) -> tuple[int, ...]:
    """music21's ``Chord.normalOrder`` of the pitch-class set given as a 12-bit mask.

    There are only 4095 non-empty sets, so music21 is asked once per set and remembered:
    exact music21 semantics (its tie-breaking included) at dictionary speed.
    """
    from music21 import chord  # slow import, only needed on a cache miss

    pcs = [pc for pc in range(12) if pc_mask >> pc & 1]
    return tuple(chord.Chord(pcs).normalOrder)


def _token_sort_key(token: str) -> tuple:
    """Notes by pitch first, then chords by their pitch-class lists."""
    if _NOTE_RE.match(token):
        return (0, name_pitch(token), ())
    return (1, 0, tuple(int(pc) for pc in token.split(".")))


class PitchTokenizer(MusicTokenizer):
    """Note names and normal-order chords, one token per onset; see the module docstring."""

    kind = "pitch"
    #: The token cache trains it on the training files and their transposed copies (see above).
    learns_from_copies = True

    def __init__(
        self,
        min_count: int = 1,
        onsets_per_quarter: int = 8,
        step_ticks: int = 240,
        ticks_per_quarter: int = 480,
        velocity: int = 80,
    ) -> None:
        for name, value, low in (
            ("min_count", min_count, 1),
            ("onsets_per_quarter", onsets_per_quarter, 1),
            ("step_ticks", step_ticks, 1),
            ("ticks_per_quarter", ticks_per_quarter, 1),
            ("velocity", velocity, 1),
        ):
            if int(value) != value or value < low:
                raise ValueError(f"PitchTokenizer: {name} must be an integer >= {low}, got {value!r}")
        if velocity > 127:
            raise ValueError(f"PitchTokenizer: velocity must be <= 127, got {velocity}")
        self.min_count = int(min_count)
        self.onsets_per_quarter = int(onsets_per_quarter)
        self.step_ticks = int(step_ticks)
        self.ticks_per_quarter = int(ticks_per_quarter)
        self.velocity = int(velocity)
        self._set_vocab([])

    # ----------------------------------------------------------------- vocabulary
    def _set_vocab(self, tokens: Sequence[str]) -> None:
        self.itos: list[str] = [*SPECIAL_TOKENS, *tokens]
        self.stoi: dict[str, int] = {s: i for i, s in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("PitchTokenizer: duplicated tokens in the vocabulary")

    @property
    def is_trained(self) -> bool:
        return len(self.itos) > len(SPECIAL_TOKENS)

    def train(self, paths: Iterable[Path | str | symusic.Score]) -> None:
        """Vocabulary = every string seen at least ``min_count`` times in ``paths``: MIDI files or
        scores (e.g. transposed copies), read one at a time.

        Files that ``read_score`` rejects are skipped with a warning (the data pipeline
        filters them earlier, so here they are not expected).
        """
        counts: Counter[str] = Counter()
        bad: list[str] = []
        n = 0
        for source in paths:
            n += 1
            try:
                counts.update(self.to_strings(source))
            except BadMidiError as e:
                bad.append(str(e))
        if not counts:
            raise ValueError(
                f"PitchTokenizer.train: no usable notes in {n} files"
                + (f" ({len(bad)} rejected, first: {bad[0]})" if bad else "")
            )
        if bad:
            log.warning("PitchTokenizer.train: skipped %d of %d files; first: %s", len(bad), n, bad[0])
        kept = [s for s, c in counts.items() if c >= self.min_count]
        if not kept:
            raise ValueError(
                f"PitchTokenizer.train: min_count={self.min_count} leaves no token "
                f"(the most frequent string occurs {max(counts.values())} times)"
            )
        self._set_vocab(sorted(kept, key=_token_sort_key))

    # ----------------------------------------------------------------- encoding
    def to_strings(self, source: Path | str | symusic.Score) -> list[str]:
        """The piece as pitch strings, one per (quantised) onset."""
        if isinstance(source, (str, Path)):
            score = midi_io.read_score(source)
        else:
            score = midi_io.merge_tracks(source)
        if not isinstance(score, symusic.core.ScoreTick):
            score = score.to("tick")
        arrays = score.tracks[0].notes.numpy()
        grid = score.ticks_per_quarter / self.onsets_per_quarter
        onsets = np.rint(arrays["time"] / grid).astype(np.int64)
        pitches = arrays["pitch"].astype(np.int64)
        order = np.lexsort((pitches, onsets))
        onsets, pitches = onsets[order], pitches[order]
        # split into groups of equal quantised onset
        bounds = np.flatnonzero(np.diff(onsets)) + 1
        out = []
        for group in np.split(pitches, bounds):
            distinct = np.unique(group)
            if len(distinct) == 1:
                out.append(pitch_name(int(distinct[0])))
            else:
                mask = 0
                for pc in (distinct % 12).tolist():
                    mask |= 1 << pc
                out.append(".".join(map(str, normal_order(mask))))
        return out

    def encode(self, source: Path | str | symusic.Score) -> list[int]:
        if not self.is_trained:
            raise RuntimeError("PitchTokenizer.encode: empty vocabulary; call train() or load() first")
        unk = self.unk_id
        return [self.stoi.get(s, unk) for s in self.to_strings(source)]

    # ----------------------------------------------------------------- decoding
    def _token_pitches(self, token: str) -> list[int]:
        if _NOTE_RE.match(token):
            return [name_pitch(token)]
        pcs = [int(p) for p in token.split(".")]
        if len(pcs) == 1:  # octaves only ("0"): two notes, so it reads back as a chord
            return [60 + pcs[0], 72 + pcs[0]]
        pitches, low = [], 59  # the first pitch class lands in octave 4 (60..71)
        for pc in pcs:
            pitch = low + 1 + (pc - low - 1) % 12
            pitches.append(pitch)
            low = pitch
        return [p for p in pitches if p <= 127]

    def decode(self, ids: Sequence[int]) -> symusic.Score:
        """One event per step; special ids and ids outside the vocabulary are skipped."""
        score = symusic.Score(self.ticks_per_quarter)
        score.tempos.append(symusic.Tempo(0, 120.0))
        score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
        track = symusic.Track(name="piano", program=0, is_drum=False)
        step = 0
        n_special = len(SPECIAL_TOKENS)
        for i in ids:
            i = int(i)
            if not n_special <= i < len(self.itos):
                continue
            for pitch in self._token_pitches(self.itos[i]):
                note = symusic.Note(step * self.step_ticks, self.step_ticks, pitch, self.velocity)
                track.notes.append(note)
            step += 1
        score.tracks.append(track)
        return score

    def syntax_errors(self, ids: Sequence[int]) -> int:
        """Special or out-of-vocabulary ids in the body (a leading BOS and a trailing EOS are fine)."""
        body = strip_bos_eos([int(i) for i in ids], self.bos_id, self.eos_id)
        n_special = len(SPECIAL_TOKENS)
        return sum(1 for i in body if not n_special <= i < len(self.itos))

    # ----------------------------------------------------------------- persistence
    def _options(self) -> dict[str, int]:
        return {
            "min_count": self.min_count,
            "onsets_per_quarter": self.onsets_per_quarter,
            "step_ticks": self.step_ticks,
            "ticks_per_quarter": self.ticks_per_quarter,
            "velocity": self.velocity,
        }

    def save(self, path: Path | str) -> None:
        data = {"musicgen": {"kind": self.kind, "options": self._options()}, "vocab": self.itos}
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path | str) -> PitchTokenizer:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        meta = data.get("musicgen", {})
        if meta.get("kind") != cls.kind:
            raise ValueError(f"{path}: not a pitch tokeniser file (kind {meta.get('kind')!r})")
        vocab = data["vocab"]
        if tuple(vocab[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"{path}: vocabulary must start with {SPECIAL_TOKENS}")
        tok = cls(**meta["options"])
        tok._set_vocab(vocab[len(SPECIAL_TOKENS) :])
        return tok

    # ----------------------------------------------------------------- properties
    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    @property
    def pitch_range(self) -> tuple[int, int]:
        return (0, 127)

    def config_dict(self) -> dict[str, Any]:
        """Options and the learned vocabulary itself (ids depend on every entry)."""
        return {"kind": self.kind, **self._options(), "vocab": list(self.itos)}


def strip_bos_eos(ids: list[int], bos: int, eos: int) -> list[int]:
    """Drop one leading BOS and one trailing EOS, which frame a well-formed sequence."""
    if ids and ids[0] == bos:
        ids = ids[1:]
    if ids and ids[-1] == eos:
        ids = ids[:-1]
    return ids
