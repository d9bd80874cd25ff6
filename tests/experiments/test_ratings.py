"""The ratings' Bradley-Terry fit on simulated listeners with known strengths: the ranking is
recovered, the intervals over listeners cover the true strengths, ties count as half a win, and a
study with too few answers is said not to separate its contestants."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("choix")

from musicgen.experiments.ratings import bradley_terry, ratings_markdown  # noqa: E402

NAMES = ["ngram", "v6", "v7", "real"]
TRUE = np.array([-1.0, -0.3, 0.4, 0.9])  # centred log-odds


def answer(listener, a, b, choice):
    preferred = {"left": NAMES[a], "right": NAMES[b]}.get(choice)
    return {"listener": listener, "left_contestant": NAMES[a], "right_contestant": NAMES[b], "choice": choice,
            "preferred_contestant": preferred}


def simulate(n_listeners, per_listener, rng, strengths=TRUE, listener_sd=0.0):
    """Each listener answers ``per_listener`` pairs, every pair of contestants in turn, in random order
    on the page; ``listener_sd``: each listener's own taste added to the strengths."""
    matchups = list(itertools.combinations(range(len(NAMES)), 2))
    rows = []
    for x in range(n_listeners):
        taste = strengths + rng.normal(0, listener_sd, len(strengths))
        for k in range(per_listener):
            a, b = matchups[(x + k) % len(matchups)]
            if rng.random() < 0.5:
                a, b = b, a
            p_left = 1 / (1 + np.exp(taste[b] - taste[a]))
            rows.append(answer(f"l{x}", a, b, "left" if rng.random() < p_left else "right"))
    return rows


def test_large_study_recovers_the_ranking_and_separates_everyone():
    rows = simulate(120, 12, np.random.default_rng(0))
    res = bradley_terry(rows, NAMES, n_boot=300, seed=1)
    assert [r["contestant"] for r in res["ranking"]] == NAMES[::-1]
    assert res["not_separated"] == [] and all(g["separated"] for g in res["adjacent"])
    got = {r["contestant"]: r["strength"] for r in res["ranking"]}
    assert np.allclose([got[c] for c in NAMES], TRUE, atol=0.25)
    assert res["answers"] == 1440 and res["listeners"] == 120
    assert sum(r["answers"] for r in res["ranking"]) == 2 * 1440
    assert "| 1 | real |" in ratings_markdown(res, "sim")


def test_intervals_cover_the_true_strengths():
    rng = np.random.default_rng(2)
    covered, total, widths = 0, 0, []
    for study in range(25):
        rows = simulate(30, 10, rng, listener_sd=0.3)
        res = bradley_terry(rows, NAMES, n_boot=200, seed=study)
        for r in res["ranking"]:
            covered += r["low"] <= TRUE[NAMES.index(r["contestant"])] <= r["high"]
            total += 1
            widths.append(r["high"] - r["low"])
    assert 0.85 <= covered / total, covered / total
    assert np.mean(widths) < 1.0  # informative: the strengths span 1.9


def test_a_tie_is_half_a_win():
    one_win_two_ties = [answer("a", 0, 1, "left"), answer("b", 1, 0, "none"), answer("c", 0, 1, "none")]
    two_wins_one_loss = [answer("a", 0, 1, "left"), answer("b", 1, 0, "right"), answer("c", 0, 1, "right")]
    s1 = {r["contestant"]: r["strength"] for r in bradley_terry(one_win_two_ties, NAMES[:2], 10)["ranking"]}
    s2 = {r["contestant"]: r["strength"] for r in bradley_terry(two_wins_one_loss, NAMES[:2], 10)["ranking"]}
    assert s1["ngram"] > s1["v6"] and s1 == pytest.approx(s2)
    ties = [answer(f"l{i}", i % 2, 1 - i % 2, "none") for i in range(8)]
    res = bradley_terry(ties, NAMES[:2], 50)
    assert [r["strength"] for r in res["ranking"]] == pytest.approx([0, 0], abs=1e-6)
    assert res["ranking"][0]["ties"] == 8


def test_too_few_answers_are_said_not_to_separate():
    rows = simulate(8, 2, np.random.default_rng(3))
    res = bradley_terry(rows, NAMES, n_boot=300)
    assert res["not_separated"], res["adjacent"]
    assert "not separated" in ratings_markdown(res, "tiny")
    # three listeners who all prefer real to ngram: consistent, but three people are no interval
    few = [answer(f"l{i}", 3, 0, "left") for i in range(3) for _ in range(4)]
    assert bradley_terry(few, ["ngram", "real"], n_boot=100)["not_separated"] == ["real and ngram"]
    assert bradley_terry(few, ["ngram", "real"], n_boot=100, min_listeners=3)["not_separated"] == []
    assert "Fewer than 5 listeners" in ratings_markdown(bradley_terry(few, ["ngram", "real"], 20), "few")
    empty = bradley_terry([], NAMES, n_boot=20)
    assert empty["answers"] == 0 and len(empty["not_separated"]) == 3


def test_equal_contestants_are_rarely_called_separated():
    """Listeners with no preference between contestants of equal strength: few studies of ten
    listeners call any two neighbours in the ranking separated."""
    rng = np.random.default_rng(5)
    studies = [bradley_terry(simulate(10, 12, rng, strengths=np.zeros(4)), NAMES, n_boot=200, seed=s)
               for s in range(40)]
    false = sum(any(g["separated"] for g in r["adjacent"]) for r in studies)
    assert false / len(studies) <= 0.15, false
