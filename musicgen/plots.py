"""Figures people would rather look at than numbers: piano rolls, histograms, curves."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import symusic
from matplotlib.figure import Figure


def plot_piano_roll(score: symusic.Score, path: Path | str | None = None, title: str = "") -> Figure:
    """Notes as horizontal bars (time in quarter notes, MIDI pitch), velocity as shade."""
    fig = Figure(figsize=(10, 4), dpi=100)
    ax = fig.add_subplot()
    tpq = score.ticks_per_quarter
    notes = [n for t in score.tracks for n in t.notes]
    if notes:
        starts = np.array([n.time for n in notes]) / tpq
        durs = np.maximum(np.array([n.duration for n in notes]) / tpq, 1 / 16)
        pitches = np.array([n.pitch for n in notes])
        vel = np.array([n.velocity for n in notes]) / 127
        colors = [(0.1, 0.3, 0.7, 0.35 + 0.65 * v) for v in vel]
        ax.barh(pitches, durs, left=starts, height=0.8, color=colors, edgecolor="none")
        lo, hi = int(pitches.min()) - 2, int(pitches.max()) + 2
        ax.set_ylim(lo, hi)
        ax.set_xlim(0, (starts + durs).max())
        cs = [p for p in range(lo, hi + 1) if p % 12 == 0]  # label the Cs: C4 = 60
        ax.set_yticks(cs, [f"C{p // 12 - 1}" for p in cs])
    ax.set_xlabel("time (quarter notes)")
    ax.set_ylabel("pitch")
    ax.set_title(title or f"{len(notes)} notes")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def save_figure(fig: Figure, path: Path | str) -> None:
    """Save a figure as PNG, atomically."""
    from musicgen.midi_io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
