"""Figures: the pitch-histogram plot draws to a file, onto given axes, or into a new figure."""

import torch
from matplotlib.figure import Figure

from musicgen.metrics import pitch_counts
from musicgen.plots import plot_pitch_histograms


def _ref_counts():
    ref = torch.zeros(128)
    ref[60] = 1
    ref[62] = 1
    return ref


def test_plot_pitch_histograms(tmp_path):
    gen = pitch_counts([60, 60, 64])
    path = tmp_path / "plots" / "pitch.png"
    fig = plot_pitch_histograms(gen, _ref_counts(), path, pitch_range=(60, 62))
    assert isinstance(fig, Figure)
    assert path.exists() and path.stat().st_size > 0

    fig2 = Figure()
    ax = fig2.add_subplot()
    assert plot_pitch_histograms(gen, _ref_counts(), ax) is fig2
    assert isinstance(plot_pitch_histograms(gen.tolist(), _ref_counts()), Figure)
