"""The Pearce (2005) benchmark: fold construction, the bits-per-note arithmetic against a hand
computed case, the n-gram's cross-validation, and melody extraction from a real Essen tune."""

import math

import numpy as np
import pytest

from musicgen.benchmark import bits_per_note, folds, melody_events, ngram_cross_validation


def test_folds_put_every_melody_in_exactly_one():
    parts = folds(213, k=10, seed=0)
    assert len(parts) == 10 and sorted(np.concatenate(parts).tolist()) == list(range(213))
    assert {len(f) for f in parts} == {21, 22}
    assert [f.tolist() for f in folds(213, seed=0)] == [f.tolist() for f in parts]  # reproducible
    assert [f.tolist() for f in folds(213, seed=1)] != [f.tolist() for f in parts]


def test_bits_per_note_by_hand():
    # melody A: p = 1/2 then 1/4 -> (1 + 2) / 2 = 1.5 bits a note; melody B: p = 1/8 -> 3 bits
    lp = [np.log([0.5, 0.25]), np.log([0.125])]
    out = bits_per_note(lp)
    assert out["per_melody"] == pytest.approx((1.5 + 3.0) / 2)
    assert out["per_note"] == pytest.approx((1 + 2 + 3) / 3)


def test_ngram_cross_validation_scores_each_melody_once_on_unseen_folds():
    rng = np.random.default_rng(0)
    scale = [60, 62, 64, 65, 67]
    patterned = [scale * 4 for _ in range(30)]  # every melody the same: predictable from the others
    random = [rng.choice(scale, size=20).tolist() for _ in range(30)]
    a = ngram_cross_validation(patterned, order=3, n_boot=50)
    b = ngram_cross_validation(random, order=3, n_boot=50)
    assert a["melodies"] == 30 and a["per_melody"] < 0.5
    assert b["per_melody"] == pytest.approx(math.log2(5), abs=0.35)  # about uniform over 5 pitches
    assert b["per_melody_interval"][0] <= b["per_melody"] <= b["per_melody_interval"][1]


def test_melody_events_merge_ties_and_skip_rests():
    from music21 import converter

    score = converter.parse("tinyNotation: 4/4 c4 d4~ d4 r4 e2 f2", format="tinyNotation")
    assert melody_events(score) == [60, 62, 64, 65]  # the tied d is one event, the rest none
