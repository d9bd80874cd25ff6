"""Published benchmarks: ``musicgen benchmark pearce2005`` (``make benchmark``).

Pearce (2005), pitch prediction in monophonic melodies (``../shared/benchmarks/pearce2005.md``):
the cross-entropy in bits per note of predicting each note's chromatic pitch from the earlier
notes of the same melody, by 10-fold cross-validation, on the Essen "kinder" collection and the
Bach chorale melodies BWV 253-438 (soprano lines), beside the thesis's published rows.

What runs here: the data extraction from music21's corpus (checked against the thesis's dataset
table), the folds, and four kinds of rows on the same folds:
- the thesis's own models reproduced (``musicgen.metrics.ppm``, PPM* C*I: Table 6.6's short-term,
  long-term, online long-term and combined models), each beside its published figure; every other
  row is compared with the reproduced combined model (and the fold-only rows with the long-term
  one) melody by melody, with a paired interval, where the reproduction is within tolerance;
- the project's smoothed n-gram (interpolated Kneser-Ney over pitches), its order chosen by
  cross-validation on the Essen "fink" collection;
- the project's LSTM and Transformer on pitch tokens, trained on the training folds only, each
  also with dynamic evaluation (learning from the test melody as it is predicted) and that
  combined with the thesis's short-term model (the networks' rows below), every
  network row over several training seeds;
- the same networks pre-trained on the rest of the exported corpus (``make data``), with every
  kinder, fink and BWV 253-438 melody and every duplicate of one removed, then scored as they are
  and fine-tuned per fold (``pretrained=false``: not run); beside them the thesis's long-term
  models given the same corpus (``ppm_pretrained``) and, for the Transformer, pre-training
  variants (``pretraining_variants``: a stricter interval-figure near-duplicate filter; no Bach
  chorale and no German Essen song), each paired with its main row;
- the Transformer on the chorales also given note features (``rhythm:``; durations, inter-onset
  intervals, bar positions, fermatas, optionally key and mode: ``pearce2005_rhythm``), of earlier
  notes only (strict) and also the current note's onset and duration (like-for-like, as IDyOM's
  linked viewpoints), still predicting pitch alone.
Every setting is chosen by cross-validation on fink, never on kinder or the chorales. The rows
compared with the thesis's figures are the contenders named in the config before the run (Holm's
correction over them); the others are exploratory. ``quick=true``: a smoke run on a few melodies.
Each finished fold and pre-training is kept under ``<output_dir>/pearce2005_runs/`` under a name
derived from its settings, so an interrupted benchmark resumes and a changed setting retrains.

Melodies are extracted once and kept in ``<data_dir>/benchmarks/pearce2005.json``. ``publish=true``
also writes the report into the docs site (``docs/results/pearce2005.md``, ``musicgen.publish``).
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import io
import json
import logging
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from musicgen.constants import BOS_ID, PAD_ID
from musicgen.errors import ConfigError
from musicgen.fs import atomic_write_bytes, atomic_write_text
from musicgen.metrics import NgramLM
from musicgen.metrics.bootstrap import bootstrap_ci, mean_of
from musicgen.metrics.ppm import PPM, combine
from musicgen.metrics.statistics import holm, paired_difference, seed_piece_interval
from musicgen.publish import publish, results_dir
from musicgen.runtime import hydra_main

log = logging.getLogger(__name__)

N_SPECIAL = 4  # ids 0..3: PAD, BOS, EOS, UNK, as in every tokeniser
ESSEN = {"kinder": "essenFolksong/kinder0.abc", "fink": "essenFolksong/fink0.abc"}
CHORALE_RANGE = (253, 438)
#: Thesis Table 4.1: melodies, events (notes), distinct pitches.
THESIS_DATA = {"chorales": (185, 9227, 21), "kinder": (213, 8393, 27), "fink": (566, 33087, 37)}
#: Thesis Table 6.6 (and 7.3): bits per note, (chorales, kinder).
PUBLISHED = (
    ("short-term model only (learns online from the test melody)", 3.139, 2.693),
    ("long-term model (training folds only)", 2.444, 2.428),
    ("long-term model, also updated online with the test melody", 2.375, 2.237),
    ("long- and short-term combined (bias 2)", 2.347, 2.106),
    ("multiple-viewpoint system, features searched on this data (Table 7.3)", 1.953, None),
    ("multiple-viewpoint system, extended feature set with mode (Table 9.8)", 1.911, None),
)
#: The Table 6.6 rows the PPM* reproduction answers: key in the result -> (label, chorales, kinder).
TABLE_6_6 = dict(zip(("stm", "ltm", "ltm_plus", "combined"), PUBLISHED[:4]))
#: The reproduced models' names in the thesis's notation (§6.3.1).
PPM_NAMES = {"stm": "STM C*I", "ltm": "LTM C*I", "ltm_plus": "LTM+ C*I", "combined": "LTM+ C*I with STM C*I",
             "stm_extra": "STM {}", "combined_extra": "LTM+ C*I with STM {}"}
FOLD_ONLY = "training folds only"  # the rows trained on the training folds alone (Table 6.6's LTM's peers)


# ----------------------------------------------------------------------------- data


def melody_events(part) -> list[int]:
    """The chromatic pitches of a part's note events, in order: tied notes are one event, rests
    and grace notes are none, a chord counts as its highest note."""
    from music21 import chord, note

    events = []
    for n in part.flatten().stripTies().notes:
        if n.duration.isGrace or n.duration.quarterLength == 0:
            continue
        if isinstance(n, chord.Chord):
            events.append(max(p.midi for p in n.pitches))
        elif isinstance(n, note.Note):
            events.append(n.pitch.midi)
    return events


def essen_melodies(rel: str, limit: int | None = None) -> list[list[int]]:
    """The melodies of an Essen collection (the first ``limit`` tunes with ``limit``)."""
    return [melody_events(part) for part in essen_parts(rel, limit)]


def essen_parts(rel: str, limit: int | None = None):
    """The melody part of each tune of an Essen collection that has notes, in order."""
    from musicgen.data.corpus import music21_corpus_dir
    from musicgen.data.music21_midi import parse_abc_tune, split_abc_tunes

    for text in split_abc_tunes((music21_corpus_dir() / rel).read_text(encoding="utf-8"))[:limit]:
        score = parse_abc_tune(text)
        parts = [p for p in (list(score.parts) or [score]) if p.recurse().notes]
        if parts:
            yield parts[0]


def chorale_melodies() -> list[list[int]]:
    """Soprano lines of BWV 253-438, one per BWV number (MusicXML; the .krn duplicates are not read)."""
    return [melody_events(part) for part in chorale_parts()]


def chorale_parts():
    """The soprano part of each chorale BWV 253-438, in file-name order, one per BWV number."""
    from music21 import converter

    from musicgen.data.corpus import music21_corpus_dir

    seen = set()
    for path in sorted((music21_corpus_dir() / "bach").iterdir()):
        m = re.fullmatch(r"bwv(\d+)\.(mxl|xml)", path.name)
        if m and CHORALE_RANGE[0] <= int(m.group(1)) <= CHORALE_RANGE[1] and m.group(1) not in seen:
            seen.add(m.group(1))
            yield converter.parse(path, forceSource=True).parts[0]


def load_melodies(data_dir: Path) -> dict[str, list[list[int]]]:
    path = data_dir / "benchmarks" / "pearce2005.json"
    if path.is_file():
        return json.loads(path.read_text())
    log.info("extracting the benchmark's melodies from music21's corpus (once; about two minutes)")
    data = {"chorales": chorale_melodies(), **{name: essen_melodies(rel) for name, rel in ESSEN.items()}}
    atomic_write_text(path, json.dumps(data))
    return data


def load_features(data_dir: Path, data: dict[str, list[list[int]]], datasets: list[str]) -> dict[str, list[np.ndarray]]:
    """Each melody's note features (``pearce2005_rhythm.feature_ids``, ``(n, features)``) for
    ``datasets``, kept beside the melodies in ``<data_dir>/benchmarks/pearce2005_rhythm.json``
    (``note_features``' lists, extracted once per dataset). The melodies' pitches are the benchmark's
    own (``pearce2005.json``): features whose pitches differ from them are refused, not used."""
    from musicgen.experiments.pearce2005_rhythm import feature_ids, note_features

    path = data_dir / "benchmarks" / "pearce2005_rhythm.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    missing = [ds for ds in datasets if ds not in stored]
    if missing:
        log.info("extracting the note features of %s from music21's corpus (once)", ", ".join(missing))
        for ds in missing:
            parts = chorale_parts() if ds == "chorales" else essen_parts(ESSEN[ds])
            stored[ds] = [note_features(p) for p in parts]
        atomic_write_text(path, json.dumps(stored))
    out = {}
    for ds in datasets:
        pitches = [f["pitch"] for f in stored[ds]]
        if pitches[: len(data[ds])] != data[ds]:
            raise ConfigError(f"{path}: the {ds} melodies' pitches differ from those in pearce2005.json; delete "
                              "it to extract the features again")
        out[ds] = [feature_ids(f) for f in stored[ds][: len(data[ds])]]
    return out


def features_key(features: list[np.ndarray]) -> str:
    """A digest of a dataset's note features, part of a rhythm row's name in the store."""
    h = hashlib.sha1()
    for f in features:
        h.update(np.ascontiguousarray(f, dtype=np.int64).tobytes() + b"|")
    return h.hexdigest()[:12]


def dataset_table(data: dict[str, list[list[int]]]) -> list[dict[str, Any]]:
    """Melodies, events and distinct pitches of each dataset against the thesis's Table 4.1."""
    rows = []
    for name, melodies in data.items():
        ours = (len(melodies), sum(map(len, melodies)), len({p for m in melodies for p in m}))
        theirs = THESIS_DATA[name]
        rows.append({"dataset": name, "ours": ours, "thesis": theirs,
                     "within_2_percent": [abs(a - b) <= 0.02 * b for a, b in zip(ours, theirs)]})
    return rows


# ----------------------------------------------------------------------------- pre-training corpus


def midi_melody(path: Path) -> list[int]:
    """The melody of an exported MIDI file: its soprano track where one is named so (chorales),
    else its first track with notes; one event per onset (the highest note), as ``melody_events``."""
    import symusic

    tracks = [t for t in symusic.Score(str(path)).tracks if len(t.notes) and not t.is_drum]
    if not tracks:
        return []
    track = next((t for t in tracks if t.name.strip().lower() == "soprano"), tracks[0])
    top: dict[int, int] = {}
    for n in track.notes:
        top[n.time] = max(top.get(n.time, 0), n.pitch)
    return [top[t] for t in sorted(top)]


def contour(melody: list[int]) -> tuple[int, ...]:
    """The transposition-invariant shape of a melody: its intervals, repeated notes dropped (so
    a tie written as two notes, or a split note, does not hide a duplicate)."""
    steps = np.diff(np.asarray(melody, dtype=int))
    return tuple(int(s) for s in steps if s)


def _grams(c: tuple[int, ...], n: int) -> set[tuple[int, ...]]:
    return {c[i : i + n] for i in range(len(c) - n + 1)}


def duplicates_of(candidates: list[list[int]], protected: list[list[int]], n: int = 8,
                  share: float = 0.5) -> list[bool]:
    """For each candidate melody: is it a duplicate of a protected one, up to transposition?
    Duplicate: the same contour, or at least ``share`` of the distinct contour ``n``-grams of
    either melody occurring in the other (variants, a tune with an extra phrase, a fragment)."""
    index: dict[tuple[int, ...], set[int]] = {}
    exact = set()
    sizes = []
    for j, m in enumerate(protected):
        c = contour(m)
        exact.add(c)
        grams = _grams(c, n)
        sizes.append(len(grams))
        for g in grams:
            index.setdefault(g, set()).add(j)
    out = []
    for m in candidates:
        c = contour(m)
        grams = _grams(c, n)
        hits: dict[int, int] = {}
        for g in grams:
            for j in index.get(g, ()):
                hits[j] = hits.get(j, 0) + 1
        out.append(c in exact or any(h >= share * min(len(grams), sizes[j]) for j, h in hits.items()))
    return out


def corpus_files(data_dir: Path) -> tuple[list[tuple[str, Path]], int]:
    """The exported corpus's files (``make data``: ``<data_dir>/folk`` and ``chorales``) that may
    be pre-trained on, as ``(source, path)`` in a fixed order (``source``: ``folk/<rel>`` or
    ``chorales/<name>``), and how many were left out by name (Essen kinder and fink, chorales
    BWV 253-438)."""
    folk, chorales = data_dir / "folk", data_dir / "chorales"
    if not (folk / "manifest.json").is_file() or not chorales.is_dir():
        raise ConfigError(f"the pre-trained rows need the exported corpus under {data_dir}: run `make data` first")
    named_out = {f"essenFolksong/{Path(rel).stem}" for rel in ESSEN.values()}
    files, left_out = [], 0
    for path in sorted(folk.rglob("*.mid")):
        rel = path.relative_to(folk).as_posix()
        if any(rel.startswith(prefix + "/") for prefix in named_out):
            left_out += 1
        else:
            files.append((f"folk/{rel}", path))
    for path in sorted(chorales.glob("*.mid")):
        m = re.match(r"bwv(\d+)", path.name)
        if m and CHORALE_RANGE[0] <= int(m.group(1)) <= CHORALE_RANGE[1]:
            left_out += 1
        else:
            files.append((f"chorales/{path.name}", path))
    return files, left_out


def pretraining_melodies(data_dir: Path, protected: list[list[int]]) -> tuple[list[list[int]], dict[str, int]]:
    """Melodies of the exported corpus (``make data``: ``<data_dir>/folk`` and ``chorales``) to
    pre-train on: every file of the benchmark's collections left out by name (Essen kinder and
    fink, chorales BWV 253-438), then every duplicate of a benchmark melody (``duplicates_of``)."""
    corpus, stats, _, _ = pretraining_corpora(data_dir, protected, {})
    return corpus, stats


#: The German collections of music21's Essen files (the Essen database's ``europa/deutschl``:
#: Altdeutsche Lieder, the German ballads, Boehme, the Deutsches Volksliedarchiv, Erk, Fink,
#: Haydn's German folk-song sources, kinder, the variants file and Zuccalmaglio); the others are
#: Chinese (han), Irish (irl), Lorraine (lot), Luxembourg (lux) and the small mixed test files,
#: whose tunes from Germany are found by their origin field (``essen_tune_is_german``).
GERMAN_ESSEN = re.compile(r"(altdeu|ballad|boehme|dva|erk|fink|folkHaydn|kinder|variant|zuccal)\d*")
#: What a pre-training variant may drop by name (``pretraining_variants.variants.*.drop``).
DROPS = ("bach", "german_essen")


def _essen_origins(stem: str, cache: dict[str, list[str]] = {}) -> list[str]:  # noqa: B006 (a cache)
    """The origin field (``O:``) of each tune of music21's ``essenFolksong/<stem>.abc``, in the
    export's order (a tune's index in ``split_abc_tunes``, its exported file name)."""
    if stem not in cache:
        from musicgen.data.corpus import music21_corpus_dir
        from musicgen.data.music21_midi import split_abc_tunes

        path = music21_corpus_dir() / "essenFolksong" / f"{stem}.abc"
        tunes = split_abc_tunes(path.read_text(encoding="utf-8")) if path.is_file() else []
        cache[stem] = [next((x[2:].strip() for x in t.splitlines() if x.startswith("O:")), "") for t in tunes]
    return cache[stem]


def essen_tune_is_german(source: str) -> bool:
    """Is an exported folk file (``folk/essenFolksong/<stem>/<index>.mid``) a German Essen song:
    of a German collection (``GERMAN_ESSEN``), or a tune whose origin names Deutschland?"""
    parts = source.split("/")
    if len(parts) != 4 or parts[:2] != ["folk", "essenFolksong"]:
        return False
    if GERMAN_ESSEN.fullmatch(parts[2]):
        return True
    origins, index = _essen_origins(parts[2]), int(Path(parts[3]).stem)
    return index < len(origins) and "Deutschland" in origins[index]


def _dropped(source: str, drop: list[str]) -> bool:
    return ("bach" in drop and source.startswith("chorales/")) or (
        "german_essen" in drop and essen_tune_is_german(source))


def pretraining_corpora(data_dir: Path, protected: list[list[int]], variants: dict[str, dict]
                        ) -> tuple[list[list[int]], dict[str, Any], dict[str, list[list[int]]], dict[str, Any]]:
    """The pre-training corpus and its variants, from one reading of the exported corpus.

    The corpus (``pretraining_melodies``): the files of ``corpus_files``, less every duplicate of a
    ``protected`` (benchmark) melody by ``duplicates_of`` (the contour 8-gram filter); its stats.
    Each variant (``{name, similarity, drop}``): the same, also less every melody at least
    ``similarity`` similar to a protected one by ``musicgen.metrics.similarity`` (interval figures,
    transposition-invariant; the split's threshold is 0.4, the leakage check's 0.25) and every file
    ``drop`` names (``bach``: every chorale file; ``german_essen``: ``essen_tune_is_german``).
    Returns ``(corpus, stats, {variant: corpus}, filters)``; ``filters`` counts what each filter
    removes from the melodies left after the files left out by name: the 8-gram filter, the
    similarity filter alone at 0.4, 0.25 and each variant's threshold (and how many of those the
    8-gram filter keeps), and per variant what it drops."""
    from musicgen.metrics import similarity as sim

    files, left_out = corpus_files(data_dir)
    read = [(source, midi_melody(path)) for source, path in files]
    read = [(source, m) for source, m in read if len(m) >= 2]
    melodies = [m for _, m in read]
    dup = np.array(duplicates_of(melodies, protected), dtype=bool)
    kept = [m for m, d in zip(melodies, dup) if not d]
    stats = {"files": len(files) + left_out, "left_out_by_name": left_out,
             "duplicates_removed": int(dup.sum()), "melodies": len(kept), "notes": sum(map(len, kept))}
    best = np.zeros(len(melodies))
    if melodies and protected:
        best, _ = sim.nearest([sim.signature(sim.contour(m)) for m in melodies],
                              [sim.signature(sim.contour(m)) for m in protected])
    thresholds = sorted({sim.SPLIT_THRESHOLD, sim.LEAKAGE_THRESHOLD,
                         *(float(v["similarity"]) for v in variants.values() if v.get("similarity"))}, reverse=True)
    filters: dict[str, Any] = {
        "melodies_read": len(melodies), "contour_8gram": int(dup.sum()),
        "similarity": {f"{t:g}": {"alone": int((best >= t).sum()), "beyond_8gram": int(((best >= t) & ~dup).sum()),
                                  "8gram_only": int((dup & (best < t)).sum())} for t in thresholds},
        "variants": {}}
    out = {}
    for name, v in variants.items():
        drop = list(v.get("drop") or [])
        if set(drop) - set(DROPS):
            raise ConfigError(f"pretraining_variants.variants.{name}.drop: {drop}; each one of {', '.join(DROPS)}")
        threshold = v.get("similarity")
        near = best >= float(threshold) if threshold else np.zeros(len(melodies), dtype=bool)
        dropped = np.array([_dropped(source, drop) for source, _ in read], dtype=bool)
        keep = ~(dup | near | dropped)
        out[name] = [m for m, k in zip(melodies, keep) if k]
        filters["variants"][name] = {
            "dropped_by_name": int(dropped.sum()), "contour_8gram": int((dup & ~dropped).sum()),
            "similarity_beyond_8gram": int((near & ~dup & ~dropped).sum()), "melodies": len(out[name]),
            "notes": sum(map(len, out[name])),
            **{f"dropped_{d}": int(np.sum([_dropped(s, [d]) for s, _ in read])) for d in drop}}
    return kept, stats, out, filters


# ----------------------------------------------------------------------------- neural models

VOCAB = N_SPECIAL + 128  # a token per MIDI pitch after the specials


def encode(melody: list[int]) -> np.ndarray:
    return np.array([BOS_ID, *(N_SPECIAL + p for p in melody)], dtype=np.int64)


def build_model(spec: dict[str, Any]) -> torch.nn.Module:
    """The network of ``spec`` (``kind``: lstm | transformer, then its arguments); with a ``rhythm``
    entry (``{earlier: [...], current: [...]}``) wrapped in a ``RhythmNet`` that also embeds those
    note features."""
    from musicgen.models import MelodyLSTM, MusicTransformer

    spec = dict(spec)
    kind, rhythm = spec.pop("kind"), spec.pop("rhythm", None)
    if kind == "lstm":
        net = MelodyLSTM(vocab_size=VOCAB, input_mode="embedding", context_len=MAX_LEN, **spec)
    elif kind == "transformer":
        net = MusicTransformer(vocab_size=VOCAB, max_seq_len=MAX_LEN, **spec)
    else:
        raise ConfigError(f"benchmark model kind {kind!r} unknown: lstm | transformer")
    if rhythm is None:
        return net
    from musicgen.experiments.pearce2005_rhythm import RhythmNet

    return RhythmNet(net, rhythm.get("earlier", []), rhythm.get("current", []))


def _logits(model: torch.nn.Module, ids: torch.Tensor, feats: torch.Tensor | None) -> torch.Tensor:
    """The network's logits (B, T, V) for ids (B, T), with input features (B, T, slots) where it takes them."""
    return model(ids) if feats is None else model(ids, feats)


MAX_LEN = 512  # training windows: longer melodies are cut into pieces this long


def _batch(seqs: list[np.ndarray], rng: np.random.Generator, transpose: int,
           shifts: list[int] | None = None) -> torch.Tensor:
    """Right-padded (B, T) ids; each melody shifted by a random interval within +-``transpose``
    semitones that keeps it inside MIDI's range (0 leaves the pitches as they are); each shift is
    appended to ``shifts`` when given."""
    T = max(len(s) for s in seqs)
    out = np.full((len(seqs), T), PAD_ID, dtype=np.int64)
    for i, s in enumerate(seqs):
        s = s.copy()
        shift = 0
        if transpose:
            body = s[1:] - N_SPECIAL
            lo, hi = max(-transpose, -int(body.min())), min(transpose, 127 - int(body.max()))
            shift = int(rng.integers(lo, hi + 1))
            s[1:] += shift
        if shifts is not None:
            shifts.append(shift)
        out[i, : len(s)] = s
    return torch.from_numpy(out)


def _feature_batch(rows: list[np.ndarray], T: int) -> torch.Tensor:
    """Right-padded (B, T, slots) input features (0: none)."""
    out = np.zeros((len(rows), T, rows[0].shape[1]), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return torch.from_numpy(out)


def _epoch(seqs: list[np.ndarray], batch_size: int, rng: np.random.Generator, pool: int = 16) -> list[np.ndarray]:
    """One epoch's batches in random order, each drawn from ``pool`` batches' worth of melodies
    sorted by length, so that a batch pads little (melodies range from 10 to 500 notes)."""
    order, out = rng.permutation(len(seqs)), []
    for i in range(0, len(order), batch_size * pool):
        chunk = sorted(order[i : i + batch_size * pool], key=lambda j: len(seqs[j]))
        out += [np.array(chunk[j : j + batch_size]) for j in range(0, len(chunk), batch_size)]
    return [out[i] for i in rng.permutation(len(out))]


def fit(model: torch.nn.Module, melodies: list[list[int]], train: dict[str, Any], seed: int,
        label: str = "", features: list[np.ndarray] | None = None) -> torch.nn.Module:
    """Next-note training on whole melodies (cut into ``MAX_LEN`` windows): AdamW, linear warm-up
    then cosine decay to a tenth, gradient clipping at 1, fp32, padding ignored by the loss. A
    ``RhythmNet`` also gets each melody's ``features`` (``feature_ids``), as ``model.inputs`` lays
    them out (key signatures moved with a transposed copy)."""
    seqs, where = [], []
    for j, m in enumerate(melodies):
        e = encode(m)
        starts = range(0, max(len(e) - 1, 1), MAX_LEN)
        seqs += [e[i : i + MAX_LEN] for i in starts]
        where += [(j, i) for i in starts]
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    steps, warmup = int(train["steps"]), int(train.get("warmup", 0))
    if steps == 0:
        return model.eval()
    opt = torch.optim.AdamW(model.parameters(), lr=train["lr"], weight_decay=train["weight_decay"], betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(warmup, 1)) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0)))))
    model.train()
    batches: list[np.ndarray] = []
    t0 = time.perf_counter()
    for step in range(steps):
        if not batches:
            batches = _epoch(seqs, int(train["batch_size"]), rng)
        chosen, shifts = batches.pop(), []
        batch = _batch([seqs[i] for i in chosen], rng, int(train.get("transpose", 0)), shifts)
        feats = None
        if features is not None:  # the features of each window's input positions
            feats = _feature_batch([model.inputs(features[where[i][0]], s)[where[i][1]: where[i][1] + len(seqs[i]) - 1]
                                    for i, s in zip(chosen, shifts)], batch.size(1) - 1)
        logits = _logits(model, batch[:, :-1], feats)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1), ignore_index=PAD_ID)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if label and (step + 1) % max(steps // 10, 1) == 0:
            log.info("%s: step %d/%d, loss %.3f, %.0f s", label, step + 1, steps, loss.item(), time.perf_counter() - t0)
    return model.eval()


@torch.no_grad()
def melody_log_probs(model: torch.nn.Module, melodies: list[list[int]], alphabet: list[int]) -> list[np.ndarray]:
    """Natural-log probability of every note of each melody, the first predicted from the start
    token alone, over the dataset's pitch alphabet (the n-gram's): the model's distribution
    renormalised over those pitches."""
    model.eval()
    ids = torch.tensor([N_SPECIAL + p for p in alphabet])
    col = {p: i for i, p in enumerate(alphabet)}
    out = []
    for m in melodies:
        e = torch.from_numpy(encode(m))[None]
        assert e.size(1) - 1 <= MAX_LEN, f"a melody of {len(m)} notes is longer than the window ({MAX_LEN})"
        logp = model(e[:, :-1])[0].float()[:, ids].log_softmax(-1)  # (n, |alphabet|)
        out.append(logp[torch.arange(len(m)), torch.tensor([col[p] for p in m])].double().numpy())
    return out


# ----------------------------------------------------------------------------- protocol


def folds(n: int, k: int = 10, seed: int = 0) -> list[np.ndarray]:
    """``k`` disjoint folds of ``range(n)`` drawn at random (every melody in exactly one)."""
    return [np.sort(f) for f in np.array_split(np.random.default_rng(seed).permutation(n), k)]


def bits_per_note(log_probs: list[np.ndarray]) -> dict[str, float]:
    """From each melody's natural-log probabilities of its notes: the mean over melodies of the
    per-melody cross-entropy (thesis Eq. 6.6, in bits) and the per-note mean over all notes."""
    per_melody = [-lp.sum() / math.log(2) / len(lp) for lp in log_probs if len(lp)]
    total = sum(-lp.sum() / math.log(2) for lp in log_probs)
    return {"per_melody": float(np.mean(per_melody)), "per_note": float(total / sum(len(lp) for lp in log_probs))}


def summarise(log_probs: list[np.ndarray], seed: int = 0, n_boot: int = 1000) -> dict[str, Any]:
    """``bits_per_note`` with a 95% bootstrap interval of the per-melody mean over melodies, and
    each melody's cross-entropy (``melody_bits``, in the melodies' order: what pairs rows)."""
    out = bits_per_note(log_probs)
    per_melody = np.array([-lp.sum() / math.log(2) / len(lp) for lp in log_probs if len(lp)])
    _, lo, hi = bootstrap_ci(per_melody, mean_of(0), n_boot=n_boot, seed=seed)
    out.update(per_melody_interval=[lo, hi], melodies=len(log_probs), melody_bits=per_melody.tolist())
    return out


def ngram_cross_validation(melodies: list[list[int]], order: int, k: int = 10, seed: int = 0,
                           n_boot: int = 1000) -> dict[str, Any]:
    """10-fold cross-validated bits per note of the smoothed n-gram over pitches: trained on the
    other folds, every note of each test melody predicted (the first from the start of the
    melody alone). The interval is over melodies."""
    alphabet = sorted({p for m in melodies for p in m})
    ids = {p: N_SPECIAL + i for i, p in enumerate(alphabet)}
    seqs = [np.array([BOS_ID, *(ids[p] for p in m)]) for m in melodies]
    log_probs: list[np.ndarray] = [np.zeros(0)] * len(seqs)
    for test in folds(len(seqs), k, seed):
        train = np.setdiff1d(np.arange(len(seqs)), test)
        lm = NgramLM(order=order, vocab_size=N_SPECIAL + len(alphabet)).fit([seqs[i] for i in train])
        for i in test:
            log_probs[i] = lm.log_probs(seqs[i])
    return {**summarise(log_probs, seed, n_boot), "order": order}


def ppm_log_probs(melodies: list[list[int]], escape: str = "c", exclusion: bool = True,
                  update_exclusion: bool = False, bias: float = 2, extra_stm: dict | None = None,
                  k: int = 10, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """The thesis's models (Table 6.6) by 10-fold cross-validation on the n-gram's folds, over
    the dataset's pitch alphabet; natural-log probability of every note of each melody, per row:
    - ``ltm``: PPM trained on the other folds, fixed;
    - ``ltm_plus``: the same, also counting each test note after predicting it (kept across the
      fold's melodies, taken in order, as IDyOM does);
    - ``stm``: PPM of the test melody so far (empty at each melody's start);
    - ``combined``: ``ltm_plus`` with ``stm``, by the entropy-weighted mean with ``bias`` (Eq. 6.9);
    - with ``extra_stm`` (settings that differ, e.g. IDyOM's later short-term default, escape X
      with update exclusion): ``stm_extra`` and ``combined_extra``, the same with that STM.
    The settings are shared by every model (the thesis's C*I: escape C, unbounded order,
    interpolated smoothing, no update exclusion)."""
    alphabet = sorted({p for m in melodies for p in m})
    settings = {"escape": escape, "exclusion": exclusion, "update_exclusion": update_exclusion}
    rows = list(TABLE_6_6) + (["stm_extra", "combined_extra"] if extra_stm else [])
    out: dict[str, list[np.ndarray]] = {r: [np.zeros(0)] * len(melodies) for r in rows}
    for test in folds(len(melodies), k, seed):
        train = [melodies[i] for i in np.setdiff1d(np.arange(len(melodies)), test)]
        ltm, ltm_plus = PPM(alphabet, **settings).fit(train), PPM(alphabet, **settings).fit(train)
        for i in test:
            m = melodies[i]
            dists = {"ltm": ltm.predict_sequence(m, learn=False), "ltm_plus": ltm_plus.predict_sequence(m, learn=True),
                     "stm": PPM(alphabet, **settings).predict_sequence(m, learn=True)}
            dists["combined"] = combine([dists["ltm_plus"], dists["stm"]], bias)
            if extra_stm:
                dists["stm_extra"] = PPM(alphabet, **{**settings, **extra_stm}).predict_sequence(m, learn=True)
                dists["combined_extra"] = combine([dists["ltm_plus"], dists["stm_extra"]], bias)
            col = [alphabet.index(p) for p in m]
            for r in rows:
                out[r][i] = np.log(dists[r][np.arange(len(m)), col])
    return out


def ppm_rows(melodies: list[list[int]], ppm: dict[str, Any], store: Store | None, tag: str, k: int = 10,
             seed: int = 0, n_boot: int = 1000) -> dict[str, dict[str, Any]]:
    """``ppm_log_probs`` summarised per row; with a ``store``, each row's per-note figures are kept
    under a name derived from the settings (computed once for all rows, reused on resume)."""
    settings = {key: ppm[key] for key in ("escape", "exclusion", "update_exclusion", "bias", "extra_stm")}
    done: dict[str, list[np.ndarray]] = {}

    def compute(row: str) -> list[np.ndarray]:
        if not done:
            done.update(ppm_log_probs(melodies, **settings, k=k, seed=seed))
        return done[row]

    rows = list(TABLE_6_6) + (["stm_extra", "combined_extra"] if settings["extra_stm"] else [])
    key = Store.key(settings, k, seed, len(melodies), sum(map(len, melodies)))
    return {row: summarise(store.log_probs(f"{tag}-ppm-{key}/{row}", lambda row=row: compute(row))
                           if store else compute(row), seed, n_boot) for row in rows}


class CorpusPPM(PPM):
    """PPM* (unbounded order in its context choice) whose trie keeps contexts of at most
    ``max_context`` symbols, so that a pre-training corpus of 800,000 notes fits in memory (a
    node per distinct substring: unbounded, about as many nodes as the corpus's notes squared
    over its melodies). The cap changes a prediction only where a context of ``max_context``
    notes has been followed by two things or more: a longer one would then be PPM*'s choice where
    it matched (a deterministic context stays one when lengthened, so below that PPM*'s choice is
    the same). ``checkpoint`` and ``rollback`` undo everything counted in between (a fold's
    training melodies and its online updates), so one corpus trie serves every fold."""

    def __init__(self, alphabet, max_context: int, **settings):
        super().__init__(alphabet, order=None, **settings)
        if max_context < 1:
            raise ValueError(f"max_context must be >= 1, got {max_context}")
        self.max_context = int(max_context)
        self._journal: list | None = None

    def _count(self, active, sym):
        if self._journal is not None:
            for node in active:
                child = node.children.get(sym)
                self._journal.append((node, sym, None if child is None else (child.count, child.excluded_count)))
        return super()._count(active, sym)[-(self.max_context + 1):]

    def checkpoint(self) -> None:
        self._journal = []

    def rollback(self) -> None:
        """Back to the state at ``checkpoint``, exactly (nodes created since are removed)."""
        for node, sym, before in reversed(self._journal or []):
            if before is None:
                del node.children[sym]
            else:
                node.children[sym].count, node.children[sym].excluded_count = before
        self._journal = None


#: The pre-trained PPM* rows (``ppm_pretrained``): key in the result -> the model in the thesis's notation.
PPM_PRETRAINED = {"ltm": "PPM* LTM C*I", "ltm_plus": "PPM* LTM+ C*I", "combined": "PPM* LTM+ C*I with STM C*I"}


def ppm_pretrained_log_probs(data: dict[str, list[list[int]]], corpus: list[list[int]], ppm: dict[str, Any],
                             max_context: int, k: int = 10, seed: int = 0) -> dict[str, dict[str, list[np.ndarray]]]:
    """Table 6.6's long-term models given the networks' pre-training ``corpus`` too: per dataset of
    ``data`` and fold (``folds(n, k, seed)``, the other rows' folds), PPM* C*I (``CorpusPPM``)
    trained on the corpus and the other folds (``ltm``), the same updated online with each test
    note after predicting it (``ltm_plus``, kept across the fold's melodies as in ``ppm_log_probs``),
    and that combined with the short-term model of the melody so far (``combined``, bias
    ``ppm["bias"]``). The trie is over the pitches of the corpus and the datasets; each
    distribution is renormalised over the dataset's own alphabet (as the networks' are) before it
    is scored or combined. Natural-log probability of every note: dataset -> row -> per melody."""
    settings = {key: ppm[key] for key in ("escape", "exclusion", "update_exclusion")}
    alphabet = sorted({p for m in corpus for p in m} | {p for ms in data.values() for m in ms for p in m})
    t0 = time.perf_counter()
    model = CorpusPPM(alphabet, max_context, **settings).fit(corpus)
    log.info("PPM* on the pre-training corpus (%d melodies, contexts up to %d notes): %.0f s", len(corpus),
             max_context, time.perf_counter() - t0)
    out: dict[str, dict[str, list[np.ndarray]]] = {}
    for ds, melodies in data.items():
        own = sorted({p for m in melodies for p in m})
        cols = [alphabet.index(p) for p in own]

        def restrict(d: np.ndarray, cols: list[int] = cols) -> np.ndarray:
            d = d[:, cols]
            return d / d.sum(1, keepdims=True)

        rows: dict[str, list[np.ndarray]] = {r: [np.zeros(0)] * len(melodies) for r in PPM_PRETRAINED}
        for test in folds(len(melodies), k, seed):
            model.checkpoint()
            model.fit([melodies[i] for i in np.setdiff1d(np.arange(len(melodies)), test)])
            fixed = {i: restrict(model.predict_sequence(melodies[i], learn=False)) for i in test}
            online = {i: restrict(model.predict_sequence(melodies[i], learn=True)) for i in test}
            model.rollback()
            for i in test:
                m = melodies[i]
                dists = {"ltm": fixed[i], "ltm_plus": online[i],
                         "combined": combine([online[i], stm_dists(m, own, ppm)], ppm["bias"])}
                col = [own.index(p) for p in m]
                for r in rows:
                    rows[r][i] = np.log(dists[r][np.arange(len(m)), col])
        out[ds] = rows
    return out


def corpus_key(corpus: list[list[int]]) -> str:
    """A digest of a corpus's melodies, part of a pre-trained PPM* row's name in the store."""
    return hashlib.sha1(json.dumps(corpus).encode()).hexdigest()[:12]


def ppm_pretrained_rows(data: dict[str, list[list[int]]], corpus: list[list[int]], ppm: dict[str, Any],
                        max_context: int, store: Store | None, label: str, k: int = 10, seed: int = 0,
                        n_boot: int = 1000) -> dict[str, dict[str, Any]]:
    """``ppm_pretrained_log_probs`` summarised: row name (``<model>, <label>``) -> ``{"sees",
    "corpus", dataset: summary}``; with a ``store``, each dataset's rows are kept under a name
    derived from the settings and the corpus (computed once, reused on resume)."""
    settings = {key: ppm[key] for key in ("escape", "exclusion", "update_exclusion", "bias")}
    done: dict[str, dict[str, list[np.ndarray]]] = {}

    def compute(ds: str, row: str) -> list[np.ndarray]:
        if not done:
            done.update(ppm_pretrained_log_probs(data, corpus, ppm, max_context, k, seed))
        return done[ds][row]

    ckey = corpus_key(corpus)
    out: dict[str, dict[str, Any]] = {}
    for row, model in PPM_PRETRAINED.items():
        name = f"{model}, {label}"
        out[name] = {"sees": SEES["pre"] if row == "ltm" else SEES["pre_dynamic"], "ppm_row": row}
        for ds, melodies in data.items():
            key = Store.key(settings, max_context, k, seed, len(melodies), sum(map(len, melodies)), ckey)
            lps = (store.log_probs(f"{ds}-ppm-pretrained-{key}/{row}", lambda ds=ds, row=row: compute(ds, row))
                   if store else compute(ds, row))
            out[name][ds] = summarise(lps, seed, n_boot)
    return out


def reproduction(ppm: dict[str, dict[str, Any]], tolerance: float) -> dict[str, dict[str, Any]]:
    """Each reproduced row of Table 6.6 against the thesis: per dataset ours, theirs, and whether
    they agree within ``tolerance`` bits (mean over melodies)."""
    out = {}
    for row, (_, *thesis) in TABLE_6_6.items():
        out[row] = {ds: {"ours": ppm[ds][row]["per_melody"], "thesis": t,
                         "holds": abs(ppm[ds][row]["per_melody"] - t) <= tolerance}
                    for ds, t in zip(("chorales", "kinder"), thesis)}
    return out


def paired_against_ppm(rows: dict[str, dict[str, dict]], ppm: dict[str, dict[str, Any]],
                       holds: dict[str, dict[str, Any]], fold_only: set[str], n_boot: int = 1000,
                       seed: int = 0) -> dict[str, dict[str, dict | None]]:
    """For each row (name -> dataset -> summary) and dataset: its difference from the reproduced
    combined model, and for the fold-only rows from the reproduced long-term model, melody by
    melody (row minus reference, bits per note, mean over melodies) with the paired interval of
    ``paired_difference`` (a row scored with several training seeds, ``melody_bits_by_seed``: of
    ``seed_piece_interval`` over seeds and melodies); only where that reproduction holds (``None``
    where it does not)."""
    out: dict[str, dict[str, dict | None]] = {}
    for name, by_ds in rows.items():
        refs = ["combined"] + (["ltm"] if name in fold_only else [])
        out[name] = {}
        for ds, r in by_ds.items():
            out[name][ds] = {}
            for ref in refs:
                if not holds[ref][ds]["holds"]:
                    out[name][ds][ref] = None
                    continue
                b = np.asarray(ppm[ds][ref]["melody_bits"])
                if "melody_bits_by_seed" in r:  # several training seeds: the two-level interval
                    d = np.asarray(r["melody_bits_by_seed"]) - b[None]
                    out[name][ds][ref] = seed_piece_interval(d, np.ones_like(b), n_boot=n_boot, seed=seed)
                else:
                    a = np.asarray(r["melody_bits"])
                    out[name][ds][ref] = paired_difference(a, b, np.ones_like(a), n_boot=n_boot, seed=seed)
    return out


def ngram_name(order: int) -> str:
    return f"{order}-gram, interpolated Kneser-Ney (order chosen on fink)"


def choose_order(melodies: list[list[int]], orders: range) -> tuple[int, dict[int, float]]:
    """The n-gram order with the lowest cross-validated bits per note (mean over melodies)."""
    scores = {o: ngram_cross_validation(melodies, o, n_boot=10)["per_melody"] for o in orders}
    return min(scores, key=scores.get), scores


class Store:
    """Finished work under one folder, each piece named by what produced it, so an interrupted
    benchmark resumes where it stopped and a changed setting never reuses a stale result."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @staticmethod
    def key(*parts: Any) -> str:
        return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def log_probs(self, name: str, compute) -> list[np.ndarray]:
        path = self.root / f"{name}.npz"
        if path.is_file():
            with np.load(path) as z:
                return [z[f"m{i}"] for i in range(len(z.files))]
        lps = compute()
        buf = io.BytesIO()
        np.savez(buf, **{f"m{i}": lp for i, lp in enumerate(lps)})
        atomic_write_bytes(path, buf.getvalue())
        return lps

    def record(self, name: str, compute) -> dict[str, Any]:
        """A JSON-able record (e.g. the settings chosen on fink and when), computed once."""
        path = self.root / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text())
        value = compute()
        atomic_write_text(path, json.dumps(value, indent=1))
        return value

    def weights(self, name: str, compute) -> dict[str, torch.Tensor]:
        path = self.root / f"{name}.pt"
        if path.is_file():
            return torch.load(path, map_location="cpu", weights_only=True)
        state = compute()
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(path, buf.getvalue())
        return state


def weights_key(state: dict[str, torch.Tensor] | None) -> str | None:
    """A digest of initial weights (pre-trained), part of a fold's name in the store, so that folds
    trained from other weights are never reused."""
    if state is None:
        return None
    h = hashlib.sha1()
    for name, t in sorted(state.items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def neural_cross_validation(melodies: list[list[int]], spec: dict, train: dict, store: Store, tag: str,
                            seed: int, k: int = 10, init: dict | None = None, n_boot: int = 1000,
                            train_size: int | None = None) -> dict[str, Any]:
    """The n-gram's protocol for a network: per fold, a model built from ``spec`` (its weights
    from ``init`` when pre-trained) trained on the other folds only (``train_size``: a random
    subset of them that large), then every note of the fold's melodies scored."""
    alphabet = sorted({p for m in melodies for p in m})
    log_probs: list[np.ndarray] = [np.zeros(0)] * len(melodies)
    key = store.key(spec, train, seed, k, train_size, len(melodies), sum(map(len, melodies)),
                    *([weights_key(init)] if init is not None else []))
    for f, test in enumerate(folds(len(melodies), k, seed)):
        rest = np.setdiff1d(np.arange(len(melodies)), test)
        if train_size is not None:
            rest = np.random.default_rng(seed + f).choice(rest, size=min(train_size, len(rest)), replace=False)

        def compute(f=f, test=test, rest=rest):
            torch.manual_seed(seed + f)
            model = build_model(spec)
            if init is not None:
                model.load_state_dict(init)
            fit(model, [melodies[i] for i in rest], train, seed=seed + f)
            return melody_log_probs(model, [melodies[i] for i in test], alphabet)

        for i, lp in zip(test, store.log_probs(f"{tag}-{key}/fold{f}", compute)):
            log_probs[i] = lp
    return summarise(log_probs, seed, n_boot)


def pretrain(name: str, spec: dict, train: dict, corpus: list[list[int]], store: Store, seed: int) -> dict:
    """Weights of ``spec`` pre-trained on ``corpus`` (kept in the store: trained once)."""
    key = store.key(spec, train, seed, len(corpus), sum(map(len, corpus)))

    def compute():
        torch.manual_seed(seed)
        model = build_model(spec)
        log.info("pre-training the %s on %d melodies (%d notes), %d steps", name, len(corpus),
                 sum(map(len, corpus)), train["steps"])
        return fit(model, corpus, train, seed=seed, label=f"pre-training {name}").state_dict()

    return store.weights(f"pretrain-{name}-{key}", compute)


def tune(melodies: list[list[int]], spec: dict, base: dict, grid: dict[str, list], store: Store, tag: str,
         seed: int, train_size: int, init: dict | None = None, k: int = 3) -> tuple[dict, list[dict]]:
    """The training settings (``base`` with each combination of ``grid``) with the lowest bits per
    note by ``k``-fold cross-validation on ``melodies`` (the fink collection: never the test
    data), each fold training on ``train_size`` melodies, the size of a benchmark training fold."""
    import itertools

    names, rows = list(grid), []
    for values in itertools.product(*grid.values()):
        settings = {**base, **dict(zip(names, values))}
        r = neural_cross_validation(melodies, spec, settings, store, tag, seed, k=k, init=init, n_boot=10,
                                    train_size=train_size)
        rows.append({**dict(zip(names, values)), "per_melody": r["per_melody"]})
        log.info("%s on fink: %s -> %.3f bits per note", tag, dict(zip(names, values)), r["per_melody"])
    best = min(rows, key=lambda r: r["per_melody"])
    return {**base, **{n: best[n] for n in names}}, rows


def _worker_start(threads: int) -> None:
    """A worker process: ``threads`` intra-op threads, and log lines on stderr like the parent's."""
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(processName)s] %(message)s")


# ----------------------------------------------------------------------------- the networks' rows
# The networks' rows of the Pearce (2005) benchmark (``musicgen.experiments.pearce2005``): short-term
# learning, settings chosen on fink, seeds, and the pre-registered contenders.
#
# - Dynamic evaluation (``dynamic_log_dists``): while a test melody is scored, after each note is
#   predicted the network takes ``steps`` plain SGD steps (step size ``lr``, gradients clipped at 1)
#   on the cross-entropy of the notes predicted so far, that note included; the distribution of
#   note ``t`` is read before any step has seen note ``t``. The network is copied per melody, so
#   every melody starts from the weights training left (the thesis's STM is emptied per melody too).
# - The combination with the thesis's short-term model (``with_stm``): the network's distribution
#   and PPM* C*I's short-term model of the melody so far, mixed by the entropy-weighted arithmetic
#   mean of ``musicgen.metrics.ppm.combine`` (thesis Eq. 6.9), its bias chosen on fink.
# - Settings (``choose_settings``): one grid per network, searched one setting at a time in the
#   order written (each setting's values tried with the others at their values so far, the best
#   kept), by ``k``-fold cross-validation on fink, each fold training on as many melodies as a
#   benchmark training fold holds; never on kinder or the chorales. The model's and the training's
#   settings are judged on the network alone, dynamic evaluation's on the network with it (on the
#   first ``eval_melodies`` melodies of each fink test fold), the bias on the combination.
# - Seeds (``seeded_rows``): each network row is trained with every seed of ``seeds`` on the same
#   folds (those of ``seed``, the PPM* rows' folds); its figure is the mean over seeds and melodies
#   with the two-level interval of ``seed_piece_interval`` over (seeds, melodies).
# - Contenders (``contender_tests``): the rows named before the run in ``contenders:`` of the config,
#   each tested one-sided against the thesis's figure (is it below it?), Holm's correction over
#   those run; every other row is exploratory.


LN2 = math.log(2)
PRETRAINING = "pre-training"
LEARNS = "learns from the test melody"
#: What each kind of row may see (the report's first column).
SEES = {"fold": FOLD_ONLY, "dynamic": f"training folds; {LEARNS}", "pre": f"training folds; {PRETRAINING}",
        "pre_dynamic": f"training folds; {PRETRAINING}; {LEARNS}"}
DYNAMIC = "dynamic evaluation"
STM = "PPM* STM"
GROUPS = ("model", "training", "dynamic", "bias")  # what a grid key may set


# ----------------------------------------------------------------------------- short-term learning


def dynamic_log_dists(model: torch.nn.Module, melody: list[int], alphabet: list[int], lr: float = 0.0,
                      steps: int = 0, features: np.ndarray | None = None) -> np.ndarray:
    """``(len(melody), |alphabet|)`` natural-log distributions of each note given the notes before
    it, over the alphabet (the network's distribution renormalised over it). With ``lr`` and
    ``steps`` (dynamic evaluation), after note ``t`` is predicted a copy of the model takes ``steps``
    SGD steps on the notes ``0..t``; note ``t``'s distribution is read before the first of them.
    ``model`` itself is never changed (every melody starts from the same weights). A ``RhythmNet``
    also gets the melody's ``features`` (``feature_ids``): at note ``t`` those of input positions
    ``0..t`` (``RhythmNet.inputs``: never a later note's, nor note ``t``'s beyond its ``current`` ones)."""
    f = None if features is None else torch.from_numpy(model.inputs(features))[None]  # (1, n, slots)
    ids = torch.tensor([N_SPECIAL + p for p in alphabet])
    col = {p: i for i, p in enumerate(alphabet)}
    e = torch.from_numpy(encode(melody))[None]  # (1, n + 1): BOS, then the notes
    n = len(melody)
    if n + 1 > MAX_LEN + 1:
        raise ValueError(f"a melody of {n} notes is longer than the window ({MAX_LEN})")
    model.eval()
    if not (lr and steps):
        with torch.no_grad():
            return _logits(model, e[:, :-1], f)[0].float()[:, ids].log_softmax(-1).double().numpy()
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=float(lr))
    targets = torch.tensor([col[p] for p in melody])
    out = np.empty((n, len(alphabet)))
    for t in range(n):
        for step in range(int(steps)):
            ft = None if f is None else f[:, : t + 1]
            logp = _logits(model, e[:, : t + 1], ft)[0].float()[:, ids].log_softmax(-1)  # (t + 1, |A|): notes 0..t
            if step == 0:
                out[t] = logp[-1].detach().double().numpy()  # note t, before any step has seen it
            loss = F.nll_loss(logp, targets[: t + 1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    return out


def stm_dists(melody: list[int], alphabet: list[int], ppm: dict[str, Any]) -> np.ndarray:
    """PPM*'s short-term model of the melody so far (thesis STM, emptied per melody): each note's
    distribution computed before the note is counted."""
    settings = {k: ppm[k] for k in ("escape", "exclusion", "update_exclusion")}
    return PPM(alphabet, **settings).predict_sequence(melody, learn=True)


def with_stm(log_dists: np.ndarray, stm: np.ndarray, bias: float) -> np.ndarray:
    """The network's log-distributions combined with the short-term model's distributions, note
    by note (``combine``, thesis Eq. 6.9); natural-log distributions."""
    return np.log(combine([np.exp(log_dists), stm], bias))


def true_log_probs(log_dists: np.ndarray, melody: list[int], alphabet: list[int]) -> np.ndarray:
    col = {p: i for i, p in enumerate(alphabet)}
    return log_dists[np.arange(len(melody)), [col[p] for p in melody]]


def melody_bits(log_probs: np.ndarray) -> float:
    return float(-np.sum(log_probs) / LN2 / len(log_probs))


# ----------------------------------------------------------------------------- folds and seeds


def fold_log_dists(melodies: list[list[int]], spec: dict, train: dict, store: Store, tag: str, seed: int,
                   fold_seed: int, k: int, variants: dict[str, dict], init: dict | None = None,
                   train_size: int | None = None,
                   features: list[np.ndarray] | None = None) -> dict[str, dict[int, np.ndarray]]:
    """The benchmark's protocol for a network: per fold (``folds(n, k, fold_seed)``, the PPM*
    rows' folds), a network trained on the other folds (``train_size``: a random subset that
    large) with training seed ``seed``, then each test melody's log-distributions
    (``dynamic_log_dists``) under each variant ``{"lr", "steps", "limit"}`` (``limit``: only the
    first that many melodies of each test fold). Returns variant -> melody index -> ``(n, |A|)``.
    Each fold's variant is kept in ``store``; a fold is trained only when a variant is missing.
    ``features``: each melody's note features, for a rhythm network (``spec["rhythm"]``); their
    digest joins the stored name (a pitch-only network's name is as it always was)."""
    alphabet = sorted({p for m in melodies for p in m})
    key = store.key(spec, train, seed, fold_seed, k, train_size, len(melodies), sum(map(len, melodies)),
                    weights_key(init), *([features_key(features)] if features is not None else []))
    out: dict[str, dict[int, np.ndarray]] = {v: {} for v in variants}
    for f, test in enumerate(folds(len(melodies), k, fold_seed)):
        rest = np.setdiff1d(np.arange(len(melodies)), test)
        run_seed = seed * 1009 + f  # distinct for every (seed, fold); seed 0 keeps the old fold seeds
        if train_size is not None:
            rest = np.random.default_rng(run_seed).choice(rest, size=min(train_size, len(rest)), replace=False)
        held: list[torch.nn.Module] = []

        def trained(rest=rest, held=held, run_seed=run_seed) -> torch.nn.Module:
            if not held:
                torch.manual_seed(run_seed)
                model = build_model(spec)
                if init is not None:
                    model.load_state_dict(init)
                held.append(fit(model, [melodies[i] for i in rest], train, seed=run_seed,
                                features=None if features is None else [features[i] for i in rest]))
            return held[0]

        for name, v in variants.items():
            idx = test if v.get("limit") is None else test[: int(v["limit"])]
            lr, steps = float(v.get("lr", 0.0)), int(v.get("steps", 0))
            if not (lr and steps):
                lr, steps = 0.0, 0  # one static variant, whatever its name
            lds = store.log_probs(
                f"{tag}-{key}/fold{f}-{store.key(lr, steps, len(idx))}",
                lambda idx=idx, lr=lr, steps=steps: [
                    dynamic_log_dists(trained(), melodies[i], alphabet, lr, steps,
                                      None if features is None else features[i]) for i in idx])
            out[name].update({int(i): ld for i, ld in zip(idx, lds)})
    return out


def summarise_seeds(log_probs_by_seed: list[list[np.ndarray]], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """A row scored with several training seeds on the same melodies: the mean over seeds and
    melodies of the per-melody cross-entropy, with the two-level interval of ``seed_piece_interval``
    over (seeds, melodies) (one seed: the bootstrap over melodies); the per-note mean over seeds;
    each melody's bits per seed (``melody_bits_by_seed``) and averaged over seeds (``melody_bits``)."""
    bits = np.array([[melody_bits(lp) for lp in lps] for lps in log_probs_by_seed])  # (S, P)
    iv = seed_piece_interval(bits, np.ones(bits.shape[1]), n_boot=n_boot, seed=seed)
    per_note = np.mean([bits_per_note(lps)["per_note"] for lps in log_probs_by_seed])
    return {"per_melody": iv["value"], "per_melody_interval": [iv["low"], iv["high"]], "per_note": float(per_note),
            "melodies": bits.shape[1], "seeds": bits.shape[0], "melody_bits": bits.mean(0).tolist(),
            "melody_bits_by_seed": bits.tolist()}


def row_names(name: str, trained: str) -> tuple[str, str, str]:
    """The three rows of one trained network: alone, with dynamic evaluation, and that combined
    with PPM*'s short-term model (``trained``: how it was trained, e.g. "training folds")."""
    alone = f"{name}, {FOLD_ONLY}" if trained == "training folds" else f"{name}, {trained}"
    return alone, f"{name}, {trained}, {DYNAMIC}", f"{name}, {trained}, {DYNAMIC} + {STM}"


def seeded_rows(names: tuple[str, str, str], melodies: list[list[int]], spec: dict, train: dict, settings: dict,
                store: Store, tag: str, seeds: list[int], fold_seed: int, k: int, ppm: dict, n_boot: int,
                init: dict | None = None, features: list[np.ndarray] | None = None) -> dict[str, dict[str, Any]]:
    """One trained network's rows on one dataset (``names``: ``row_names``), each over ``seeds``:
    the network alone, with dynamic evaluation (``settings["dynamic"]``), and that combined with
    PPM*'s short-term model (``settings["bias"]``). Row name -> ``summarise_seeds``. ``features``:
    the melodies' note features, for a rhythm network."""
    alphabet = sorted({p for m in melodies for p in m})
    stm = [stm_dists(m, alphabet, ppm) for m in melodies]
    variants = {"static": {}, "dynamic": dict(settings["dynamic"])}
    rows: dict[str, list[list[np.ndarray]]] = {row: [] for row in names}
    for s in seeds:
        lds = fold_log_dists(melodies, spec, train, store, tag, s, fold_seed, k, variants, init=init,
                             features=features)
        order = range(len(melodies))
        lists = ([true_log_probs(lds["static"][i], melodies[i], alphabet) for i in order],
                 [true_log_probs(lds["dynamic"][i], melodies[i], alphabet) for i in order],
                 [true_log_probs(with_stm(lds["dynamic"][i], stm[i], settings["bias"]), melodies[i], alphabet)
                  for i in order])
        for row, lps in zip(rows, lists):
            rows[row].append(lps)
    return {row: summarise_seeds(lps, n_boot, fold_seed) for row, lps in rows.items()}


# ----------------------------------------------------------------------------- settings chosen on fink


def set_path(settings: dict, path: str, value: Any) -> dict:
    """A copy of ``settings`` with ``path`` (``"model.dropout"``, ``"bias"``) set to ``value``; a
    dict value is merged into what is there (``model: [{d_model: 256, d_ff: 768}]``)."""
    out = copy.deepcopy(settings)
    *parents, last = path.split(".")
    if parents[:1] and parents[0] not in GROUPS or not parents and last not in GROUPS:
        raise ConfigError(f"tune.grid key {path!r}: it must start with one of {', '.join(GROUPS)}")
    node = out
    for p in parents:
        node = node[p]
    if isinstance(value, dict):
        node[last] = {**node[last], **value}
    else:
        node[last] = value
    return out


def fink_score(settings: dict, group: str, fink: list[list[int]], store: Store, tag: str, tune: dict,
               seed: int, train_size: int, ppm: dict, init: dict | None = None,
               features: list[np.ndarray] | None = None) -> float:
    """Bits per note (mean over melodies) by ``tune["folds"]``-fold cross-validation on fink: the
    network alone for a model or training setting (every melody), with dynamic evaluation for a
    dynamic one and with the short-term model too for the bias (the first ``eval_melodies`` of each
    test fold). ``features``: fink's note features, for a rhythm network."""
    static = group in ("model", "training")
    variant = {} if static else {**settings["dynamic"], "limit": tune["eval_melodies"]}
    lds = fold_log_dists(fink, settings["model"], settings["training"], store, tag, seed, seed, int(tune["folds"]),
                         {"v": variant}, init=init, train_size=train_size, features=features)["v"]
    alphabet = sorted({p for m in fink for p in m})
    bits = []
    for i, ld in lds.items():
        if group == "bias":
            ld = with_stm(ld, stm_dists(fink[i], alphabet, ppm), settings["bias"])
        bits.append(melody_bits(true_log_probs(ld, fink[i], alphabet)))
    return float(np.mean(bits))


def choose_settings(start: dict, grid: dict[str, list], score) -> tuple[dict, list[dict]]:
    """One setting at a time, in the grid's order: each of its values scored (``score(settings,
    group)``, lower better) with the other settings at their values so far, the best kept.
    Returns the chosen settings and the trace (setting, value -> score, chosen value)."""
    current, trace = copy.deepcopy(start), []
    for path, values in grid.items():
        if not values:
            raise ConfigError(f"tune.grid.{path} is empty: give at least one value")
        group = path.split(".")[0]
        scores = [(score(set_path(current, path, v), group), i) for i, v in enumerate(values)]
        best = min(scores)[1]
        current = set_path(current, path, values[best])
        trace.append({"setting": path, "scores": [[v, s] for v, (s, _) in zip(values, scores)], "chose": values[best]})
        log.info("fink: %s -> %s (%s)", path, values[best], ", ".join(f"{v}: {s:.3f}" for v, (s, _) in
                                                                        zip(values, scores)))
    return current, trace


# ----------------------------------------------------------------------------- the rows


def model_rows(name: str, spec: dict, cfg: dict, data: dict[str, list[list[int]]], corpus: list[list[int]] | None,
               store: Store, features: dict[str, list[np.ndarray]] | None = None,
               variant_corpora: dict[str, list[list[int]]] | None = None) -> tuple[dict, dict]:
    """One network: settings chosen on fink (``tune.grid[name]``, recorded with the date in the
    store, so a resumed run reports the choice as it was made), then its rows on both datasets over
    ``seeds``; with a pre-training ``corpus``, the pre-trained rows too (fine-tuning's learning rate
    chosen on fink as before, ``tune.fine_grid``); for the network ``pretraining_variants.model``,
    the pre-trained and fine-tuned rows again per variant corpus of ``variant_corpora``
    (``variant_rows``); for the network ``rhythm.model``, its rhythm rows too (``rhythm_rows``,
    with each dataset's note ``features``)."""
    tune_cfg = cfg["tune"]  # not `tune`: that is the fine-tuning search below
    size = int(np.mean([len(data[n]) * (cfg["folds"] - 1) / cfg["folds"] for n in ("chorales", "kinder")]))
    start = {"model": spec, "training": cfg["fold_training"], "dynamic": cfg["dynamic"],
             "bias": cfg["combination"]["bias"]}
    grid = (tune_cfg.get("grid") or {}).get(name) or {}
    ppm = cfg["ppm"]

    def score(settings: dict, group: str) -> float:
        return fink_score(settings, group, data["fink"], store, f"tune-{name}", tune_cfg, cfg["seed"], size, ppm)

    def choose() -> dict:
        chosen, trace = choose_settings(start, grid, score)
        return {"chosen": chosen, "trace": trace, "date": datetime.date.today().isoformat()}

    record = store.record(f"tune-{name}-{store.key(start, grid, tune_cfg, size, cfg['seed'], ppm)}", choose)
    chosen = record["chosen"]
    tuning = {"fold_only": record}
    common = {"seeds": cfg["seeds"], "fold_seed": cfg["seed"], "k": cfg["folds"], "ppm": ppm, "n_boot": cfg["n_boot"]}
    out: dict[str, dict] = {}

    def add(rows_by_ds: dict[str, dict[str, dict]], sees: list[str], **extra) -> None:
        for ds, rows in rows_by_ds.items():
            for (row, r), seen in zip(rows.items(), sees):
                out.setdefault(row, {"sees": seen, **extra})[ds] = r

    add({ds: seeded_rows(row_names(name, "training folds"), data[ds], chosen["model"], chosen["training"], chosen,
                         store, f"{ds}-{name}", **common) for ds in ("chorales", "kinder")},
        [SEES["fold"], SEES["dynamic"], SEES["dynamic"]])
    if corpus is not None:
        weights = pretrain(name, chosen["model"], cfg["pretraining"], corpus, store, cfg["seed"])
        fine_train, fine_rows = tune(data["fink"], chosen["model"], cfg["fine_tuning"], tune_cfg["fine_grid"], store,
                                        f"tune-{name}-fine", cfg["seed"], size, init=weights)
        tuning["fine_tuning"] = {"chosen": fine_train, "grid": fine_rows}
        for label, train in (("pre-trained, not fine-tuned", {**fine_train, "steps": 0}),
                             ("pre-trained and fine-tuned per fold", fine_train)):
            add({ds: seeded_rows(row_names(name, label), data[ds], chosen["model"], train, chosen, store,
                                 f"{ds}-{name}", init=weights, **common) for ds in ("chorales", "kinder")},
                [SEES["pre"], SEES["pre_dynamic"], SEES["pre_dynamic"]], corpus="main", seed_values=list(cfg["seeds"]))
        variants = cfg.get("pretraining_variants") or {}
        if variant_corpora and variants.get("model") == name:
            out.update(variant_rows(name, chosen, fine_train, cfg, data, variant_corpora, store))
    rhythm = cfg.get("rhythm") or {}
    if rhythm.get("model") == name and rhythm.get("run"):
        tuning["rhythm"], rows = rhythm_rows(name, chosen, cfg, data, features or {}, store, size)
        out.update(rows)
    for row, r in out.items():
        log.info("%s: %s bits per note", row, ", ".join(f"{ds} {r[ds]['per_melody']:.3f}" for ds in
                                                        ("chorales", "kinder") if ds in r))
    return tuning, out


def variant_rows(name: str, chosen: dict, fine_train: dict, cfg: dict, data: dict[str, list[list[int]]],
                 corpora: dict[str, list[list[int]]], store: Store) -> dict[str, dict]:
    """The pre-training variants of one network (``pretraining_variants``): per variant corpus,
    the network at its settings ``chosen`` on fink pre-trained on that corpus (``pretraining``, as
    the main pre-training; stored under its own name), fine-tuned per fold with the fine-tuning
    settings chosen for the main pre-trained rows (``fine_train``: not chosen again), its three
    rows (``row_names``) over ``pretraining_variants.seeds`` (null: ``seeds``). Each row names its
    ``corpus`` and its ``base``, the same row pre-trained on the main corpus."""
    variants = cfg["pretraining_variants"]
    seeds = list(variants.get("seeds") or cfg["seeds"])
    common = {"seeds": seeds, "fold_seed": cfg["seed"], "k": cfg["folds"], "ppm": cfg["ppm"], "n_boot": cfg["n_boot"]}
    base = row_names(name, "pre-trained and fine-tuned per fold")
    out: dict[str, dict] = {}
    for vid, corpus in corpora.items():
        weights = pretrain(f"{name}-{vid}", chosen["model"], cfg["pretraining"], corpus, store, cfg["seed"])
        names = row_names(name, f"pre-trained ({variants['variants'][vid]['name']}) and fine-tuned per fold")
        for row, b, seen in zip(names, base, (SEES["pre"], SEES["pre_dynamic"], SEES["pre_dynamic"])):
            out[row] = {"sees": seen, "corpus": vid, "base": b, "seed_values": seeds}
        for ds in ("chorales", "kinder"):
            rows = seeded_rows(names, data[ds], chosen["model"], fine_train, chosen, store, f"{ds}-{name}",
                               init=weights, **common)
            for row, r in rows.items():
                out[row][ds] = r
    return out


def rhythm_rows(name: str, chosen: dict, cfg: dict, data: dict[str, list[list[int]]],
                features: dict[str, list[np.ndarray]], store: Store, size: int) -> tuple[dict, dict]:
    """The rhythm-aware rows of one network (``rhythm`` in the config; the features:
    ``musicgen.experiments.pearce2005_rhythm``): per variant, the network at the settings ``chosen``
    for it on fink with pitch alone, given the variant's features (``earlier``: of the notes before
    the one predicted; ``current``: of that note itself), ``rhythm.grid`` searched on fink with the
    same features (as ``tune.grid``, recorded with the date), then its three rows (``row_names``)
    on each of ``rhythm.datasets`` over ``seeds``; the variants named in ``rhythm.run``. A row that
    sees the key signature or the mode compares with the thesis's 1.911 (Table 9.8), the others with
    1.953 (Table 7.3)."""
    from musicgen.experiments.pearce2005_rhythm import sees, sees_key

    rhythm, tune, ppm = cfg["rhythm"], cfg["tune"], cfg["ppm"]
    grid = rhythm.get("grid") or {}
    common = {"seeds": cfg["seeds"], "fold_seed": cfg["seed"], "k": cfg["folds"], "ppm": ppm, "n_boot": cfg["n_boot"]}
    tuning, out = {}, {}
    tag = f"tune-{name}-rhythm"
    for variant in rhythm["run"]:
        if variant not in rhythm["variants"]:
            raise ConfigError(f"rhythm.run names {variant!r}: the variants are {', '.join(rhythm['variants'])}")
        v = rhythm["variants"][variant]
        seen_by = {"earlier": list(v.get("earlier", [])), "current": list(v.get("current", []))}
        spec = {**chosen["model"], "rhythm": seen_by}
        start = {**chosen, "model": spec}

        def score(settings: dict, group: str) -> float:
            return fink_score(settings, group, data["fink"], store, tag, tune, cfg["seed"], size, ppm,
                              features=features["fink"])

        def choose(start=start, score=score) -> dict:
            picked, trace = choose_settings(start, grid, score)
            return {"chosen": picked, "trace": trace, "date": datetime.date.today().isoformat()}

        key = store.key(start, grid, tune, size, cfg["seed"], ppm, features_key(features["fink"]))
        record = store.record(f"{tag}-{key}", choose)
        tuning[variant] = record
        settings = record["chosen"]
        seen = "; ".join(["training folds", *sees(spec["rhythm"]["earlier"], spec["rhythm"]["current"])])
        thesis = 1.911 if sees_key(spec["rhythm"]) else 1.953
        names = row_names(f"{name}, {v['name']}", "training folds")
        for ds in rhythm["datasets"]:
            rows = seeded_rows(names, data[ds], settings["model"], settings["training"], settings, store,
                               f"{ds}-{name}-rhythm", features=features[ds], **common)
            for row, see in zip(names, (seen, f"{seen}; {LEARNS}", f"{seen}; {LEARNS}")):
                out.setdefault(row, {"sees": see, "thesis": thesis})[ds] = rows[row]
    return tuning, out


def neural_rows(cfg: dict, data: dict[str, list[list[int]]], store: Store,
                features: dict[str, list[np.ndarray]] | None = None, corpora: dict | None = None) -> dict[str, Any]:
    """Every network's rows (``model_rows``), the networks side by side in ``workers`` processes
    (``features``: the note features of the rhythm rows' datasets and fink; ``corpora``: the
    pre-training corpora of ``build_corpora``, built here when pre-training and not given)."""
    import os

    corpus, corpus_stats, variant_corpora = None, None, None
    if cfg["pretrained"]:
        corpora = corpora or build_corpora(Path(cfg["data_dir"]), data, cfg.get("pretraining_variants") or {})
        corpus, corpus_stats, variant_corpora = corpora["main"], corpora["stats"], corpora["variants"]
    models = cfg["models"]
    workers = max(1, min(int(cfg["workers"]), len(models)))
    if workers == 1:
        done = [model_rows(name, spec, cfg, data, corpus, store, features, variant_corpora)
                for name, spec in models.items()]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        threads = max(1, (os.cpu_count() or 1) // workers)
        log.info("training %s side by side: %d processes, %d thread(s) each", ", ".join(models), workers, threads)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_worker_start, initargs=(threads,)) as pool:
            futures = [pool.submit(model_rows, name, spec, cfg, data, corpus, store, features, variant_corpora)
                       for name, spec in models.items()]
            done = [f.result() for f in futures]
    out: dict[str, Any] = {"pretraining_corpus": corpus_stats, "tuning": {}, "rows": {}}
    for name, (tuning, rows) in zip(models, done):
        out["tuning"][name] = tuning
        out["rows"].update(rows)
    return out


# ----------------------------------------------------------------------------- contenders


def below_p_value(bits_by_seed: np.ndarray, figure: float) -> float:
    """One-sided p-value of "the row's mean bits per note is below ``figure``" from the same
    two-level interval as the row's (``seed_piece_interval``, t method): the smallest ``alpha`` at
    which the upper end of its ``1 - 2 alpha`` interval is below ``figure``. One seed: the one-sided
    t-test over melodies."""
    from scipy import optimize, stats

    d = np.asarray(bits_by_seed, dtype=np.float64) - figure
    if d.ndim != 2 or d.shape[1] < 2:
        raise ValueError(f"bits_by_seed must be (seeds, melodies) with two melodies or more, got {d.shape}")
    if d.shape[0] == 1:
        return float(stats.ttest_1samp(d[0], 0.0, alternative="less").pvalue)
    ones = np.ones(d.shape[1])
    value = float(d.mean())

    def gap(level: float) -> float:  # the interval's end nearest 0, minus 0
        iv = seed_piece_interval(d, ones, level=level)
        return iv["high"] if value < 0 else iv["low"]

    lo, hi = 1e-12, 1 - 1e-12
    if value == 0 or np.sign(gap(lo)) == np.sign(gap(hi)):  # no spread, or beyond every level
        return 0.5 if value == 0 else (0.0 if value < 0 else 1.0)
    level = optimize.brentq(gap, lo, hi, xtol=1e-12)
    return float((1 - level) / 2 if value < 0 else (1 + level) / 2)


def contender_tests(contenders: dict[str, dict[str, dict]], rows: dict[str, dict], ppm_rows: dict,
                    holds: dict, alpha: float = 0.05) -> list[dict[str, Any]]:
    """Each pre-registered contender (dataset -> question -> ``{row, thesis, reference, run}``):
    its figure, the one-sided p-value of being below the thesis's figure (``below_p_value``), Holm's
    adjusted p-value over the contenders that were run, and its seed-aware paired differences from
    the reproduced PPM* ``reference`` model and the combined model, melody by melody (``None``
    where that reproduction does not hold). A contender's ``beside`` row (e.g. the stricter variant
    of a rhythm row) is reported next to it with its figure and paired differences, untested:
    exploratory, outside Holm's family (``item["beside"]``, ``None`` where not run)."""

    def paired(r: dict, ds: str, refs: list[str]) -> dict[str, dict | None]:
        by_seed = np.asarray(r.get("melody_bits_by_seed", [r["melody_bits"]]))
        out = {}
        for ref in dict.fromkeys(refs):
            if holds.get(ref, {}).get(ds, {}).get("holds"):
                diffs = by_seed - np.asarray(ppm_rows[ds][ref]["melody_bits"])[None]
                out[ref] = seed_piece_interval(diffs, np.ones(diffs.shape[1]))
            else:
                out[ref] = None
        return out

    out = []
    for ds, questions in contenders.items():
        for question, c in questions.items():
            r = rows.get(c["row"], {}).get(ds)
            item = {"dataset": ds, "question": question, "row": c["row"], "thesis": c["thesis"],
                    "reference": c.get("reference", "combined"), "run": r is not None}
            if r is not None:
                by_seed = np.asarray(r.get("melody_bits_by_seed", [r["melody_bits"]]))
                item.update(figure=r["per_melody"], interval=r["per_melody_interval"],
                            p_value=below_p_value(by_seed, c["thesis"]),
                            paired=paired(r, ds, [item["reference"], "combined"]))
            if c.get("beside"):
                b = rows.get(c["beside"], {}).get(ds)
                item["beside"] = {"row": c["beside"], "run": b is not None}
                if b is not None:
                    item["beside"].update(figure=b["per_melody"], interval=b["per_melody_interval"],
                                          paired=paired(b, ds, [item["reference"], "combined"]))
            out.append(item)
    run = [c for c in out if c["run"]]
    adjusted = holm([c["p_value"] for c in run], alpha)
    for c, p, rej in zip(run, adjusted["adjusted"], adjusted["reject"]):
        c.update(holm_p=p, below_thesis=rej)
    return out


def contender_report(tests: list[dict[str, Any]], alpha: float = 0.05) -> list[str]:
    lines = ["", "Pre-registered contenders (named in `contenders:` of `musicgen/conf/benchmark.yaml` before the "
             "reported run): only these are compared with the thesis's figures, one-sided (below it?), with Holm's "
             f"correction over those run (alpha {alpha}); every other row is exploratory. Paired: the contender minus "
             "the reproduced PPM* model melody by melody, seed-aware (`seed_piece_interval` over seeds and melodies).",
             "", "| dataset | question | row | bits per note | thesis | Holm p | below the thesis | "
             "paired: minus PPM* |",
             "|---|---|---|---|---|---|---|---|"]
    def paired(c: dict) -> str:
        return "; ".join(f"{PPM_LABEL.get(ref, ref)}: {p['value']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}]"
                         if p else f"{PPM_LABEL.get(ref, ref)}: reproduction off" for ref, p in c["paired"].items())

    for c in tests:
        if not c["run"]:
            lines.append(f"| {c['dataset']} | {c['question']} | {c['row']} | not run | {c['thesis']:.3f} | - | - | - |")
        else:
            lo, hi = c["interval"]
            lines.append(f"| {c['dataset']} | {c['question']} | {c['row']} | {c['figure']:.3f} [{lo:.3f}, {hi:.3f}] | "
                         f"{c['thesis']:.3f} | {c['holm_p']:.3g} | {'yes' if c['below_thesis'] else 'no'} | "
                         f"{paired(c)} |")
        b = c.get("beside")
        if b:  # reported beside the contender, not tested
            figure = f"{b['figure']:.3f} [{b['interval'][0]:.3f}, {b['interval'][1]:.3f}]" if b["run"] else "not run"
            lines.append(f"| {c['dataset']} | {c['question']}: beside it (exploratory, not tested) | {b['row']} | "
                         f"{figure} | {c['thesis']:.3f} | - | - | {paired(b) if b['run'] else '-'} |")
    return lines


PPM_LABEL = {"combined": "combined", "ltm": "LTM", "ltm_plus": "LTM+", "stm": "STM"}


def contender_rows(contenders: dict) -> set[str]:
    return {c["row"] for qs in contenders.values() for c in qs.values()}


__all__ = ["choose_settings", "contender_tests", "dynamic_log_dists", "fold_log_dists", "neural_rows",
           "row_names", "seeded_rows", "summarise_seeds", "with_stm", "below_p_value"]


def with_quick(cfg: DictConfig) -> DictConfig:
    """``quick=true``: ``quick_overrides`` merged in (``models`` and ``tune.grid`` replaced, not
    merged): a smoke run."""
    if not cfg.get("quick"):
        return cfg
    quick = cfg.quick_overrides
    out = OmegaConf.merge(cfg, quick)
    if "models" in quick:
        out.models = quick.models
    if "grid" in quick.get("tune", {}):
        out.tune.grid = quick.tune.grid
    if "grid" in quick.get("rhythm", {}):
        out.rhythm.grid = quick.rhythm.grid
    return out


def pearce2005(cfg: DictConfig) -> dict[str, Any]:
    cfg = with_quick(cfg)
    data = load_melodies(Path(cfg.data_dir))
    if cfg.get("melodies"):
        data = {name: melodies[: int(cfg.melodies)] for name, melodies in data.items()}
    store = Store(Path(cfg.output_dir) / "pearce2005_runs")
    ppm = OmegaConf.to_container(cfg.ppm, resolve=True)
    if ppm["escape"] not in ("a", "b", "c", "x"):
        raise ConfigError(f"ppm.escape={ppm['escape']!r}: one of a, b, c, x")
    reproduced = {ds: ppm_rows(data[ds], ppm, store, ds, k=cfg.folds, seed=cfg.seed, n_boot=cfg.n_boot)
                  for ds in ("chorales", "kinder")}
    holds = reproduction(reproduced, ppm["tolerance"])
    for row, r in holds.items():
        log.info("PPM* %s: chorales %.3f (thesis %.3f), kinder %.3f (thesis %.3f)", PPM_NAMES[row],
                 r["chorales"]["ours"], r["chorales"]["thesis"], r["kinder"]["ours"], r["kinder"]["thesis"])
    order, tuning = choose_order(data["fink"], range(2, 9))
    rows = {name: ngram_cross_validation(data[name], order, k=cfg.folds, seed=cfg.seed, n_boot=cfg.n_boot)
            for name in ("chorales", "kinder")}
    result = {"datasets": dataset_table(data), "order": order, "order_scores_on_fink": tuning, "ngram": rows,
              "ppm": {"settings": ppm, "rows": reproduced, "reproduction": holds}}
    compared = {ngram_name(order): rows}
    pre = OmegaConf.to_container(cfg.ppm_pretrained, resolve=True)
    variants = OmegaConf.to_container(cfg.pretraining_variants, resolve=True)
    corpora = None
    if cfg.pretrained and (cfg.neural or pre["run"]):
        corpora = build_corpora(Path(cfg.data_dir), data, variants)
        result["pretraining_filters"] = {**corpora["filters"], "corpus": corpora["stats"]}
    if corpora and pre["run"]:
        result["ppm_pretrained"] = ppm_pretrained_result(data, corpora, variants, ppm, pre, store, cfg)
        compared.update({row: {ds: r[ds] for ds in ("chorales", "kinder")}
                         for row, r in result["ppm_pretrained"]["rows"].items()})
    if cfg.neural:
        plain = {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
                 for key in cfg if key not in ("paths", "hydra", "quick_overrides")}
        rhythm = plain.get("rhythm") or {}
        features = None
        if rhythm.get("run"):
            features = load_features(Path(cfg.data_dir), data, list(dict.fromkeys([*rhythm["datasets"], "fink"])))
        result["neural"] = neural_rows(plain, data, store, features, corpora)
        compared.update({row: {ds: r[ds] for ds in ("chorales", "kinder") if ds in r}
                         for row, r in result["neural"]["rows"].items()})
    fold_only = {n for n in compared if n == ngram_name(order) or n.endswith(FOLD_ONLY)}
    result["paired"] = paired_against_ppm(compared, reproduced, holds, fold_only, n_boot=cfg.n_boot, seed=cfg.seed)
    if corpora:
        every = {**result.get("ppm_pretrained", {}).get("rows", {}), **result.get("neural", {}).get("rows", {})}
        result["paired_pretrained"] = paired_pretrained(every, n_boot=cfg.n_boot, seed=cfg.seed)
    result["contenders"] = contenders_result(OmegaConf.to_container(cfg.contenders, resolve=True),
                                             result.get("neural", {}).get("rows", {}), reproduced, holds)
    return result


def build_corpora(data_dir: Path, data: dict[str, list[list[int]]], variants: dict) -> dict[str, Any]:
    """The pre-training corpus and the variants ``pretraining_variants.run`` names
    (``pretraining_corpora``, protecting every chorale, kinder and fink melody)."""
    for v in variants.get("run") or []:
        if v not in variants["variants"]:
            raise ConfigError(f"pretraining_variants.run names {v!r}: the variants are "
                              f"{', '.join(variants['variants'])}")
    benchmark = [m for name in ("chorales", "kinder", "fink") for m in data[name]]
    corpus, stats, by_variant, filters = pretraining_corpora(
        data_dir, benchmark, {v: variants["variants"][v] for v in variants.get("run") or []})
    log.info("pre-training corpus: %d melodies; filters: %s", len(corpus), json.dumps(filters))
    return {"main": corpus, "stats": stats, "variants": by_variant, "filters": filters}


def ppm_pretrained_result(data: dict[str, list[list[int]]], corpora: dict, variants: dict, ppm: dict, pre: dict,
                          store: Store, cfg: DictConfig) -> dict[str, Any]:
    """The pre-trained PPM* rows (``ppm_pretrained_rows``) on the pre-training corpus and, with
    ``ppm_pretrained.variants``, on each variant's corpus."""
    which = {"main": (corpora["main"], "pre-training corpus and training folds")}
    if pre.get("variants"):
        which.update({v: (c, f"pre-training corpus ({variants['variants'][v]['name']}) and training folds")
                      for v, c in corpora["variants"].items()})
    rows: dict[str, dict] = {}
    for cid, (corpus, label) in which.items():
        got = ppm_pretrained_rows({ds: data[ds] for ds in ("chorales", "kinder")}, corpus, ppm,
                                  int(pre["max_context"]), store, label, k=cfg.folds, seed=cfg.seed, n_boot=cfg.n_boot)
        main_label = which["main"][1]
        rows.update({row: {**r, "corpus": cid, **({"base": row.replace(label, main_label)} if cid != "main" else {})}
                     for row, r in got.items()})
    return {"max_context": int(pre["max_context"]), "rows": rows}


def _by_seed(r: dict) -> np.ndarray:
    return np.asarray(r["melody_bits_by_seed"] if "melody_bits_by_seed" in r else [r["melody_bits"]])


def paired_pretrained(rows: dict[str, dict], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Rows that saw a pre-training corpus, melody by melody, seed-aware (``seed_piece_interval``):
    - ``against_ppm``: each network row minus the PPM* rows pre-trained on the same corpus (its
      combined model; and for a row that does not learn from the test melody, its LTM);
    - ``moves``: each row on a variant's corpus minus the same row on the pre-training corpus
      (a network row on the training seeds both ran).
    A row's ``corpus`` says which corpus (``main`` or the variant); a PPM* row has ``ppm_row``."""
    ppm = {(r["corpus"], r["ppm_row"]): r for r in rows.values() if "ppm_row" in r}
    main = {r.get("base", name): r for name, r in rows.items() if r.get("corpus") == "main"}

    def diff(a: dict, b: dict, ds: str) -> dict | None:
        if ds not in a or ds not in b:
            return None
        x, y = _by_seed(a[ds]), _by_seed(b[ds])
        if "ppm_row" not in a and "ppm_row" not in b:  # two network rows: on the seeds both ran
            sa, sb = a.get("seed_values") or [], b.get("seed_values") or []
            both = [s for s in sa if s in sb]
            if not both:
                return None
            x, y = x[[sa.index(s) for s in both]], y[[sb.index(s) for s in both]]
        d = x - y.mean(0)[None] if len(y) != len(x) else x - y
        return seed_piece_interval(d, np.ones(d.shape[1]), n_boot=n_boot, seed=seed)

    against, moves = {}, {}
    for name, r in rows.items():
        cid = r.get("corpus")
        if cid is None:
            continue
        if "ppm_row" not in r:
            refs = ["combined"] + ([] if LEARNS in r["sees"] else ["ltm"])
            against[name] = {ds: {ref: diff(r, ppm[(cid, ref)], ds) if (cid, ref) in ppm else None for ref in refs}
                             for ds in ("chorales", "kinder") if ds in r}
        if cid != "main":
            base = main.get(r.get("base", name))
            if base is not None:
                moves[name] = {"base": r.get("base", name), **{ds: diff(r, base, ds) for ds in ("chorales", "kinder")
                                                                if ds in r}}
    return {"against_ppm": against, "moves": moves}


def contenders_result(contenders: dict, rows: dict, reproduced: dict, holds: dict) -> dict[str, Any]:
    return {"registered": contenders, "tests": contender_tests(contenders, rows, reproduced, holds)}


#: What each of the thesis's rows may see (the report's first column), in ``PUBLISHED``'s order.
THESIS_SEES = ("learns from the test melody", FOLD_ONLY, "training folds; learns from the test melody",
               "training folds; learns from the test melody",
               "training folds; rhythm of earlier notes; rhythm of the current note",
               "training folds; rhythm of earlier notes; rhythm of the current note; key signature and mode")


def report_markdown(result: dict[str, Any]) -> str:
    lines = ["# Pearce (2005): pitch prediction in monophonic melodies", "",
             "| dataset | melodies | events | distinct pitches | thesis (Table 4.1) | within 2% |",
             "|---|---|---|---|---|---|"]
    for d in result["datasets"]:
        lines.append(f"| {d['dataset']} | {d['ours'][0]} | {d['ours'][1]} | {d['ours'][2]} | "
                     f"{' / '.join(map(str, d['thesis']))} | {'yes' if all(d['within_2_percent']) else 'NO'} |")
    ch, ki = result["ngram"]["chorales"], result["ngram"]["kinder"]

    def cell(r):
        lo, hi = r["per_melody_interval"]
        seeds = f", {r['seeds']} seeds" if r.get("seeds", 1) > 1 else ""
        return f"{r['per_melody']:.3f} [{lo:.3f}, {hi:.3f}] (per note {r['per_note']:.3f}{seeds})"

    lines += ["", "Bits per note of each note's pitch, 10-fold cross-validation, from the pitches alone (the rhythm "
              "rows: also the note features the first column names); ours: the mean over melodies of the "
              "per-melody cross-entropy (thesis Eq. 6.6) with a 95% bootstrap interval over melodies; a network "
              "row: the mean over its training seeds and melodies, with the two-level interval over seeds and "
              "melodies (`seed_piece_interval`)."]
    if result.get("ppm"):
        lines += ppm_report(result["ppm"], cell)
    tests = (result.get("contenders") or {}).get("tests", [])
    role = {}
    for t in tests:
        role.setdefault(t["row"], []).append(t["dataset"])

    def label(row):
        return f"contender ({', '.join(role[row])})" if row in role else "exploratory"

    lines += ["", "| may see | model | role | chorales (BWV 253-438) | kinder |", "|---|---|---|---|---|",
              f"| {FOLD_ONLY} | musicgen {ngram_name(result['order'])} | exploratory | {cell(ch)} | {cell(ki)} |"]
    lines += [f"| {r['sees']} | {row} | exploratory | {cell(r['chorales'])} | {cell(r['kinder'])} |"
              for row, r in (result.get("ppm_pretrained") or {}).get("rows", {}).items()]
    neural = result.get("neural")
    if neural:
        lines += [f"| {r.get('sees', '-')} | musicgen {row} | {label(row)} | "
                  f"{cell(r['chorales']) if 'chorales' in r else '-'} | {cell(r['kinder']) if 'kinder' in r else '-'} |"
                  for row, r in neural["rows"].items()]
    lines += [f"| {sees} | thesis: {name} | published | {c:.3f} | {'-' if k is None else f'{k:.3f}'} |"
              for sees, (name, c, k) in zip(THESIS_SEES, PUBLISHED)]
    rhythm = [(row, r["thesis"]) for row, r in (neural or {}).get("rows", {}).items() if "thesis" in r]
    if rhythm:
        lines += ["", "The rhythm rows (`rhythm:` in the config; `musicgen.experiments.pearce2005_rhythm`) predict the "
                  "same pitches over the same alphabet and folds; each note's duration, inter-onset interval, position "
                  "in the bar and fermata reach the network as embeddings summed with the pitch embedding. \"Rhythm of "
                  "earlier notes\": those of the notes before the one predicted (the strict variant); \"rhythm of the "
                  "current note\": also that note's position in the bar, duration and inter-onset interval (the "
                  "like-for-like variant: IDyOM's linked viewpoints see the onset and duration of the note whose "
                  "pitch they predict), never its pitch. A row that sees the key signature or the mode compares with "
                  "the thesis's 1.911 (Table 9.8), the others with 1.953 (Table 7.3): "
                  + "; ".join(f"{row}: {t:.3f}" for row, t in rhythm if row.endswith(f"{DYNAMIC} + {STM}")) + "."]
    if tests:
        lines += contender_report(tests)
    if neural:
        c = neural["pretraining_corpus"]
        if c:
            lines += ["", f"Pre-training corpus: {c['melodies']:,} melodies, {c['notes']:,} notes, from the "
                      f"{c['files']:,} exported folk and chorale files less {c['left_out_by_name']:,} left out by name "
                      f"(kinder, fink, BWV 253-438) and {c['duplicates_removed']:,} duplicates of a benchmark melody "
                      "(same contour, or half the contour 8-grams of either shared)."]
        lines += ["", "Settings chosen by cross-validation on fink, never on kinder or the chorales (bits per note, "
                  "mean over melodies; one setting at a time in the grid's order, the others at their values so far):",
                  ""]
        for name, t in neural["tuning"].items():
            fold = t["fold_only"]
            chosen = fold["chosen"]
            lines.append(f"- {name}, chosen on {fold['date']}: model {chosen['model']}, training {chosen['training']}, "
                         f"dynamic evaluation {chosen['dynamic']}, combination bias {chosen['bias']}")
            for step in fold["trace"]:
                scores = ", ".join(f"{v}: {s:.3f}" for v, s in step["scores"])
                lines.append(f"    - {step['setting']}: {scores} -> {step['chose']}")
            for variant, rec in t.get("rhythm", {}).items():
                picked = rec["chosen"]
                lines.append(f"- {name} with rhythm ({variant}: {picked['model']['rhythm']}), chosen on {rec['date']} "
                             f"from the settings above: training {picked['training']}, dynamic evaluation "
                             f"{picked['dynamic']}, combination bias {picked['bias']}")
                for step in rec["trace"]:
                    scores = ", ".join(f"{v}: {s:.3f}" for v, s in step["scores"])
                    lines.append(f"    - {step['setting']}: {scores} -> {step['chose']}")
            if "fine_tuning" in t:
                d = t["fine_tuning"]
                grid = ", ".join(f"{ {k: v for k, v in r.items() if k != 'per_melody'} } {r['per_melody']:.3f}"
                                 for r in d["grid"])
                keys = {k: d["chosen"][k] for k in d["grid"][0] if k != "per_melody"}
                lines.append(f"- {name}, fine-tuning: chose {keys} from {grid}")
    if result.get("pretraining_filters"):
        lines += pretraining_report(result["pretraining_filters"], result.get("ppm_pretrained"),
                                    result.get("paired_pretrained"))
    if result.get("paired"):
        lines += paired_report(result["paired"], result["ppm"]["settings"]["tolerance"])
    lines.append("")
    return "\n".join(lines)


def ppm_report(ppm: dict[str, Any], cell) -> list[str]:
    """The reproduction's table: each PPM* row beside the thesis's figure (Table 6.6)."""
    s, tol = ppm["settings"], ppm["settings"]["tolerance"]
    on = {True: "on", False: "off"}
    lines = ["", "The thesis's models reproduced on the same folds (`musicgen.metrics.ppm`: escape "
             f"{s['escape'].upper()}, unbounded order (PPM*), interpolated smoothing, exclusion {on[s['exclusion']]}, "
             f"update exclusion {on[s['update_exclusion']]}; combination bias {s['bias']}); a row holds when it is "
             f"within {tol} bits of Table 6.6:", "",
             "| model | chorales | thesis | holds | kinder | thesis | holds |", "|---|---|---|---|---|---|---|"]
    extra = s.get("extra_stm") or {}
    tag = f"{str(extra.get('escape', s['escape'])).upper()}*{'U' if extra.get('update_exclusion') else ''}I"
    for row in ppm["rows"]["chorales"]:
        by_ds = (ppm["rows"]["chorales"][row], ppm["rows"]["kinder"][row])
        name = PPM_NAMES[row].format(tag)
        check = ppm["reproduction"].get(row)
        cells = []
        for ds, r in zip(("chorales", "kinder"), by_ds):
            if check:
                c = check[ds]
                verdict = "yes" if c["holds"] else "NO"
                cells += [cell(r), f"{c['thesis']:.3f}", f"{verdict} ({c['ours'] - c['thesis']:+.3f})"]
            else:
                cells += [cell(r), "-", "-"]
        lines.append(f"| PPM* {name} | {' | '.join(cells)} |")
    return lines


def paired_report(paired: dict[str, dict[str, dict | None]], tolerance: float) -> list[str]:
    """Each row's paired difference from the reproduced combined and long-term models."""
    def fig(d):
        if d is None:
            return f"reproduction off by more than {tolerance}"
        return f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"

    lines = ["", "Paired over melodies: each row minus the reproduced PPM* model on the same melodies (bits per "
             "note, mean over melodies of the per-melody difference; 95% paired BCa interval over melodies, "
             "`musicgen.metrics.statistics.paired_difference`; for a network row, the mean over its training seeds "
             "too, with the two-level interval over seeds and melodies, `seed_piece_interval`); negative: the row "
             "predicts better. The long-term "
             "model is the reference of the rows trained on the training folds alone.", "",
             "| model | chorales: minus combined | chorales: minus LTM | kinder: minus combined | kinder: minus LTM |",
             "|---|---|---|---|---|"]
    for name, by_ds in paired.items():
        cells = [fig(by_ds[ds][ref]) if ref in by_ds.get(ds, {}) else "-" for ds in ("chorales", "kinder")
                 for ref in ("combined", "ltm")]
        lines.append(f"| {'' if name.startswith('PPM*') else 'musicgen '}{name} | {' | '.join(cells)} |")
    return lines


def pretraining_report(filters: dict[str, Any], ppm_pre: dict | None, paired: dict | None) -> list[str]:
    """What each near-duplicate filter removed from the pre-training corpus, the variants' corpora,
    and the pre-trained rows paired with the pre-trained PPM* and with the main corpus's rows."""
    sim = "; ".join(f"at {t}: {c['alone']:,} ({c['beyond_8gram']:,} of them kept by the 8-gram filter, which "
                    f"removes {c['8gram_only']:,} this one keeps)" for t, c in filters["similarity"].items())
    lines = ["", f"Near-duplicate filters on the {filters['melodies_read']:,} melodies left after the files left out "
             f"by name: the contour 8-gram filter (the pre-training corpus's) removes {filters['contour_8gram']:,}; "
             "the interval-figure similarity filter (`musicgen.metrics.similarity`, transposition-invariant; 0.4 "
             f"is the split's threshold, 0.25 the leakage check's) would remove {sim}. The main pre-training corpus "
             "keeps the 8-gram filter alone; the variants below add the similarity filter."]
    for vid, v in filters.get("variants", {}).items():
        by_name = ", ".join(f"{k.removeprefix('dropped_')}: {n:,}" for k, n in v.items() if k.startswith("dropped_")
                            and k != "dropped_by_name")
        lines.append(f"- Variant `{vid}`: {v['melodies']:,} melodies, {v['notes']:,} notes; dropped by name "
                     f"{v['dropped_by_name']:,}{f' ({by_name})' if by_name else ''}, then {v['contour_8gram']:,} by "
                     f"the 8-gram filter and {v['similarity_beyond_8gram']:,} more by the similarity filter.")
    if ppm_pre:
        lines += ["", f"The pre-trained PPM* rows: the thesis's C*I models trained on the same pre-training corpus "
                  "as the networks plus the training folds (no transposition), over the pitches of the corpus and "
                  "the datasets, each distribution renormalised over the dataset's alphabet (as the networks'); "
                  f"contexts of up to {ppm_pre['max_context']} notes are kept (`CorpusPPM`)."]
    if not paired:
        return lines

    def fig(d):
        return "-" if d is None else f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"

    if paired.get("against_ppm"):
        lines += ["", "Pre-trained rows paired with PPM* pre-trained on the same corpus (row minus PPM*, bits per "
                  "note, melody by melody, seed-aware `seed_piece_interval`); negative: the row predicts better.", "",
                  "| model | chorales: minus PPM* combined | chorales: minus PPM* LTM | kinder: minus PPM* combined "
                  "| kinder: minus PPM* LTM |", "|---|---|---|---|---|"]
        for name, by_ds in paired["against_ppm"].items():
            cells = [fig(by_ds.get(ds, {}).get(ref)) if ref in by_ds.get(ds, {}) else "-"
                     for ds in ("chorales", "kinder") for ref in ("combined", "ltm")]
            lines.append(f"| musicgen {name} | {' | '.join(cells)} |")
    if paired.get("moves"):
        lines += ["", "How much the pre-trained figures move on a variant corpus: each row minus the same row "
                  "pre-trained on the main corpus (paired melody by melody; network rows on the training seeds "
                  "both ran); positive: worse on the variant corpus.", "",
                  "| row | minus | chorales | kinder |", "|---|---|---|---|"]
        for name, m in paired["moves"].items():
            lines.append(f"| {'' if name.startswith('PPM*') else 'musicgen '}{name} | {m['base']} | "
                         f"{fig(m.get('chorales'))} | {fig(m.get('kinder'))} |")
    return lines


@hydra_main("benchmark")
def run(cfg: DictConfig) -> None:
    if cfg.name != "pearce2005":
        raise ConfigError(f"benchmark {cfg.name!r} unknown; the benchmarks are: pearce2005")
    if cfg.publish:
        results_dir(cfg.publish_dir)  # a missing docs directory fails before the work
    write_report(cfg, pearce2005(cfg))


def write_report(cfg: DictConfig, result: dict[str, Any]) -> None:
    """``pearce2005.json`` and ``pearce2005.md`` in ``output_dir``, the report on stdout, and with
    ``publish=true`` the page ``docs/results/pearce2005.md``."""
    out = Path(cfg.output_dir)
    atomic_write_text(out / "pearce2005.json", json.dumps(result, indent=1))
    atomic_write_text(out / "pearce2005.md", report_markdown(result))
    print(report_markdown(result))
    if cfg.publish:
        log.info("published to %s", publish(cfg.name, report_markdown(result), docs_dir=cfg.publish_dir))


def main() -> None:
    """``musicgen benchmark pearce2005 [key=value ...]``: the first word names the benchmark."""
    sys.argv[1:] = [f"name={a}" if re.fullmatch(r"\w+", a) else a for a in sys.argv[1:]]
    run()


if __name__ == "__main__":
    main()
