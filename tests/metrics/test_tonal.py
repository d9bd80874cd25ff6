"""Tonal figures fair to transposition: hand-computed values on built scores, invariance on real
folk tunes transposed, a chromatic random melody against real tunes, and MusPy's own reading."""

from __future__ import annotations

import math

import numpy as np
import pytest
import symusic

from musicgen.control.attributes import estimate_key
from musicgen.metrics.features import piece_features
from musicgen.metrics.tonal import tonal_features
from musicgen.midi_io import read_score

TPQ = 480


def _melody(pitches, durations=None) -> symusic.Score:
    score = symusic.Score(TPQ)
    track = symusic.Track("melody", program=0)
    time = 0
    for i, p in enumerate(pitches):
        d = TPQ if durations is None else durations[i]
        track.notes.append(symusic.Note(time, d, int(p), 80))
        time += d
    score.tracks.append(track)
    return score


def test_c_major_scale_by_hand():
    f = tonal_features(_melody([60, 62, 64, 65, 67, 69, 71, 72]))
    assert f["key"] == "C_major"
    assert f["scale_consistency"] == 1.0
    assert f["pitch_in_scale"] == 1.0
    # C counted twice, the six other degrees once each: bins 0, 2, 4, 5, 7, 9, 11.
    assert f["tonic_pitch_classes"].tolist() == [2, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1]
    assert f["pitch_class_entropy"] == pytest.approx(-(2 / 8) * math.log2(2 / 8) - 6 * (1 / 8) * math.log2(1 / 8))
    assert 0.5 < f["key_clarity"] <= 1.0


def test_one_chromatic_note_by_hand():
    """A long D major scale and one short G#: the key stays D major, 7 of 8 notes are in its scale
    and no scale holds all 8 (G# and G are both there), and the histogram is rotated to D."""
    pitches = [62, 64, 66, 67, 69, 71, 73, 68]  # D E F# G A B C# G#
    f = tonal_features(_melody(pitches, [960] * 7 + [120]))
    assert f["key"] == "D_major"
    assert f["pitch_in_scale"] == pytest.approx(7 / 8)
    assert f["scale_consistency"] == pytest.approx(7 / 8)
    assert f["tonic_pitch_classes"].tolist() == [1, 0, 1, 0, 1, 1, 1, 1, 0, 1, 0, 1]


def test_empty_score_has_no_values():
    f = tonal_features(symusic.Score(TPQ))
    assert math.isnan(f["scale_consistency"]) and math.isnan(f["key_clarity"])
    assert math.isnan(f["pitch_in_scale"]) and math.isnan(f["pitch_class_entropy"])
    assert f["tonic_pitch_classes"].sum() == 0


@pytest.mark.parametrize("shift", [-5, 1, 2, 7])
def test_transposition_leaves_tonal_figures_unchanged(folk_midi_files, shift):
    changed_key = 0
    for path in folk_midi_files[:8]:
        score = read_score(path)
        moved = score.shift_pitch(shift)
        a, b = tonal_features(score), tonal_features(moved)
        for k in ("scale_consistency", "pitch_in_scale", "key_clarity", "pitch_class_entropy"):
            assert b[k] == pytest.approx(a[k], abs=1e-9), (path.name, k)
        assert np.array_equal(a["tonic_pitch_classes"], b["tonic_pitch_classes"])
        # ... while the absolute pitch classes rotate with the piece.
        absolute = piece_features(score)["pitch_class"]
        assert np.array_equal(np.roll(absolute, shift), piece_features(moved)["pitch_class"])
        changed_key += estimate_key(score) != estimate_key(moved)
    assert changed_key == 8


def test_chromatic_random_melody_scores_lower_than_real_tunes(folk_midi_files):
    real = [tonal_features(read_score(p)) for p in folk_midi_files[:20]]
    rng = np.random.default_rng(0)
    random = [tonal_features(_melody(rng.integers(55, 80, size=80))) for _ in range(10)]
    worst_real = min(f["scale_consistency"] for f in real)
    best_random = max(f["scale_consistency"] for f in random)
    assert best_random < worst_real
    assert np.mean([f["key_clarity"] for f in random]) < np.mean([f["key_clarity"] for f in real])
    assert np.mean([f["pitch_class_entropy"] for f in random]) > np.mean([f["pitch_class_entropy"] for f in real])


def test_agrees_with_muspy(folk_midi_files, chorale_midi_files):
    muspy = pytest.importorskip("muspy")
    paths = folk_midi_files[:15] + chorale_midi_files[:5]
    for path in paths:
        ours = tonal_features(read_score(path))
        theirs = muspy.read_midi(path)
        assert ours["scale_consistency"] == pytest.approx(muspy.scale_consistency(theirs), abs=0.01), path.name
        assert ours["pitch_class_entropy"] == pytest.approx(muspy.pitch_class_entropy(theirs), abs=0.01), path.name


def test_sample_rows_carry_the_tonal_figures_and_transposition_costs_only_the_key_distribution(folk_midi_files):
    """A training reference of real tunes; one row of the same tunes, one of the same tunes each
    transposed by a different amount (what a model of the augmented data would play): the tonal
    figures and the tonic-relative overlap are the same for both rows, while the absolute
    pitch-class overlap (the key distribution) drops for the transposed row."""
    from musicgen.data.cache import SplitTokens
    from musicgen.metrics.samples import piece_stats, sample_figures, training_reference
    from musicgen.tokenizers import RemiTokenizer

    tok = RemiTokenizer()
    scores = [read_score(p) for p in folk_midi_files]
    docs = [[1, *tok.encode(s), 2] for s in scores]
    offsets = np.cumsum([0] + [len(d) for d in docs])
    train = SplitTokens(np.concatenate(docs).astype(np.uint16), offsets, [f"folk/{i}.mid" for i in range(len(docs))],
                        np.array([sum(len(t.notes) for t in s.tracks) for s in scores]))
    ref = training_reference(tok, train)
    assert ref.histograms["tonic_pitch_class"].sum() == ref.histograms["pitch_class"].sum() > 0
    same = [tok.encode(s) for s in scores]
    moved = [tok.encode(s.shift_pitch(shift)) for s, shift in zip(scores, [1, 3, 5, -2, -4, 6] * 3)]
    a = sample_figures(piece_stats(tok, same, ref), ref, n_boot=200)
    b = sample_figures(piece_stats(tok, moved, ref), ref, n_boot=200)
    for key in ("scale_consistency", "pitch_in_scale", "key_clarity", "pitch_class_entropy"):
        assert a[key]["low"] <= a[key]["value"] <= a[key]["high"]
        assert b[key]["value"] == pytest.approx(a[key]["value"], abs=1e-6), key
    assert a["tonic_pitch_class_overlap"]["value"] == pytest.approx(1.0)
    assert b["tonic_pitch_class_overlap"]["value"] == pytest.approx(1.0)
    assert a["pitch_class_overlap"]["value"] == pytest.approx(1.0)
    assert b["pitch_class_overlap"]["value"] < 0.9
