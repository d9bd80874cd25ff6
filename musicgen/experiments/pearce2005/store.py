"""Finished work kept on disk (``<output_dir>/pearce2005_runs/``), each piece under a name derived
from what produced it (``Store.key``, and the digests of initial weights, of a corpus and of note
features), so that an interrupted benchmark resumes and a changed setting retrains. These names
are those of the folds already stored: a change to how one is derived orphans them."""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from musicgen.fs import atomic_write_bytes, atomic_write_text

#: One line per invocation of the benchmark on a store: when it started (``Store.begin``).
INVOCATIONS = "invocations.jsonl"


class Store:
    """Finished work under one folder, each piece named by what produced it, so an interrupted
    benchmark resumes where it stopped and a changed setting never reuses a stale result."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def begin(self, **about: Any) -> None:
        """Note that an invocation starts now (``wall_time`` counts from here); ``about`` is kept
        beside the time (the commit, say)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / INVOCATIONS, "a") as f:
            f.write(json.dumps({"start": time.time(), **about}) + "\n")

    def wall_time(self, now: float | None = None) -> dict[str, Any]:
        """The wall time the stored work took, summed over the invocations that stored it, so that a
        benchmark resumed over several sittings is timed as one run: each invocation counts from its
        start to the last piece it stored (what an interrupt threw away is not counted: an
        uninterrupted run would not have done it), the last one to ``now`` (its report). Pieces
        stored before the first timed invocation are counted apart, untimed."""
        now = time.time() if now is None else now
        path = self.root / INVOCATIONS
        starts = [json.loads(line)["start"] for line in path.read_text().splitlines() if line.strip()] \
            if path.is_file() else []
        written = sorted(p.stat().st_mtime for p in self.root.rglob("*") if p.name != INVOCATIONS and p.is_file())
        seconds, per = 0.0, []
        for i, start in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else None
            mine = [t for t in written if t >= start and (end is None or t < end)]
            took = (now - start) if end is None else ((mine[-1] - start) if mine else 0.0)
            per.append({"start": start, "seconds": took, "pieces": len(mine)})
            seconds += took
        untimed = sum(t < starts[0] for t in written) if starts else len(written)
        return {"seconds": seconds, "invocations": per, "untimed_pieces": untimed}

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
