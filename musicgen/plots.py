"""Figures people would rather look at than numbers: piano rolls, histograms, curves."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import symusic
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from musicgen.fs import atomic_write_bytes

N_PITCHES = 128


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
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def _shares(counts: torch.Tensor | Sequence[float]) -> np.ndarray:
    c = torch.as_tensor(counts, dtype=torch.float32).reshape(-1)
    return (c / c.sum()).cpu().numpy()


def plot_pitch_histograms(
    generated: torch.Tensor | Sequence[float],
    reference: torch.Tensor | Sequence[float],
    path_or_ax: str | Path | Axes | None = None,
    pitch_range: tuple[int, int] | None = None,
    title: str | None = "Pitch histogram",
) -> Figure:
    """Plot generated against reference pitch distributions (128 counts each, normalised here).

    ``path_or_ax``: a file path (the figure is saved there), a matplotlib ``Axes`` to
    draw on, or ``None``. Returns the Figure. Uses the object-oriented API with the Agg
    canvas, never pyplot, so it touches no global backend state and leaks no figures.
    """
    gen = _shares(generated)
    ref = _shares(reference)
    if gen.shape[0] != N_PITCHES or ref.shape[0] != N_PITCHES:
        raise ValueError(f"histograms must have {N_PITCHES} bins, got {gen.shape[0]} and {ref.shape[0]}")

    if isinstance(path_or_ax, Axes):
        ax = path_or_ax
        fig = ax.figure
    else:
        fig = Figure(figsize=(10, 4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    bins = range(N_PITCHES)
    ax.bar(bins, ref, width=1.0, color="tab:gray", alpha=0.5, label="reference")
    ax.step(bins, gen, where="mid", color="tab:blue", linewidth=1.2, label="generated")
    if pitch_range is not None:
        ax.axvspan(pitch_range[0] - 0.5, pitch_range[1] + 0.5, color="tab:green", alpha=0.08, label="pitch range")
    ax.set_xlim(-0.5, N_PITCHES - 0.5)
    ax.set_xlabel("MIDI pitch")
    ax.set_ylabel("share of notes")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper right")
    if isinstance(path_or_ax, str | Path):
        path = Path(path_or_ax)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    return fig  # type: ignore[return-value]


def plot_evaluation(result: dict[str, Any], out_dir: Path, repetition_ns: Sequence[int]) -> None:
    """The evaluation report's figures: ``pitch_histogram.png`` and ``repetition.png``."""
    ref = torch.tensor(result["reference_pitch_counts"])
    fig = plot_pitch_histograms(torch.tensor(result["model"]["pitch_counts"]), ref,
                                title=f"{result['version']}: generated vs training pitches")
    save_figure(fig, out_dir / "pitch_histogram.png")
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    for name, row in (("model samples", result["model"]), ("n-gram samples", result["ngram_baseline"]),
                      (f"real {result['split']} pieces", result["validation_pieces"])):
        if "ngram_repetition_2" in row:
            ax.plot(repetition_ns, [row[f"ngram_repetition_{n}"] for n in repetition_ns], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(repetition_ns), [str(n) for n in repetition_ns])
    ax.set_xlabel("n")
    ax.set_ylabel("share of repeated n-grams")
    ax.set_title("repetition by n")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out_dir / "repetition.png")
