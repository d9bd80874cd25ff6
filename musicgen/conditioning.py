"""Conditioning: attribute tokens before the music, attribute dropout and classifier-free guidance.

A conditioned run (``conditioning=key|full`` in train.yaml's defaults; ``none`` changes nothing)
lays every document out as ``BOS <one token per attribute> music EOS``: the prefix follows BOS.
Each attribute has one token per value plus a null token (``Key_none``), and its tokens are
ordinary ids after the tokeniser's own (``vocab_size = len(tokenizer) + len(ConditioningVocab)``),
learned like any other token. The vocabulary is stored in every checkpoint (``musicgen.conditioning``
metadata), so generation knows it.

Attributes (``ATTRIBUTES``, in prefix order), taken from each source MIDI file:
- key: tonic and mode. With a key signature: its tonic pair (the major key of that signature and
  its relative minor); a signature marked minor is taken as minor, one marked major is decided
  between the pair by the estimator below, because MIDI writers (music21's included) mark every
  signature major when the source gives only the accidentals (modal folk tunes, most chorales
  written without a mode). Without a key signature: the Krumhansl-Schmuckler estimate over all 24
  keys. A transposed training copy's tonic moves with it. That is ``conditioning.key_source=signature``;
  the default, ``notes``, labels every piece by the estimator instead, whatever its signature: the
  key a listener (and the adherence reader) hears, where a signature names the key a modal tune is
  written in (a D-mixolydian reel carries G major's one sharp; the estimator and the signature
  disagree on about 29% of folk tunes).
- metre: the first time signature (``METRES``; anything else is ``other``; none is 4/4).
- tempo: bins of the first tempo in quarter notes per minute (``TEMPO_EDGES``; none is 120).
- style: the source collection: ``folk/<collection>/...`` -> the collection (essenFolksong,
  oneills1850, airdsAirs, ryansMammoth, miscFolk), ``chorales/...`` -> chorales, ``maestro/...`` ->
  maestro, a user's ``data.root`` -> the top-level folder (a file at the root itself: ``user``).
  The values are those of the training split.
- density: bins of notes per bar (bars of the first time signature; ``DENSITY_EDGES``).

Key estimator (``estimate_key``): Krumhansl-Schmuckler, the Pearson correlation of the
duration-weighted pitch-class histogram with the 24 rotations of the Krumhansl-Kessler profiles.

Dropout (``conditioning.drop_rate``): when the DataModule builds the training stream, each
attribute token of each document (each transposed copy on its own) is replaced by its
attribute's null token with that probability, drawn once per build from ``data.seed``. So the same
model samples with any subset of attributes, or none, and classifier-free guidance is possible.
Training windows are packed (they cross piece boundaries); with ``conditioning.every_window``
(the default; measured, it raises key and density adherence and halves tempo's: README) a window
that starts inside a piece's music gets that piece's prefix in front (``PrefixedWindows``), as
generation does for a context that slid past BOS, so every music token is trained with its
attributes in view; with ``every_window=false`` only windows that start at a BOS see them.
Validation and test documents carry the full prefix, and the prefix positions are not scored
(``val/ppl`` covers the music tokens only, the same targets as an unconditioned run's).

Guidance (``GuidedModel``): wraps a network for the decoding loop. The loop sees the body only
(BOS, the prompt, the sampled tokens); the wrapper inserts the prefix after BOS, runs the
conditioned and the all-null ("unconditional") sequences as one batch of 2B rows (KV cache
included) and returns ``uncond + s * (cond - uncond)`` over the tokeniser's own ids, so attribute
tokens are never sampled. ``cfg_scale`` 1 runs the conditioned rows only; 0 is unconditional.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import symusic
import torch
import torch.nn as nn

from musicgen.constants import BOS_ID, EOS_ID, IGNORE_INDEX
from musicgen.data.windows import ScoringWindows, TokenWindows
from musicgen.errors import ConfigError, user_errors

log = logging.getLogger(__name__)

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
#: The groups of conf/conditioning/ and the attributes each conditions on.
PRESETS = {"none": (), "key": ("key",), "full": ATTRIBUTES}
#: Attribute whose token prefix names it: Key_D_major, Metre_6/8, Tempo_110-130, Style_chorales, Density_4-6.
_PREFIX = {a: a.capitalize() for a in ATTRIBUTES}
_COPY = re.compile(r"@([+-]\d+)$")


def _bins(edges: Sequence[int]) -> tuple[str, ...]:
    return (f"<{edges[0]}", *(f"{a}-{b}" for a, b in zip(edges, edges[1:])), f"{edges[-1]}+")


TEMPOS = _bins(TEMPO_EDGES)
DENSITIES = _bins(DENSITY_EDGES)


def _bin(value: float, edges: Sequence[int]) -> str:
    return _bins(edges)[int(np.searchsorted(edges, value, side="right"))]


# ----------------------------------------------------------------------------- estimators

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
    present, else estimated; ``"notes"``: always estimated from the notes (``estimate_key``, the
    reader that measures adherence)."""
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
    parts = _COPY.sub("", name).split("/")
    if parts[0] in ("chorales", "maestro"):
        return parts[0]
    return parts[1] if len(parts) > 2 else parts[0]


def extract_attributes(score: symusic.Score, name: str = "", key_source: str = "signature") -> dict[str, str]:
    """Every attribute of one piece (``name``: its document name, for the style; a transposed copy's
    ``@+k`` suffix moves the key; ``key_source``: see ``file_key``)."""
    m = _COPY.search(name)
    key = file_key(score, key_source)
    return {
        "key": transpose_key(key, int(m.group(1))) if m else key,
        "metre": metre_of(score),
        "tempo": tempo_of(score),
        "style": style_of(name),
        "density": density_of(score),
    }


# ----------------------------------------------------------------------------- vocabulary

def attributes_of(preset: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The attributes a ``conditioning`` config conditions on (checked)."""
    if not preset:
        return ()
    attrs = tuple(preset.get("attributes") or ())
    bad = [a for a in attrs if a not in ATTRIBUTES]
    if bad:
        raise ConfigError(f"conditioning.attributes has unknown {bad}; choose from {list(ATTRIBUTES)}")
    return attrs


@dataclass
class ConditioningVocab:
    """Attribute tokens: for each attribute its values then its null token, ids from ``base``."""

    attributes: tuple[str, ...]
    values: dict[str, tuple[str, ...]]
    base: int  # the tokeniser's vocabulary size: the first attribute id
    key_source: str = "signature"  # where the training pieces' key attribute came from (file_key)
    tokens: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.attributes = tuple(self.attributes)
        self.values = {a: tuple(self.values[a]) for a in self.attributes}
        self.tokens = [f"{_PREFIX[a]}_{v}" for a in self.attributes for v in (*self.values[a], NULL)]
        self._ids = {t: self.base + i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, attributes: Sequence[str], styles: Sequence[str], base: int,
              key_source: str = "signature") -> ConditioningVocab:
        fixed = {"key": KEYS, "metre": METRES, "tempo": TEMPOS, "density": DENSITIES,
                 "style": tuple(sorted(set(styles)))}
        return cls(tuple(attributes), {a: fixed[a] for a in attributes}, base, key_source)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def vocab_size(self) -> int:
        """The model's vocabulary: the tokeniser's ids and the attribute tokens."""
        return self.base + len(self)

    def id(self, attribute: str, value: str | None) -> int:
        """The id of ``attribute=value`` (None or a value the vocabulary lacks: the null token)."""
        token = f"{_PREFIX[attribute]}_{value}"
        return self._ids.get(token, self._ids[f"{_PREFIX[attribute]}_{NULL}"])

    def prefix(self, attrs: Mapping[str, str | None]) -> list[int]:
        """Ids of the prefix for ``attrs`` (missing attributes: null)."""
        return [self.id(a, attrs.get(a)) for a in self.attributes]

    def null_prefix(self) -> list[int]:
        return self.prefix({})

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self.tokens[i - self.base] if 0 <= i - self.base < len(self) else f"<{i}>" for i in ids]

    def to_dict(self) -> dict[str, Any]:
        return {"attributes": list(self.attributes), "values": {a: list(v) for a, v in self.values.items()},
                "base": self.base, "key_source": self.key_source, "tokens": self.tokens}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConditioningVocab:
        return cls(tuple(d["attributes"]), {a: tuple(v) for a, v in d["values"].items()}, int(d["base"]),
                   d.get("key_source", "signature"))  # checkpoints from before key_source: signatures


# ----------------------------------------------------------------------------- the user's request

#: ``cond.*`` keys of generate.yaml -> the attribute each sets (``mode`` goes with ``key``).
COND_KEYS = ("key", "mode", "metre", "tempo", "style", "density")


def requested_attributes(vocab: ConditioningVocab | None, cond: Mapping[str, Any] | None) -> dict[str, str]:
    """``cond.*`` of a generate config as attribute values the vocabulary knows; a value it does not
    know, or any ``cond.*`` for a checkpoint without conditioning, is a one-line ``ConfigError``."""
    given = {k: v for k, v in (cond or {}).items() if v is not None}
    unknown_keys = sorted(set(given) - set(COND_KEYS))
    if unknown_keys:
        raise ConfigError(f"cond has unknown keys {unknown_keys}; known: {list(COND_KEYS)}")
    if not given:
        return {}
    if vocab is None:
        shown = " ".join(f"cond.{k}={v}" for k, v in given.items())
        raise ConfigError(f"{shown}: this checkpoint was trained without conditioning "
                          "(train with conditioning=key or conditioning=full)")
    out: dict[str, str] = {}
    if "mode" in given and "key" not in given:
        raise ConfigError(f"cond.mode={given['mode']} needs cond.key=<tonic> too (one of {list(TONICS)})")
    if "key" in given:
        tonic = str(given.pop("key"))
        mode = str(given.pop("mode", "major"))
        if "_" in tonic:  # cond.key=D_minor
            tonic, mode = tonic.split("_", 1)
        tonic = TONIC_ALIASES.get(tonic, tonic)
        if tonic not in TONICS or mode not in MODES:
            raise ConfigError(f"cond.key={tonic} cond.mode={mode}: unknown; tonics {list(TONICS)}, modes {list(MODES)}")
        given["key"] = f"{tonic}_{mode}"
    for attr, value in given.items():
        value = str(value)
        if attr not in vocab.attributes:
            raise ConfigError(f"cond.{attr}={value}: this checkpoint conditions on {list(vocab.attributes)} only")
        if value not in vocab.values[attr]:
            raise ConfigError(f"cond.{attr}={value} is unknown to this checkpoint; known values: "
                              f"{', '.join(vocab.values[attr])}")
        out[attr] = value
    return out


# ----------------------------------------------------------------------------- training data

@dataclass
class PrefixedSplit:
    """A split's stream with a prefix after each document's BOS; ``is_prefix`` marks its positions."""

    tokens: np.ndarray
    offsets: np.ndarray
    is_prefix: np.ndarray  # (N,) bool


def insert_prefixes(tokens: np.ndarray, offsets: np.ndarray, prefixes: Sequence[Sequence[int]]) -> PrefixedSplit:
    """``BOS doc EOS`` documents -> ``BOS prefix doc EOS`` (one prefix per document, equal lengths)."""
    n_docs = len(offsets) - 1
    P = len(prefixes[0]) if n_docs else 0
    new_offsets = np.asarray(offsets, dtype=np.int64) + P * np.arange(n_docs + 1, dtype=np.int64)
    out = np.empty(int(new_offsets[-1]), dtype=np.int32 if len(tokens) == 0 else np.result_type(tokens.dtype, np.int32))
    is_prefix = np.zeros(len(out), dtype=bool)
    pre = np.asarray(prefixes, dtype=out.dtype).reshape(n_docs, P)
    for i in range(n_docs):
        a, b, s = int(offsets[i]), int(offsets[i + 1]), int(new_offsets[i])
        out[s] = tokens[a]
        out[s + 1 : s + 1 + P] = pre[i]
        out[s + 1 + P : s + P + (b - a)] = tokens[a + 1 : b]
        is_prefix[s + 1 : s + 1 + P] = True
    return PrefixedSplit(out, new_offsets, is_prefix)


def drop_attributes(prefixes: np.ndarray, null: Sequence[int], rate: float, rng: np.random.Generator) -> np.ndarray:
    """(n_docs, P) prefixes with each entry replaced by its attribute's null id with probability ``rate``."""
    drop = rng.random(prefixes.shape) < rate
    return np.where(drop, np.asarray(null)[None, :], prefixes)


class Conditioner:
    """What a conditioned DataModule uses: the vocabulary, each document's attributes and the
    prefixed datasets. ``files``: document name (without a copy suffix) -> its MIDI path."""

    def __init__(self, config: Mapping[str, Any], names: dict[str, list[str]], files: Mapping[str, Path],
                 base_vocab: int, seed: int) -> None:
        from musicgen.midi_io import read_score

        self.attributes = attributes_of(config)
        self.drop_rate = float(config.get("drop_rate", 0.2))
        if not 0.0 <= self.drop_rate <= 1.0:
            raise ConfigError(f"conditioning.drop_rate={self.drop_rate} must be in [0, 1]")
        self.every_window = bool(config.get("every_window", True))
        self.key_source = str(config.get("key_source", "notes"))  # checked by file_key
        self.seed = seed
        per_file: dict[str, dict[str, str]] = {}
        self.attrs: dict[str, list[dict[str, str]]] = {}
        for split, doc_names in names.items():
            rows = []
            for name in doc_names:
                orig = _COPY.sub("", name)
                if orig not in per_file:
                    per_file[orig] = extract_attributes(read_score(files[orig]), orig, self.key_source)
                row = dict(per_file[orig])
                m = _COPY.search(name)
                if m:
                    row["key"] = transpose_key(row["key"], int(m.group(1)))
                rows.append(row)
            self.attrs[split] = rows
        styles = [a["style"] for a in self.attrs.get("train", [])]
        self.vocab = ConditioningVocab.build(self.attributes, styles, base_vocab, self.key_source)

    def prefixes(self, split: str) -> np.ndarray:
        """(n_docs, P) prefix ids of a split: full for val/test, with attribute dropout for train."""
        rows = [self.vocab.prefix(a) for a in self.attrs[split]]
        pre = np.array(rows, dtype=np.int64).reshape(-1, len(self.attributes))
        if split == "train" and self.drop_rate > 0:
            pre = drop_attributes(pre, self.vocab.null_prefix(), self.drop_rate, np.random.default_rng([self.seed, 7]))
        return pre

    def prefixed(self, split: str, st) -> PrefixedSplit:
        """A cache split's stream with each document's prefix after its BOS."""
        return insert_prefixes(np.asarray(st.tokens), st.offsets, self.prefixes(split))

    def dataset(self, split: str, st, seq_len: int, stride: int, mode: str, pack: bool):
        """The DataModule's dataset of a split, over the prefixed stream (see ``MidiDataModule._dataset``)."""
        ps = self.prefixed(split, st)
        if split == "train" and mode == "causal" and pack and self.every_window:
            return PrefixedWindows(ps.tokens, ps.offsets, seq_len, stride, ps.is_prefix, len(self.attributes))
        if split == "train":
            return TokenWindows(ps.tokens, ps.offsets, seq_len, stride, mode, pack)
        if mode == "causal":
            return PrefixScoringWindows(ps.tokens, ps.offsets, seq_len, ps.is_prefix, self.every_window,
                                        len(self.attributes))
        return TokenWindows(ps.tokens, ps.offsets, seq_len, 1, mode, pack)


def starts_in_music(starts: np.ndarray, offsets: np.ndarray, is_prefix: np.ndarray,
                    n_prefix: int) -> tuple[np.ndarray, np.ndarray]:
    """Of windows starting at stream positions ``starts`` of a prefixed stream, those that start
    inside a piece's music (past its BOS and its prefix), and their pieces' prefix positions (R, P)."""
    doc = np.searchsorted(offsets, starts, side="right") - 1
    rows = np.flatnonzero((starts != offsets[doc]) & ~is_prefix[starts])
    return rows, offsets[doc[rows]][:, None] + 1 + np.arange(n_prefix)


class PrefixedWindows(TokenWindows):
    """Packed causal training windows in which every window sees the attributes of the piece it
    starts in: a window that starts inside a piece's music is ``prefix + stream[s : s + L + 1 - P]``,
    the prefix's own positions not scored (their targets are IGNORE_INDEX). That is the context
    generation gives a window that slid past BOS (``GuidedModel``: the prefix in front), so the
    attributes steer the whole piece, not only its first window. Windows that start at a BOS or
    inside a prefix are the stream as it is. Window count and starts are ``TokenWindows``'."""

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, seq_len: int, stride: int,
                 is_prefix: np.ndarray, n_prefix: int) -> None:
        if n_prefix >= seq_len:
            raise ConfigError(f"{n_prefix} attribute tokens leave no room in seq_len={seq_len}")
        super().__init__(tokens, offsets, seq_len, stride, "causal", pack=True)
        self.is_prefix, self.n_prefix = is_prefix, n_prefix

    def __getitems__(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = super().__getitems__(indices)
        P, L = self.n_prefix, self.seq_len
        if P == 0:
            return x, y
        s = np.asarray(indices, dtype=np.int64) * self.stride  # window starts
        rows, pre = starts_in_music(s, self.offsets, self.is_prefix, P)
        if len(rows):
            body = s[rows][:, None] + np.arange(L + 1 - P)  # (R, L + 1 - P)
            seq = torch.from_numpy(self.tokens[np.concatenate([pre, body], axis=1)].astype(np.int64))
            r = torch.from_numpy(rows)
            x[r] = seq[:, :L]
            y[r] = seq[:, 1:]
            y[r, : P] = IGNORE_INDEX  # the prefix and the first music token from the prefix alone
        return x, y


class PrefixScoringWindows(ScoringWindows):
    """Evaluation's windows over a prefixed stream; the prefix positions are context, never targets.
    ``repeat`` (a run trained with ``every_window``): a later window of a piece longer than one
    window, which starts past its prefix, reads the prefix in place of its first ``n_prefix``
    context tokens (the context that run trained on and generation gives); the targets it scores
    are the same."""

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, seq_len: int, is_prefix: np.ndarray,
                 repeat: bool = False, n_prefix: int = 0) -> None:
        super().__init__(tokens, offsets, seq_len)
        self.is_prefix = is_prefix
        self.n_prefix = n_prefix if repeat else 0
        if 2 * self.n_prefix > seq_len:
            raise ConfigError(f"{n_prefix} attribute tokens take more than half of seq_len={seq_len}")

    def __getitems__(self, indices):
        idx = np.asarray(indices, dtype=np.int64)
        x, y = super().__getitems__(idx)
        P = self.n_prefix
        start = self.windows[idx, 0]
        rows, pre = starts_in_music(start, self.offsets, self.is_prefix, P)
        if P and len(rows):
            x[torch.from_numpy(rows), :P] = torch.from_numpy(self.tokens[pre].astype(np.int64))
        pos = start[:, None] + self._arange[1:]  # (B, L) target positions
        masked = self.is_prefix[np.minimum(pos, max(0, len(self.is_prefix) - 1))]
        y[torch.from_numpy(masked)] = IGNORE_INDEX
        return x, y

    def n_targets(self) -> int:
        return super().n_targets() - int(self.is_prefix.sum())


# ----------------------------------------------------------------------------- guidance

class GuidedModel(nn.Module):
    """Classifier-free guidance around a network, for ``musicgen.generation.generate``.

    The decoding loop passes the body (BOS, prompt, sampled tokens); each context that starts at
    BOS gets ``cond_prefix`` inserted after it (a context that slid past BOS gets it in front).
    ``after``: leading tokens that come before all of that (infilling's ``PRE``, ``musicgen.infill``).
    With ``scale`` != 1 the conditioned and the ``uncond_prefix`` rows run as one batch (2B) and
    the logits are ``uncond + scale * (cond - uncond)``; only the first ``n_out`` ids (the
    tokeniser's) are returned. ``guided`` (below) adds the KV-cache methods where the network has them.
    """

    def __init__(self, model: nn.Module, cond_prefix: Sequence[int], uncond_prefix: Sequence[int],
                 scale: float = 1.0, n_out: int | None = None, bos_id: int = BOS_ID, after: int = 0) -> None:
        super().__init__()
        if len(cond_prefix) != len(uncond_prefix):
            raise ValueError("cond_prefix and uncond_prefix must have the same length")
        self.model = model
        self.scale = float(scale)
        self.n_out = n_out
        self.bos_id = bos_id
        self.after = after
        self.register_buffer("cond", torch.tensor(list(cond_prefix), dtype=torch.long), persistent=False)
        self.register_buffer("uncond", torch.tensor(list(uncond_prefix), dtype=torch.long), persistent=False)

    @property
    def n_prefix(self) -> int:
        return self.cond.numel()

    @property
    def guided(self) -> bool:
        return self.scale != 1.0

    @property
    def context_len(self) -> int:
        return self.model.context_len - self.n_prefix

    def _rows(self, batch: int) -> int:
        return 2 * batch if self.guided else batch

    def _with_prefix(self, idx: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        B, a = idx.size(0), self.after
        pre = prefix.to(idx.device).expand(B, -1)
        lead, body = idx[:, :a], idx[:, a:]
        after_bos = torch.cat([lead, body[:, :1], pre, body[:, 1:]], dim=1)
        in_front = torch.cat([lead, pre, body], dim=1)
        return torch.where(body[:, :1] == self.bos_id, after_bos, in_front)

    def forward(self, idx: torch.Tensor, input_pos: torch.Tensor | None = None, last_only: bool = True) -> torch.Tensor:
        """idx (B, T) body tokens -> guided logits (B, n_out) for the next token."""
        if not last_only:
            raise ValueError("GuidedModel gives next-token logits only (last_only=True)")
        prefixes = [self.cond, self.uncond] if self.guided else [self.cond]
        if input_pos is None or int(input_pos[0]) == 0:  # a context from its start: insert the prefix
            x = torch.cat([self._with_prefix(idx, p) for p in prefixes], dim=0)  # (rows, T + P)
            pos = None if input_pos is None else torch.arange(x.size(1), device=idx.device)
        else:  # later tokens of a cached context: the same for both rows, positions moved by P
            x = idx.repeat(len(prefixes), 1)
            pos = input_pos + self.n_prefix
        logits = self.model(x, last_only=True) if pos is None else self.model(x, input_pos=pos, last_only=True)
        if self.guided:
            B = idx.size(0)
            cond, uncond = logits[:B].float(), logits[B:].float()
            logits = uncond + self.scale * (cond - uncond)
        return logits[:, : self.n_out] if self.n_out is not None else logits


class GuidedCachedModel(GuidedModel):
    """``GuidedModel`` over a network with a KV cache (the Transformer): one cache of 2B rows."""

    def setup_cache(self, batch_size: int, max_len: int | None = None, **kw: Any) -> None:
        self.model.setup_cache(self._rows(batch_size), (max_len or self.context_len) + self.n_prefix, **kw)

    def clear_cache(self) -> None:
        self.model.clear_cache()

    @property
    def cache_size(self) -> tuple[int, int] | None:
        size = getattr(self.model, "cache_size", None)
        if not size:
            return None
        rows, length = size
        return rows // (2 if self.guided else 1), length - self.n_prefix


def guided(model: nn.Module, cond_prefix: Sequence[int], uncond_prefix: Sequence[int], scale: float = 1.0,
           n_out: int | None = None, after: int = 0) -> GuidedModel:
    """A ``GuidedModel``, with the cache methods when ``model`` has a KV cache."""
    cls = GuidedCachedModel if callable(getattr(model, "setup_cache", None)) else GuidedModel
    return cls(model, cond_prefix, uncond_prefix, scale, n_out, after=after)


def conditioned_generation(run, cond: Mapping[str, Any] | None, cfg_scale: float, net: nn.Module,
                           context: int) -> tuple[nn.Module, int, dict[str, Any] | None]:
    """For ``musicgen.generate``: the network to decode with, the body context, and the report's
    ``conditioning`` entry (None for a checkpoint without conditioning, which gets ``net`` back)."""
    vocab = run.conditioning
    attrs = requested_attributes(vocab, cond)
    if vocab is None:
        if cfg_scale != 1.0:
            raise ConfigError(f"sampling.cfg_scale={cfg_scale} needs a checkpoint trained with conditioning")
        return net, context, None
    prefix = vocab.prefix(attrs)
    model = guided(net, prefix, vocab.null_prefix(), cfg_scale, n_out=vocab.base)
    entry = {"attributes": attrs, "prefix_ids": prefix, "prefix_tokens": vocab.decode(prefix), "cfg_scale": cfg_scale}
    return model, context - len(prefix), entry


# ----------------------------------------------------------------------------- measurement

def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k / n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def _share(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(k, n)
    return {"matches": k, "n": n, "share": k / n if n else float("nan"), "ci95": [round(lo, 4), round(hi, 4)]}


class StyleClassifier:
    """Nearest centroid over tokeniser-independent features (the normalised interval, duration,
    inter-onset and notes-per-bar histograms of ``musicgen.metrics.features``, standardised on the
    training pieces): which collection a piece sounds like. Pitch classes are left out, so a
    transposed piece keeps its style."""

    HISTS = ("interval", "duration", "ioi", "notes_per_bar")

    def __init__(self, scores: Sequence[symusic.Score], styles: Sequence[str]) -> None:
        x = np.stack([self.features(s) for s in scores])
        self.mean, self.std = x.mean(axis=0), x.std(axis=0) + 1e-6
        z = (x - self.mean) / self.std
        self.styles = tuple(sorted(set(styles)))
        labels = np.array([self.styles.index(s) for s in styles])
        self.centroids = np.stack([z[labels == i].mean(axis=0) for i in range(len(self.styles))])

    @classmethod
    def features(cls, score: symusic.Score) -> np.ndarray:
        from musicgen.metrics.features import piece_features

        f = piece_features(score)
        return np.concatenate([f[h] / max(1, f[h].sum()) for h in cls.HISTS])

    def predict(self, score: symusic.Score) -> str:
        z = (self.features(score) - self.mean) / self.std
        return self.styles[int(np.argmin(((self.centroids - z) ** 2).sum(axis=1)))]


def _notes(score: symusic.Score) -> int:
    return sum(len(t.notes) for t in score.tracks)


def measure_control(ckpt_path: str, values: Mapping[str, Sequence[str]] | None = None, n: int = 20,
                    cfg_scale: float = 1.0, max_new_tokens: int = 256, seed: int = 0, device: str = "cpu",
                    test_pieces: int = 200, per_attribute: int = 6, style_pieces: int = 300,
                    constrained: bool = True, sampling: str = "default") -> dict[str, Any]:
    """How often samples asked for one attribute value (the others null) come out with it: ``n``
    samples per value of ``values`` (attribute -> values; an empty list: the ``per_attribute`` most
    common values of the training pieces, ``other`` left out; None: every attribute the run
    conditions on). Samples are drawn as ``musicgen.generate`` draws them with the preset
    ``conf/sampling/<sampling>.yaml`` (default: ``generate``'s defaults, the grammar mask
    included; ``constrained=False``: without the mask).

    The value a sample has is read from its decoded notes: key by ``estimate_key``; metre from the
    bars it writes (its first time signature); tempo from its first tempo; density from its notes
    per bar; style by a ``StyleClassifier`` fitted on up to ``style_pieces`` training pieces per
    style. Two references: ``n`` samples asked nothing (the all-null prefix), scored against each
    requested value (the chance level of this model), and up to ``test_pieces`` real test pieces
    decoded from their tokens as the samples are, the same readers against their attributes (what
    the readers get right on real music: the ceiling), read on the whole piece (``real``) and on
    its first ``max_new_tokens`` tokens (``real_excerpt``: the samples' length, a ceiling a sample
    of that length can reach; with ``key_source=notes`` the whole-piece reading is the label
    itself). Proportions with 95% Wilson intervals; the median token length of the samples and of
    the real pieces in ``lengths``."""
    from omegaconf import OmegaConf

    from musicgen.checkpoint import load_run, load_run_cache
    from musicgen.config import CONF_DIR, sampling_config
    from musicgen.generation import generate, sampling_grammar

    preset = CONF_DIR / "sampling" / f"{sampling}.yaml"
    if not preset.is_file():
        known = sorted(f.stem for f in preset.parent.glob("*.yaml"))
        raise ConfigError(f"sampling={sampling} is not a preset; known: {known}")
    sampler = sampling_config({**OmegaConf.to_container(OmegaConf.load(preset)), "constrained": constrained})
    run = load_run(ckpt_path, map_location=device)
    vocab = run.conditioning
    if vocab is None:
        raise ConfigError(f"{ckpt_path}: not trained with conditioning (conditioning=key or full)")
    values = {a: list(v) for a, v in (values or {a: [] for a in vocab.attributes}).items()}
    unknown = [a for a in values if a not in vocab.attributes]
    if unknown:
        raise ConfigError(f"{ckpt_path} conditions on {list(vocab.attributes)}, not {unknown}")
    for attr, vals in values.items():
        bad = [v for v in vals if v not in vocab.values[attr]]
        if bad:
            raise ConfigError(f"{attr} values {bad} are unknown to this checkpoint; known: {list(vocab.values[attr])}")
    cache = load_run_cache(run)
    decode = run.tokenizer.decode
    train, test = cache.splits["train"], cache.splits.get("test")
    train_idx = train.originals()
    train_attrs = piece_attributes(run, train, train_idx)
    for attr in values:
        if not values[attr]:
            counts: dict[str, int] = {}
            for a in train_attrs:
                if a[attr] != "other":
                    counts[a[attr]] = counts.get(a[attr], 0) + 1
            values[attr] = sorted(counts, key=lambda v: -counts[v])[:per_attribute]
    readers: dict[str, Any] = {"key": estimate_key, "metre": metre_of, "tempo": tempo_of, "density": density_of}
    if "style" in values:
        rng = np.random.default_rng(seed)
        chosen = [int(j) for st in sorted({a["style"] for a in train_attrs})
                  for j in rng.permutation([j for j, a in enumerate(train_attrs) if a["style"] == st])[:style_pieces]]
        scores = [decode(train.doc(train_idx[j]).tolist()) for j in chosen]
        keep = [k for k, sc in enumerate(scores) if _notes(sc)]
        styles = [train_attrs[chosen[k]]["style"] for k in keep]
        readers["style"] = StyleClassifier([scores[k] for k in keep], styles).predict
    context = run.trained_context
    gen = torch.Generator(device=device).manual_seed(seed)
    grammar = sampling_grammar(run.tokenizer, sampler)

    def samples(prefix: list[int], scale: float) -> list[symusic.Score | None]:
        model = guided(run.net.to(device), prefix, vocab.null_prefix(), scale, n_out=vocab.base)
        prompt = torch.full((n, 1), BOS_ID, dtype=torch.long, device=device)
        out = generate(model, prompt, max_new_tokens, sampler, generator=gen, stop_at_eos=True,
                       context_len=context - len(prefix), grammar=grammar)
        scores = []
        for row in out.tolist():
            body = row[1:]
            body = body[: body.index(EOS_ID)] if EOS_ID in body else body
            sample_lengths.append(len(body))
            score = decode(body)
            scores.append(score if _notes(score) else None)
        return scores

    def read(attr: str, scores: Sequence[symusic.Score | None]) -> list[str | None]:
        return [readers[attr](sc) if sc is not None else None for sc in scores]

    result: dict[str, Any] = {"ckpt_path": str(run.ckpt_path), "cfg_scale": cfg_scale, "n_per_value": n,
                              "constrained": grammar is not None, "sampling": asdict(sampler),
                              "max_new_tokens": max_new_tokens, "attributes": {}}
    sample_lengths: list[int] = []
    uncond = samples(vocab.null_prefix(), 1.0)
    real_scores, real_excerpts, real_attrs, real_lengths = [], [], [], []
    if test is not None and len(test.originals()):
        idx = test.originals()[:test_pieces]
        real_attrs = piece_attributes(run, test, idx)
        docs = [test.doc(i).tolist() for i in idx]  # BOS ids EOS
        real_lengths = [len(d) - 2 for d in docs]
        real_scores = [decode(d) for d in docs]
        real_excerpts = [decode(d[: 1 + max_new_tokens]) for d in docs]
    for attr, vals in values.items():
        got_uncond = read(attr, uncond)
        row: dict[str, Any] = {"values": list(vals), "per_value": {}}
        k_all = n_all = k_base = 0
        for v in vals:
            got = read(attr, samples(vocab.prefix({attr: v}), cfg_scale))
            k = sum(g == v for g in got)
            row["per_value"][v] = {**_share(k, len(got)), "read": {g or "no notes": got.count(g) for g in set(got)}}
            k_all, n_all, k_base = k_all + k, n_all + len(got), k_base + sum(g == v for g in got_uncond)
        row["conditioned"] = _share(k_all, n_all)
        row["unconditioned"] = _share(k_base, len(uncond) * len(vals))  # chance: asked nothing
        for name, real in (("real", real_scores), ("real_excerpt", real_excerpts)):
            if real:
                pairs = [(readers[attr](sc), a[attr]) for sc, a in zip(real, real_attrs) if _notes(sc)]
                row[name] = _share(sum(r == label for r, label in pairs), len(pairs))
        result["attributes"][attr] = row
    result["lengths"] = {"samples_median": float(np.median(sample_lengths)),
                         "real_median": float(np.median(real_lengths)) if real_lengths else None}
    return result


def piece_attributes(run, split, indices: Sequence[int]) -> list[dict[str, str]]:
    """The attributes of documents ``indices`` of a run's cache split, from their source files (as
    the DataModule takes them); a source file that is gone is a one-line error."""
    from musicgen.midi_io import read_score

    files = _cache_files(run)
    out = []
    for i in indices:
        name = split.names[i]
        path = files.get(_COPY.sub("", name))
        if path is None or not Path(path).exists():
            raise ConfigError(f"{name}: the source file of this piece is gone ({path or 'not in the run data'}); "
                              "its attributes cannot be read")
        out.append(extract_attributes(read_score(path), name, run.conditioning.key_source))
    return out


def with_prefixes(docs: Sequence[np.ndarray], prefixes: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """``BOS doc EOS`` documents -> ``BOS prefix doc EOS``, one prefix each."""
    return [np.concatenate([d[:1], np.asarray(p, dtype=d.dtype), d[1:]]) for d, p in zip(docs, prefixes)]


def _cache_files(run) -> dict[str, str]:
    """Document name -> source path for a run, from its config (the embedded corpora or data.root)."""
    cfg = run.metadata.get("config", {})
    data = cfg.get("data", {})
    out: dict[str, str] = {}
    if data.get("root"):
        root = Path(data["root"])
        for p in root.rglob("*"):
            if p.suffix.lower() in (".mid", ".midi"):
                out[f"user/{p.relative_to(root).as_posix()}"] = str(p)
        return out
    data_dir = Path(data.get("data_dir", "data"))
    for corpus in data.get("corpora", ["folk"]):
        manifest = json.loads((data_dir / corpus / "manifest.json").read_text())
        for rel in manifest["files"]:
            out[f"{corpus}/{rel}"] = str(data_dir / corpus / rel)
    return out


@user_errors
def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Attribute control of a conditioned checkpoint (musicgen.conditioning)")
    p.add_argument("ckpt_path")
    p.add_argument("--attributes", default=None,
                   help="comma-separated attributes to measure (default: all it conditions on)")
    p.add_argument("--values", action="append", default=[], metavar="ATTR=V1,V2",
                   help="values to ask for, e.g. key=C_major,A_minor (default: the most common in training)")
    p.add_argument("--n", type=int, default=20, help="samples per value (and unconditioned samples)")
    p.add_argument("--cfg-scale", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unconstrained", action="store_true", help="sample without the grammar mask")
    p.add_argument("--sampling", default="default", help="a conf/sampling preset (default, conservative, ...)")
    p.add_argument("--out", default=None, help="write the result as JSON here")
    a = p.parse_args(argv)
    values: dict[str, list[str]] = {}
    for item in a.values:
        attr, _, vals = item.partition("=")
        values[attr] = vals.split(",")
    if a.attributes:
        for attr in a.attributes.split(","):
            values.setdefault(attr, [])
    res = measure_control(a.ckpt_path, values or None, a.n, a.cfg_scale, a.max_new_tokens, a.seed,
                          constrained=not a.unconstrained, sampling=a.sampling)
    text = json.dumps(res, indent=1)
    if a.out:
        from musicgen.fs import atomic_write_text

        atomic_write_text(Path(a.out), text + "\n")
    for attr, row in res["attributes"].items():
        real, excerpt = (row.get(k, {}).get("share", float("nan")) for k in ("real", "real_excerpt"))
        print(f"{attr:8s} asked {row['conditioned']['share']:.1%} {row['conditioned']['ci95']}  "
              f"asked nothing {row['unconditioned']['share']:.1%}  real {real:.1%}  "
              f"real, first {a.max_new_tokens} tokens {excerpt:.1%}")
    print(text if not a.out else f"written to {a.out}")


if __name__ == "__main__":
    main()
