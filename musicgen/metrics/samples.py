"""Sample-level figures on decoded music, shared by the evaluation harness and the training-time
sample-metrics callback: the training reference, per-piece statistics, and each figure with its
95% bootstrap interval over pieces (``musicgen.metrics.features``: the same for every tokeniser)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from musicgen.constants import BOS_ID, EOS_ID, PAD_ID
from musicgen.metrics.bootstrap import figure, kl_from, mean_of, overlap_with, ratio
from musicgen.metrics.copying import CopyIndex, interval_symbols, melody_symbols
from musicgen.metrics.features import HISTOGRAMS, piece_features
from musicgen.metrics.music import ngram_stats
from musicgen.metrics.tonal import tonal_features
from musicgen.tokenizers.base import MusicTokenizer

REPETITION_NS = (2, 4, 8, 16)

#: Per-piece tonal figures (``musicgen.metrics.tonal``), each the mean over the pieces that have notes.
TONAL_FIGURES = ("scale_consistency", "pitch_in_scale", "key_clarity", "pitch_class_entropy")

#: The tonic-relative pitch-class histogram's name in ``Reference.histograms`` and ``piece_stats``.
TONIC_HISTOGRAM = "tonic_pitch_class"

COPY_SYMBOLS = ("pitch", "pitch_duration", "interval", "interval_duration")

#: The figure-name suffix of each copy symbol kind (``copied_8gram_share<suffix>``).
COPY_SUFFIX = {"pitch": "", "pitch_duration": "_with_duration", "interval": "_interval",
               "interval_duration": "_interval_with_duration"}


def copy_symbols(score) -> dict[str, np.ndarray]:
    """The melody of a decoded score as each ``COPY_SYMBOLS`` kind: absolute pitches and
    intervals (transposition-invariant), each without and with durations."""
    return {"pitch": melody_symbols(score), "pitch_duration": melody_symbols(score, with_duration=True),
            "interval": interval_symbols(score), "interval_duration": interval_symbols(score, with_duration=True)}

def body(ids: Sequence[int]) -> list[int]:
    """The ids of one piece without its BOS and what follows its first EOS (and without PAD)."""
    out = []
    for t in map(int, ids):
        if t == EOS_ID:
            break
        if t not in (BOS_ID, PAD_ID):
            out.append(t)
    return out

@dataclass
class Reference:
    """What samples are compared with: the training pieces. ``histograms``: the feature counts
    of the untransposed training pieces (real test pieces are not transposed either), plus
    ``tonic_pitch_class``, their note pitch classes each rotated to its piece's estimated tonic;
    ``pitch_range``: the lowest and highest pitch of everything the model trained on;
    ``copies``: a ``CopyIndex`` per symbol kind over everything it trained on (copies included:
    replaying a transposed training piece is copying too)."""

    histograms: dict[str, np.ndarray]
    pitch_range: tuple[int, int]
    copies: dict[str, CopyIndex]
    pieces: int

def _spread(idx: np.ndarray, k: int) -> np.ndarray:
    """At most ``k`` of ``idx``, evenly spread."""
    return idx if len(idx) <= k else idx[np.linspace(0, len(idx) - 1, max(k, 0)).astype(int)]

def training_reference(tokenizer: MusicTokenizer, train, max_pieces: int | None = None) -> Reference:
    """The ``Reference`` of a cache's training split (``SplitTokens``), from at most
    ``max_pieces`` documents (null: all): every untransposed piece first, then evenly spread
    transposed copies (for the pitch range and the copy index)."""
    originals = train.originals()
    copies = np.setdiff1d(np.arange(train.n_docs), originals)
    if max_pieces and train.n_docs > max_pieces:  # every original first, then evenly spread copies
        originals = _spread(originals, max_pieces)
        copies = _spread(copies, max_pieces - len(originals))
    idx = np.concatenate([originals, copies]).tolist()
    originals = set(originals.tolist())
    hist = {h: np.zeros(len(bins), dtype=np.int64) for h, bins in HISTOGRAMS.items()}
    hist[TONIC_HISTOGRAM] = np.zeros(12, dtype=np.int64)  # each piece rotated to its estimated tonic
    all_pitches = np.zeros(128, dtype=np.int64)
    symbols: dict[str, list[np.ndarray]] = {k: [] for k in COPY_SYMBOLS}
    used = 0
    for i in idx:
        score = tokenizer.decode(body(train.doc(i)))
        feats = piece_features(score)
        all_pitches += feats["pitch"]
        for kind, seq in copy_symbols(score).items():
            symbols[kind].append(seq)
        if i in originals:
            used += 1
            for h in HISTOGRAMS:
                hist[h] += feats[h]
            hist[TONIC_HISTOGRAM] += tonal_features(score)["tonic_pitch_classes"].astype(np.int64)
    played = np.nonzero(all_pitches)[0]
    pitch_range = (int(played.min()), int(played.max())) if len(played) else (0, 127)
    return Reference(hist, pitch_range, {k: CopyIndex(v) for k, v in symbols.items()}, used)

def note_count(score) -> int:
    return sum(len(t.notes) for t in score.tracks)


def first_notes(score, k: int):
    """``score`` cut after the onset of its ``k``-th note (in onset order, over all tracks; notes
    sounding at that onset stay, so a chord is never split); the score itself if it has at most
    ``k`` notes."""
    onsets = np.sort(np.concatenate([t.notes.numpy()["time"] for t in score.tracks] or [np.zeros(0)]))
    if k <= 0 or len(onsets) <= k:
        return score
    cut = score.copy()
    last = int(onsets[k - 1])
    for track in cut.tracks:
        track.notes.filter(lambda n: n.time <= last, inplace=True)
    return cut


def length_targets(real_notes: Sequence[int] | np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` note counts drawn (with replacement) from the real pieces' ``real_notes``: the length
    each sample of a row is cut to (``piece_stats(cut_notes=...)``), so every row's material
    figures pool as much music per piece as the real row does."""
    real_notes = np.asarray(real_notes, dtype=np.int64)
    if len(real_notes) == 0:
        return np.zeros(n, dtype=np.int64)
    return np.random.default_rng(seed).choice(real_notes, size=n, replace=True)


def piece_stats(tokenizer: MusicTokenizer, pieces: Sequence[Sequence[int]], reference: Reference,
                ended: Sequence[bool] | None = None,
                cut_notes: Sequence[int] | np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-piece statistics blocks ``(P, K)`` of pieces (ids without BOS/EOS): the feature
    histograms, note and token counts, melodic n-gram repetition, syntax errors per base token,
    copying, and whether the piece ended at its EOS (``ended``; real pieces always do).

    ``cut_notes`` (one count per piece, ``length_targets``): the material figures (histograms,
    tonality, repetition, copying) read only each piece's first ``cut_notes[k]`` notes
    (``first_notes``), so that rows whose pieces run longer pool no more music per piece than
    the real row; ``notes``, ``tokens``, ``syntax`` and ``ended`` describe the whole piece, and
    ``matched`` is ``[notes read, notes in the piece]``."""
    rows: dict[str, list] = defaultdict(list)
    for k, ids in enumerate(pieces):
        ids = [int(t) for t in ids]
        whole = tokenizer.decode(ids)
        score = whole if cut_notes is None else first_notes(whole, int(cut_notes[k]))
        feats = piece_features(score)
        for h in HISTOGRAMS:
            rows[h].append(feats[h])
        melody = melody_symbols(score)
        for n in REPETITION_NS:
            unique, total = ngram_stats(torch.as_tensor(melody), n)
            rows[f"repetition_{n}"].append([total - unique, total])
        rows["notes"].append([note_count(whole)])
        rows["matched"].append([note_count(score), note_count(whole)])
        rows["tokens"].append([len(ids)])
        rows["syntax"].append([tokenizer.syntax_errors(ids), tokenizer.base_length(ids)])
        rows["ended"].append([1.0 if ended is None else float(ended[k])])
        tonal = tonal_features(score)
        rows[TONIC_HISTOGRAM].append(tonal["tonic_pitch_classes"])
        for name in TONAL_FIGURES:  # (value, 1), or (0, 0) for a piece without notes
            rows[name].append([0.0, 0.0] if np.isnan(tonal[name]) else [tonal[name], 1.0])
        for kind, seq in copy_symbols(score).items():
            rows[f"copy_{kind}"].append(reference.copies[kind].stats(seq))
    width = {h: len(b) for h, b in HISTOGRAMS.items()}
    empty = {k: np.zeros((0, width.get(k, 1))) for k in rows}
    return {k: np.asarray(v, dtype=np.float64).reshape(len(pieces), -1) if v else empty[k] for k, v in rows.items()}

def _outside(lo: int, hi: int):
    """The share of notes whose pitch is outside ``lo..hi`` (statistic over pitch histograms)."""
    def statistic(rows: np.ndarray) -> np.ndarray:
        outside = rows[:, :lo].sum(axis=1) + rows[:, hi + 1 :].sum(axis=1)
        return outside / rows.sum(axis=1)
    return statistic

def sample_figures(stats: dict[str, np.ndarray], reference: Reference, n_boot: int = 1000,
                   seed: int = 0) -> dict[str, dict[str, float]]:
    """The sample figures of one row from its ``piece_stats``, each with its interval."""
    out = {}
    for h in HISTOGRAMS:
        out[f"{h}_overlap"] = figure(stats[h], overlap_with(reference.histograms[h]), n_boot, seed)
    out["pitch_kl"] = figure(stats["pitch"], kl_from(reference.histograms["pitch"]), n_boot, seed)
    out["out_of_range_pitch_share"] = figure(stats["pitch"], _outside(*reference.pitch_range), n_boot, seed)
    for n in REPETITION_NS:
        out[f"ngram_repetition_{n}"] = figure(stats[f"repetition_{n}"], ratio(0, 1), n_boot, seed)
    for kind in COPY_SYMBOLS:
        suffix = COPY_SUFFIX[kind]
        block = stats[f"copy_{kind}"]
        out[f"copied_8gram_share{suffix}"] = figure(block, ratio(0, 1), n_boot, seed)
        out[f"copied_16gram_share{suffix}"] = figure(block, ratio(2, 3), n_boot, seed)
        out[f"longest_copied_run{suffix}"] = figure(block, mean_of(4), n_boot, seed)
    out["syntax_error_rate"] = figure(stats["syntax"], ratio(0, 1), n_boot, seed)
    out["notes_per_piece"] = figure(stats["notes"], mean_of(0), n_boot, seed)
    if "matched" in stats:  # the share of the pieces' notes the material figures read
        out["notes_read_share"] = figure(stats["matched"], ratio(0, 1), n_boot, seed)
    out["tokens_per_piece"] = figure(stats["tokens"], mean_of(0), n_boot, seed)
    out["ended_at_eos"] = figure(stats["ended"], mean_of(0), n_boot, seed)
    for name in TONAL_FIGURES:  # absent from per-piece statistics saved before they existed
        if name in stats:
            out[name] = figure(stats[name], ratio(0, 1), n_boot, seed)
    if TONIC_HISTOGRAM in stats and TONIC_HISTOGRAM in reference.histograms:
        out["tonic_pitch_class_overlap"] = figure(
            stats[TONIC_HISTOGRAM], overlap_with(reference.histograms[TONIC_HISTOGRAM]), n_boot, seed)
    return out

def sample_metrics(tokenizer: MusicTokenizer, pieces: Sequence[Sequence[int]], reference: Reference,
                   ended: Sequence[bool] | None = None, n_boot: int = 0, seed: int = 0) -> dict[str, float]:
    """Plain values of the sample figures of a set of pieces (the sample-metrics callback's)."""
    figures = sample_figures(piece_stats(tokenizer, pieces, reference, ended), reference, n_boot, seed)
    return {k: v["value"] for k, v in figures.items()}
