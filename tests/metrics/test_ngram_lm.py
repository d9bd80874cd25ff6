"""n-gram baselines: normalisation, hand-computed probabilities, beating the unigram floor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from musicgen.metrics import NgramLM, UnigramLM

V = 12


def _corpus(seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[1, *rng.integers(2, V, size=int(rng.integers(3, 30))).tolist(), 2] for _ in range(40)]


@pytest.mark.parametrize("smoothing", ["kneser_ney", "add_k"])
@pytest.mark.parametrize("order", [3, 5])
def test_distributions_sum_to_one(order, smoothing):
    lm = NgramLM(order=order, vocab_size=V, smoothing=smoothing).fit(_corpus())
    seen = _corpus()[0][1:6]
    for history in ([], [1], seen, seen[:2], [11, 11, 11, 11, 11], [0, 3, 0, 3]):
        p = lm.prob_dist(history)
        assert p.shape == (V,)
        assert np.all(p > 0)
        assert math.isclose(p.sum(), 1.0, rel_tol=1e-9)


def test_unigram_hand_computed_and_normalised():
    lm = UnigramLM(vocab_size=8).fit([[1, 4, 4, 5]])  # leading BOS is context: counts 4:2, 5:1
    assert math.isclose(lm.prob_dist([3, 3]).sum(), 1.0, rel_tol=1e-12)
    assert math.isclose(lm.nll([4, 6]), -math.log(3 / 11) - math.log(1 / 11), rel_tol=1e-12)
    assert lm.score([[1, 4, 6], [5]]) == pytest.approx((lm.nll([4, 6]) + lm.nll([5]), 3))


def test_kneser_ney_bigram_hand_computed():
    # padded training sequence 1 4 5 4 6: bigrams (1,4) (4,5) (5,4) (4,6)
    lm = NgramLM(order=2, vocab_size=8, discount=0.5).fit([[4, 5, 4, 6]])
    # continuation counts: 4 <- {1, 5}: 2; 5 <- {4}: 1; 6 <- {4}: 1; total 4, 3 types
    p1 = {4: 1.5 / 4 + 0.5 * 3 / 4 / 8, 5: 0.5 / 4 + 0.5 * 3 / 4 / 8, 7: 0.5 * 3 / 4 / 8}
    unseen = lm.prob_dist([7])  # history 7 never seen: the unigram level unchanged
    for w, p in p1.items():
        assert math.isclose(unseen[w], p, rel_tol=1e-12)
    after4 = lm.prob_dist([4])  # c(4)=2, two continuation types
    assert math.isclose(after4[5], (0.5 + 0.5 * 2 * p1[5]) / 2, rel_tol=1e-12)
    assert math.isclose(after4[7], (0.5 * 2 * p1[7]) / 2, rel_tol=1e-12)


def test_add_k_backs_off_to_longest_seen_context():
    lm = NgramLM(order=3, vocab_size=8, smoothing="add_k", k=0.5).fit([[4, 5, 4, 6]])
    # history (5, 4) seen once, followed by 6
    assert math.isclose(lm.prob_dist([5, 4])[6], (1 + 0.5) / (1 + 0.5 * 8), rel_tol=1e-12)
    # history (7, 4) unseen -> bigram history (4,): c(4)=2, c(4,6)=1
    assert math.isclose(lm.prob_dist([7, 4])[6], (1 + 0.5) / (2 + 0.5 * 8), rel_tol=1e-12)
    # history (7, 7) unseen at every order -> unigram: 4 tokens, c(6)=1
    assert math.isclose(lm.prob_dist([7, 7])[6], (1 + 0.5) / (4 + 0.5 * 8), rel_tol=1e-12)


@pytest.mark.parametrize("smoothing", ["kneser_ney", "add_k"])
def test_nll_matches_stepwise_prob_dist(smoothing):
    lm = NgramLM(order=4, vocab_size=V, smoothing=smoothing).fit(_corpus())
    seq = _corpus(seed=1)[0]
    expected = 0.0
    for i in range(1, len(seq)):  # seq[0] is BOS: context, not predicted
        expected -= math.log(lm.prob_dist(seq[:i])[seq[i]])
    assert math.isclose(lm.nll(seq), expected, rel_tol=1e-9)
    assert math.isclose(lm.nll(seq[1:]), expected, rel_tol=1e-9)
    assert math.isclose(lm.nll(torch.tensor(seq)), expected, rel_tol=1e-9)
    total, count = lm.score([seq, seq[1:]])
    assert count == 2 * (len(seq) - 1)
    assert math.isclose(total, 2 * expected, rel_tol=1e-9)


def test_beats_unigram_on_repetitive_sequence():
    riff = [4, 5, 6, 7, 5, 9]
    train = [[1, *(riff * 20), 2] for _ in range(3)]
    test = [[1, *(riff * 10), 2]]
    uni = UnigramLM(vocab_size=V).fit(train)
    for smoothing in ("kneser_ney", "add_k"):
        lm = NgramLM(order=3, vocab_size=V, smoothing=smoothing).fit(train)
        ppl = lm.perplexity(test)
        assert ppl < 1.5 < 4.0 < uni.perplexity(test)


def test_validation():
    with pytest.raises(ValueError):
        NgramLM(order=1, vocab_size=V)
    with pytest.raises(ValueError):
        NgramLM(order=3, vocab_size=V, smoothing="witten_bell")
    with pytest.raises(ValueError):
        NgramLM(order=5, vocab_size=10**5)  # keys would overflow int64
    lm = NgramLM(order=3, vocab_size=V)
    with pytest.raises(RuntimeError):
        lm.nll([4, 5])
    with pytest.raises(ValueError):
        lm.fit([[4, V]])
    with pytest.raises(ValueError):
        lm.fit([[1], []])  # nothing to predict
