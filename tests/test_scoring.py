"""Scoring: n-gram samples decoded by the model's rules; pitch range from the training pieces."""

import numpy as np
import symusic

from musicgen.generation import SamplingConfig
from musicgen.metrics import NgramLM, pitch_counts
from musicgen.scoring import reference_range, sample_metrics, sample_ngram
from musicgen.tokenizers import RemiTokenizer

# a bigram over 6 ids whose training data makes id 4 most likely after every token
DOCS = [np.array([1, 4, 5, 4, 5, 4, 2]), np.array([1, 4, 4, 5, 4, 2]), np.array([1, 3, 4, 5, 4, 2])]


def lm() -> NgramLM:
    return NgramLM(order=2, vocab_size=6).fit(DOCS)


def test_top_k_1_and_greedy_give_the_most_likely_token_every_time():
    model = lm()
    greedy = sample_ngram(model, 12, SamplingConfig(greedy=True), np.random.default_rng(0))
    for seed in range(5):  # top-k 1 leaves one token: every seed draws the greedy path
        assert sample_ngram(model, 12, SamplingConfig(top_k=1), np.random.default_rng(seed)) == greedy
    history = [model.bos_id]
    for token in greedy:
        assert token == int(np.argmax(model.prob_dist(history)))
        history.append(token)


def outside_top_2(model: NgramLM, tokens: list[int]) -> int:
    """How many tokens were less likely than the second most likely after their history."""
    history, count = [model.bos_id], 0
    for token in tokens:
        p = model.prob_dist(history)
        count += p[token] < np.sort(p)[-2]  # ties with the second survive top-k, as for the model
        history.append(token)
    return count


def test_filters_change_what_the_ngram_emits():
    model = lm()
    plain = SamplingConfig(temperature=1.0, top_k=0, top_p=1.0)
    top_2 = SamplingConfig(temperature=1.0, top_k=2, top_p=1.0)
    rngs = [np.random.default_rng(seed) for seed in range(20)]
    assert sum(outside_top_2(model, sample_ngram(model, 30, top_2, rng)) for rng in rngs) == 0
    rngs = [np.random.default_rng(seed) for seed in range(20)]
    assert sum(outside_top_2(model, sample_ngram(model, 30, plain, rng)) for rng in rngs) > 0


def test_out_of_range_share_is_measured_against_the_training_pitches():
    tok = RemiTokenizer()
    reference = pitch_counts([60, 62, 64, 65, 67, 72])  # training pieces span C4..C5
    assert reference_range(reference) == (60, 72)
    score = symusic.Score(480)
    track = symusic.Track(program=0)
    track.notes.extend(symusic.Note(i * 480, 480, pitch, 80) for i, pitch in enumerate([60, 64, 67, 96]))
    score.tracks.append(track)
    ids = tok.encode(score)
    out = sample_metrics(tok, [ids], reference)
    assert out["out_of_range_pitch_share"] == 0.25  # 96 is inside the tokeniser's range, not the training data's
