"""Rhythm-aware inputs for the Pearce (2005) benchmark's networks (``musicgen.experiments.pearce2005``).

Each note event of a melody (the same events as ``data.melody_events``: tied notes one
event, rests and grace notes none, a chord its highest note) keeps, beside its pitch:
- ``duration``: its length in quarter notes (a tied note: the whole of it);
- ``ioi``: the inter-onset interval from the previous event, in quarter notes (rests included;
  none for the first note);
- ``bar_position``: its onset from the start of its bar, in quarter notes (a pickup bar counted from
  where its full bar would start: the measure's ``paddingLeft``);
- ``fermata``: whether it (or a note tied into it) carries a fermata;
- ``key_sharps``: the key signature in effect (sharps positive, flats negative);
- ``mode``: the mode the score states with its key (MusicXML ``<mode>``; music21 reads ABC's key
  field as major when it names none, so on the Essen collections it says nothing).

A network sees them through ``RhythmNet``: one embedding table per feature and slot, summed with the
pitch embedding at each input position. Input position ``i`` (token: the pitch of note ``i - 1``, or
the start token at ``i = 0``) predicts note ``i`` and adds the ``earlier`` features of note ``i - 1``
(none at ``i = 0``) and the ``current`` features of note ``i`` (the like-for-like variant with
IDyOM's linked viewpoints, which see the onset and duration of the note whose pitch they predict);
never the pitch of note ``i`` or of any later note. Imports no other module of the benchmark."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

#: Time features are kept to a twelfth of a quarter note (triplets exact), up to 16 quarter notes.
TICKS, MAX_TICKS = 12, 12 * 16
MODES = {"major": 1, "minor": 2}  # 0: none stated; 3: another mode
#: Each feature's number of ids: 0 is "none" (before the first note, the first note's IOI).
FEATURES = {"duration": MAX_TICKS + 2, "ioi": MAX_TICKS + 2, "bar_position": MAX_TICKS + 2, "fermata": 3,
            "key_sharps": 16, "mode": 4}
NAMES = tuple(FEATURES)


def note_features(part) -> dict[str, list]:
    """A part's note events (as ``melody_events``) with their features, one list per name of
    ``FEATURES`` plus ``pitch``: times in quarter notes (floats), ``fermata`` 0/1, ``key_sharps``
    an int (None where no key signature is in effect), ``mode`` a string or None."""
    import bisect

    from music21 import chord, expressions, key, note, stream

    flat = part.flatten()
    bars = sorted((float(m.getOffsetInHierarchy(part)), float(m.paddingLeft))
                  for m in part.recurse().getElementsByClass(stream.Measure))
    starts = [b[0] for b in bars]

    def bar_position(n) -> float:
        if not bars:  # no measures written: music21's beat from the time signature
            return float((n.beat - 1) * n.beatDuration.quarterLength)
        start, padding = bars[max(bisect.bisect_right(starts, float(n.offset)) - 1, 0)]
        return float(n.offset) - start + padding

    events = []
    for n in flat.stripTies().notes:
        if n.duration.isGrace or n.duration.quarterLength == 0:
            continue
        if isinstance(n, chord.Chord):
            pitch = max(p.midi for p in n.pitches)
        elif isinstance(n, note.Note):
            pitch = n.pitch.midi
        else:
            continue
        ks = n.getContextByClass(key.KeySignature)
        events.append({"pitch": pitch, "onset": float(n.offset), "duration": float(n.duration.quarterLength),
                       "bar_position": bar_position(n),
                       "key_sharps": None if ks is None else int(ks.sharps),
                       "mode": getattr(ks, "mode", None) if isinstance(ks, key.Key) else None})
    # a fermata written on any note tied into an event belongs to that event
    marks = [float(n.offset) for n in flat.notes if any(isinstance(e, expressions.Fermata) for e in n.expressions)]
    out: dict[str, list] = {name: [] for name in ("pitch", *NAMES)}
    for i, e in enumerate(events):
        end = e["onset"] + e["duration"]
        out["pitch"].append(e["pitch"])
        out["duration"].append(round(e["duration"], 6))
        out["ioi"].append(None if i == 0 else round(e["onset"] - events[i - 1]["onset"], 6))
        out["bar_position"].append(round(e["bar_position"], 6))
        out["fermata"].append(int(any(e["onset"] <= m < end for m in marks)))
        out["key_sharps"].append(e["key_sharps"])
        out["mode"].append(e["mode"])
    return out


def _ticks(q: float | None) -> int:
    return 0 if q is None else 1 + min(max(int(round(q * TICKS)), 0), MAX_TICKS)


def feature_ids(features: dict[str, list]) -> np.ndarray:
    """``(n, len(NAMES))`` int ids of a melody's features (``note_features``'s lists), columns in
    ``NAMES``' order, 0 for "none"."""
    cols = [[_ticks(q) for q in features["duration"]], [_ticks(q) for q in features["ioi"]],
            [_ticks(q) for q in features["bar_position"]], [1 + int(bool(f)) for f in features["fermata"]],
            [0 if s is None else 8 + max(-7, min(7, int(s))) for s in features["key_sharps"]],
            [0 if m is None else MODES.get(m, 3) for m in features["mode"]]]
    return np.array(cols, dtype=np.int64).T.reshape(len(features["pitch"]), len(NAMES))


def transpose_key(ids: np.ndarray, semitones: int) -> np.ndarray:
    """Key-signature ids after transposing by ``semitones`` (the signature of the transposed key,
    between 5 flats and 6 sharps; 0 stays "none")."""
    sharps = ids - 8
    moved = (sharps + 7 * semitones + 5) % 12 - 5
    return np.where(ids == 0, 0, moved + 8)


def check_names(names: list[str], where: str) -> None:
    from musicgen.errors import ConfigError

    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ConfigError(f"{where}: unknown feature(s) {unknown}; the features are: {', '.join(NAMES)}")


class RhythmNet(nn.Module):
    """A pitch network (``MelodyLSTM`` or ``MusicTransformer``, which embed token ids in ``embed`` or
    ``tok_emb``) whose input embedding also sums one learnt embedding per feature slot: ``earlier``
    features of the previous note and ``current`` features of the note being predicted (see the
    module's docstring). ``forward(idx, feats)``: ``idx`` (B, T) ids, ``feats`` (B, T, slots) ids from
    ``inputs``, -> logits (B, T, V). The feature tables start at the pitch table's scale."""

    def __init__(self, net: nn.Module, earlier: list[str], current: list[str]):
        super().__init__()
        check_names([*earlier, *current], "rhythm features")
        self.earlier, self.current = list(earlier), list(current)
        self.net = net
        self._slot = "tok_emb" if hasattr(net, "tok_emb") else "embed"
        base = getattr(net, self._slot)
        if not isinstance(base, nn.Embedding):
            raise ValueError("RhythmNet needs a network that embeds its input ids (input_mode=embedding)")
        std = float(base.weight.detach().std())
        slots = (*self.earlier, *self.current)
        self.tables = nn.ModuleList(nn.Embedding(FEATURES[n], base.embedding_dim) for n in slots)
        for t in self.tables:
            nn.init.normal_(t.weight, std=std)
        self._pending: torch.Tensor | None = None
        base.register_forward_hook(self._add_features)

    def _add_features(self, module, args, out: torch.Tensor) -> torch.Tensor:
        if self._pending is None:
            raise RuntimeError("RhythmNet: call the wrapper with features, not the inner network")
        extra = sum(t(self._pending[..., j]) for j, t in enumerate(self.tables))
        return out + extra

    def forward(self, idx: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        if feats.shape[:2] != idx.shape or feats.size(-1) != len(self.tables):
            raise ValueError(f"features {tuple(feats.shape)} do not match ids {tuple(idx.shape)} and "
                             f"{len(self.tables)} slots")
        self._pending = feats
        try:
            return self.net(idx)
        finally:
            self._pending = None

    def inputs(self, ids: np.ndarray, semitones: int = 0) -> np.ndarray:
        """``(n, slots)`` input features of a melody of ``n`` notes from its ``feature_ids``: row ``i``
        holds the ``earlier`` features of note ``i - 1`` (0 at ``i = 0``) and the ``current``
        features of note ``i``; key signatures moved by ``semitones`` (a transposed copy)."""
        if semitones:
            ids = ids.copy()
            k = NAMES.index("key_sharps")
            ids[:, k] = transpose_key(ids[:, k], semitones)
        n = len(ids)
        prev = np.zeros((n, len(self.earlier)), dtype=np.int64)
        if n > 1:
            prev[1:] = ids[:-1, [NAMES.index(f) for f in self.earlier]]
        cur = ids[:, [NAMES.index(f) for f in self.current]]
        return np.concatenate([prev, cur], axis=1)


def sees(earlier: list[str], current: list[str]) -> list[str]:
    """What a rhythm row may see beyond the pitches, in the report's words."""
    out = []
    rhythm = ("duration", "ioi", "bar_position", "fermata")
    if any(f in rhythm for f in earlier):
        out.append("rhythm of earlier notes")
    if any(f in rhythm for f in current):
        out.append("rhythm of the current note")
    feats = {*earlier, *current}
    if "key_sharps" in feats or "mode" in feats:
        out.append(" and ".join(n for f, n in (("key_sharps", "key signature"), ("mode", "mode")) if f in feats))
    return out


def sees_key(spec: dict[str, Any]) -> bool:
    """Whether a rhythm row sees the key signature or the mode (then it compares with the thesis's
    1.911, Table 9.8, its feature set with mode; else with 1.953, Table 7.3)."""
    return bool({"key_sharps", "mode"} & {*spec.get("earlier", []), *spec.get("current", [])})
