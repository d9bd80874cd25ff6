"""Split files into train/val/test by a hash of their group key, so near-duplicates stay together.

A file's group key says which piece it is: for a Bach chorale its chorale number (all versions
of ``bwv18.5`` are one piece), for any other file a hash of its notes (the same folk tune in two
collections, or at two MIDI resolutions, is one piece). Then pieces whose melodies are
near-duplicates (``musicgen.metrics.similarity``: variants of one tune, in any key) are joined:
the group key of each connected component of the near-duplicate graph is its smallest member
key. The side is a hash of the key and the seed, so copies and variants of one tune land on one
side. The split happens before augmentation and before any tokeniser training, so nothing from
validation or test leaks into either.

Adding files never moves a file that has no near-duplicate among the added ones: its component
and so its key are unchanged. An added file that is a near-duplicate of old ones can move them,
when its key is smaller than their component's key or when it joins two components that sat on
different sides: that is the price of keeping variants together, and it touches only the old
files of that one tune (measured in docs/guide/data.md). Similarity is a function of two pieces
alone, so adding files never separates old files that were together.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from musicgen.fs import atomic_write_text
from musicgen.metrics.similarity import near_duplicate_pairs, score_contour, signature

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: Bumped when ``content_key`` or ``score_contour`` changes, so a memo of older keys is not trusted.
#: 2: each entry also holds the melody's contour (the near-duplicate signature is made from it).
CONTENT_KEY_VERSION = 2


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
    from musicgen.midi_io import read_score  # the MIDI stack only where files are read

    return _notes_hash(read_score(path))


def _notes_hash(score) -> str:
    notes = score.tracks[0].notes.numpy()
    tpq = float(score.ticks_per_quarter)
    onset = (notes["time"] - notes["time"].min()) / tpq
    pitch = (notes["pitch"] - notes["pitch"].min()).astype(np.float64)
    duration = notes["duration"] / tpq
    order = np.lexsort((duration, pitch, onset))
    table = np.stack([onset[order], pitch[order], duration[order]]).astype(np.float64)
    return hashlib.sha256(np.ascontiguousarray(table).tobytes()).hexdigest()[:24]


def _read_piece(path: Path | str) -> tuple[str, list[int]]:
    """``content_key`` and melody contour (``similarity.score_contour``) of a file, read once."""
    from musicgen.midi_io import read_score

    score = read_score(path)
    return _notes_hash(score), score_contour(score).tolist()


def read_pieces(
    files: Iterable[tuple[str, Path]], memo_path: Path | str | None = None
) -> tuple[dict[str, str], dict[str, list[int]]]:
    """Exact group key and melody contour of each ``(relative name, path)``: the key is
    ``chorale:<number>`` for chorales, ``notes:<content_key>`` for every other file, ``path:<name>``
    for a file that cannot be read (its contour empty; the cache build skips it later anyway).

    ``memo_path``: a JSON file of keys and contours by (name, size, mtime_ns), read first and
    rewritten (atomically) when new entries were computed, so that only new or changed files are
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
    keys: dict[str, str] = {}
    contours: dict[str, list[int]] = {}
    changed = False
    for rel, path in files:
        try:
            st = Path(path).stat()
            ident = [st.st_size, st.st_mtime_ns]
        except OSError:
            keys[rel], contours[rel] = f"path:{rel}", []
            continue
        known = memo.get(rel)
        if known is not None and known[:2] == ident:
            keys[rel], contours[rel] = known[2], known[3]
            continue
        number = chorale_number(rel)
        try:
            notes, contours[rel] = _read_piece(path)
            keys[rel] = f"chorale:{number}" if number is not None else f"notes:{notes}"
        except BadMidiError:
            keys[rel], contours[rel] = f"path:{rel}", []
        memo[rel] = [*ident, keys[rel], contours[rel]]
        changed = True
    if memo_path is not None and changed:
        atomic_write_text(memo_path, json.dumps({"version": CONTENT_KEY_VERSION, "keys": memo}) + "\n")
    return keys, contours


def near_duplicate_groups(
    keys: Mapping[str, str], contours: Mapping[str, Sequence[int]], threshold: float
) -> dict[str, str]:
    """``keys`` joined over near-duplicates: each file's key becomes the smallest key of its
    component in the graph whose edges are the pairs of files at least ``threshold`` similar
    (``similarity.near_duplicate_pairs`` on ``signature(contour)``)."""
    names = list(keys)
    parent = {k: k for k in keys.values()}

    def root(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    signatures = [signature(contours.get(n, [])) for n in names]
    for i, j, _ in near_duplicate_pairs(signatures, threshold):
        a, b = root(keys[names[i]]), root(keys[names[j]])
        if a != b:
            parent[max(a, b)] = min(a, b)  # the component's key: its smallest member key
    return {n: root(keys[n]) for n in names}


def group_keys(
    files: Iterable[tuple[str, Path]], memo_path: Path | str | None = None, near_duplicates: float | None = None
) -> dict[str, str]:
    """Group key of each ``(relative name, path)`` (``read_pieces``), joined over near-duplicates
    at similarity ``near_duplicates`` (``near_duplicate_groups``; None: exact copies only)."""
    keys, contours = read_pieces(files, memo_path)
    if near_duplicates is None:
        return keys
    return near_duplicate_groups(keys, contours, near_duplicates)


def merged_groups(keys: Mapping[str, str], exact_keys: Mapping[str, str] | None = None) -> dict[str, int]:
    """How many groups hold more than one file (``groups_merged``) and how many files they hold;
    given the keys before near-duplicates were joined (``exact_keys``), also how many groups
    joined two or more exact groups (``near_duplicate_groups``) and how many files those hold."""
    sizes = Counter(keys.values())
    merged = [n for n in sizes.values() if n > 1]
    out = {"groups_merged": len(merged), "files_in_merged_groups": sum(merged)}
    if exact_keys is not None:
        parts: dict[str, set[str]] = {}
        for rel, k in keys.items():
            parts.setdefault(k, set()).add(exact_keys[rel])
        joined = [k for k, p in parts.items() if len(p) > 1]
        out["near_duplicate_groups"] = len(joined)
        out["files_in_near_duplicate_groups"] = sum(sizes[k] for k in joined)
    return out
