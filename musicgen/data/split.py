"""Split files into train/val/test by a hash of their group key, so near-duplicates stay together.

A file's group key says which piece it is: for a Bach chorale its chorale number (all versions
of ``bwv18.5`` are one piece), for any other file a hash of its notes (the same folk tune in two
collections, or at two MIDI resolutions, is one piece). The side is a hash of the key and the
seed, so copies of one piece land on one side, and adding files to a corpus never moves the
files already there. The split happens before augmentation and before any tokeniser training,
so nothing from validation or test leaks into either.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from musicgen.fs import atomic_write_text

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: Bumped when ``content_key`` changes, so a memo of older keys is not trusted.
CONTENT_KEY_VERSION = 1


def hash_unit(key: str, seed: int) -> float:
    """A deterministic number in [0, 1) for ``key`` under ``seed``."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(key: str, seed: int, val_frac: float, test_frac: float = 0.0) -> str:
    """Which split the group ``key`` (or a relative path) belongs to: test first, then val, the rest train."""
    u = hash_unit(key, seed)
    if u < test_frac:
        return "test"
    if u < test_frac + val_frac:
        return "val"
    return "train"


def check_fractions(val_frac: float, test_frac: float) -> None:
    if not 0.0 <= val_frac < 1.0:
        raise ValueError(f"data.val_frac={val_frac} must be in [0, 1)")
    if not 0.0 <= test_frac < 1.0 or val_frac + test_frac >= 1.0:
        raise ValueError(f"data.test_frac={test_frac} must be in [0, 1) with val_frac + test_frac < 1")


def assign_splits(
    files: Iterable[tuple[str, Path]],
    seed: int,
    val_frac: float,
    test_frac: float = 0.0,
    keys: Mapping[str, str] | None = None,
) -> dict[str, list[tuple[str, Path]]]:
    """Split ``(relative name, path)`` pairs by ``keys[name]`` (``group_keys``; without ``keys``,
    by the name itself); each split keeps the input order."""
    check_fractions(val_frac, test_frac)
    out: dict[str, list[tuple[str, Path]]] = {s: [] for s in SPLITS}
    for rel, path in files:
        key = keys[rel] if keys is not None else rel
        out[split_of(key, seed, val_frac, test_frac)].append((rel, path))
    return out


def subsample(files: list[tuple[str, Path]], max_files: int | None, seed: int) -> list[tuple[str, Path]]:
    """At most ``max_files`` files, chosen by hash order: a stable choice that grows by addition."""
    if max_files is None or len(files) <= max_files:
        return list(files)
    if max_files <= 0:
        raise ValueError(f"data.max_files={max_files} must be positive (or null for all files)")
    chosen = sorted(files, key=lambda f: hash_unit("subsample:" + f[0], seed))[:max_files]
    keep = {rel for rel, _ in chosen}
    return [f for f in files if f[0] in keep]


# ----------------------------------------------------------------------------- group keys

def chorale_number(rel: str) -> str | None:
    """``bwv18.5`` for ``chorales/bwv18.5-lz.mid`` and ``chorales/bwv18.5.mid``; None outside ``chorales/``.

    The exported chorales are named after music21's files: the chorale number (``bwv<n>[.<m>]``),
    then, for a second version of the same chorale, a ``-`` and a variant (``-lz``, ``-w``, ``-a``,
    ``-inst``, ``-2``...). The number has no ``-``, so it is the name up to the first one.
    """
    source, _, name = rel.partition("/")
    if source != "chorales" or not name:
        return None
    return Path(name).name.rsplit(".", 1)[0].split("-", 1)[0]


def content_key(path: Path | str) -> str:
    """A hash of the notes of a MIDI file (its merged non-drum notes, as ``read_score`` gives them).

    Each note is (onset, pitch, duration) with times in quarter notes (ticks over the file's
    ticks per quarter), onsets from the first note and pitches from the lowest: the same tune
    at another resolution, after a leading rest or in another key is the same piece (training
    transposes its files, so a transposed copy of a validation tune would leak just the same).
    Velocities, tempo and instruments are left out. Raises ``BadMidiError`` for unusable files.
    """
    import numpy as np

    from musicgen.midi_io import read_score  # the MIDI stack only where files are read

    score = read_score(path)
    notes = score.tracks[0].notes.numpy()
    tpq = float(score.ticks_per_quarter)
    onset = (notes["time"] - notes["time"].min()) / tpq
    pitch = (notes["pitch"] - notes["pitch"].min()).astype(np.float64)
    duration = notes["duration"] / tpq
    order = np.lexsort((duration, pitch, onset))
    table = np.stack([onset[order], pitch[order], duration[order]]).astype(np.float64)
    return hashlib.sha256(np.ascontiguousarray(table).tobytes()).hexdigest()[:24]


def group_keys(files: Iterable[tuple[str, Path]], memo_path: Path | str | None = None) -> dict[str, str]:
    """Group key of each ``(relative name, path)``: ``chorale:<number>`` for chorales,
    ``notes:<content_key>`` for every other file, ``path:<name>`` for a file that cannot be read
    (the cache build skips it later anyway).

    ``memo_path``: a JSON file of content keys by (name, size, mtime_ns), read first and
    rewritten (atomically) when new keys were computed, so that only new or changed files are
    read again: reading the whole folk corpus takes a while.
    """
    from musicgen.midi_io import BadMidiError

    files = list(files)
    memo: dict[str, list] = {}
    if memo_path is not None:
        memo_path = Path(memo_path)
        try:
            data = json.loads(memo_path.read_text(encoding="utf-8"))
            if data.get("version") == CONTENT_KEY_VERSION:
                memo = data["keys"]
        except (OSError, ValueError, KeyError, AttributeError):
            memo = {}  # missing or unreadable: recomputed, then rewritten
    keys, changed = {}, False
    for rel, path in files:
        number = chorale_number(rel)
        if number is not None:
            keys[rel] = f"chorale:{number}"
            continue
        try:
            st = Path(path).stat()
            ident = [st.st_size, st.st_mtime_ns]
        except OSError:
            keys[rel] = f"path:{rel}"
            continue
        known = memo.get(rel)
        if known is not None and known[:2] == ident:
            keys[rel] = known[2]
            continue
        try:
            keys[rel] = f"notes:{content_key(path)}"
        except BadMidiError:
            keys[rel] = f"path:{rel}"
        memo[rel] = [*ident, keys[rel]]
        changed = True
    if memo_path is not None and changed:
        atomic_write_text(memo_path, json.dumps({"version": CONTENT_KEY_VERSION, "keys": memo}) + "\n")
    return keys


def merged_groups(keys: Mapping[str, str]) -> dict[str, int]:
    """How many groups hold more than one file (``groups_merged``) and how many files they hold."""
    sizes = Counter(keys.values())
    merged = [n for n in sizes.values() if n > 1]
    return {"groups_merged": len(merged), "files_in_merged_groups": sum(merged)}
