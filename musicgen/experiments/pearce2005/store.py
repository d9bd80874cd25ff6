"""Finished work kept on disk (``<output_dir>/pearce2005_runs/``), each piece under a name derived
from what produced it (``Store.key``, and the digests of initial weights, of a corpus and of note
features), so that an interrupted benchmark resumes and a changed setting retrains. These names
are those of the folds already stored: a change to how one is derived orphans them."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from musicgen.experiments import sittings
from musicgen.fs import atomic_write_bytes, atomic_write_text


class Store:
    """Finished work under one folder, each piece named by what produced it, so an interrupted
    benchmark resumes where it stopped and a changed setting never reuses a stale result."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def begin(self, **about: Any) -> None:
        """Note that an invocation starts now (``wall_time`` counts from here; ``sittings.begin``)."""
        sittings.begin(self.root, **about)

    def wall_time(self, now: float | None = None) -> dict[str, Any]:
        """The stored work's wall time summed over the invocations that stored it (``sittings.wall_time``):
        a benchmark resumed over several sittings is timed as one."""
        return sittings.wall_time(self.root, now)

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

    def has_log_probs(self, name: str) -> bool:
        return (self.root / f"{name}.npz").is_file()

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


def corpus_key(corpus: list[list[int]]) -> str:
    """A digest of a corpus's melodies, part of a pre-trained PPM* row's name in the store."""
    return hashlib.sha1(json.dumps(corpus).encode()).hexdigest()[:12]


def features_key(features: list[np.ndarray]) -> str:
    """A digest of a dataset's note features, part of a rhythm row's name in the store."""
    h = hashlib.sha1()
    for f in features:
        h.update(np.ascontiguousarray(f, dtype=np.int64).tobytes() + b"|")
    return h.hexdigest()[:12]
