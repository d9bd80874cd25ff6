"""The benchmark's melodies, from music21's corpus: the Essen "kinder" and "fink" collections and
the soprano lines of the Bach chorales BWV 253-438, each melody the chromatic pitches of its note
events (kept in ``<data_dir>/benchmarks/pearce2005.json``); their note features for the rhythm
rows (``rhythm``); and the datasets against the thesis's Table 4.1."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from musicgen.errors import ConfigError
from musicgen.experiments.pearce2005.thesis import THESIS_DATA
from musicgen.fs import atomic_write_text

log = logging.getLogger(__name__)


ESSEN = {"kinder": "essenFolksong/kinder0.abc", "fink": "essenFolksong/fink0.abc"}
CHORALE_RANGE = (253, 438)


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
    """Each melody's note features (``rhythm.feature_ids``, ``(n, features)``) for
    ``datasets``, kept beside the melodies in ``<data_dir>/benchmarks/pearce2005_rhythm.json``
    (``note_features``' lists, extracted once per dataset). The melodies' pitches are the benchmark's
    own (``pearce2005.json``): features whose pitches differ from them are refused, not used."""
    from musicgen.experiments.pearce2005.rhythm import feature_ids, note_features

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


def dataset_table(data: dict[str, list[list[int]]]) -> list[dict[str, Any]]:
    """Melodies, events and distinct pitches of each dataset against the thesis's Table 4.1."""
    rows = []
    for name, melodies in data.items():
        ours = (len(melodies), sum(map(len, melodies)), len({p for m in melodies for p in m}))
        theirs = THESIS_DATA[name]
        rows.append({"dataset": name, "ours": ours, "thesis": theirs,
                     "within_2_percent": [abs(a - b) <= 0.02 * b for a, b in zip(ours, theirs)]})
    return rows
