"""Split files into train/val/test by a hash of their relative path.

A file's side depends only on its relative path and the seed, so adding files to a corpus
never moves the files already there from one side to the other. The split happens before
augmentation and before any tokeniser training, so nothing from validation leaks into either.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

SPLITS = ("train", "val", "test")


def hash_unit(key: str, seed: int) -> float:
    """A deterministic number in [0, 1) for ``key`` under ``seed``."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(rel_path: str, seed: int, val_frac: float, test_frac: float = 0.0) -> str:
    """Which split ``rel_path`` belongs to: test first, then val, the rest train."""
    u = hash_unit(rel_path, seed)
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


def split_files(
    files: Iterable[tuple[str, Path]], seed: int, val_frac: float, test_frac: float = 0.0
) -> dict[str, list[tuple[str, Path]]]:
    """Split ``(relative name, path)`` pairs; each split keeps the input order."""
    check_fractions(val_frac, test_frac)
    out: dict[str, list[tuple[str, Path]]] = {s: [] for s in SPLITS}
    for rel, path in files:
        out[split_of(rel, seed, val_frac, test_frac)].append((rel, path))
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
