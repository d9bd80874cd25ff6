"""The learned critic (a classifier two-sample test): the interval's coverage on simulated data
with a known answer, its power, real tunes against their note-shuffled copies, length matching,
and the critic rows of evaluate's report."""

import json

import numpy as np
import pytest
import symusic

from musicgen.config import compose
from musicgen.evaluation.run import evaluate
from musicgen.metrics.critic import (
    Critic,
    auc,
    best_and_worst,
    critic_auc,
    critic_features,
    critic_scores,
    critic_test,
    feature_matrix,
    fit_critic,
    match_lengths,
    prefer,
)
from musicgen.metrics.samples import first_notes, note_count


def melody_score(pitches, durations, tpq: int = 480) -> symusic.Score:
    """A one-track score playing ``pitches`` one after another, each for ``durations`` quarters."""
    score = symusic.Score(tpq)
    track = symusic.Track()
    t = 0
    for p, d in zip(pitches, durations):
        track.notes.append(symusic.Note(t, int(d * tpq), int(p), 80))
        t += int(d * tpq)
    score.tracks.append(track)
    return score


def random_walk(rng: np.random.Generator, n: int, steps=(-2, -1, 1, 2), p=None) -> symusic.Score:
    pitches = 64 + np.cumsum(rng.choice(steps, size=n, p=p))
    return melody_score(np.clip(pitches, 30, 100), rng.choice([0.5, 1.0, 2.0], size=n))


def segments(files, notes: int = 16) -> list[symusic.Score]:
    """Each tune's successive runs of ``notes`` notes (pitches and durations, rests left out):
    more pieces from few files."""
    out = []
    for f in files:
        score = symusic.Score(str(f))
        track = score.tracks[0].notes.numpy()
        for start in range(0, len(track["pitch"]) - notes + 1, notes):
            sl = slice(start, start + notes)
            out.append(melody_score(track["pitch"][sl], track["duration"][sl] / score.ticks_per_quarter))
    return out


def test_identical_distributions_cover_half_and_different_ones_are_told_apart():
    """Two sets from one distribution: the interval covers 0.5 in at least 95% of 300 simulations
    (it is conservative by construction), and it is not vacuous (narrower than 0.4); a feature
    shifted by 3 standard deviations: the AUC is near 1 and its interval excludes 0.5."""
    rng = np.random.default_rng(0)
    covered, widths = 0, []
    for s in range(300):
        r = critic_auc(rng.normal(size=(40, 20)), rng.normal(size=(40, 20)), seed=s)
        covered += r["low"] <= 0.5 <= r["high"]
        widths.append(r["high"] - r["low"])
    assert covered / 300 >= 0.95
    assert np.mean(widths) < 0.4
    a, b = rng.normal(size=(40, 20)), rng.normal(size=(40, 20))
    b[:, 3] += 3
    r = critic_auc(a, b)
    assert r["value"] > 0.9 and r["low"] > 0.5 and r["pieces"] == 40


def test_auc_and_critic_direction():
    assert auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert auc(np.array([1.0]), np.array([1.0])) == 0.5
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(1, 1, size=(50, 3)), rng.normal(-1, 1, size=(50, 3))
    critic = Critic().fit(pos, neg)
    assert critic.logit(pos).mean() > 0 > critic.logit(neg).mean()
    assert np.isnan(critic_auc(pos[:3], neg)["value"])  # too few pieces for two halves: no figure


def test_real_tunes_against_note_shuffled_copies(folk_midi_files):
    """The same tunes with their pitches in a random order (same pitch and duration histograms,
    other intervals): the critic tells them apart."""
    real = segments(folk_midi_files)
    assert len(real) >= 30
    rng = np.random.default_rng(0)
    shuffled = []
    for s in real:
        notes = s.tracks[0].notes.numpy()
        shuffled.append(melody_score(rng.permutation(notes["pitch"]), notes["duration"] / 480))
    r = critic_test(real, shuffled, seed=0)
    assert r["value"] > 0.8 and r["low"] > 0.5
    # and the features are transposition-fair: a tune and its transposition read the same
    tune = symusic.Score(str(folk_midi_files[0]))
    assert np.allclose(critic_features(tune), critic_features(tune.shift_pitch(5)))


def test_length_alone_does_not_win_after_matching():
    """Two sets from one random-walk distribution, one 16 notes long, the other 96: on whole pieces
    the critic tells them apart by length alone; paired and cut to matched lengths it cannot."""
    rng = np.random.default_rng(2)
    short = [random_walk(rng, 16) for _ in range(60)]
    long = [random_walk(rng, 96) for _ in range(60)]
    unmatched = critic_auc(feature_matrix(short), feature_matrix(long), seed=0)
    assert unmatched["low"] > 0.5
    a, b = match_lengths(short, long, np.random.default_rng(0))
    assert [note_count(x) for x in a] == [note_count(x) for x in b]
    matched = critic_test(short, long, seed=0)
    assert matched["low"] <= 0.5 <= matched["high"] and abs(matched["value"] - 0.5) < 0.12


def test_prefer_scores_more_real_pieces_higher():
    """A critic of stepwise tunes against leaping ones prefers a stepwise tune, at any lengths."""
    rng = np.random.default_rng(3)
    steps = [random_walk(rng, 40) for _ in range(40)]
    leaps = [random_walk(rng, 40, steps=(-7, -5, 5, 7)) for _ in range(40)]
    critic = fit_critic(steps, leaps)
    assert prefer(critic, random_walk(rng, 20), random_walk(rng, 60, steps=(-7, 7))) > 0
    assert prefer(critic, random_walk(rng, 60, steps=(-7, 7)), random_walk(rng, 20)) < 0
    assert note_count(first_notes(steps[0], 10)) == 10


def test_best_and_worst_of_a_group_at_the_shortest_length():
    """Of a group of tunes of different lengths, all read up to the shortest one's length, a critic
    of stepwise tunes against leaping ones picks a stepwise one as the most real and a leaping one
    as the least; a group of one piece repeated is all alike (None)."""
    rng = np.random.default_rng(4)
    critic = fit_critic([random_walk(rng, 40) for _ in range(40)],
                        [random_walk(rng, 40, steps=(-7, -5, 5, 7)) for _ in range(40)])
    leaps = (-7, -5, 5, 7)
    group = [random_walk(rng, 50, steps=leaps), random_walk(rng, 20), random_walk(rng, 70, steps=leaps),
             random_walk(rng, 30)]
    s = critic_scores(critic, group)  # every piece read up to the shortest one's 20 notes
    np.testing.assert_allclose(s, critic.logit(feature_matrix([first_notes(g, 20) for g in group])))
    best, worst = best_and_worst(critic, group)
    assert (best, worst) == (int(s.argmax()), int(s.argmin())) and best in (1, 3) and worst in (0, 2)
    pair = critic_scores(critic, [group[0], group[2]])
    assert prefer(critic, group[0], group[2]) == pytest.approx(float(pair[0] - pair[1]))
    assert best_and_worst(critic, [group[0], group[0]]) is None


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_evaluate_reports_the_critic_rows(smoke_run, tmp_path):
    cfg = compose("evaluate", [f"ckpt_path={smoke_run}", f"output_dir={tmp_path}", "num_samples=8",
                               "max_new_tokens=64", "bootstrap=50", "split=train"])
    evaluate(cfg)
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    critic = saved["critic"]
    assert set(critic) == {"model", "ngram", "real_vs_real"}
    n = saved["settings"]["num_samples"]  # the train split's untransposed pieces, fewer than 8
    assert n >= 4
    for row in ("model", "ngram"):
        fig = critic[row]
        assert fig["pieces"] == n and 0 <= fig["low"] <= fig["value"] <= fig["high"] <= 1
    assert critic["real_vs_real"]["pieces"] == n // 2  # halves of the real row
    report = (tmp_path / "evaluation.md").read_text()
    assert "## Critic" in report and "real against real" in report
