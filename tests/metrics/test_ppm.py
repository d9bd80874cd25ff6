"""PPM against probabilities computed by hand on 'abracadabra'-style sequences (escape methods,
interpolation, exclusion, update exclusion, the PPM* context choice, order -1), distributions
that sum to one, the entropy-weighted combination, and the online models' timing: a symbol is
counted only after it has been predicted."""

import math

import numpy as np
import pytest

from musicgen.metrics.ppm import PPM, combine, entropy_weights

ALPHA = "abcdr"


def ids(text: str) -> list[int]:
    return [ALPHA.index(ch) for ch in text]


def model(train=("abracadabra",), **kw) -> PPM:
    return PPM(range(len(ALPHA)), **kw).fit([ids(t) for t in train])


def dist(m: PPM, context: str) -> dict[str, float]:
    return dict(zip(ALPHA, m.predict(ids(context))))


def test_order_0_and_order_minus_1_by_hand_escape_c():
    # abracadabra: a 5, b 2, r 2, c 1, d 1; n = 11, t = 5, lambda = 11/16, order -1 = 1/5
    p = dist(model(exclusion=False), "")
    assert p == pytest.approx({"a": 6 / 16, "b": 3 / 16, "c": 2 / 16, "d": 2 / 16, "r": 3 / 16})
    # with exclusion the order -1 model gives 1 / (|A| + 1 - t(order 0)) = 1 to each, then renormalised
    p = dist(model(exclusion=True), "")
    assert p == pytest.approx({"a": 10 / 36, "b": 7 / 36, "c": 6 / 36, "d": 6 / 36, "r": 7 / 36})


def test_interpolation_through_orders_with_and_without_exclusion():
    # after 'a': b 2, c 1, d 1 (and the end once): n = 4, t = 3, lambda = 4/7; then order 0, order -1
    p = dist(model(exclusion=False), "a")
    assert p == pytest.approx({k: v / 112 for k, v in {"a": 18, "b": 41, "c": 22, "d": 22, "r": 9}.items()})
    # exclusion: order 0's total leaves out b, c, d (seen after 'a'): n = 7, lambda = 7/12, order -1 = 1
    p = dist(model(exclusion=True), "a")
    assert p == pytest.approx({k: v / 52 for k, v in {"a": 10, "b": 15, "c": 10, "d": 10, "r": 7}.items()})


def test_escape_methods_a_b_x_by_hand():
    # A: lambda = n / (n + 1); after 'a': 4/5 then 11/12, order -1 1/5
    p = dist(model(escape="a", exclusion=False), "a")
    assert p["a"] == pytest.approx(1 / 5 * 5 / 12 + 1 / 5 * 1 / 12 * 1 / 5)
    assert p["b"] == pytest.approx(4 / 5 * 2 / 4 + 1 / 5 * 2 / 12 + 1 / 5 * 1 / 12 * 1 / 5)
    # B: every count less one (a 4, b 1, r 1, c 0, d 0): n = 6, t = 5
    p = dist(model(escape="b", exclusion=False), "")
    assert p == pytest.approx({"a": 5 / 11, "b": 2 / 11, "c": 1 / 11, "d": 1 / 11, "r": 2 / 11})
    # X (AX): t = 1 + the types seen once (c, d) = 3, n = 11
    p = dist(model(escape="x", exclusion=False), "")
    assert p["a"] == pytest.approx(5 / 14 + 3 / 14 / 5) and p["c"] == pytest.approx(1 / 14 + 3 / 14 / 5)


def test_ppm_star_takes_the_shortest_deterministic_context():
    # 'cab', 'ab', 'ab': after 'ca' only b ever followed, once; after 'a', b three times.
    alpha = {"a": 0, "b": 1, "c": 2}
    train = [[alpha[ch] for ch in t] for t in ("cab", "ab", "ab")]
    star = PPM(range(3), exclusion=False).fit(train)
    assert star.predict([2, 0]) == pytest.approx([0.1, 0.85, 0.05])  # from 'a' (3/4), then order 0
    bounded = PPM(range(3), order=2, exclusion=False).fit(train)  # the longest context, 'ca', first
    assert bounded.predict([2, 0]) == pytest.approx([4 / 80, 74 / 80, 2 / 80])
    # not deterministic at the top ('a' is followed by b and c): the longest context is used
    two = PPM(range(3), exclusion=False).fit([*train, [0, 2]])
    assert two.predict([2, 0]) == pytest.approx(PPM(range(3), order=2, exclusion=False).fit(
        [*train, [0, 2]]).predict([2, 0]))


def test_update_exclusion_counts_only_the_longest_context_that_had_seen_the_symbol():
    # 'abab': the second b is seen after 'a' (raised there) so order 0's b keeps its first count
    train = [ids("abab")]
    full = PPM(range(5), exclusion=False).fit(train)
    upd = PPM(range(5), exclusion=False, update_exclusion=True).fit(train)
    assert full.predict([])[:2] == pytest.approx([4 / 6 * 2 / 4 + 2 / 6 / 5] * 2)  # a 2, b 2: n = 4, t = 2
    # update-excluded order 0: a 2, b 1 -> n = 3, t = 2, lambda = 3/5; order -1 1/5 each
    assert upd.predict([])[:2] == pytest.approx([3 / 5 * 2 / 3 + 2 / 5 / 5, 3 / 5 * 1 / 3 + 2 / 5 / 5])


def test_an_empty_model_predicts_uniformly_and_unknown_symbols_fail():
    for exclusion in (True, False):
        assert PPM([60, 62, 64, 67], exclusion=exclusion).predict([60]) == pytest.approx([0.25] * 4)
    with pytest.raises(ValueError, match="not in the model's alphabet"):
        PPM([60, 62]).predict([61])
    with pytest.raises(ValueError, match="escape method"):
        PPM([60, 62], escape="q")


@pytest.mark.parametrize("kw", [{}, {"exclusion": False}, {"escape": "x", "update_exclusion": True},
                                {"escape": "a", "order": 2}, {"escape": "b", "order": 0}])
def test_every_distribution_sums_to_one_and_gives_every_symbol_something(kw):
    rng = np.random.default_rng(0)
    alphabet = list(range(55, 75))
    train = [rng.choice(alphabet[:12], size=rng.integers(5, 40)).tolist() for _ in range(20)]
    m = PPM(alphabet, **kw).fit(train)
    test = rng.choice(alphabet, size=60).tolist()
    for learn in (False, True):
        d = m.predict_sequence(test, learn=learn)
        assert d.shape == (60, 20) and np.allclose(d.sum(1), 1.0) and (d > 0).all()


def test_online_models_count_a_symbol_only_after_predicting_it():
    rng = np.random.default_rng(1)
    alphabet = list(range(8))
    train = [rng.integers(0, 4, size=30).tolist() for _ in range(5)]
    melody = [0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 3, 3]
    # the long-term model updated online: row i is the model that has seen the melody up to i
    online = PPM(alphabet).fit(train).predict_sequence(melody, learn=True)
    for i in range(len(melody)):
        fresh = PPM(alphabet).fit(train).update(melody[:i])
        assert online[i] == pytest.approx(fresh.predict(melody[:i]))
    # the short-term model: what comes later never changes an earlier prediction
    stm = PPM(alphabet).predict_sequence(melody, learn=True)
    changed = PPM(alphabet).predict_sequence(melody[:6] + [7] * 6, learn=True)
    assert np.array_equal(stm[:7], changed[:7]) and not np.allclose(stm[7:], changed[7:])
    assert stm[0] == pytest.approx([1 / 8] * 8)  # the first note: nothing seen yet
    assert stm[9].argmax() != 3 and stm[4].argmax() == 1  # repeats learnt, the novel 3 not foreseen


def test_learning_a_sequence_equals_fitting_it_and_scoring_without_learning_changes_nothing():
    rng = np.random.default_rng(2)
    train = [rng.integers(0, 6, size=25).tolist() for _ in range(6)]
    melody = rng.integers(0, 6, size=20).tolist()
    m = PPM(range(6)).fit(train)
    before = m.predict_sequence(melody, learn=False)
    assert np.array_equal(m.predict_sequence(melody, learn=False), before)
    m.predict_sequence(melody, learn=True)
    refit = PPM(range(6)).fit([*train, melody])
    for ctx in ([], melody[:3], melody[-5:], [5, 5]):
        assert m.predict(ctx) == pytest.approx(refit.predict(ctx))


def test_combination_by_hand():
    p1, p2 = np.array([0.7, 0.1, 0.1, 0.1]), np.full(4, 0.25)
    h1 = -(0.7 * math.log2(0.7) + 3 * 0.1 * math.log2(0.1))
    w1, w2 = (h1 / 2) ** -2, 1.0  # H_max = log2 4 = 2; the uniform one has relative entropy 1
    assert entropy_weights([p1, p2], 2) == pytest.approx([w1, w2])
    assert combine([p1, p2], 2) == pytest.approx((w1 * p1 + w2 * p2) / (w1 + w2))
    assert combine([p1, p2], 0) == pytest.approx((p1 + p2) / 2)  # bias 0: the plain mean
    rows = combine([np.stack([p1, p2]), np.stack([p2, p2])], 2)  # row by row
    assert rows[0] == pytest.approx((w1 * p1 + w2 * p2) / (w1 + w2)) and rows[1] == pytest.approx(p2)
