"""Copying statistics: the suffix automaton against brute force, the cases that matter (a copied
piece, a run across two training pieces, random sequences), melody symbols of real tunes."""

from __future__ import annotations

import numpy as np
import pytest
import symusic

from musicgen.metrics.bootstrap import bootstrap_ci, mean_of, ratio
from musicgen.metrics.copying import N_DURATION_BINS, CopyIndex, interval_symbols, melody_symbols
from musicgen.metrics.features import HISTOGRAMS
from musicgen.midi_io import read_score


def brute_match_lengths(train: list[list[int]], query: list[int]) -> list[int]:
    """Longest run ending at each position of the query that is a contiguous part of one training sequence."""
    grams = {tuple(s[i:j]) for s in train for i in range(len(s)) for j in range(i + 1, len(s) + 1)}
    out = []
    for i in range(len(query)):
        run = 0
        while run < i + 1 and tuple(query[i - run : i + 1]) in grams:
            run += 1
        out.append(run)
    return out


def test_match_lengths_agree_with_brute_force():
    """Small alphabets make many repeated substrings, i.e. many cloned states."""
    rng = np.random.default_rng(0)
    for trial in range(60):
        alphabet = 2 + trial % 3
        train = [rng.integers(0, alphabet, size=int(rng.integers(0, 25))).tolist() for _ in range(1 + trial % 5)]
        index = CopyIndex(train)
        for _ in range(3):
            query = rng.integers(0, alphabet + 1, size=int(rng.integers(0, 30))).tolist()
            assert index.match_lengths(query).tolist() == brute_match_lengths(train, query), (train, query)


def test_hand_computed_stats():
    index = CopyIndex([[1, 2, 3, 4], [3, 4, 5]], ns=(2, 3))
    assert index.columns == ("copied_2", "total_2", "copied_3", "total_3", "longest_run")
    # runs: 9 -> 0, 1 2 3 -> 1 2 3, 4 -> 4 (1 2 3 4), 5 -> 3 4 5 is in piece 2 but not 2 3 4 5: 3
    assert index.match_lengths([9, 1, 2, 3, 4, 5]).tolist() == [0, 1, 2, 3, 4, 3]
    # 2-grams: 9 1 no, 1 2, 2 3, 3 4, 4 5 yes (4 of 5); 3-grams: 1 2 3, 2 3 4, 3 4 5 (3 of 4)
    assert index.stats([9, 1, 2, 3, 4, 5]).tolist() == [4, 5, 3, 4, 4]
    assert index.stats([]).tolist() == [0, 0, 0, 0, 0]
    assert index.stats([2]).tolist() == [0, 0, 0, 0, 1]
    assert index.n_sequences == 2 and index.n_symbols == 7


def test_copied_training_piece_copies_everything():
    rng = np.random.default_rng(1)
    train = [rng.integers(0, 40, size=int(rng.integers(50, 200))) for _ in range(30)]
    index = CopyIndex(train)
    for piece in train[:5]:
        copied_8, total_8, copied_16, total_16, longest = index.stats(piece).tolist()
        assert copied_8 == total_8 == len(piece) - 7
        assert copied_16 == total_16 == len(piece) - 15
        assert longest == len(piece)


def test_a_run_across_two_training_pieces_is_not_one_run():
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 40, size=60).tolist(), rng.integers(40, 80, size=60).tolist()
    index = CopyIndex([a, b])
    query = a[-10:] + b[:10]  # present in a + b joined, but in neither piece
    runs = index.match_lengths(query)
    assert runs.max() == 10 and runs.tolist() == list(range(1, 11)) + list(range(1, 11))
    copied_8, total_8, copied_16, total_16, longest = index.stats(query).tolist()
    assert (copied_8, total_8) == (6, 13)  # 3 8-grams inside a, 3 inside b, 7 across
    assert (copied_16, total_16, longest) == (0, 5, 10)
    # with the pieces joined into one training sequence the run would count
    assert CopyIndex([a + b]).stats(query).tolist()[-1] == 20


def test_random_sequences_copy_nothing_at_8():
    rng = np.random.default_rng(3)
    index = CopyIndex([rng.integers(0, 40, size=200) for _ in range(200)])
    stats = index.stats_many(rng.integers(0, 40, size=200) for _ in range(50))
    assert stats.shape == (50, 5)
    assert stats[:, 0].sum() == 0 and stats[:, 2].sum() == 0
    assert (stats[:, 1] == 193).all() and (stats[:, 3] == 185).all()
    assert 3 <= stats[:, 4].min() and stats[:, 4].max() < 8  # short chance matches only
    value, low, high = bootstrap_ci(stats, ratio(0, 1))
    assert (value, low, high) == (0.0, 0.0, 0.0)
    value, low, high = bootstrap_ci(stats, mean_of(4))
    assert low <= value <= high and 3 < value < 8


def test_validation_and_input_types():
    with pytest.raises(ValueError):
        CopyIndex([[1, 2]], ns=(0,))
    with pytest.raises(ValueError):
        CopyIndex([np.zeros((2, 2), dtype=int)])
    index = CopyIndex([np.array([5, 6, 7], dtype=np.int8), (7, 8)])
    assert index.match_lengths(np.array([5, 6, 7, 8])).tolist() == [1, 2, 3, 2]
    assert CopyIndex([]).stats(list(range(10))).tolist() == [0, 3, 0, 0, 0]


# ----------------------------------------------------------------------------- melody symbols


def test_melody_symbols_hand_built():
    score = symusic.Score(480)
    track = symusic.Track(program=0)
    # a C4-E4-G4 chord (quarter), then D5 eighth, then B4 half
    for t, d, p in ((0, 480, 60), (0, 480, 64), (0, 480, 67), (480, 240, 74), (720, 960, 71)):
        track.notes.append(symusic.Note(t, d, p, 80))
    score.tracks.append(track)
    assert melody_symbols(score).tolist() == [67, 74, 71]
    labels = HISTOGRAMS["duration"]
    bins = [labels.index(x) for x in ("1", "1/2", "2")]
    assert N_DURATION_BINS == len(labels) == 11
    assert melody_symbols(score, with_duration=True).tolist() == [p * 11 + b for p, b in zip((67, 74, 71), bins)]
    assert melody_symbols(symusic.Score(480)).tolist() == []


def test_real_tunes_against_a_training_set(folk_midi_files):
    scores = [read_score(p) for p in folk_midi_files]
    for with_duration in (False, True):
        symbols = [melody_symbols(s, with_duration) for s in scores]
        assert all(len(x) == len(s.tracks[0].notes) for x, s in zip(symbols, scores))  # monophonic tunes
        train, held_out = symbols[:-3], symbols[-3:]
        index = CopyIndex(train)
        stats = index.stats_many(train)
        assert (stats[:, 0] == stats[:, 1]).all() and (stats[:, 4] == [len(x) for x in train]).all()
        for query in held_out:
            copied_8, total_8, _, _, longest = index.stats(query).tolist()
            assert copied_8 < total_8 and longest < len(query)
        # a held-out tune with a stretch of a training tune pasted in: the stretch is found
        donor = max(train, key=len)
        assert len(donor) >= 50
        pasted = np.concatenate([held_out[0][:10], donor[5:45], held_out[0][10:20]])
        assert index.stats(pasted)[-1] >= 40


# ----------------------------------------------------------------------------- transposition-invariant copying


def test_interval_symbols_hand_built():
    score = symusic.Score(480)
    track = symusic.Track(program=0)
    for t, d, p in ((0, 480, 60), (0, 480, 67), (480, 240, 74), (720, 960, 71)):  # melody 67, 74, 71
        track.notes.append(symusic.Note(t, d, p, 80))
    score.tracks.append(track)
    assert interval_symbols(score).tolist() == [7, -3]
    labels = HISTOGRAMS["duration"]
    bins = [labels.index(x) for x in ("1/2", "2")]  # the durations of the notes each interval leads to
    assert interval_symbols(score, with_duration=True).tolist() == [(7 + 127) * 11 + bins[0], (-3 + 127) * 11 + bins[1]]
    assert interval_symbols(symusic.Score(480)).tolist() == []


@pytest.mark.parametrize("with_duration", [False, True])
def test_a_transposed_copy_is_found_by_intervals_only(folk_midi_files, with_duration):
    """A training tune played a fifth higher: the interval index finds all of it (share 1.0, the
    longest run every interval: its notes - 1); the absolute index finds no 8-gram of it."""
    scores = [read_score(p) for p in folk_midi_files]
    train, tune = scores[:-1], max(scores[:-1], key=lambda s: len(melody_symbols(s)))
    moved = tune.shift_pitch(7)
    notes = len(melody_symbols(moved))
    assert notes >= 50 and (melody_symbols(moved) == melody_symbols(tune) + 7).all()
    by_interval = CopyIndex(interval_symbols(s, with_duration) for s in train)
    copied_8, total_8, copied_16, total_16, longest = by_interval.stats(interval_symbols(moved, with_duration))
    assert copied_8 == total_8 == notes - 1 - 7 and copied_16 == total_16 and longest == notes - 1
    absolute = CopyIndex(melody_symbols(s, with_duration) for s in train)
    copied_8, total_8, *_, longest = absolute.stats(melody_symbols(moved, with_duration))
    assert total_8 == notes - 7 and copied_8 == 0 and longest < 8
    # a held-out tune shares few interval 8-grams with the training tunes (the index is not trivially permissive)
    held_out = interval_symbols(scores[-1], with_duration)
    copied_8, total_8, *_ = by_interval.stats(held_out)
    assert copied_8 < total_8
