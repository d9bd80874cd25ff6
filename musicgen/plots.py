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


def plot_piano_roll(score: symusic.Score, path: Path | str | None = None, title: str = "",
                    span: tuple[int, int] | None = None) -> Figure:
    """Notes as horizontal bars (time in quarter notes, MIDI pitch), velocity as shade; ``span``
    (ticks) shaded, e.g. the bars an infilling regenerated."""
    fig = Figure(figsize=(10, 4), dpi=100)
    ax = fig.add_subplot()
    tpq = score.ticks_per_quarter
    if span is not None:
        ax.axvspan(span[0] / tpq, span[1] / tpq, color=(1.0, 0.75, 0.2), alpha=0.3, lw=0)
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


ROW_LABELS = {"model": "model samples", "ngram": "n-gram samples", "real": "real pieces"}
ROW_COLORS = {"model": "tab:blue", "ngram": "tab:orange", "real": "tab:green"}
#: The figures ``metrics.png`` shows, one panel each, every row with its 95% interval.
#: Tonal figures first (per piece, fair to transposition); ``pitch_class_overlap`` is the key distribution.
METRIC_PANELS = (
    "tonic_pitch_class_overlap", "scale_consistency", "pitch_class_overlap", "interval_overlap",
    "duration_overlap", "ioi_overlap", "notes_per_bar_overlap", "ngram_repetition_4", "copied_8gram_share",
    "copied_8gram_share_interval", "longest_copied_run", "notes_per_piece",
)
PANEL_TITLES = {"pitch_class_overlap": "key distribution (pitch_class_overlap)"}
#: The distributions ``distributions.png`` compares (the reference: untransposed training pieces).
DISTRIBUTION_PANELS = ("pitch_class", "interval", "duration", "ioi", "notes_per_bar")


def plot_evaluation(result: dict[str, Any], out_dir: Path) -> None:
    """The evaluation report's figures: ``metrics.png`` (each sample figure of the model, n-gram
    and real rows with its interval) and ``distributions.png`` (each row's histograms against
    the training pieces')."""
    from musicgen.metrics.features import HISTOGRAMS

    rows = [r for r in ROW_LABELS if r in result]
    n_cols = 4
    n_rows = -(-len(METRIC_PANELS) // n_cols)
    fig = Figure(figsize=(14, 2.6 * n_rows), dpi=100)
    FigureCanvasAgg(fig)
    for k, key in enumerate(METRIC_PANELS):
        ax = fig.add_subplot(n_rows, n_cols, k + 1)
        for j, r in enumerate(rows):
            f = result[r].get(key)
            if not f:
                continue
            err = [[max(0.0, f["value"] - f["low"])], [max(0.0, f["high"] - f["value"])]] \
                if not np.isnan(f["low"]) else None
            ax.bar(j, f["value"], yerr=err, color=ROW_COLORS[r], capsize=4)
        ax.set_xticks(range(len(rows)), [ROW_LABELS[r].split()[0] for r in rows])
        ax.set_title(PANEL_TITLES.get(key, key), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{result['version']} on {result['split']}: figures with 95% intervals")
    fig.tight_layout()
    save_figure(fig, out_dir / "metrics.png")

    hist = result["histograms"]
    fig = Figure(figsize=(14, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    for k, name in enumerate(DISTRIBUTION_PANELS):
        ax = fig.add_subplot(1, len(DISTRIBUTION_PANELS), k + 1)
        bins = np.arange(len(HISTOGRAMS[name]))
        ax.bar(bins, _shares(hist["reference"][name]), width=1.0, color="tab:gray", alpha=0.4, label="training")
        for r in rows:
            ax.step(bins, _shares(hist[r][name]), where="mid", color=ROW_COLORS[r], label=ROW_LABELS[r])
        step = max(1, len(bins) // 6)
        ax.set_xticks(bins[::step], list(HISTOGRAMS[name])[::step], fontsize=7)
        ax.set_title(name, fontsize=9)
    fig.axes[0].set_ylabel("share")
    fig.axes[-1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out_dir / "distributions.png")
