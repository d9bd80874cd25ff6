"""Near-duplicate detection: hand-checked pairs of the real folk corpus, and exactness of the search."""

import itertools

import numpy as np
import pytest
import symusic

from musicgen.metrics.similarity import (
    LEAKAGE_THRESHOLD,
    MIN_UNION,
    NGRAM,
    SPLIT_THRESHOLD,
    contour,
    near_duplicate_pairs,
    nearest,
    score_contour,
    signature,
    similarity,
)

E = "essenFolksong/"
#: Pairs of exported folk tunes (``<collection>/<abc stem>/<tune index>``) checked by hand, by
#: reading their melodies side by side (intervals, repeated notes merged), with the verdict:
#: "variant" (one tune) or "not". The similarity printed is the one measured when they were chosen.
HAND_CHECKED = [
    # one tune, at or above the split's threshold: the split keeps them on one side
    (E + "ballad60/0073", E + "erk10/0300", 0.960, "variant"),  # Nachtigall als Warnerin / Naechten als ich..
    (E + "irl/0039", "oneills1850/0101-0200/0044", 0.861, "variant"),  # An cuimhin leat / Do You Remember That Night?
    ("oneills1850/1276-1375/0059", "ryansMammoth/PeepODayReel/0000", 0.789, "variant"),  # A Cloudy Morning / Peep O Day
    (E + "altdeu20/0187", E + "altdeu20/0241", 0.477, "variant"),  # Altes Fastenlied / Die sieben Freuden der Maria
    (E + "altdeu20/0143", E + "altdeu20/0165", 0.457, "variant"),  # Weihnachtslied / Ansingelied zum Neujahre
    (E + "ballad30/0086", E + "erk10/0217", 0.447, "variant"),  # Jungfer Doertchen / Es ritt ein Ritter
    (E + "erk30/0569", E + "kinder0/0060", 0.417, "variant"),  # Ding ding Thalerring / Schneckhaus (one chant)
    (E + "ballad50/0180", E + "ballad80/0034", 0.414, "variant"),  # Waise und Stiefmutter / Graf und Nonne
    # one tune, below the split's threshold (ornamented reels, regional versions): only the leakage check sees them
    ("airdsAirs/book5/0169", "oneills1850/0201-0300/0006", 0.347, "variant"),  # Peggy Bawn (Aird / O'Neill)
    (E + "lux/0077", E + "lux/0562", 0.310, "variant"),  # Adam hatte sieben Soehne, two versions
    ("oneills1850/1701-1780/0045", "ryansMammoth/FlowersOfEdinburgReel/0000", 0.270, "variant"),  # Flowers of Edinburgh
    # different tunes sharing figures of a style: never merged; some are counted by the looser leakage check
    (E + "ballad20/0011", E + "fink0/0048", 0.324, "not"),  # Koenig und Marquise / Anke van Tharaw
    (E + "boehme20/0226", E + "han2/0565", 0.324, "not"),  # a German song and a Han pentatonic tune
    (E + "han1/0539", E + "han2/0554", 0.300, "not"),  # two short Han tunes (plain Jaccard 0.6: the union floor)
    (E + "erk10/0226", E + "erk10/0459", 0.295, "not"),  # Auf Erden zu aller Stund / Vor meines Herzliebchens Fenster
    (E + "ballad10/0092", E + "ballad10/0093", 0.282, "not"),  # Schloss in Oesterreich: one text, two tunes
    (E + "erk30/0391", E + "erk30/0542", 0.250, "not"),  # Hoert ihr Herrn / Bimbaum die Glock ist krank
    (E + "erk30/0559", E + "erk30/0566", 0.200, "not"),  # Storch Storch Stanne / Ringel Ringel Reihe (one formula)
]


@pytest.fixture(scope="module")
def hand_checked_contours(tmp_path_factory) -> dict[str, np.ndarray]:
    """The contours of the hand-checked tunes, exported from music21's ABC files as the corpus is."""
    from musicgen.data.corpus import export_abc_file, music21_corpus_dir

    root, m21 = tmp_path_factory.mktemp("hand_checked"), music21_corpus_dir()
    wanted: dict[str, set[int]] = {}
    for a, b, _, _ in HAND_CHECKED:
        for name in (a, b):
            source, index = name.rsplit("/", 1)
            wanted.setdefault(source, set()).add(int(index))
    out = {}
    for source, tunes in wanted.items():
        names, failed, _ = export_abc_file(m21 / f"{source}.abc", root / source, tunes)
        assert not failed and len(names) == len(tunes), failed
        for n in names:
            out[f"{source}/{n.removesuffix('.mid')}"] = score_contour(symusic.Score(str(root / source / n)))
    return out


@pytest.mark.parametrize(("a", "b", "measured", "verdict"), HAND_CHECKED, ids=[f"{p[0]}|{p[1]}" for p in HAND_CHECKED])
def test_the_detector_calls_the_hand_checked_pairs(hand_checked_contours, a, b, measured, verdict):
    s = similarity(signature(hand_checked_contours[a]), signature(hand_checked_contours[b]))
    assert s == pytest.approx(measured, abs=0.0015)
    if verdict == "not":
        assert s < SPLIT_THRESHOLD  # the split never joins two different tunes of this list
    elif measured >= SPLIT_THRESHOLD:
        assert s >= SPLIT_THRESHOLD
    else:
        assert LEAKAGE_THRESHOLD <= s < SPLIT_THRESHOLD  # every variant is at least leakage


def test_the_thresholds_separate_the_hand_checked_verdicts():
    variants = [m for *_, m, v in HAND_CHECKED if v == "variant"]
    others = [m for *_, m, v in HAND_CHECKED if v == "not"]
    assert LEAKAGE_THRESHOLD < SPLIT_THRESHOLD
    assert max(others) < SPLIT_THRESHOLD <= max(variants)  # the split: no false merge on the list
    assert min(variants) >= LEAKAGE_THRESHOLD  # the leakage check: no variant of the list missed


TUNE = [67, 67, 72, 71, 72, 74, 76, 74, 72, 71, 69, 67, 69, 71, 72, 74, 72, 71, 69, 67, 65, 64, 65, 67, 69, 67,
        65, 64, 62, 60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60]


def test_transposition_repeats_and_repeated_notes_leave_the_signature():
    sig = signature(contour(TUNE))
    assert len(sig) > MIN_UNION
    assert np.array_equal(signature(contour(np.array(TUNE) - 7)), sig)  # another key
    split_notes = [p for p in TUNE for _ in (0, 1)]  # every note sung twice (a rhythmic variant)
    assert np.array_equal(signature(contour(split_notes)), sig)
    repeated = TUNE + TUNE  # the repeat written out: only the figures across the join are new
    rep = signature(contour(repeated))
    assert set(sig) <= set(rep) and len(set(rep) - set(sig)) <= NGRAM
    assert similarity(rep, sig) >= SPLIT_THRESHOLD
    ornamented = TUNE[:10] + [73] + TUNE[10:30] + [66] + TUNE[30:]  # two grace notes
    assert SPLIT_THRESHOLD <= similarity(signature(contour(ornamented)), sig) < 1.0


def test_short_tunes_need_a_floor_of_shared_figures():
    a = signature(contour([60, 62, 60, 57] * 4 + [55]))
    b = signature(contour([60, 62, 60, 57] * 4 + [62, 64]))
    inter = len(np.intersect1d(a, b))
    assert inter / len(np.union1d(a, b)) >= 0.5  # plain Jaccard would call these one tune
    assert similarity(a, b) == inter / MIN_UNION < SPLIT_THRESHOLD


def _simulated(rng, n_tunes: int = 60, n_variants: int = 20) -> tuple[list[np.ndarray], set[tuple[int, int]]]:
    """Random walks, then variants of some of them (transposed, a few notes changed): known pairs."""
    tunes = [np.cumsum(rng.integers(-4, 5, size=rng.integers(15, 80))) + 60 for _ in range(n_tunes)]
    planted = set()
    for k in range(n_variants):
        src = int(rng.integers(n_tunes))
        v = tunes[src].copy() + int(rng.integers(-6, 7))
        v[rng.integers(len(v), size=2)] += 1
        planted.add((src, n_tunes + k))
        tunes.append(v)
    return [signature(contour(t)) for t in tunes], planted


def test_the_search_finds_exactly_the_pairs_a_brute_force_finds():
    sigs, planted = _simulated(np.random.default_rng(0))
    for threshold in (0.05, LEAKAGE_THRESHOLD, SPLIT_THRESHOLD):
        brute = {(i, j) for i, j in itertools.combinations(range(len(sigs)), 2)
                 if similarity(sigs[i], sigs[j]) >= threshold}
        found = near_duplicate_pairs(sigs, threshold)
        assert {(i, j) for i, j, _ in found} == brute
        assert all(s == pytest.approx(similarity(sigs[i], sigs[j])) for i, j, s in found)
    split_pairs = {(i, j) for i, j, _ in near_duplicate_pairs(sigs, SPLIT_THRESHOLD)}
    assert len(planted & split_pairs) >= 0.8 * len(planted)  # most planted variants found


def test_nearest_is_the_best_reference_of_each_query():
    sigs, _ = _simulated(np.random.default_rng(1))
    queries, refs = sigs[:25], sigs[25:]
    best, which = nearest(queries, refs)
    for q, (b, w) in enumerate(zip(best, which)):
        sims = [similarity(queries[q], r) for r in refs]
        assert b == pytest.approx(max(sims))
        assert w == -1 if max(sims) == 0 else sims[w] == pytest.approx(max(sims))
    assert nearest(queries, [])[1].tolist() == [-1] * len(queries)
    # a query that shares no figure with any reference (a chorale-only board's test piece did)
    apart = [np.array([1, 2, 3], dtype=np.int64)], [np.array([7, 8], dtype=np.int64)]
    assert [a.tolist() for a in nearest(*apart)] == [[0.0], [-1]]


def test_a_bad_threshold_is_a_clear_error():
    with pytest.raises(ValueError, match="threshold"):
        near_duplicate_pairs([signature(contour(TUNE))], 0.0)
