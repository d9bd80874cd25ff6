"""The Pearce (2005) benchmark's rhythm-aware rows: note features extracted from a real chorale
(durations, onsets and bar positions consistent, its fermatas found, pitches those of the pitch
rows), the input layout (earlier notes' features; the current note's onset and duration in the
like-for-like variant), no leak of the pitch of note t or later into note t's prediction (nor of
their rhythm in the strict variant) with and without dynamic evaluation, the key signature moved with
a transposed copy, the features refused when their pitches differ from the benchmark's, and the
pitch rows' stored names unchanged by it all."""

import json

import numpy as np
import pytest
import torch

from musicgen.experiments import pearce2005 as bm
from musicgen.experiments.pearce2005 import protocol
from musicgen.experiments.pearce2005 import rhythm as rh

EARLIER = ["duration", "ioi", "bar_position", "fermata"]
CURRENT = ["bar_position", "duration", "ioi"]
ALPHABET = [60, 62, 64, 65, 67]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bwv253():
    from music21 import converter

    from musicgen.data.corpus import music21_corpus_dir

    return converter.parse(music21_corpus_dir() / "bach" / "bwv253.mxl", forceSource=True).parts[0]


def test_features_of_a_real_chorale_are_consistent_and_find_its_fermatas(bwv253):
    f = rh.note_features(bwv253)
    n = len(f["pitch"])
    assert f["pitch"] == bm.melody_events(bwv253) and n == 39  # the pitch rows' events, one for one
    assert all(len(f[k]) == n for k in rh.NAMES)
    # onsets from the IOIs: every note ends by the next onset (rests make the gap), and the last note
    # ends where the part's notes end
    onsets = np.concatenate([[0.0], np.cumsum(f["ioi"][1:])])
    assert all(f["ioi"][i] >= f["duration"][i - 1] - 1e-9 for i in range(1, n))
    assert onsets[-1] + f["duration"][-1] == pytest.approx(float(bwv253.flatten().notes[-1].offset) +
                                                           float(bwv253.flatten().notes[-1].quarterLength))
    # 4/4 with a one-beat pickup: the first note on beat 4, then each bar position follows the IOIs
    assert f["bar_position"][0] == 3.0 and f["bar_position"][1] == 0.0
    assert all(f["bar_position"][i] == pytest.approx((f["bar_position"][i - 1] + f["ioi"][i]) % 4) for i in range(1, n))
    # its four phrase-end fermatas: on beat 3, then a dotted half on beat 1, twice
    assert [i for i in range(n) if f["fermata"][i]] == [8, 19, 27, 38]
    assert [(f["bar_position"][i], f["duration"][i]) for i in (8, 19, 27, 38)] == [(2.0, 1.0), (0.0, 3.0)] * 2
    assert set(f["key_sharps"]) == {3} and set(f["mode"]) == {"major"}  # A major
    ids = rh.feature_ids(f)
    assert ids.shape == (n, len(rh.NAMES)) and ids[0, rh.NAMES.index("ioi")] == 0  # the first IOI: none
    assert (ids[:, rh.NAMES.index("duration")] == 1 + np.round(np.array(f["duration"]) * 12)).all()


def test_inputs_hold_the_previous_notes_features_and_the_current_notes_onset_and_duration():
    ids = np.arange(1, 19).reshape(3, 6)  # 3 notes x the 6 features
    strict = rh.RhythmNet(bm.build_model(tiny_spec()), EARLIER, [])
    assert strict.inputs(ids).tolist() == [[0, 0, 0, 0], ids[0, :4].tolist(), ids[1, :4].tolist()]
    like = rh.RhythmNet(bm.build_model(tiny_spec()), EARLIER, CURRENT)
    cur = [[r[2], r[0], r[1]] for r in ids.tolist()]
    assert like.inputs(ids).tolist() == [[0, 0, 0, 0, *cur[0]], [*ids[0, :4], *cur[1]], [*ids[1, :4], *cur[2]]]
    with pytest.raises(Exception, match="unknown feature"):
        rh.RhythmNet(bm.build_model(tiny_spec()), ["tempo"], [])


def test_the_key_signature_moves_with_a_transposed_copy():
    ids = np.array([0, 8, 8 + 3, 8 - 2])  # none, C major, A major (3 sharps), B flat major (2 flats)
    assert rh.transpose_key(ids, 0).tolist() == [0, 8, 11, 6]
    assert rh.transpose_key(ids, 2).tolist() == [0, 10, 8 + 5, 8]  # D (2), B (5), C (0)
    assert rh.transpose_key(ids, -1).tolist() == [0, 8 + 5, 8 - 4, 8 + 3]  # B (5), A flat (-4), A (3)
    assert rh.transpose_key(rh.transpose_key(ids, 12), 0).tolist() == ids.tolist()  # an octave: the same key


def tiny_spec(**rhythm):
    spec = {"kind": "transformer", "n_layers": 1, "n_heads": 2, "d_model": 16, "d_ff": 32, "dropout": 0.0}
    return {**spec, "rhythm": rhythm} if rhythm else spec


def melody_and_features(n: int = 10, seed: int = 0) -> tuple[list[int], np.ndarray]:
    rng = np.random.default_rng(seed)
    melody = [int(p) for p in rng.choice(ALPHABET, size=n)]
    d = rng.choice([0.5, 1.0, 2.0], size=n).tolist()
    onsets = np.concatenate([[0.0], np.cumsum(d)[:-1]])
    f = {"pitch": melody, "duration": d, "ioi": [None, *d[:-1]], "bar_position": (onsets % 4).tolist(),
         "fermata": [int(i % 4 == 3) for i in range(n)], "key_sharps": [1] * n, "mode": ["minor"] * n}
    return melody, rh.feature_ids(f)


def changed_rhythm(ids: np.ndarray, t: int) -> np.ndarray:
    """The features of notes t and later changed (other durations, IOIs, bar positions, fermatas)."""
    out = ids.copy()
    out[t:, :3] = out[t:, :3] % 40 + 5
    out[t:, 3] = 3 - out[t:, 3]  # fermata <-> none
    return out


@pytest.mark.parametrize("current", [[], CURRENT], ids=["strict", "like-for-like"])
@pytest.mark.parametrize("lr", [0.0, 0.5], ids=["static", "dynamic"])
def test_note_t_never_depends_on_the_pitch_of_notes_t_on_nor_in_the_strict_variant_their_rhythm(current, lr):
    torch.manual_seed(0)
    model = bm.build_model(tiny_spec(earlier=EARLIER, current=current))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    melody, ids = melody_and_features()
    out = bm.dynamic_log_dists(model, melody, ALPHABET, lr=lr, steps=2, features=ids)
    assert out.shape == (len(melody), len(ALPHABET)) and np.allclose(np.exp(out).sum(1), 1.0)
    for t in (0, 3, 7):
        pitches = melody[:t] + [67 if p != 67 else 60 for p in melody[t:]]  # every pitch from t on changed
        again = bm.dynamic_log_dists(model, pitches, ALPHABET, lr=lr, steps=2, features=ids)
        assert np.array_equal(again[: t + 1], out[: t + 1])  # note t's own distribution too
        if t + 1 < len(melody):
            assert not np.allclose(again[t + 1:], out[t + 1:], atol=1e-6)  # later notes do see them
        # the rhythm of notes after t: never seen by note t; of note t itself: only in the like-for-like
        later = bm.dynamic_log_dists(model, melody, ALPHABET, lr=lr, steps=2, features=changed_rhythm(ids, t + 1))
        assert np.array_equal(later[: t + 1], out[: t + 1])
        own = bm.dynamic_log_dists(model, melody, ALPHABET, lr=lr, steps=2, features=changed_rhythm(ids, t))
        assert np.array_equal(own[:t], out[:t])
        assert np.array_equal(own[t], out[t]) == (not current)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights untouched


def test_a_rhythm_network_trains_on_its_features_and_its_folds_are_stored_apart(tmp_path, monkeypatch):
    """The rhythm makes the pitch predictable (a long note is always 67): the like-for-like network
    learns it, the pitch network cannot; both stored, under names of their own."""
    rng = np.random.default_rng(0)
    melodies, features = [], []
    for _ in range(12):
        m, ids = melody_and_features(12, int(rng.integers(1000)))
        d = ids[:, rh.NAMES.index("duration")]
        m = [67 if x == 1 + 24 else 60 for x in d]  # 2 quarter notes: 67, else 60
        melodies.append(m)
        features.append(ids)
    train = {"steps": 60, "batch_size": 4, "lr": 1e-2, "weight_decay": 0.0, "warmup": 0, "transpose": 0}
    store = bm.Store(tmp_path)
    variants = {"s": {}}
    pitch = bm.fold_log_dists(melodies, tiny_spec(), train, store, "t", 0, 0, 3, variants)["s"]
    like = bm.fold_log_dists(melodies, tiny_spec(earlier=EARLIER, current=CURRENT), train, store, "t", 0, 0, 3,
                             variants, features=features)["s"]
    alphabet = [60, 67]

    def bits(lds):
        return np.mean([bm.melody_bits(bm.true_log_probs(lds[i], melodies[i], alphabet)) for i in range(12)])

    assert bits(like) < 0.3 < 0.6 < bits(pitch)
    assert len({p.parent.name for p in tmp_path.rglob("*.npz")}) == 2
    # a transposed copy moves the key signature with it (the key variant trains with transposition)
    key = bm.build_model(tiny_spec(earlier=EARLIER, current=["key_sharps", "mode"]))
    bm.fit(key, melodies, {**train, "steps": 2, "transpose": 3}, seed=0, features=features)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(protocol, "fit", no_training)  # resumed from the store, features and all
    again = bm.fold_log_dists(melodies, tiny_spec(earlier=EARLIER, current=CURRENT), train, store, "t", 0, 0, 3,
                              variants, features=features)["s"]
    assert all(np.array_equal(again[i], like[i]) for i in range(12))
    with pytest.raises(AssertionError, match="trained again"):  # other features: not reused
        bm.fold_log_dists(melodies, tiny_spec(earlier=EARLIER, current=CURRENT), train, store, "t", 0, 0, 3,
                          variants, features=[changed_rhythm(f, 0) for f in features])


def test_pitch_rows_keep_the_names_they_were_stored_under(tmp_path):
    """A benchmark partly run before the rhythm rows existed reuses its finished folds: a pitch
    network's stored names are those the code gave them at 843035e (computed there)."""
    melodies = [[60, 62, 64, 65, 67, 65, 64, 62], [67, 65, 64, 62, 60], [60, 64, 67, 72]] * 2
    train = {"steps": 2, "batch_size": 2, "lr": 1e-3, "weight_decay": 0.0, "warmup": 0, "transpose": 2}
    bm.fold_log_dists(melodies, tiny_spec(), train, bm.Store(tmp_path), "t", 1, 0, 3,
                      {"s": {}, "d": {"lr": 0.1, "steps": 1}})
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.npz")) == [
        f"t-5aadbc58a194/fold{f}-{v}.npz" for f in range(3) for v in ("b41b7c4491a1", "fcfa00ad02de")]


def test_features_whose_pitches_differ_from_the_benchmarks_are_refused(tmp_path):
    melody, ids = melody_and_features(6)
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    f = {"pitch": melody, "duration": [1.0] * 6, "ioi": [None] + [1.0] * 5, "bar_position": [0, 1, 2, 3, 0, 1],
         "fermata": [0] * 6, "key_sharps": [0] * 6, "mode": [None] * 6}
    (bench / "pearce2005_rhythm.json").write_text(json.dumps({"chorales": [f, f]}))
    out = bm.load_features(tmp_path, {"chorales": [melody]}, ["chorales"])  # the first melody (melodies=1)
    assert len(out["chorales"]) == 1 and out["chorales"][0].shape == (6, len(rh.NAMES))
    with pytest.raises(Exception, match="differ"):
        bm.load_features(tmp_path, {"chorales": [[p + 1 for p in melody]]}, ["chorales"])


def test_what_a_rhythm_row_sees():
    assert rh.sees(EARLIER, []) == ["rhythm of earlier notes"]
    assert rh.sees(EARLIER, CURRENT) == ["rhythm of earlier notes", "rhythm of the current note"]
    assert rh.sees(EARLIER, [*CURRENT, "key_sharps", "mode"])[-1] == "key signature and mode"
    assert not rh.sees_key({"earlier": EARLIER, "current": CURRENT})
    assert rh.sees_key({"earlier": EARLIER, "current": ["mode"]})


def test_the_preregistered_rhythm_contender_names_the_like_for_like_row_and_the_strict_one_beside_it():
    from omegaconf import OmegaConf

    from musicgen.config import compose

    cfg = compose("benchmark", [])
    rhythm = OmegaConf.to_container(cfg.rhythm, resolve=True)
    contender = OmegaConf.to_container(cfg.contenders, resolve=True)["chorales"]["with_rhythm"]
    assert rhythm["run"] == ["earlier", "current"] and rhythm["datasets"] == ["chorales"]
    names = {v: bm.row_names(f"{rhythm['model']}, {rhythm['variants'][v]['name']}", "training folds")
             for v in rhythm["variants"]}
    assert contender["row"] == names["current"][2] and contender["beside"] == names["earlier"][2]
    like, strict = rhythm["variants"]["current"], rhythm["variants"]["earlier"]
    assert not rh.sees_key(like) and contender["thesis"] == 1.953  # no key or mode: the 1.953 row
    assert set(like["current"]) == {"bar_position", "duration", "ioi"} and strict["current"] == []
    assert rh.sees_key(rhythm["variants"]["key"])  # the optional key row compares with 1.911
