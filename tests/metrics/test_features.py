"""Tokeniser-independent piece features: hand-built scores with hand-counted histograms, and real
tunes (O'Neill's folk tunes, Bach chorales) checked against music21's own reading and against
their REMI / REMI+BPE round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import symusic
import torch

from musicgen.metrics import PitchHistogram, features
from musicgen.metrics.features import (
    DURATION_EDGES,
    DURATION_VALUES,
    FEATURES,
    HISTOGRAMS,
    duration_bins,
    kl,
    melody,
    overlap,
    piece_features,
)
from musicgen.midi_io import read_score
from musicgen.tokenizers import RemiTokenizer

TPQ = 480


def make_score(notes, time_signatures=(), tpq=TPQ, drums=()):
    """A score from ``(onset, duration, pitch)`` triples in quarter notes (one piano track)."""
    score = symusic.Score(tpq)
    for t, num, den in time_signatures:
        score.time_signatures.append(symusic.TimeSignature(round(t * tpq), num, den))
    track = symusic.Track(name="piano", program=0, is_drum=False)
    for onset, dur, pitch in notes:
        track.notes.append(symusic.Note(round(onset * tpq), round(dur * tpq), pitch, 80))
    score.tracks.append(track)
    if drums:
        kit = symusic.Track(name="drums", program=0, is_drum=True)
        for onset, dur, pitch in drums:
            kit.notes.append(symusic.Note(round(onset * tpq), round(dur * tpq), pitch, 100))
        score.tracks.append(kit)
    return score


def idx(name, label):
    return HISTOGRAMS[name].index(label)


# ----------------------------------------------------------------------------- hand-built scores

# C4 quarter, E4 eighth, G4 eighth, a C5-E5 chord (half), then B3 dotted quarter in the next bar,
# and a stray drum note that must be ignored.
PHRASE = [(0, 1, 60), (1, 0.5, 64), (1.5, 0.5, 67), (2, 2, 72), (2, 2, 76), (4, 1.5, 59)]


def test_hand_built_phrase():
    f = piece_features(make_score(PHRASE, drums=[(0, 0.25, 36)]))
    assert set(f) == set(FEATURES)
    assert all(f[k].dtype == np.int64 and f[k].shape == (len(v),) for k, v in HISTOGRAMS.items())
    assert f["notes"].tolist() == [6]
    assert f["pitch"].sum() == 6 and f["pitch"][[59, 60, 64, 67, 72, 76]].tolist() == [1] * 6
    assert f["pitch_class"].tolist() == [2, 0, 0, 0, 2, 0, 0, 1, 0, 0, 0, 1]  # C C, E E, G, B
    # melody (highest per onset): 60 64 67 76 59 -> +4 +3 +9 -17 (clipped to -12)
    expected = np.zeros(25, dtype=np.int64)
    for step in (4, 3, 9, -12):
        expected[idx("interval", f"{step:+d}")] += 1
    assert f["interval"].tolist() == expected.tolist()
    # durations: 1, 1/2, 1/2, 2, 2, 3/2 ; onsets 0 1 1.5 2 4 -> IOIs 1, 1/2, 1/2, 2
    dur = np.zeros(11, dtype=np.int64)
    for label, count in (("1", 1), ("1/2", 2), ("2", 2), ("3/2", 1)):
        dur[idx("duration", label)] = count
    assert f["duration"].tolist() == dur.tolist()
    ioi = np.zeros(11, dtype=np.int64)
    for label, count in (("1", 1), ("1/2", 2), ("2", 1)):
        ioi[idx("ioi", label)] = count
    assert f["ioi"].tolist() == ioi.tolist()
    # 4/4 by default: bar 0 has 5 notes, bar 1 one
    per_bar = np.zeros(17, dtype=np.int64)
    per_bar[5] = per_bar[1] = 1
    assert f["notes_per_bar"].tolist() == per_bar.tolist()


def test_empty_score_is_all_zeros():
    f = piece_features(make_score([], drums=[(0, 1, 36)]))
    assert all(f[k].sum() == 0 for k in FEATURES)
    assert f["notes"].tolist() == [0]
    pitches, quarters = melody(make_score([]))
    assert len(pitches) == len(quarters) == 0


def test_unison_and_octave_and_clipping():
    # +12 and -12 stay, +19 clips to +12, a repeated note is 0
    f = piece_features(make_score([(0, 1, 48), (1, 1, 60), (2, 1, 79), (3, 1, 79), (4, 1, 67)]))
    assert f["interval"][idx("interval", "+12")] == 2
    assert f["interval"][idx("interval", "0")] == 1
    assert f["interval"][idx("interval", "-12")] == 1
    assert HISTOGRAMS["interval"][0] == "-12" and HISTOGRAMS["interval"][12] == "0"


def test_near_simultaneous_notes_are_one_onset_with_the_top_as_melody():
    """A chord played with its top note 10 ticks early and its bass 20 ticks late is one onset
    (a 32nd note is 60 ticks at 480 per quarter); the melody takes the highest note."""
    score = symusic.Score(TPQ)
    track = symusic.Track(program=0)
    for t, pitch in ((0, 67), (10, 60), (20, 64), (960, 62), (960, 71), (980, 55)):
        track.notes.append(symusic.Note(t, 480, pitch, 80))
    score.tracks.append(track)
    pitches, quarters = melody(score)
    assert pitches.tolist() == [67, 71]
    assert quarters.tolist() == [1.0, 1.0]
    f = piece_features(score)
    assert f["interval"][idx("interval", "+4")] == 1 and f["interval"].sum() == 1
    assert f["ioi"][idx("ioi", "2")] == 1 and f["ioi"].sum() == 1


def test_duration_bins_are_log_nearest_note_values():
    values = np.array(DURATION_VALUES)
    assert duration_bins(values).tolist() == list(range(10))  # every value lands in its own bin
    # edges are geometric means of neighbours: just below / above one falls either side
    for i, edge in enumerate(DURATION_EDGES[:-1]):
        assert math.isclose(edge, math.sqrt(values[i] * values[i + 1]))
        assert duration_bins([edge * 0.999, edge * 1.001]).tolist() == [i, i + 1]
    labels = HISTOGRAMS["duration"]
    # triplets, tiny and huge values
    assert [labels[b] for b in duration_bins([1 / 3, 2 / 3, 4 / 3, 0.0, 0.01, 4.5, 5.0, 64.0])] == [
        "3/8", "3/4", "3/2", "1/8", "1/8", "4", ">4", ">4"
    ]
    assert [labels[b] for b in duration_bins([0.9, 1.1, 0.45, 0.55])] == ["1", "1", "1/2", "1/2"]


def test_notes_per_bar_follows_time_signatures():
    # 3/4 from the start: bars of 3 quarters. Bar 0: 3 notes, bar 1: none (a rest), bar 2: 2.
    notes = [(0, 1, 60), (1, 1, 62), (2, 1, 64), (6, 1, 65), (7.5, 0.5, 67)]
    f = piece_features(make_score(notes, time_signatures=[(0, 3, 4)]))
    assert f["notes_per_bar"][[0, 2, 3]].tolist() == [1, 1, 1] and f["notes_per_bar"].sum() == 3
    # the same notes without a time signature: 4/4 bars, 4 + 1 (onset 6 and 7.5 both in bar 1)
    f44 = piece_features(make_score(notes))
    assert f44["notes_per_bar"][[2, 3]].tolist() == [1, 1] and f44["notes_per_bar"].sum() == 2
    # 4/4, then 6/8 (3 quarters) from quarter 4: bar 0 = [0, 4), bars 1, 2 = [4, 7), [7, 10)
    change = [(0, 4, 4), (4, 6, 8)]
    notes = [(0, 1, 60), (3, 1, 60), (4, 1, 60), (6.5, 0.5, 60), (7, 1, 60), (9.5, 0.5, 60), (9.9, 0.1, 60)]
    f = piece_features(make_score(notes, time_signatures=change))
    assert f["notes_per_bar"].tolist()[:4] == [0, 0, 2, 1]  # bars of 2, 2 and 3 notes
    # 16 or more notes share the last bin
    dense = [(i / 8, 1 / 8, 60 + i % 5) for i in range(20)] + [(4 + i / 4, 1 / 4, 60) for i in range(16)]
    f = piece_features(make_score(dense))
    assert f["notes_per_bar"][16] == 2 and f["notes_per_bar"].sum() == 2
    assert HISTOGRAMS["notes_per_bar"][-1] == "16+"


def test_other_time_units_give_the_same_features():
    score = make_score(PHRASE, time_signatures=[(0, 3, 4)])
    ticks = piece_features(score)
    for unit in ("quarter", "second"):
        other = piece_features(score.to(unit))
        assert all(np.array_equal(ticks[k], other[k]) for k in FEATURES), unit


def test_several_tracks_are_pooled():
    a, b = make_score(PHRASE[:3]), make_score(PHRASE[3:])
    both = make_score(PHRASE[:3])
    both.tracks.append(b.tracks[0])
    f, whole = piece_features(both), piece_features(make_score(PHRASE))
    assert all(np.array_equal(f[k], whole[k]) for k in FEATURES)
    assert np.array_equal(f["pitch"], piece_features(a)["pitch"] + piece_features(b)["pitch"])


# ----------------------------------------------------------------------------- overlap / kl


def test_overlap_and_kl_hand_values():
    p, q = np.array([3.0, 1.0, 0.0]), np.array([1.0, 0.0, 1.0])  # .75 .25 0 against .5 0 .5
    assert math.isclose(overlap(p, q), 0.5)
    assert math.isclose(overlap(p, p * 7), 1.0)
    assert overlap([1, 0], [0, 1]) == 0.0
    eps = 1e-3
    s = 1 + 3 * eps
    expected = (
        (0.75 + eps) * math.log((0.75 + eps) / (0.5 + eps))
        + (0.25 + eps) * math.log((0.25 + eps) / eps)
        + eps * math.log(eps / (0.5 + eps))
    ) / s
    assert math.isclose(kl(p, q, eps), expected, rel_tol=1e-12)
    assert abs(kl(p, p * 2)) < 1e-12
    assert kl(p, q) > 0 and kl(q, p) > 0 and not math.isclose(kl(p, q), kl(q, p))  # not symmetric
    with pytest.raises(ValueError):
        kl(p, q, eps=0)


def test_overlap_and_kl_broadcast_rows_and_empty_is_nan():
    rows = np.array([[3.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    q = np.array([1.0, 0.0, 1.0])
    ov = overlap(rows, q)
    assert ov.shape == (3,) and math.isclose(ov[0], 0.5) and math.isclose(ov[1], 1.0) and math.isnan(ov[2])
    div = kl(rows, q)
    assert math.isclose(div[0], kl(rows[0], q)) and abs(div[1]) < 1e-12 and math.isnan(div[2])


def test_pitch_histogram_metric_uses_the_same_overlap_and_kl():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 20, size=128).astype(np.float64)
    pitches = rng.integers(40, 90, size=300)
    metric = PitchHistogram(torch.tensor(ref), eps=1e-4)
    metric.update(torch.tensor(pitches))
    out = metric.compute()
    counts = np.bincount(pitches, minlength=128)
    assert math.isclose(float(out["kl"]), features.kl(counts, ref, 1e-4), rel_tol=1e-6)
    assert math.isclose(float(out["overlap"]), features.overlap(counts, ref), rel_tol=1e-6)


# ----------------------------------------------------------------------------- real music


@pytest.fixture(scope="module")
def folk_tunes(tmp_path_factory):
    """O'Neill's first tunes with a single metre: (music21's flat melody part, the MIDI file the
    project's export writes from it)."""
    from music21 import corpus, meter

    from musicgen.data.music21_midi import melody_midi_bytes, parse_abc_tune, rebuild_part, split_abc_tunes

    root = tmp_path_factory.mktemp("folk_features")
    texts = split_abc_tunes(corpus.getWork("oneills1850/0001-0050.abc").read_text(encoding="utf-8"))
    out = []
    for i, text in enumerate(texts[:12]):
        score = parse_abc_tune(text)
        part = rebuild_part(score.parts[0])
        if len({ts.ratioString for ts in part.getElementsByClass(meter.TimeSignature)}) != 1:
            continue
        path = root / f"{i:04d}.mid"
        path.write_bytes(melody_midi_bytes(score))
        out.append((part, path))
    assert len(out) >= 6
    return out


def test_real_folk_tunes_match_music21(folk_tunes):
    """Every histogram of a monophonic tune recomputed from music21's own notes and metre."""
    from music21 import meter

    for part, path in folk_tunes:
        notes = [n for n in part.flatten().notes if n.duration.quarterLength > 0]  # MIDI has no grace notes
        assert not any(n.isChord for n in notes)
        tied = part.stripTies().flatten().notes
        expected = [n.pitch.midi for n in tied if n.duration.quarterLength > 0]
        score = read_score(path)
        pitches, _ = melody(score)
        assert pitches.tolist() == expected, path.name  # monophonic: the melody is every note
        f = piece_features(score)
        n = len(expected)
        assert f["notes"][0] == n == f["pitch"].sum() == f["duration"].sum()
        assert f["pitch"].tolist() == np.bincount(expected, minlength=128).tolist()
        steps = np.clip(np.diff(expected), -12, 12)
        assert f["interval"].tolist() == np.bincount(steps + 12, minlength=25).tolist()
        offsets = [float(x.offset) for x in tied if x.duration.quarterLength > 0]
        assert f["ioi"].tolist() == np.bincount(duration_bins(np.diff(offsets)), minlength=11).tolist()
        lengths = [float(x.duration.quarterLength) for x in tied if x.duration.quarterLength > 0]
        assert f["duration"].tolist() == np.bincount(duration_bins(lengths), minlength=11).tolist()
        bar_ql = float(part.getElementsByClass(meter.TimeSignature)[0].barDuration.quarterLength)
        bars = np.floor(np.array(offsets) / bar_ql + 1e-9).astype(int)
        per_bar = np.minimum(np.bincount(bars), 16)
        assert f["notes_per_bar"].tolist() == np.bincount(per_bar, minlength=17).tolist(), path.name


def test_features_survive_remi_and_bpe_round_trips(folk_midi_files, chorale_midi_files):
    """The point of the features: the same music gives the same features whatever the tokens."""
    remi, bpe = RemiTokenizer(), RemiTokenizer(bpe_vocab_size=450)
    bpe.train(folk_midi_files)
    for path in [*folk_midi_files[:4], *chorale_midi_files]:
        score = read_score(path)
        original = piece_features(score, use_time_signatures=False)  # REMI here has 4/4 bars only
        via_remi = piece_features(remi.decode(remi.encode(path)))
        via_bpe = piece_features(bpe.decode(bpe.encode(path)))
        assert all(np.array_equal(via_remi[k], via_bpe[k]) for k in FEATURES)
        for k in ("pitch", "pitch_class", "interval", "ioi", "notes", "notes_per_bar"):
            assert np.array_equal(original[k], via_remi[k]), (path.name, k)
        assert overlap(original["duration"], via_remi["duration"]) > 0.98
        if any((ts.numerator, ts.denominator) != (4, 4) for ts in score.time_signatures):
            assert not np.array_equal(piece_features(score)["notes_per_bar"], original["notes_per_bar"])


def test_chorale_has_chords_and_a_top_voice(chorale_midi_files):
    score = read_score(chorale_midi_files[0])
    f = piece_features(score)
    pitches, _ = melody(score)
    assert f["notes"][0] > 2 * len(pitches)  # four voices, far fewer onsets than notes
    # the melody is the top of each onset: never below any note starting with it
    notes = score.tracks[0].notes.numpy()
    steps = np.rint(notes["time"] / (score.ticks_per_quarter / 8))
    tops = [notes["pitch"][steps == s].max() for s in np.unique(steps)]
    assert pitches.tolist() == [int(t) for t in tops]
    assert f["notes_per_bar"][:3].sum() <= 2  # a chorale has hardly any near-empty bar
