"""The networks' pre-training corpus: the melodies of the exported corpus (``make data``:
``<data_dir>/folk`` and ``chorales``), every file of the benchmark's collections left out by name
and every duplicate of a benchmark melody removed; and its variants (``pretraining_variants``: a
similarity filter too, files dropped by name)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from musicgen.errors import ConfigError
from musicgen.experiments.pearce2005.data import CHORALE_RANGE, ESSEN

log = logging.getLogger(__name__)


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
